"""The Airflow layer's tests run in the Airflow environment, with a throwaway AIRFLOW_HOME and
the repository's plugins/ on the path (as Airflow puts them)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import support
from tests.airflow.dag_test import deadline_alerts_decoded

REPO = Path(__file__).resolve().parents[2]
PIPELINE_BIN = support.PIPELINE_BIN

os.environ.setdefault("AIRFLOW_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"airflow-tests-{os.getpid()}"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__MLOPS__TASK_RETRIES", "0")  # dag.test() would sit out every retry delay
# Deploys go straight unless a test sends traffic (tests/airflow/test_canary_rollout.py): a canary without
# requests is never promoted.
os.environ.setdefault("AIRFLOW__MLOPS__CANARY_PERCENT", "0")
os.environ["AIRFLOW__MLOPS__PIPELINE_BIN"] = str(PIPELINE_BIN)
os.environ["AIRFLOW__MLOPS__SERVING_BIN"] = str(support.SERVING_BIN)
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
sys.path.insert(0, str(REPO / "plugins"))


def connect(monkeypatch, **connections: str) -> None:
    """Airflow connections, as the deployments set them: AIRFLOW_CONN_<ID> (a URI or JSON)."""
    for conn_id, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)


def data_volume(path) -> str:
    """The `mlops_data` connection for a data volume at path."""
    return json.dumps({"conn_type": "fs", "extra": {"path": str(path)}})


def kubernetes_target(monkeypatch, **options) -> None:
    """The kubernetes target with the facts of k8s-yaml/cluster.env (as its ConfigMap sets them) and
    `[mlops_kubernetes]` overrides."""
    from mlops.manifests import cluster_env

    for name, value in {**cluster_env(), **{f"AIRFLOW__MLOPS_KUBERNETES__{k.upper()}": v
                                           for k, v in options.items()}}.items():
        monkeypatch.setenv(name, value if isinstance(value, str) else json.dumps(value))


def cluster_settings(**overrides):
    """KubernetesSettings with cluster.env's facts (what the Airflow pods read) and overrides."""
    from mlops.manifests import cluster_settings

    return cluster_settings(**overrides)


@pytest.fixture
def local_target(tmp_path, monkeypatch) -> Path:
    """The local target on a fresh data volume."""
    root = tmp_path / "volume"
    root.mkdir()
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "local")
    connect(monkeypatch, mlops_data=data_volume(root))
    return root


@pytest.fixture
def datasets(tmp_path, monkeypatch) -> Path:
    """An empty dataset folder of the test's as `[mlops] datasets_folder` (write files with
    dag_test.dataset_file); the DAG file then defines one DAG per file in it."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    monkeypatch.setenv("AIRFLOW__MLOPS__DATASETS_FOLDER", str(folder))
    return folder


@pytest.fixture(scope="session")
def airflow_db():
    """An initialised Airflow metadata DB (dag.test() needs one), once per test session."""
    import subprocess

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=300)
    with deadline_alerts_decoded():
        yield


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """A real MLflow server, Alertmanager and Pushgateway."""
    root = tmp_path_factory.mktemp("services")
    with support.mlflow_server(root) as mlflow_uri, support.alertmanager(root) as am, \
            support.pushgateway(root) as pgw:
        yield {"mlflow": mlflow_uri, "alertmanager": am, "pushgateway": pgw}


@pytest.fixture
def monitoring(services, monkeypatch):
    """The services as the connections the hooks read: mlflow_default, alertmanager_default,
    pushgateway_default."""
    connect(monkeypatch, mlflow_default=services["mlflow"], alertmanager_default=services["alertmanager"],
            pushgateway_default=services["pushgateway"])
    return services


@pytest.fixture(scope="module")
def stack(airflow_db, services):
    """The metadata DB and the services (dag.test() runs)."""
    return services


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The emulated cluster (tests/cluster): pods run as containers of the project's images, MLflow as
    the pod of k8s-yaml/mlflow/deployment.yaml. One per session: it takes ~20 s to start."""
    from tests.cluster.cluster import EmulatedCluster

    with EmulatedCluster(tmp_path_factory.mktemp("cluster")) as emulated:
        yield emulated
