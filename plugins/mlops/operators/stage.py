"""StageOperator: one pipeline stage as an Airflow task; its JSON result becomes the task's XCom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.stage import StageFailed, StageHook
from mlops.settings import load_settings


class StageOperator(BaseOperator):
    """Runs `mlpipeline <stage> --data-root <volume> <options>`.

    On the local target the stage runs as a subprocess of the pipeline environment, its progress
    streamed into the task log; a failing stage fails the task with the stage's own error line.
    """

    template_fields: Sequence[str] = ("options",)
    template_fields_renderers = {"options": "json"}
    ui_color = "#e8f1fb"

    def __init__(self, *, stage: str, options: Mapping[str, object] | None = None, stage_timeout: float = 3600,
                 **kwargs):
        super().__init__(**kwargs)
        self.stage = stage
        self.options = dict(options or {})
        self.stage_timeout = stage_timeout

    def execute(self, context):
        settings = load_settings()
        if settings.target != "local":
            raise NotImplementedError(f"target {settings.target!r}: stage pods come with the Kubernetes target")
        hook = StageHook.from_settings(settings)
        options = {"data_root": str(settings.data_root), **self.options}
        self.log.info("running: %s", hook.render(hook.command(self.stage, options)))
        try:
            return hook.run(self.stage, options, timeout=self.stage_timeout)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
