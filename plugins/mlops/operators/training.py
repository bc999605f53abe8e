"""Training: hand it to Kubeflow Pipelines and return the run's decision and ids.

On the local target (KfpTrainingOperator) the committed, compiled pipeline runs under kfp.local in
the pipeline environment (`mlpipeline train-local`); on the kubernetes target (KfpRunOperator) the
same YAML is submitted over the KFP REST API. `training_task` picks one when the DAG is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.stage import StageFailed, StageHook, run_lineage
from mlops.links import MlflowRunLink, result_links
from mlops.settings import load_settings, target


class KfpTrainingOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_key", "model_name")
    ui_color = "#e9f7ef"
    operator_extra_links = (MlflowRunLink(),)

    def __init__(self, *, run_key: str, model_name: str, **kwargs):
        super().__init__(**kwargs)
        self.run_key, self.model_name = run_key, model_name

    def execute(self, context):
        settings = load_settings()
        hook = StageHook.from_settings(settings)
        options = {"data_root": settings.data_root, "run_key": self.run_key, "model_name": self.model_name,
                   **run_lineage(context)}
        try:
            result = hook.run("train-local", options)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        self.log.info("KFP run %s: %s (%s)", result.get("kfp_run_id"), result["decision"], result["reason"])
        self.link_urls = result_links(result, settings.mlflow_ui_url)
        return result


def training_task(*, task_id: str, run_key: str, model_name: str, **kwargs) -> BaseOperator:
    if target() == "kubernetes":
        from mlops.operators.kfp import KfpRunOperator

        return KfpRunOperator(task_id=task_id, run_key=run_key, model_name=model_name, **kwargs)
    return KfpTrainingOperator(task_id=task_id, run_key=run_key, model_name=model_name, **kwargs)
