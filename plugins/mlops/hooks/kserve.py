"""KServeHook: the serving namespace's objects through the cncf-kubernetes provider's KubernetesHook
(the KServe SDK cannot live in the Airflow environment): InferenceServices, the Istio VirtualService
routing to them, and (RawDeployment mode) the predictor Deployment KServe makes. Creates when absent,
merge-patches otherwise: a model's InferenceService is never deleted and re-created, so its URL and
traffic survive a deploy (only a RawDeployment canary's own InferenceService is deleted, once judged)."""

from __future__ import annotations

from functools import cached_property

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import BaseHook
from kubernetes.client.exceptions import ApiException

from mlops.inference_service import merge_patch, predictor_name

# kind -> (group, version, plural) of the custom objects this hook writes
KINDS = {"InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
         "VirtualService": ("networking.istio.io", "v1", "virtualservices")}


class KServeError(RuntimeError):
    """The Kubernetes API refused an InferenceService call; the message carries the API's reason."""


def _reason(exc: ApiException) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


class KServeHook(BaseHook):
    hook_name = "KServe InferenceServices"

    def __init__(self, kubernetes_conn_id: str = "kubernetes_default", namespace: str = "mlops-serving",
                 kubernetes: KubernetesHook | None = None):
        super().__init__()
        self.namespace = namespace
        self._kubernetes = kubernetes or KubernetesHook(conn_id=kubernetes_conn_id)

    @cached_property
    def api(self):
        return self._kubernetes.custom_object_client

    def get(self, name: str, kind: str = "InferenceService") -> dict | None:
        group, version, plural = KINDS[kind]
        try:
            return self.api.get_namespaced_custom_object(group, version, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KServeError(f"cannot read {kind} {self.namespace}/{name}: {_reason(exc)}") from None

    def predictor_deployment(self, model_name: str) -> dict | None:
        """The Deployment KServe runs the predictor as in RawDeployment mode."""
        name = predictor_name(model_name)
        try:
            found = self._kubernetes.apps_v1_client.read_namespaced_deployment(name, self.namespace)
            return self._kubernetes.api_client.sanitize_for_serialization(found)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KServeError(f"cannot read Deployment {self.namespace}/{name}: {_reason(exc)}") from None

    def delete(self, name: str, kind: str = "InferenceService") -> None:
        """Delete the object if it exists (a RawDeployment canary, once judged)."""
        group, version, plural = KINDS[kind]
        try:
            self.api.delete_namespaced_custom_object(group, version, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise KServeError(f"cannot delete {kind} {self.namespace}/{name}: {_reason(exc)}") from None

    def apply(self, body: dict) -> tuple[dict, bool]:
        """Create the object, or merge-patch the live one to match; returns (object, created)."""
        kind, name = body["kind"], body["metadata"]["name"]
        group, version, plural = KINDS[kind]
        current = self.get(name, kind)
        if current is None:
            try:
                return self.api.create_namespaced_custom_object(group, version, self.namespace, plural, body), True
            except ApiException as exc:
                if exc.status != 409:
                    raise KServeError(f"cannot create {kind} {self.namespace}/{name}: {_reason(exc)}") from None
                current = self.get(name, kind)  # created meanwhile by someone else: converge on it by patching
                if current is None:
                    raise KServeError(f"{kind} {self.namespace}/{name}: 409 on create, then not found") from None
        return self.patch_to(current, body), False

    def patch_to(self, current: dict, desired: dict) -> dict:
        """Merge-patch `current` so that its labels, annotations and spec equal `desired`'s."""
        kind, name = current["kind"], current["metadata"]["name"]
        group, version, plural = KINDS[kind]
        patch = {"metadata": {key: merge_patch(current["metadata"].get(key) or {}, desired["metadata"].get(key) or {})
                              for key in ("labels", "annotations")},
                 "spec": merge_patch(current.get("spec") or {}, desired["spec"])}
        try:
            return self.api.patch_namespaced_custom_object(group, version, self.namespace, plural, name, patch)
        except ApiException as exc:
            raise KServeError(f"cannot patch {kind} {self.namespace}/{name}: {_reason(exc)}") from None
