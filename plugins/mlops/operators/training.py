"""KfpTrainingOperator: hand training to Kubeflow Pipelines and return the run's decision and ids.

On the local target the committed, compiled pipeline runs under kfp.local in the pipeline
environment (`mlpipeline train-local`); the Kubernetes target submits the same YAML over the KFP
REST API.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.stage import StageFailed, StageHook
from mlops.settings import load_settings


class KfpTrainingOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_key", "model_name")
    ui_color = "#e9f7ef"

    def __init__(self, *, run_key: str, model_name: str, **kwargs):
        super().__init__(**kwargs)
        self.run_key, self.model_name = run_key, model_name

    def execute(self, context):
        settings = load_settings()
        if settings.target != "local":
            raise NotImplementedError(f"target {settings.target!r}: KFP runs over REST come with the Kubernetes target")
        dag_run = context.get("dag_run")
        hook = StageHook.from_settings(settings)
        options = {"data_root": settings.data_root, "run_key": self.run_key, "model_name": self.model_name,
                   "dag_id": getattr(dag_run, "dag_id", "") or "", "dag_run_id": getattr(dag_run, "run_id", "") or ""}
        try:
            result = hook.run("train-local", options)
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        self.log.info("KFP run %s: %s (%s)", result.get("kfp_run_id"), result["decision"], result["reason"])
        return result
