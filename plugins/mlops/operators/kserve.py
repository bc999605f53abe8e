"""KServeDeployOperator: the deploy core (mlops.operators.deploy) with a KServe InferenceService as the
kubernetes target's model server.

The InferenceService uses the project's ClusterServingRuntime, protocol v2, `storageUri` in object
storage and the registry version in the predictor's environment (mlops.inference_service); it is
created, or the live one merge-patched (never deleted and re-created), and the inference host's
routes point at it. The wait for the rollout (InferenceServiceReadyTrigger, readiness as the
controller reports it) runs in the triggerer when deferrable. Restoring means patching the previous
labels, annotations and spec back. A canary is KServe's `canaryTrafficPercent` in Serverless mode, and
a `<model>-canary` InferenceService behind the VirtualService's weighted routes in RawDeployment mode
(docs/canary.md).
"""

from __future__ import annotations

import logging
import time

from mlops.hooks.kserve import KServeHook
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.serving import ServingHook
from mlops.inference_service import (
    awaited_marker,
    canary_name,
    inference_route,
    inference_service,
    readiness,
    served_version,
    storage_uri,
    without_canary,
)
from mlops.operators.deploy import DeployOperator
from mlops.settings import KubernetesSettings, kubernetes_settings

log = logging.getLogger(__name__)


class KServeServingBackend:
    def __init__(self, model_name: str, cluster: KubernetesSettings, mlflow: MlflowHook):
        self.model_name, self.cluster, self.mlflow = model_name, cluster, mlflow
        self.mode = cluster.serving_deployment_mode
        self.kserve = KServeHook(cluster.kubernetes_conn_id, cluster.serving_namespace)

    def _deployment(self) -> dict | None:
        return self.kserve.predictor_deployment(self.model_name) if self.mode == "RawDeployment" else None

    def current(self) -> dict | None:
        isvc = self.kserve.get(self.model_name)
        if isvc is None:
            return None
        ready, url = readiness(isvc, None, self.mode, self._deployment())
        return {"version": served_version(isvc), "url": url if ready else "", "ready": bool(ready),
                "metadata": {k: isvc["metadata"].get(k) or {} for k in ("labels", "annotations")},
                "spec": isvc["spec"]}

    def is_ready(self, current: dict) -> bool:
        return current["ready"]

    @property
    def supports_canary(self) -> bool:
        """Serverless: KServe's canaryTrafficPercent splits traffic between Knative revisions.
        RawDeployment: a second InferenceService and the VirtualService's weights, so it needs the route."""
        return self.mode == "Serverless" or bool(self.cluster.inference_host)

    def roll_out(self, champion: dict, canary_percent: int | None = None, name: str | None = None):
        """Create or patch an InferenceService (the model's own, or `name`) for the champion; the trigger
        waits for its rollout (for a Serverless canary: for its revision on its share)."""
        name = name or self.model_name
        current = self.kserve.get(name)
        location = storage_uri(self.mlflow.artifact_location(champion["source"]), self.cluster)
        desired = inference_service(self.model_name, champion["version"], champion["run_id"], location, self.cluster,
                                    canary_percent, name)
        deployment = self.kserve.predictor_deployment(name) if self.mode == "RawDeployment" else None
        applied, created = self.kserve.apply(desired)
        # What the server says changed, not a client-side diff (a live spec carries the webhook's defaults).
        before = awaited_marker(current, applied, deployment, self.mode)
        if self.cluster.inference_host and name == self.model_name:
            self.kserve.apply(inference_route(self.model_name, self.cluster))
        log.info("%s InferenceService %s/%s (%s mode) for v%s (%s)%s, generation %s; waiting for the rollout",
                 "created" if created else "patched", self.cluster.serving_namespace, name, self.mode,
                 champion["version"], location, f" as a {canary_percent} % canary" if canary_percent else "",
                 applied["metadata"].get("generation"))
        return self._ready_trigger(before, canary_percent, name)

    def _ready_trigger(self, before, canary_percent: int | None = None, name: str | None = None):
        from mlops.triggers.kserve import InferenceServiceReadyTrigger

        return InferenceServiceReadyTrigger(
            name or self.model_name, self.cluster.serving_namespace, before, self.mode,
            time.time() + self.cluster.serving_ready_timeout_seconds, self.cluster.kubernetes_conn_id,
            self.cluster.serving_poll_interval_seconds, canary_percent=canary_percent)

    def start_canary(self, champion: dict, percent: int):
        """Serverless: the new spec with `canaryTrafficPercent` (KServe gives its revision that share once
        it is ready). RawDeployment: the canary's own InferenceService; `share` routes to it once ready."""
        if self.mode == "Serverless":
            return self.roll_out(champion, percent)
        return self.roll_out(champion, name=canary_name(self.model_name))

    def share(self, percent: int) -> None:
        """The canary is ready: in RawDeployment mode the VirtualService now sends it `percent`."""
        if self.mode == "RawDeployment":
            self.kserve.apply(inference_route(self.model_name, self.cluster, percent))

    def promote(self, champion: dict):
        """Serverless: drop `canaryTrafficPercent`, the revision serving the canary takes all the traffic
        (the pod template is unchanged, so no new revision: the wait is for the route, `before=None`).
        RawDeployment: the model's own InferenceService rolls to the new version, its route back to all
        the traffic; `promoted` then removes the canary."""
        if self.mode == "RawDeployment":
            return self.roll_out(champion)
        current = self.kserve.get(self.model_name)
        if current is None:
            raise RuntimeError(f"InferenceService {self.model_name} disappeared during its canary")
        self.kserve.patch_to(current, without_canary(current))
        return self._ready_trigger(None)

    def promoted(self) -> None:
        if self.mode == "RawDeployment":
            self.kserve.delete(canary_name(self.model_name))

    def restore(self, previous: dict) -> None:
        """The previous labels, annotations and spec back. A RawDeployment canary: the route back on the
        model's own InferenceService (never changed during the canary), the canary's deleted. During a
        Serverless canary with `canaryTrafficPercent: 0` (KServe's documented canary rollback): all the
        traffic goes back to the last rolled-out revision at once, while the restored spec's own revision
        starts on no traffic (dropping the field would hand the canary's ready revision everything until
        then); the next deploy drops it."""
        if self.mode == "RawDeployment" and self.kserve.get(canary_name(self.model_name)) is not None:
            if self.cluster.inference_host:
                self.kserve.apply(inference_route(self.model_name, self.cluster))
            self.kserve.delete(canary_name(self.model_name))
        current = self.kserve.get(self.model_name)
        if current is None:
            return
        if "canaryTrafficPercent" in current["spec"].get("predictor", {}):
            spec = {**previous["spec"], "predictor": {**previous["spec"]["predictor"], "canaryTrafficPercent": 0}}
            previous = {**previous, "spec": spec}
        self.kserve.patch_to(current, previous)


class KServeDeployOperator(DeployOperator):
    def __init__(self, *, cluster: KubernetesSettings | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cluster = cluster

    def _cluster(self) -> KubernetesSettings:
        return self.cluster or kubernetes_settings()

    def _backend(self) -> KServeServingBackend:
        return KServeServingBackend(self.model_name, self._cluster(), MlflowHook(self.mlflow_conn_id))

    def _serving(self, url: str) -> ServingHook:
        """The model where the smoke test reaches it: through the configured gateway, else at the
        InferenceService's own URL."""
        return ServingHook(self.model_name, base_url=self._cluster().inference_base_url or url)
