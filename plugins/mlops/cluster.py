"""The Kubernetes target's settings, from one place: the Airflow Variable `mlops_kubernetes`.

A JSON object (or the env var AIRFLOW_VAR_MLOPS_KUBERNETES, as the Helm chart sets it) whose keys
override the defaults below; an unknown key or a wrong type is an error naming it. docs/configuration.md
lists every key. Nothing Kubernetes-specific is written into the DAG.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from mlops.settings import REPO, SettingsError, airflow_variable

VARIABLE = "mlops_kubernetes"


@dataclass(frozen=True)
class ClusterSettings:
    kubernetes_conn_id: str = "kubernetes_default"
    namespace: str = "mlops"
    pipeline_image: str = "ghcr.io/mlops-ct/pipeline:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "mlops-pipeline"
    data_pvc: str = "mlops-data"
    data_mount: str = "/data"
    # env_from: MLFLOW_TRACKING_URI (ConfigMap) and MLflow/S3 credentials (Secret).
    mlflow_config_map: str = "mlops-mlflow"
    mlflow_secret: str = "mlflow-s3-credentials"  # the name the compiled KFP pipeline mounts too
    requests: dict = field(default_factory=lambda: {"cpu": "250m", "memory": "512Mi"})
    limits: dict = field(default_factory=lambda: {"cpu": "2", "memory": "2Gi"})
    scratch_size: str = "1Gi"
    run_as_user: int = 1000
    startup_timeout_seconds: int = 600
    pod_poll_interval_seconds: float = 10.0
    deferrable: bool = True
    image_pull_secrets: list = field(default_factory=list)
    node_selector: dict = field(default_factory=dict)
    labels: dict = field(default_factory=lambda: {"app.kubernetes.io/part-of": "mlops-ct"})
    # Training: a KFP run of the compiled pipeline, over the KFP REST API.
    kfp_conn_id: str = "kfp_default"
    kfp_experiment: str = ""  # default: the model name
    kfp_service_account: str = ""  # default: the KFP installation's pipeline runner
    training_pipeline: str = str(REPO / "images" / "pipeline" / "pipelines" / "training.yaml")
    kfp_run_timeout_seconds: int = 7200
    kfp_poll_interval_seconds: float = 15.0
    # Serving: a KServe InferenceService per model, on the project's ClusterServingRuntime.
    serving_namespace: str = "mlops-serving"
    serving_runtime: str = "mlops-mlserving"
    serving_model_format: str = "mlflow-sklearn"
    serving_service_account: str = "mlops-serving"  # carries the storage initializer's S3 credentials
    serving_requests: dict = field(default_factory=lambda: {"cpu": "500m", "memory": "512Mi"})
    serving_limits: dict = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})
    serving_min_replicas: int = 1
    # KServe's deployment mode: Serverless (Knative) or RawDeployment (plain Deployment + Service, no Knative).
    serving_deployment_mode: str = "Serverless"
    # The shared inference host on the Istio gateway (k8s-yaml/istio/gateway.yaml); each model gets a
    # VirtualService there. Empty: no route is made.
    inference_host: str = "inference.mlops.example.com"
    inference_gateway: str = "mlops-inference"
    # The object store behind the tracking server's mlflow-artifacts:/ URIs (its --artifacts-destination).
    artifact_store_root: str = "s3://mlflow"
    serving_ready_timeout_seconds: int = 900
    serving_poll_interval_seconds: float = 5.0
    # Base URL for the smoke test instead of the InferenceService's status.address.url (e.g. the Istio gateway).
    inference_base_url: str = ""


def load_cluster_settings(raw: str | None = None) -> ClusterSettings:
    text = airflow_variable(VARIABLE) if raw is None else raw
    if not text:
        return ClusterSettings()
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"Variable {VARIABLE} is not valid JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise SettingsError(f"Variable {VARIABLE} must be a JSON object, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(ClusterSettings)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise SettingsError(f"Variable {VARIABLE} has unknown key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(fields)}")
    defaults = ClusterSettings()
    for key, value in overrides.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SettingsError(f"Variable {VARIABLE}: {key} must be {expected.__name__}, got {value!r}")
    settings = dataclasses.replace(defaults, **overrides)
    if settings.serving_deployment_mode not in ("Serverless", "RawDeployment"):
        raise SettingsError(f"Variable {VARIABLE}: serving_deployment_mode must be Serverless or RawDeployment, "
                            f"got {settings.serving_deployment_mode!r}")
    return settings
