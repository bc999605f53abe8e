"""The InferenceService the kubernetes target deploys for a champion: what it contains, and how its
readiness and storage location are read. Plain functions of dicts; the hook does the API calls."""

from __future__ import annotations

from mlops.cluster import ClusterSettings

API_VERSION = "serving.kserve.io/v1beta1"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
VERSION_ANNOTATION = "mlops-ct/registry-version"


def storage_uri(artifact_uri: str, cluster: ClusterSettings) -> str:
    """An artifact URI KServe's storage initializer can download: mlflow-artifacts:/ (the tracking
    server's proxy) is mapped onto the object store behind it."""
    if artifact_uri.startswith("mlflow-artifacts:"):
        path = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        return f"{cluster.artifact_store_root.rstrip('/')}/{path}"
    return artifact_uri


def inference_service(model_name: str, version: str, run_id: str | None, storage: str,
                      cluster: ClusterSettings) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": model_name,
            "namespace": cluster.serving_namespace,
            "labels": {**cluster.labels, "app.kubernetes.io/name": model_name,
                       "app.kubernetes.io/component": "predictor"},
            "annotations": {
                VERSION_ANNOTATION: str(version),
                "mlops-ct/run-id": run_id or "",
                "serving.kserve.io/enable-prometheus-scraping": "true",
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": cluster.serving_service_account,
                "minReplicas": cluster.serving_min_replicas,
                "model": {
                    "modelFormat": {"name": cluster.serving_model_format},
                    "runtime": cluster.serving_runtime,
                    "protocolVersion": "v2",
                    "storageUri": storage,
                    "resources": {"requests": dict(cluster.serving_requests),
                                  "limits": dict(cluster.serving_limits)},
                },
            },
        },
    }


def served_version(isvc: dict | None) -> str | None:
    return ((isvc or {}).get("metadata", {}).get("annotations") or {}).get(VERSION_ANNOTATION)


def readiness(isvc: dict, generation: int) -> tuple[bool | None, str]:
    """(True, url) when Ready for `generation`; (False, message) when the controller reports failure
    for it; (None, why) while it is still working on it."""
    status = isvc.get("status") or {}
    observed = status.get("observedGeneration", 0)
    if observed < generation:
        return None, f"controller has seen generation {observed}, waiting for {generation}"
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return None, "no Ready condition yet"
    if ready["status"] == "True":
        return True, (status.get("address") or {}).get("url") or status.get("url") or ""
    message = ready.get("message") or ready.get("reason") or "Ready is False"
    failed = [c for c in status.get("conditions") or [] if c.get("status") == "False" and c.get("message")]
    if ready.get("reason") in ("RevisionFailed", "InferenceServiceFailed", "ModelLoadFailed") or \
            (status.get("modelStatus") or {}).get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec"):
        return False, "; ".join(dict.fromkeys([message, *(c["message"] for c in failed)]))
    return None, message


def merge_patch(current, desired):
    """The RFC 7386 merge patch that turns `current` into `desired` (keys only in current become null)."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch
