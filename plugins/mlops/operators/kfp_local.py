"""KfpLocalRunOperator: training on the local target, the committed, compiled KFP pipeline run with
kfp.local in the pipeline environment (`mlpipeline train-local`). Returns the TrainingDecision
(mlpipeline.contracts), as KfpClusterRunOperator does on the kubernetes target."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import StageFailed, StageHook, run_lineage
from mlops.links import MlflowRunLink, MlflowRunsLink, result_links
from mlops.log_lines import message
from mlops.volume import data_root


class KfpLocalRunOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_key", "model_name")
    ui_color = "#e9f7ef"
    operator_extra_links = (MlflowRunLink(), MlflowRunsLink())

    def __init__(self, *, run_key: str, model_name: str, mlflow_conn_id: str = MlflowHook.default_conn_name,
                 **kwargs):
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.run_key, self.model_name, self.mlflow_conn_id = run_key, model_name, mlflow_conn_id

    def execute(self, context):
        from mlpipeline.contracts import TrainingDecision

        options = {"data_root": data_root(), "run_key": self.run_key, "model_name": self.model_name,
                   **run_lineage(context)}
        try:
            result = StageHook.local(self.mlflow_conn_id).run("train-local", options)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        decision = TrainingDecision.from_dict(result)
        self.log.info("%s", message(f"KFP run {decision.kfp_run_id} (kfp.local): {decision.decision}",
                                    decision.reason))
        self.link_urls = result_links(result, self.mlflow_conn_id)
        return {**decision.to_dict(), "engine": "kfp.local"}
