"""KfpRunOperator: training as a Kubeflow Pipelines run over REST (the kubernetes target).

Submits the committed, compiled pipeline (with its platform spec: the data PVC, the MLflow Secret and
ConfigMap), fitted to the cluster settings (mlops.kfp_spec), with the run's parameters, then
defers: KfpRunTrigger polls the run in the triggerer. SUCCEEDED
returns the decision the pipeline recorded in MLflow and the ids; FAILED, CANCELED, SKIPPED or the
timeout (the run is then terminated) fail the task with the run's own error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.cluster import ClusterSettings, load_cluster_settings
from mlops.hooks.kfp import KfpHook, load_pipeline_package
from mlops.hooks.mlflow import MlflowRestHook
from mlops.hooks.stage import run_lineage
from mlops.kfp_spec import fit_to_cluster, pipeline_parameters
from mlops.links import KfpRunLink, MlflowRunLink, result_links
from mlops.settings import load_settings


class KfpRunOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_key", "model_name")
    operator_extra_links = (KfpRunLink(), MlflowRunLink())
    ui_color = "#e9f7ef"

    def __init__(self, *, run_key: str, model_name: str, cluster: ClusterSettings | None = None, **kwargs):
        super().__init__(**kwargs)
        self.run_key, self.model_name = run_key, model_name
        self.cluster = cluster
        self.kfp_run_id: str | None = None

    def _cluster(self) -> ClusterSettings:
        return self.cluster or load_cluster_settings()

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

        self.defer(trigger=KfpRunTrigger(self.kfp_run_id, time.time() + cluster.kfp_run_timeout_seconds,
                                         cluster.kfp_conn_id, poll_interval=cluster.kfp_poll_interval_seconds),
                   method_name="execute_complete")

    def execute_complete(self, context, event: dict):
        cluster, settings = self._cluster(), load_settings()
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
        decision = MlflowRestHook(settings.mlflow_tracking_uri).training_decision(self.model_name, self.run_key)
        if decision is None:
            raise RuntimeError(f"KFP run {run_id} succeeded but MLflow has no training decision for "
                               f"{self.model_name} run key {self.run_key}")
        result = {**decision, "kfp_run_id": run_id}
        self.link_urls.update(result_links(result, settings.mlflow_ui_url))
        self.log.info("KFP run %s: %s (%s)", run_id, result["decision"], result["reason"])
        return result

    def on_kill(self) -> None:
        if self.kfp_run_id:
            self.log.info("terminating KFP run %s", self.kfp_run_id)
            KfpHook(self._cluster().kfp_conn_id).terminate_run(self.kfp_run_id)
