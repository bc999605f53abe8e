"""KServeDeployOperator: the deploy core (mlops.operators.deploy) with a KServe InferenceService as the
kubernetes target's model server.

The InferenceService uses the project's ClusterServingRuntime, protocol v2, `storageUri` in object
storage and the registry version in the predictor's environment (mlops.inference_service); it is
server-side applied (created, or the live one brought to it; never deleted and re-created), and the
inference host's routes point at it. The wait for the rollout (InferenceServiceReadyTrigger, readiness
as the controller reports it) runs in the triggerer when deferrable. Restoring means applying the
previous labels, annotations and spec back. A canary is KServe's `canaryTrafficPercent` in Serverless
mode, and a `<model>-canary` InferenceService behind the VirtualService's weighted routes in
RawDeployment mode (docs/canary.md).

A new revision whose model failed to load is a failure naming KServe's reason (status.modelStatus),
except once: when the storage initializer's download failed the way a network or a busy store fails
(mlops.inference_service.transient_load_failure), the revision is rolled again (a new pod, a new
download) and waited on before anything is restored. A second failure restores as any failure does.
"""

from __future__ import annotations

import logging
import time

from mlops.hooks.kserve import KServeHook
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.serving import ServingHook
from mlops.inference_service import (
    API_VERSION,
    RETRY_ANNOTATION,
    as_config,
    awaited_marker,
    canary_name,
    inference_route,
    inference_service,
    is_standard,
    readiness,
    rollout_marker,
    served_version,
    storage_uri,
    transient_load_failure,
    without_canary,
)
from mlops.operators.deferral import wait_for
from mlops.operators.deploy import DeployOperator
from mlops.settings import KubernetesSettings, kubernetes_settings

log = logging.getLogger(__name__)
# The re-roll's own field manager: its one annotation is not part of the deploy's intent, so the deploy's
# next apply (field manager mlops-ct) neither removes it nor conflicts with it.
RETRY_FIELD_MANAGER = "mlops-ct-retry"
_NO_RETRY = object()  # what _retry returns when it did not retry (a resumed method may return anything)


class KServeServingBackend:
    def __init__(self, model_name: str, cluster: KubernetesSettings, mlflow: MlflowHook):
        self.model_name, self.cluster, self.mlflow = model_name, cluster, mlflow
        self.mode = cluster.serving_deployment_mode
        self.kserve = KServeHook(cluster.kubernetes_conn_id, cluster.serving_namespace)

    def _deployment(self, name: str | None = None) -> dict | None:
        return self.kserve.predictor_deployment(name or self.model_name) if is_standard(self.mode) else None

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
        return not is_standard(self.mode) or bool(self.cluster.inference_host)

    def roll_out(self, champion: dict, canary_percent: int | None = None, name: str | None = None):
        """Create or patch an InferenceService (the model's own, or `name`) for the champion; the trigger
        waits for its rollout (for a Serverless canary: for its revision on its share)."""
        name = name or self.model_name
        current = self.kserve.get(name)
        location = storage_uri(self.mlflow.artifact_location(champion["source"]), self.cluster)
        desired = inference_service(self.model_name, champion["version"], champion["run_id"], location, self.cluster,
                                    canary_percent, name)
        deployment = self._deployment(name)
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
        if not is_standard(self.mode):
            return self.roll_out(champion, percent)
        return self.roll_out(champion, name=canary_name(self.model_name))

    def share(self, percent: int) -> None:
        """The canary is ready: in RawDeployment mode the VirtualService now sends it `percent`."""
        if is_standard(self.mode):
            self.kserve.apply(inference_route(self.model_name, self.cluster, percent))

    def promote(self, champion: dict):
        """Serverless: drop `canaryTrafficPercent`, the revision serving the canary takes all the traffic
        (the pod template is unchanged, so no new revision: the wait is for the route, `before=None`).
        RawDeployment: the model's own InferenceService rolls to the new version, its route back to all
        the traffic; `promoted` then removes the canary."""
        if is_standard(self.mode):
            return self.roll_out(champion)
        current = self.kserve.get(self.model_name)
        if current is None:
            raise RuntimeError(f"InferenceService {self.model_name} disappeared during its canary")
        self.kserve.apply(as_config(without_canary(current)))
        return self._ready_trigger(None)

    def promoted(self) -> None:
        if is_standard(self.mode):
            self.kserve.delete(canary_name(self.model_name))

    def retry_load(self, name: str | None = None, canary_percent: int | None = None):
        """When the latest revision of `name` failed to load its model the way a download that may pass
        next time fails: roll a new revision (a new pod, whose storage initializer downloads again) by
        changing one annotation of ours, which KServe copies onto the pod template, and return the
        trigger that waits for it. None when the failure is of another kind."""
        name = name or self.model_name
        isvc = self.kserve.get(name)
        why = transient_load_failure(isvc)
        if why is None:
            return None
        before = rollout_marker(isvc, self._deployment(name), self.mode)
        self.kserve.apply({"apiVersion": API_VERSION, "kind": "InferenceService",
                           "metadata": {"name": name, "namespace": self.cluster.serving_namespace,
                                        "annotations": {RETRY_ANNOTATION: str(before)}}},
                          field_manager=RETRY_FIELD_MANAGER)
        log.warning("InferenceService %s/%s: %s\n  that may pass on another try: rolling a new revision once "
                    "(replacing %s)", self.cluster.serving_namespace, name, why, before)
        return self._ready_trigger(before, canary_percent, name)

    def restore(self, previous: dict) -> None:
        """The previous labels, annotations and spec back. A RawDeployment canary: the route back on the
        model's own InferenceService (never changed during the canary), the canary's deleted. During a
        Serverless canary with `canaryTrafficPercent: 0` (KServe's documented canary rollback): all the
        traffic goes back to the last rolled-out revision at once, while the restored spec's own revision
        starts on no traffic (dropping the field would hand the canary's ready revision everything until
        then); the next deploy drops it."""
        if is_standard(self.mode) and self.kserve.get(canary_name(self.model_name)) is not None:
            if self.cluster.inference_host:
                self.kserve.apply(inference_route(self.model_name, self.cluster))
            self.kserve.delete(canary_name(self.model_name))
        current = self.kserve.get(self.model_name)
        if current is None:
            return
        spec = previous["spec"]
        if "canaryTrafficPercent" in current["spec"].get("predictor", {}):
            spec = {**spec, "predictor": {**spec["predictor"], "canaryTrafficPercent": 0}}
        self.kserve.apply(as_config({"metadata": {**current["metadata"], **previous["metadata"]}, "spec": spec}))


class KServeDeployOperator(DeployOperator):
    def __init__(self, *, cluster: KubernetesSettings | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cluster = cluster

    def _cluster(self) -> KubernetesSettings:
        return self.cluster or kubernetes_settings()

    def _backend(self) -> KServeServingBackend:
        return KServeServingBackend(self.model_name, self._cluster(), MlflowHook(self.mlflow_conn_id))

    def execute_complete(self, context, event: dict):
        """As the core's, but a first load failure that may pass on another try rolls the revision again."""
        retried = self._retry(context, event, "execute_complete")
        return retried if retried is not _NO_RETRY else super().execute_complete(context, event)

    def canary_started(self, context, event: dict):
        """As the core's, with the same one retry for the canary's revision (Serverless: the model's own
        InferenceService on its share; RawDeployment: the canary's InferenceService)."""
        resume = event.get("resume") or {}
        standard = is_standard(self._cluster().serving_deployment_mode)
        retried = self._retry(context, event, "canary_started",
                              name=canary_name(self.model_name) if standard else None,
                              canary_percent=None if standard else resume.get("percent"))
        return retried if retried is not _NO_RETRY else super().canary_started(context, event)

    def _retry(self, context, event: dict, method_name: str, name: str | None = None,
               canary_percent: int | None = None):
        """The retry's outcome (the resumed method's), or _NO_RETRY: the event is not a failure, this
        rollout was retried once already, or the failure will not pass by trying again."""
        resume = event.get("resume") or {}
        if event.get("status") != "failed" or resume.get("retried"):
            return _NO_RETRY
        trigger = self._backend().retry_load(name, canary_percent)
        if trigger is None:
            return _NO_RETRY
        trigger.resume = {**resume, "retried": True}
        return wait_for(self, context, trigger, method_name=method_name)

    def _serving(self, url: str) -> ServingHook:
        """The model where the smoke test reaches it: through the configured gateway, else at the
        InferenceService's own URL."""
        return ServingHook(self.model_name, base_url=self._cluster().inference_base_url or url)
