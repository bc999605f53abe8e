"""StageOperator: one pipeline stage as an Airflow task; its JSON result becomes the task's XCom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.stage import StageFailed, StageHook
from mlops.links import RESULT_LINKS, result_links
from mlops.settings import load_settings, target


class StageOperator(BaseOperator):
    """Runs `mlpipeline <stage> --data-root <volume> <options>` (the local target).

    The stage runs as a subprocess of the pipeline environment, its progress streamed into the task
    log; a failing stage fails the task with the stage's own error line.
    """

    template_fields: Sequence[str] = ("options",)
    template_fields_renderers = {"options": "json"}
    ui_color = "#e8f1fb"
    operator_extra_links = RESULT_LINKS

    def __init__(self, *, stage: str, options: Mapping[str, object] | None = None, stage_timeout: float = 3600,
                 **kwargs):
        super().__init__(**kwargs)
        self.stage = stage
        self.options = dict(options or {})
        self.stage_timeout = stage_timeout

    def execute(self, context):
        settings = load_settings()
        hook = StageHook.from_settings(settings)
        options = {"data_root": str(settings.data_root), **self.options}
        self.log.info("running: %s", hook.render(hook.command(self.stage, options)))
        try:
            result = hook.run(self.stage, options, timeout=self.stage_timeout)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        self.link_urls = result_links(result, settings.mlflow_ui_url)
        return result


def stage_task(*, task_id: str, stage: str, options: Mapping[str, object] | None = None, **kwargs) -> BaseOperator:
    """The stage's task for the configured target (read when the DAG is parsed): a subprocess of the
    pipeline environment on `local`, a pod of the pipeline image on `kubernetes`."""
    if target() == "kubernetes":
        from mlops.operators.stage_pod import StagePodOperator  # the Kubernetes client only where it is used

        return StagePodOperator(task_id=task_id, stage=stage, options=options, **kwargs)
    return StageOperator(task_id=task_id, stage=stage, options=options, **kwargs)
