"""The emulated cluster, assembled: API server, pod network and Services, kubelet, the Deployment and
KServe controllers, an S3 store that checks each key's policy, and the project's own objects from
k8s-yaml/ installed as `kubectl apply -k k8s-yaml/` would (with test values in the Secrets the guide
has users write). MLflow then runs as the pod of k8s-yaml/mlflow/deployment.yaml, with its login, and
every client in the cluster reaches it as http://mlflow.mlflow.svc.cluster.local:5000."""

from __future__ import annotations

import base64
import configparser
import contextlib
import io
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from mlops.manifests import cluster_env
from mlpipeline.contracts import MLFLOW_CLIENT_LABEL
from tests.support import REPO

from .apiserver import JOBS, KINDS, PODS, KubeEmulator
from .kserve import KServeController
from .kubelet import DockerKubelet, describe
from .netpol import Source
from .network import NETWORK, PodNetwork, Services, resolving_cluster_names
from .storage import REGION, Store, object_store, store_service
from .workloads import DeploymentController, JobController

K8S = REPO / "k8s-yaml"
MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"
# The pipeline's MLflow login (the mlflow-s3-credentials Secret), a user the mlflow-pipeline-user Job
# makes, and MLflow's admin (the mlflow-admin Secret), which the tracking server makes at its first
# start; made anew for each test process.
MLFLOW_LOGIN = ("pipeline", secrets.token_urlsafe(18))
MLFLOW_ADMIN = ("admin", secrets.token_urlsafe(18))
MLFLOW_CONNECTION = MLFLOW_URI.replace("://", f"://{MLFLOW_LOGIN[0]}:{MLFLOW_LOGIN[1]}@", 1)
# This process plays Airflow: the labels chart 1.22's pod-template-file gives its task pods (release
# `airflow`, installed into mlops).
AIRFLOW_TASK_POD = Source("mlops", {"tier": "airflow", "component": "worker", "release": "airflow"})

def airflow_identity(component: str) -> str:
    """The API user of an Airflow component's pods: its service account in helm-values/airflow.yaml
    (`workers.kubernetes` for the task pods, `triggerer`), in mlops, where the chart installs Airflow."""
    values = yaml.safe_load((REPO / "helm-values" / "airflow.yaml").read_text())
    section = values["workers"]["kubernetes"] if component == "worker" else values[component]
    return f"system:serviceaccount:mlops:{section['serviceAccount']['name']}"


STORAGE_INITIALIZER = "mlops-ct/kserve-storage-initializer:0.21.0"
PIPELINE_IMAGE = "ghcr.io/mlops-ct/pipeline:0.1.0"


def kustomization_objects() -> list[dict]:
    """The objects `kubectl kustomize k8s-yaml/` renders, without the generated Secrets."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    labels = {k: v for entry in kustomization.get("labels") or [] for k, v in entry["pairs"].items()}
    found = []
    for resource in kustomization["resources"]:
        for obj in yaml.safe_load_all((K8S / resource).read_text()):
            if obj:
                obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), **labels}
                found.append(obj)
    return found


def generated_secrets(values: dict[str, dict[str, str]]) -> list[dict]:
    """The secretGenerator's Secrets, with `values[name]` in place of the env files users create."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    secrets = []
    for entry in kustomization["secretGenerator"]:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values[entry["name"]].items()}
        secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                        "metadata": {"name": entry["name"], "namespace": entry["namespace"],
                                     "annotations": (entry.get("options") or {}).get("annotations") or {}}})
    return secrets


def generated_config_maps() -> list[dict]:
    """The configMapGenerator's ConfigMaps (mlops-cluster from cluster.env)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "data": {k: v for env in entry.get("envs") or [] for k, v in cluster_env(K8S / env).items()},
             "metadata": {"name": entry["name"], "namespace": entry["namespace"]}}
            for entry in kustomization["configMapGenerator"]]


def auth_config(database_uri: str) -> str:
    """The deploy guide's basic_auth.ini (secrets/mlflow-auth.ini.example) with this database."""
    config = configparser.ConfigParser()
    config.read_string((K8S / "secrets" / "mlflow-auth.ini.example").read_text())
    config["mlflow"]["database_uri"] = database_uri
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


@dataclass
class EmulatedCluster:
    root: Path
    serving_mode: str = "Serverless"
    network_name: str = NETWORK
    kube: KubeEmulator = field(init=False)
    services: Services = field(init=False)
    kubelet: DockerKubelet = field(init=False)
    kserve: KServeController = field(init=False)
    store: Store = field(init=False)
    _stack: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __enter__(self) -> EmulatedCluster:
        try:
            return self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> EmulatedCluster:
        stack = self._stack
        network = PodNetwork().ensure()
        self.kube = stack.enter_context(KubeEmulator())
        self.services = stack.enter_context(Services(self.kube, host_source=AIRFLOW_TASK_POD))
        self.kubelet = stack.enter_context(DockerKubelet(self.kube, network, self.services, self.root / "nodes"))
        stack.enter_context(DeploymentController(self.kube))
        stack.enter_context(JobController(self.kube))
        self.kserve = stack.enter_context(KServeController(self.kube, STORAGE_INITIALIZER,
                                                          default_mode=self.serving_mode))
        self.store = stack.enter_context(object_store(self.root))
        stack.enter_context(resolving_cluster_names(self.services))
        port = int(self.store.url.rsplit(":", 1)[1])

        def s3(key: tuple[str, str]) -> dict[str, str]:
            return {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1], "AWS_DEFAULT_REGION": REGION}

        pipeline = {**s3(self.store.pipeline), "MLFLOW_S3_ENDPOINT_URL": "http://minio.mlops.svc.cluster.local:9000",
                    "MLFLOW_TRACKING_USERNAME": MLFLOW_LOGIN[0], "MLFLOW_TRACKING_PASSWORD": MLFLOW_LOGIN[1]}
        # The tracking server's databases: SQLite in its scratch volume stands in for Postgres here.
        backend = {"MLFLOW_BACKEND_STORE_URI": "sqlite:////tmp/mlflow.db",
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
                   "basic_auth.ini": auth_config("sqlite:////tmp/mlflow-auth.db")}
        objects = [*store_service("mlops", port), *kustomization_objects(), *generated_config_maps(),
                   *generated_secrets({"mlflow-backend": backend, "mlflow-s3-credentials": pipeline,
                                       "mlops-serving-s3": s3(self.store.serving),
                                       "mlflow-admin": {"MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_ADMIN[0],
                                                        "MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_ADMIN[1]}})]
        for obj in objects:
            if obj["kind"] in KINDS:
                self.kube.create(obj)
        self.wait_http(f"{MLFLOW_URI}/health", "mlflow", timeout=180)
        # The Job itself waits up to 300 s for the server (images/mlflow/pipeline_user.py, WAIT_SECONDS) and
        # imports MLflow under a 0.5-CPU limit: a shorter wait here failed a loaded CI run with the Job active.
        self.wait_job("mlflow", "mlflow-pipeline-user", timeout=360)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def wait_http(self, url: str, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pods = "; ".join(describe(p) for p in self.kube.list(PODS))
                raise TimeoutError(f"{what} did not answer at {url} within {timeout} s; pods: {pods}")
            time.sleep(0.5)

    def wait_job(self, namespace: str, name: str, timeout: float) -> dict:
        """The Job once Complete; an error with its pods' logs if it failed or did not finish."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.kube.stored(JOBS, namespace, name)
            done = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c["status"] == "True"}
            if "Complete" in done:
                return job
            if "Failed" in done or time.monotonic() > deadline:
                raise RuntimeError(f"Job {namespace}/{name} did not complete: {job.get('status')}\n"
                                   f"{self.pod_logs(namespace, name)[-3000:]}")
            time.sleep(0.5)

    def pod_logs(self, namespace: str, prefix: str) -> str:
        return "\n".join(f"--- {p['metadata']['name']}\n" + self.kubelet.logs(namespace, p["metadata"]["name"], None)
                         for p in self.kube.list(PODS, namespace) if p["metadata"]["name"].startswith(prefix))

    def run_pod(self, name: str, args: list[str], namespace: str = "mlops", timeout: float = 600,
                labels: dict[str, str] | None = None, command: list[str] | None = None) -> dict:
        """A one-off pod of the pipeline image on the data volume with the MLflow settings, as
        docs/deploy.md lands a batch with `kubectl run`; returns the finished pod (Succeeded or Failed)."""
        self.kube.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "serviceAccountName": "mlops-pipeline",
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "mlops-data"}}],
                     "containers": [{"name": name, "image": PIPELINE_IMAGE, "args": args,
                                     **({"command": command} if command else {}),
                                     "envFrom": [{"configMapRef": {"name": "mlops-mlflow"}},
                                                 {"secretRef": {"name": "mlflow-s3-credentials"}}],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}})
        return self.finished_pod(namespace, name, timeout)

    def finished_pod(self, namespace: str, name: str, timeout: float) -> dict:
        """The pod once it has Succeeded or Failed."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.kube.stored(PODS, namespace, name)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return pod
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {namespace}/{name} did not finish: {describe(pod)}")
            time.sleep(0.3)

    def run_python(self, name: str, namespace: str, script: str, labels: dict[str, str] | None = None,
                   secret: str | None = None, image: str = PIPELINE_IMAGE, timeout: float = 120) -> tuple[str, str]:
        """A pod of `image` that runs `script` (with `secret`'s keys as env, when named) and no volume:
        (its final phase, its log)."""
        container = {"name": "script", "image": image, "command": ["python", "-c", script],
                     **({"envFrom": [{"secretRef": {"name": secret}}]} if secret else {})}
        self.kube.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000}, "containers": [container]}})
        phase = self.finished_pod(namespace, name, timeout)["status"]["phase"]
        return phase, self.kubelet.logs(namespace, name, None)

    def data_volume(self, namespace: str = "mlops", claim: str = "mlops-data") -> Path:
        """Where the claim's files are, for the Airflow side's batch sensor (which mounts it read-only)."""
        return self.kubelet.root / "pvc" / namespace / claim

    def stage(self, name: str, stage: str, **options) -> dict:
        """A pipeline stage run as a one-off pod; its JSON result, or AssertionError with its log."""
        args = [stage, "--data-root", "/data"] if stage not in ("rollback", "champion-at") else [stage]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        pod = self.run_pod(name, args, labels=dict([MLFLOW_CLIENT_LABEL]))  # as the DAG's stage pods
        log = self.kubelet.logs("mlops", name, None)
        assert pod["status"]["phase"] == "Succeeded", log[-3000:]
        # The stage's one JSON line (stdout), among its log lines (stderr), in the pod's log.
        for line in reversed(log.splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(line)
        raise AssertionError(f"stage {stage} printed no JSON result: {log[-3000:]}")
