"""StageOperator: one pipeline stage as an Airflow task on the local target; its JSON result becomes
the task's XCom, each key also as its own (`task.output["run_key"]`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import StageFailed, StageHook
from mlops.links import RESULT_LINKS, result_links
from mlops.volume import data_root


class RunsOnlyWith:
    """`only_with` (templated, e.g. an upstream's XComArg): the task skips itself when it resolves to None,
    saying why. For a task whose trigger rule lets it run although there is nothing to do: the rollback
    runs after every deploy that ran, and Airflow's `none_skipped` also lets an upstream_failed one by."""

    def _check_only_with(self) -> None:
        if self.only_with is None:
            raise AirflowSkipException(f"nothing to do: {self.only_with_reason}")


class StageOperator(RunsOnlyWith, BaseOperator):
    """Runs `mlpipeline <stage> --data-root <volume> <options>` as a subprocess of the pipeline
    environment, its progress streamed into the task log; a failing stage fails the task with the
    stage's own error line. `options` may hold XComArgs (resolved when the task runs); a None value
    leaves its flag out, as does `data_root=None` for stages that take no data volume."""

    template_fields: Sequence[str] = ("options", "only_with")
    template_fields_renderers = {"options": "json"}
    ui_color = "#e8f1fb"
    operator_extra_links = RESULT_LINKS

    def __init__(self, *, stage: str, options: Mapping[str, object] | None = None,
                 mlflow_conn_id: str = MlflowHook.default_conn_name, stage_timeout: float = 3600, only_with=True,
                 only_with_reason: str = "", **kwargs):
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.stage, self.options, self.stage_timeout = stage, dict(options or {}), stage_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.only_with, self.only_with_reason = only_with, only_with_reason

    def execute(self, context):
        self._check_only_with()
        hook = StageHook.local(self.mlflow_conn_id)
        options = {"data_root": str(data_root()), **self.options}
        self.log.info("running: %s", hook.render(hook.command(self.stage, options)))
        try:
            result = hook.run(self.stage, options, timeout=self.stage_timeout)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        self.link_urls = result_links(result, self.mlflow_conn_id)
        return result
