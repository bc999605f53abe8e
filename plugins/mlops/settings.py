"""Every setting of the Airflow side, defined once, where Airflow users look for settings.

- **Options** are Airflow configuration options in two sections, `[mlops]` (both targets) and
  `[mlops_kubernetes]` (the kubernetes target): set them in `airflow.cfg` or as environment variables
  `AIRFLOW__MLOPS__<KEY>` / `AIRFLOW__MLOPS_KUBERNETES__<KEY>` (the Helm chart's `config:` and `env:`).
  The dataclasses below are the one list of them, with types, defaults and docs; docs/configuration.md
  shows the same table (a test keeps the two equal).
- **Endpoints and credentials** are Airflow Connections, whose ids the hooks take as arguments
  (`conn_name_attr`/`default_conn_name`, as in the provider packages): CONNECTIONS below.
- **Facts about the cluster** that the stage pods, the KFP runs and the manifests share (the pipeline
  image, the data claim and its mount path, the MLflow ConfigMap and Secret, the image's uid, the
  tracking server) have no default here: their one source is `k8s-yaml/cluster.env`, which kustomize
  turns into the `mlops-cluster` ConfigMap the Airflow pods read as environment.

A value that is missing where it is required, or that does not parse as its type, raises
SettingsError naming the option and its environment variable: read while the DAG is parsed (the
target, retries, deadlines, the stage pods' settings), that is an import error in the Airflow UI,
never a silent fallback.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from mlops.canary import INCONCLUSIVE_ACTIONS

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("local", "kubernetes")
REQUIRED = object()  # a fact with no default: its value comes from k8s-yaml/cluster.env


# The alert rules' thresholds, each defined once: monitoring/alerts.yml is rendered from
# monitoring/alerts.template.yml with alert_thresholds() (scripts/alert_rules.py, `make k8s-rules`).
DRIFT_LIMIT = 0.5  # the drifted-feature share past which a model is retrained (the DAG's drift_limit Param
#                    default) and FeatureDriftHigh / LiveTrafficDrift fire
# KServe's deployment modes by their v0.20 names (pkg/constants), and the names before v0.20, which its
# defaulting webhook rewrites to them: both are accepted, the current one is what an InferenceService says.
DEPLOYMENT_MODES = {"Knative": "Knative", "Standard": "Standard", "Serverless": "Knative", "RawDeployment": "Standard"}
SERVING_ALERT_ERROR_RATIO = 0.05  # a model's share of server errors over 5 minutes that pages (a canary is
#                                   held to a stricter [mlops] canary_max_error_ratio: it has a stable beside it)


def alert_thresholds() -> dict[str, float]:
    """The values of monitoring/alerts.template.yml's placeholders."""
    p99_ms = {f.name: f.default for f in dataclasses.fields(MlopsSettings)}["canary_max_p99_ms"]
    return {"drift_limit": DRIFT_LIMIT, "serving_error_ratio": SERVING_ALERT_ERROR_RATIO,
            # the stable server is held to the latency budget a canary is judged by
            "serving_p99_seconds": p99_ms / 1000}


class SettingsError(ValueError):
    """A setting is missing or has a value the platform cannot use."""


def option(default, doc: str):
    """A setting: its default (REQUIRED for a cluster fact) and what it is, for docs/configuration.md."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=None if default is REQUIRED else default,
                 metadata={"doc": doc, "required": default is REQUIRED})


@dataclass(frozen=True)
class MlopsSettings:
    """`[mlops]`: both targets."""

    target: str = option("local", "`local` or `kubernetes`; read when the DAG is parsed, to pick each task's "
                                  "operator")
    pipeline_bin: str = option(str(REPO / ".venv" / "pipeline" / "bin"),
                               "local target: the pipeline environment's bin folder (its `mlpipeline`)")
    serving_bin: str = option(str(REPO / ".venv" / "serving" / "bin"),
                              "local target: the serving environment's bin folder (its `mlserving`)")
    datasets_folder: str = option(str(REPO / "datasets"),
                                  "the dataset files, `<name>.yaml` each, read when the DAG file is parsed: one "
                                  "`continuous_training_<name>` DAG per file (the Airflow image sets "
                                  "`/opt/airflow/datasets`, where it ships them)")
    mlflow_ui_url: str = option("", "the MLflow UI as users' browsers reach it, for task links; empty: the "
                                    "`mlflow_default` connection's host")
    task_retries: int = option(2, "retries per task, read when the DAG is parsed")
    task_retry_delay_seconds: float = option(20.0, "the first retry's delay (it doubles per retry)")
    batch_wait_minutes: float = option(360.0, "how long `wait_for_batch` waits before it skips the run")
    batch_poll_seconds: float = option(15.0, "how often the triggerer looks for the batch")
    batch_deadline_minutes: float = option(120.0, "after the run is queued, when a still-running run raises "
                                                  "`BatchLate` (a deadline alert)")
    pull_max_bytes: int = option(1 << 30, "the most one partition pulled from a dataset file's `sql` or `http` "
                                          "source may hold; `pull_batch` refuses a larger one and writes nothing")
    canary_percent: int = option(10, "the default of the DAGs' `canary_percent` Param where the dataset file sets "
                                     "no `canary.percent`: the share of requests a new champion gets first, beside "
                                     "the version it replaces (0: a straight swap)")
    canary_minutes: float = option(10.0, "the default of the DAGs' `canary_minutes` Param where the dataset file "
                                         "sets no `canary.minutes`: how long a healthy canary is watched before it "
                                         "is promoted")
    canary_deadline_minutes: float = option(30.0, "a canary still without `canary_min_requests` requests this "
                                                  "long after it started is inconclusive: `canary_inconclusive` "
                                                  "says what happens")
    canary_inconclusive: str = option("promote", "the default of the DAGs' `canary_inconclusive` Param where the "
                                                 "dataset file sets no `canary.inconclusive`: what an inconclusive "
                                                 "canary (too few requests by the deadline) does. `promote`: the "
                                                 "offline verdict is kept, the new champion serves all the traffic "
                                                 "and `CanaryInconclusive` alerts (a new installation has no "
                                                 "traffic); `rollback`: the version before it serves again")
    canary_min_requests: int = option(100, "canary requests needed before anything is judged")
    canary_max_error_ratio: float = option(0.01, "the canary's share of server errors above which it is rolled "
                                                 "back")
    canary_max_p99_ms: float = option(100.0, "the canary's 99th-percentile predict latency above which it is "
                                             "rolled back")
    canary_max_class_divergence: float = option(0.25, "the total variation distance between the canary's and the "
                                                      "stable version's predicted-class mixes above which it is "
                                                      "rolled back")
    canary_max_prediction_ks: float = option(0.25, "a regression model's canary: the Kolmogorov-Smirnov distance "
                                                   "between its and the stable version's prediction histograms "
                                                   "(the largest gap between their cumulative shares) above which "
                                                   "it is rolled back; at `canary_min_requests` = 100, chance alone "
                                                   "passes 0.25 with p < 0.001 (docs/canary.md)")
    canary_poll_seconds: float = option(15.0, "how often the canary's metrics are read from Prometheus")

    def __post_init__(self):
        object.__setattr__(self, "target", self.target.strip().lower())
        if self.target not in TARGETS:
            raise SettingsError(f"[mlops] target must be one of {', '.join(TARGETS)}, got {self.target!r} "
                                "(AIRFLOW__MLOPS__TARGET)")
        if self.pull_max_bytes < 1:
            raise SettingsError(f"[mlops] pull_max_bytes must be positive, got {self.pull_max_bytes} "
                                "(AIRFLOW__MLOPS__PULL_MAX_BYTES)")
        if not 0 <= self.canary_percent < 100:
            raise SettingsError(f"[mlops] canary_percent must be from 0 to 99, got {self.canary_percent} "
                                "(AIRFLOW__MLOPS__CANARY_PERCENT)")
        if self.canary_inconclusive not in INCONCLUSIVE_ACTIONS:
            raise SettingsError(f"[mlops] canary_inconclusive must be {' or '.join(INCONCLUSIVE_ACTIONS)}, got "
                                f"{self.canary_inconclusive!r} (AIRFLOW__MLOPS__CANARY_INCONCLUSIVE)")

    @property
    def mlpipeline(self) -> Path:
        return Path(self.pipeline_bin) / "mlpipeline"

    @property
    def mlserving(self) -> Path:
        return Path(self.serving_bin) / "mlserving"

    @property
    def retry_delay(self) -> timedelta:
        return timedelta(seconds=self.task_retry_delay_seconds)

    @property
    def datasets(self) -> Path:
        """The dataset folder; one that is missing is a mistake in the settings, not "no models"."""
        folder = Path(self.datasets_folder)
        if not folder.is_dir():
            raise SettingsError(f"[mlops] datasets_folder {self.datasets_folder!r} is not a folder "
                                "(AIRFLOW__MLOPS__DATASETS_FOLDER)")
        return folder

    @property
    def batch_wait(self) -> timedelta:
        return timedelta(minutes=self.batch_wait_minutes)

    @property
    def batch_deadline(self) -> timedelta:
        return timedelta(minutes=self.batch_deadline_minutes)


@dataclass(frozen=True)
class KubernetesSettings:
    """`[mlops_kubernetes]`: the kubernetes target."""

    # -- facts about the cluster (k8s-yaml/cluster.env) ------------------------------------------------
    namespace: str = option(REQUIRED, "namespace of the stage pods (and of the data claim)")
    pipeline_image: str = option(REQUIRED, "the `images/pipeline` image: stage pods and KFP steps")
    data_pvc: str = option(REQUIRED, "the data volume's PersistentVolumeClaim (ReadWriteMany)")
    data_mount: str = option(REQUIRED, "where pods mount it; passed to the stages as `--data-root`")
    run_as_user: int = option(REQUIRED, "uid and gid of the pipeline image's user")
    mlflow_config_map: str = option(REQUIRED, "ConfigMap with `MLFLOW_TRACKING_URI`, read by pods as env")
    mlflow_secret: str = option(REQUIRED, "Secret with MLflow/S3 credentials, read by pods as env (optional "
                                          "in the cluster)")
    service_account: str = option(REQUIRED, "the stage pods' service account (no token mounted)")
    serving_namespace: str = option(REQUIRED, "namespace of the InferenceServices")
    serving_runtime: str = option(REQUIRED, "the project's ClusterServingRuntime")
    serving_service_account: str = option(REQUIRED, "the predictor's service account (carries the storage "
                                                    "initializer's S3 credentials)")
    # -- the stage pods -----------------------------------------------------------------------------------
    kubernetes_conn_id: str = option("kubernetes_default", "Airflow connection to the cluster (in-cluster "
                                                           "config when it names none)")
    image_pull_policy: str = option("IfNotPresent", "image pull policy of the stage pods and KFP steps")
    image_pull_secrets: list = option([], "names of registry Secrets, as a JSON list")
    requests: dict = option({"cpu": "250m", "memory": "512Mi"}, "the stage container's resource requests (JSON)")
    limits: dict = option({"cpu": "2", "memory": "2Gi"}, "and limits (JSON)")
    scratch_size: str = option("1Gi", "size limit of the writable `/tmp` (the root filesystem is read-only)")
    startup_timeout_seconds: int = option(600, "how long a pod may take to start")
    pod_poll_interval_seconds: float = option(10.0, "how often a deferred stage task's trigger polls its pod")
    node_selector: dict = option({}, "node selector of the stage pods and KFP steps (JSON)")
    labels: dict = option({"app.kubernetes.io/part-of": "mlops-ct"},
                          "labels on every pod and InferenceService (JSON; KPO adds dag/task/run labels; "
                          "k8s-yaml/admission/ admits app.kubernetes.io/part-of and mlops-ct/ keys on pods)")
    # -- training: a KFP run over REST ----------------------------------------------------------------------
    kfp_conn_id: str = option("kfp_default", "Airflow connection to the KFP API")
    kfp_experiment: str = option("", "KFP experiment of the runs (created if missing); empty: the model name")
    kfp_service_account: str = option("", "service account of the KFP run's pods; empty: the installation's")
    training_pipeline: str = option(str(REPO / "images" / "pipeline" / "pipelines" / "training.yaml"),
                                    "the compiled pipeline submitted with each run")
    kfp_run_timeout_seconds: int = option(7200, "a run still going after this is terminated, the task fails")
    kfp_poll_interval_seconds: float = option(15.0, "how often the trigger polls the run")
    # -- serving: a KServe InferenceService per model ---------------------------------------------------------
    serving_model_format: str = option("mlflow-sklearn", "the model format the runtime serves")
    serving_requests: dict = option({"cpu": "500m", "memory": "512Mi"}, "the predictor's resource requests (JSON)")
    serving_limits: dict = option({"cpu": "1", "memory": "1Gi"}, "and limits (JSON)")
    serving_min_replicas: int = option(1, "the predictor's minimum replicas")
    serving_deployment_mode: str = option("Knative", "KServe's deployment mode: `Knative` or `Standard` (a "
                                                     "Deployment and a Service); KServe's older names "
                                                     "`Serverless` and `RawDeployment` mean the same")
    inference_host: str = option("inference.mlops.example.com", "the shared inference host on the Istio gateway; "
                                                                "each model gets a VirtualService there (empty: "
                                                                "no route)")
    inference_gateway: str = option("mlops-inference", "the Istio Gateway serving `inference_host`, in "
                                                       "`serving_namespace`")
    artifact_store_root: str = option("s3://mlflow", "the object store behind the tracking server's "
                                                     "`mlflow-artifacts:/` URIs: a version's `storageUri` is its "
                                                     "artifact path there")
    serving_ready_timeout_seconds: int = option(900, "how long a change may take to become Ready before the "
                                                     "deploy rolls back")
    serving_poll_interval_seconds: float = option(5.0, "how often the trigger reads the InferenceService")
    inference_base_url: str = option("", "where the smoke test sends its request (e.g. the gateway); empty: "
                                         "the InferenceService's `status.address.url`")

    def __post_init__(self):
        missing = [f.name for f in dataclasses.fields(self) if f.metadata.get("required") and getattr(self, f.name)
                   in (None, "")]
        if missing:
            raise SettingsError(f"[mlops_kubernetes] has no {', '.join(missing)}: these facts about the cluster come "
                                "from k8s-yaml/cluster.env (the mlops-cluster ConfigMap, read by the Airflow pods as "
                                f"env, e.g. {env_name('mlops_kubernetes', missing[0])})")
        if self.serving_deployment_mode not in DEPLOYMENT_MODES:
            raise SettingsError("[mlops_kubernetes] serving_deployment_mode must be Knative or Standard (or their "
                                f"older names Serverless, RawDeployment), got {self.serving_deployment_mode!r}")


SECTIONS = {"mlops": MlopsSettings, "mlops_kubernetes": KubernetesSettings}

# Endpoints and credentials: conn id -> (type, what the hooks read from it).
CONNECTIONS = {
    "mlops_data": ("fs", "the data volume as the Airflow workers and the triggerer see it: extra `path` "
                         "(the batch sensor, and the local target's stages)"),
    "mlflow_default": ("http", "the MLflow tracking server, reached with MLflow's own client: host (and port); "
                               "login and password = an MLflow user, sent as HTTP Basic "
                               "(`MLFLOW_TRACKING_USERNAME`/`_PASSWORD` for the local stages; locally the "
                               "pipeline's own user, not an admin, made at MLflow's first start), or a password "
                               "alone = a bearer token (`MLFLOW_TRACKING_TOKEN`); extras `insecure_tls`, "
                               "`server_cert_path`, `client_cert_path`; retries are MLflow's "
                               "(`MLFLOW_HTTP_REQUEST_*` in the workers' environment). Type `http` or `mlflow`"),
    "mlserving_default": ("http", "local target: where clients reach every model (host and port, "
                                  "`/v2/models/<model_name>/`): the router (nginx) listens there; each model's "
                                  "stable and canary server get two ports of their own, the next ones of the plan "
                                  "(port + 1 + 2 x the model's place, in the order models are first deployed)"),
    "alertmanager_default": ("http", "Alertmanager's API, for the alerts"),
    "pushgateway_default": ("http", "the Prometheus Pushgateway, for the run metrics"),
    "prometheus_default": ("http", "the Prometheus that scrapes the model servers, for live drift (detect reads "
                                   "it; without it live drift is off) and the canary's verdict (a canary "
                                   "cannot be judged without it)"),
    "kfp_default": ("http", "kubernetes target: the KFP API; password = bearer token, or extra `token_path`; "
                            "extra `namespace`, `ui_url`"),
    "kubernetes_default": ("kubernetes", "kubernetes target: the cluster (the cncf-kubernetes provider's)"),
}


def markdown_tables() -> str:
    """The options and connections as docs/configuration.md shows them (`make configuration-docs`
    rewrites that part of it; a test checks it is current)."""
    def shown(f) -> str:
        if f.metadata.get("required"):
            return "from `k8s-yaml/cluster.env`"
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(value, str) and value.startswith(str(REPO)):
            return f"`<repo>{value.removeprefix(str(REPO))}`"
        return "(empty)" if value == "" else f"`{json.dumps(value) if isinstance(value, (dict, list)) else value}`"

    lines = []
    for section, cls in SECTIONS.items():
        lines += [f"### `[{section}]` ({cls.__doc__.split(': ', 1)[1].rstrip('.')})", "",
                  "| option | default | what it is |", "|---|---|---|"]
        lines += [f"| `[{section}] {f.name}` | {shown(f)} | {f.metadata['doc']} |" for f in dataclasses.fields(cls)]
        lines.append("")
    lines += ["### Connections", "", "| conn id | type | what it is |", "|---|---|---|"]
    lines += [f"| `{conn_id}` | `{kind}` | {doc} |" for conn_id, (kind, doc) in CONNECTIONS.items()]
    return "\n".join(lines) + "\n"


def env_name(section: str, key: str) -> str:
    return f"AIRFLOW__{section.upper()}__{key.upper()}"


def _parse(section: str, name: str, kind: type, raw: str):
    where = f"[{section}] {name} ({env_name(section, name)})"
    try:
        if kind is bool:
            if raw.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.strip().lower() in ("true", "1")
        if kind in (dict, list):
            value = json.loads(raw)
            if not isinstance(value, kind):
                raise ValueError(f"{raw!r} is not a JSON {'object' if kind is dict else 'list'}")
            return value
        return kind(raw.strip())
    except ValueError as exc:
        raise SettingsError(f"{where} must be {kind.__name__}, got {raw!r}: {exc}") from None


def settings_from(cls, section: str, raw: dict[str, str], **overrides):
    """The settings of a section from their raw text values (as airflow.cfg or the env holds them)."""
    hints = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}
    values = {f.name: _parse(section, f.name, hints[f.type], raw[f.name]) for f in dataclasses.fields(cls)
              if f.name in raw}
    return cls(**{**values, **overrides})


def _read(cls, section: str):
    from airflow.sdk import conf  # the SDK's own config parser: airflow.cfg plus AIRFLOW__* env vars

    raw = {f.name: conf.get(section, f.name, fallback=None) for f in dataclasses.fields(cls)}
    return settings_from(cls, section, {name: value for name, value in raw.items() if value is not None})


def mlops_settings() -> MlopsSettings:
    return _read(MlopsSettings, "mlops")


def kubernetes_settings() -> KubernetesSettings:
    return _read(KubernetesSettings, "mlops_kubernetes")


def target() -> str:
    """`local` or `kubernetes`, from `[mlops] target`; read by each mlops.tasks call not given the DAG file's
    settings' target, so this one option alone (checked as MlopsSettings checks it), not the whole section."""
    from airflow.sdk import conf

    raw = conf.get("mlops", "target", fallback=None)
    return settings_from(MlopsSettings, "mlops", {} if raw is None else {"target": raw}).target
