"""KServeHook: the serving namespace's objects through the cncf-kubernetes provider's KubernetesHook
(the KServe SDK cannot live in the Airflow environment): InferenceServices, the Istio VirtualService
routing to them, and (RawDeployment mode) the predictor Deployment KServe makes.

Writes are server-side applies (PATCH, application/apply-patch+yaml) under one field manager,
`mlops-ct`: the API server creates the object when absent and otherwise merges what we send, removing
only the fields we applied before and no longer send. The fields KServe's defaulting webhook sets (the
`modelFormat` annotation, `automountServiceAccountToken`, the deployment mode's current name) are not
ours, so an apply keeps them, where a merge patch computed from the live object nulled them on every
deploy. `force=true`: Kubernetes' documentation asks a controller to force conflicts on the objects it
manages (https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts), and the deploy
task owns the served model's spec; a field someone else changed by hand (kubectl edit) goes back to
ours, and is ours again. A model's InferenceService is never deleted and re-created, so its URL and
traffic survive a deploy (only a RawDeployment canary's own InferenceService is deleted, once judged).
"""

from __future__ import annotations

import json
from functools import cached_property

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import BaseHook
from kubernetes.client.exceptions import ApiException

from mlops.inference_service import predictor_name

# kind -> (group, version, plural) of the custom objects this hook writes
KINDS = {"InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
         "VirtualService": ("networking.istio.io", "v1", "virtualservices")}
FIELD_MANAGER = "mlops-ct"
APPLY_PATCH = "application/apply-patch+yaml"


class KServeError(RuntimeError):
    """The Kubernetes API refused an InferenceService call; the message carries the API's reason."""


def _reason(exc: ApiException) -> str:
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

    def apply(self, body: dict, field_manager: str = FIELD_MANAGER) -> tuple[dict, bool]:
        """Server-side apply `body` (created when absent); returns (the object as stored, created).
        `body` is the whole intent of `field_manager`: fields it applied before and leaves out now go."""
        kind, name = body["kind"], body["metadata"]["name"]
        group, version, plural = KINDS[kind]
        try:
            # read raw: the client maps only a 200 to the object, and an apply that creates answers 201
            response = self.api.patch_namespaced_custom_object(
                group, version, self.namespace, plural, name, body, field_manager=field_manager, force=True,
                _content_type=APPLY_PATCH, _preload_content=False)
        except ApiException as exc:
            raise KServeError(f"cannot apply {kind} {self.namespace}/{name}: {_reason(exc)}") from None
        return json.loads(response.data), response.status == 201
