"""KfpClusterRunOperator: training on the kubernetes target, a Kubeflow Pipelines run over REST.

Submits the committed, compiled pipeline (with its platform spec: the data PVC, the MLflow Secret and
ConfigMap), fitted to the cluster settings (mlops.kfp_spec), with the run's parameters, then waits
(KfpRunTrigger, in the triggerer when deferrable). SUCCEEDED returns the TrainingDecision the
pipeline recorded on its MLflow training run (a KFP run carries no outputs over REST), as
KfpLocalRunOperator returns it on the local target; FAILED, CANCELED, SKIPPED or the timeout (the run
is then terminated) fail the task with the run's own error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.kfp import KfpHook, load_pipeline_package
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import run_lineage
from mlops.kfp_spec import fit_to_cluster, pipeline_parameters
from mlops.links import KfpRunLink, MlflowRunLink, MlflowRunsLink, result_links
from mlops.log_lines import message
from mlops.operators.deferral import default_deferrable, wait_for
from mlops.settings import KubernetesSettings, kubernetes_settings


class KfpClusterRunOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_key", "model_name")
    operator_extra_links = (KfpRunLink(), MlflowRunLink(), MlflowRunsLink())
    ui_color = "#e9f7ef"

    def __init__(self, *, run_key: str, model_name: str, cluster: KubernetesSettings | None = None,
                 mlflow_conn_id: str = MlflowHook.default_conn_name, deferrable: bool | None = None, **kwargs):
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.run_key, self.model_name, self.cluster = run_key, model_name, cluster
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.kfp_run_id: str | None = None

    def _cluster(self) -> KubernetesSettings:
        return self.cluster or kubernetes_settings()

    def execute(self, context):
        cluster = self._cluster()
        hook = KfpHook(cluster.kfp_conn_id)
        hook.healthz()
        experiment_id = hook.get_or_create_experiment(cluster.kfp_experiment or self.model_name,
                                                      description=f"continuous training of {self.model_name}")
        # The steps read the tracking server's URI from the same ConfigMap as the stage pods.
        parameters = {"run_key": self.run_key, "model_name": self.model_name, "mlflow_tracking_uri": "",
                      **pipeline_parameters(cluster), **run_lineage(context)}
        package = fit_to_cluster(load_pipeline_package(cluster.training_pipeline), cluster)
        run = hook.create_run(experiment_id, f"{self.model_name} {self.run_key}", package, parameters,
                              service_account=cluster.kfp_service_account or None,
                              description=f"Airflow {parameters['dag_id']} {parameters['dag_run_id']}")
        self.kfp_run_id = run["run_id"]
        self.link_urls = {KfpRunLink.name: hook.run_url(self.kfp_run_id)}
        self.log.info("KFP run %s submitted: %s", self.kfp_run_id, self.link_urls[KfpRunLink.name])
        from mlops.triggers.kfp import KfpRunTrigger

        return wait_for(self, context, KfpRunTrigger(self.kfp_run_id, time.time() + cluster.kfp_run_timeout_seconds,
                                                     cluster.kfp_conn_id,
                                                     poll_interval=cluster.kfp_poll_interval_seconds))

    def execute_complete(self, context, event: dict):
        cluster, mlflow = self._cluster(), MlflowHook(self.mlflow_conn_id)
        run_id = event["run_id"]
        hook = KfpHook(cluster.kfp_conn_id)
        self.kfp_run_id = run_id
        self.link_urls = {KfpRunLink.name: hook.run_url(run_id)}
        status = event.get("status")
        if status == "timeout":
            hook.terminate_run(run_id)
            raise RuntimeError(f"KFP run {run_id} still {event.get('state')} after "
                               f"{cluster.kfp_run_timeout_seconds} s; terminated it")
        if status == "error":
            raise RuntimeError(event["message"])
        if event.get("state") != "SUCCEEDED":
            raise RuntimeError(f"KFP run {run_id} {event.get('state')}: {event.get('error')}")
        decision = mlflow.training_decision(self.model_name, self.run_key)
        if decision is None:
            raise RuntimeError(f"KFP run {run_id} succeeded but MLflow has no training decision for "
                               f"{self.model_name} run key {self.run_key}")
        result = {**decision.to_dict(), "kfp_run_id": run_id, "engine": "kfp"}
        self.link_urls.update(result_links(result, self.mlflow_conn_id))
        self.log.info("%s", message(f"KFP run {run_id}: {decision.decision}", decision.reason))
        return result

    def on_kill(self) -> None:
        if self.kfp_run_id:
            self.log.info("terminating KFP run %s", self.kfp_run_id)
            KfpHook(self._cluster().kfp_conn_id).terminate_run(self.kfp_run_id)
