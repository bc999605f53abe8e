"""KServeDeployOperator: the registry's champion as a KServe InferenceService (the kubernetes target).

Steps: read the champion and its artifact location from MLflow -> build the InferenceService (the
project's ClusterServingRuntime, protocol v2, storageUri in object storage, the registry version in
the predictor's environment) -> create it, or merge-patch the live one, and route the inference
host's /v2/models/<name> to it -> defer until the change is rolled out and Ready (readiness in
mlops.inference_service) -> a real v2 inference built from the served model's metadata must be
answered by the new version. On a failed condition,
a timeout or a failed smoke test the previous spec is patched back, the `champion` alias moves back
(the pipeline's rollback stage, as a pod, so it is recorded like any promotion) and the task fails
with the controller's own message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.cluster import ClusterSettings, load_cluster_settings
from mlops.hooks.kserve import KServeHook
from mlops.hooks.mlflow import MlflowRestHook
from mlops.hooks.serving import ServingError, ServingHook
from mlops.hooks.stage import run_lineage
from mlops.inference_service import (
    awaited_marker,
    inference_route,
    inference_service,
    readiness,
    served_version,
    storage_uri,
)
from mlops.links import MlflowModelVersionLink, ServingEndpointLink, result_links
from mlops.settings import load_settings


class KServeDeployOperator(BaseOperator):
    template_fields: Sequence[str] = ("model_name",)
    operator_extra_links = (MlflowModelVersionLink(), ServingEndpointLink())
    ui_color = "#fdf1e6"

    def __init__(self, *, model_name: str, cluster: ClusterSettings | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_name, self.cluster = model_name, cluster

    def _cluster(self) -> ClusterSettings:
        return self.cluster or load_cluster_settings()

    def _hook(self, cluster: ClusterSettings) -> KServeHook:
        return KServeHook(cluster.kubernetes_conn_id, cluster.serving_namespace)

    def _record(self, version: str, endpoint: str = "") -> dict:
        served = {"model_name": self.model_name, "version": version, "endpoint": endpoint}
        self.link_urls = result_links(served, load_settings().mlflow_ui_url)
        return served

    def execute(self, context):
        cluster, settings = self._cluster(), load_settings()
        mlflow = MlflowRestHook(settings.mlflow_tracking_uri)
        champion = mlflow.champion(self.model_name)
        if champion is None:
            raise RuntimeError(f"{self.model_name} has no champion to deploy")
        version = champion["version"]
        kserve = self._hook(cluster)
        mode = cluster.serving_deployment_mode
        current = kserve.get(self.model_name)
        deployment = kserve.predictor_deployment(self.model_name) if mode == "RawDeployment" else None
        previous_version = served_version(current)
        if current is not None and previous_version == version:
            ready, url = readiness(current, None, mode, deployment)
            if ready:
                self.log.info("version %s is already served and Ready; nothing to deploy", version)
                return {**self._record(version, self._serving(cluster, url).infer_url),
                        "previous_version": previous_version, "changed": False}
        location = storage_uri(mlflow.artifact_location(champion["source"]), cluster)
        desired = inference_service(self.model_name, version, champion["run_id"], location, cluster)
        applied, created = kserve.apply(desired)
        before = awaited_marker(current, applied, deployment, mode)
        generation = applied["metadata"]["generation"]
        if cluster.inference_host:
            kserve.apply(inference_route(self.model_name, cluster))
        self._record(version)
        self.log.info("%s InferenceService %s/%s (%s mode) for v%s (%s), generation %s; waiting for the rollout",
                      "created" if created else "patched", cluster.serving_namespace, self.model_name, mode, version,
                      location, generation)
        previous = None if current is None else {"metadata": {k: current["metadata"].get(k) or {}
                                                              for k in ("labels", "annotations")},
                                                 "spec": current["spec"]}
        from mlops.triggers.kserve import InferenceServiceReadyTrigger

        self.defer(trigger=InferenceServiceReadyTrigger(
                       self.model_name, cluster.serving_namespace, before, mode,
                       time.time() + cluster.serving_ready_timeout_seconds, cluster.kubernetes_conn_id,
                       cluster.serving_poll_interval_seconds,
                       resume={"version": version, "generation": generation, "previous": previous,
                               "previous_version": previous_version}),
                   method_name="execute_complete")

    def execute_complete(self, context, event: dict):
        cluster = self._cluster()
        resume = event["resume"]
        version, generation = resume["version"], resume["generation"]
        previous, previous_version = resume["previous"], resume["previous_version"]
        self._record(version)
        status = event.get("status")
        if status == "ready":
            serving = self._serving(cluster, event.get("url", ""))
            endpoint = serving.infer_url
            try:
                smoke = serving.smoke_test(version)
            except ServingError as exc:
                failure = str(exc)
            else:
                self.log.info("serving %s v%s at %s (was %s); smoke test answered %s", self.model_name, version,
                              endpoint, previous_version, smoke["prediction"])
                return {**self._record(version, endpoint), "previous_version": previous_version,
                        "generation": generation, "smoke_test": smoke, "changed": True}
        elif status == "timeout":
            failure = (f"not rolled out and Ready within {cluster.serving_ready_timeout_seconds} s: "
                       f"{event.get('message')}")
        else:
            failure = event.get("message") or f"unexpected trigger event {event}"
        self._roll_back(context, cluster, previous, previous_version, version, failure)
        raise RuntimeError(f"deploy of {self.model_name} v{version} failed: {failure}")

    def _serving(self, cluster: ClusterSettings, url: str) -> ServingHook:
        """The model where the smoke test reaches it: through the configured gateway, else at the
        InferenceService's own URL."""
        return ServingHook(cluster.inference_base_url or url, self.model_name)

    def _roll_back(self, context, cluster, previous, previous_version, failed, reason) -> None:
        if previous is None or previous_version is None:
            self.log.error("nothing to roll back to: no earlier version was being served (the failing "
                           "InferenceService is left in place for `kubectl describe`)")
            return
        self.log.error("rolling back %s from v%s to v%s: %s", self.model_name, failed, previous_version, reason)
        kserve = self._hook(cluster)
        current = kserve.get(self.model_name)
        if current is not None:
            kserve.patch_to(current, previous)
        from mlops.operators.stage_pod import StagePodOperator

        StagePodOperator(
            task_id=f"{self.task_id}_rollback", stage="rollback", cluster=cluster,
            options={"data_root": None, "model_name": self.model_name, "to_version": previous_version,
                     "reason": f"deploy of v{failed} failed: {reason}"[:1000], **run_lineage(context)},
            deferrable=False, do_xcom_push=False,
        ).execute(context)
