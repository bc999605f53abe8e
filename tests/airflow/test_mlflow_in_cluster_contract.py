"""The tracking server as k8s-yaml/mlflow/deployment.yaml starts it (the MLflow image, its args, env and
security context, on the emulated cluster), called the way its in-cluster clients call it: with the
pipeline's login (MLflow's basic-auth app), by the Service's DNS name.

MLflow 3 refuses Host headers other than localhost and private IPs unless --allowed-hosts names them
(mlflow/server/security_utils.py); every client here calls it by the Service's DNS name."""

from __future__ import annotations

import httpx
import pytest

from tests.cluster.apiserver import PODS
from tests.cluster.cluster import MLFLOW_LOGIN

API = "/api/2.0/mlflow"
SEARCH = f"{API}/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def mlflow_ip(cluster) -> str:
    return cluster.services.wait_for("mlflow", "mlflow")


@pytest.mark.parametrize("host", ["mlflow.mlflow.svc.cluster.local:5000", "mlflow.mlflow.svc:5000",
                                  "mlflow.mlflow:5000", "mlflow.mlops.example.com"])
def test_every_name_clients_use_is_answered(mlflow_ip, host):
    answer = httpx.get(f"http://{mlflow_ip}:5000{SEARCH}", headers={"Host": host}, auth=MLFLOW_LOGIN)
    assert answer.status_code == 200, answer.text


def test_other_hosts_are_still_refused(mlflow_ip):
    answer = httpx.get(f"http://{mlflow_ip}:5000{SEARCH}", headers={"Host": "attacker.example.com"},
                       auth=MLFLOW_LOGIN)
    assert answer.status_code == 403 and "Invalid Host header" in answer.text


def test_the_server_runs_as_the_manifest_declares(cluster):
    pod = next(p for p in cluster.kube.list(PODS, "mlflow") if p["metadata"]["name"].startswith("mlflow-"))
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mlops-ct/mlflow:3.17.2"
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["restartCount"] == 0


@pytest.mark.parametrize("login", [None, (MLFLOW_LOGIN[0], "not-the-password"), ("someone", MLFLOW_LOGIN[1])],
                         ids=["no login", "wrong password", "unknown user"])
def test_a_caller_without_the_login_is_refused_and_changes_nothing(mlflow_ip, login):
    base, host = f"http://{mlflow_ip}:5000{API}", {"Host": "mlflow.mlflow.svc.cluster.local:5000"}
    created = httpx.post(f"{base}/registered-models/create", json={"name": "planted"}, headers=host, auth=login)
    assert created.status_code == 401, created.text
    assert httpx.get(f"{base}/registered-models/search", headers=host, auth=login).status_code == 401
    found = httpx.get(f"{base}/registered-models/get", params={"name": "planted"}, headers=host, auth=MLFLOW_LOGIN)
    assert found.status_code == 404, found.text


def test_the_admin_is_the_pipelines_login_and_its_password_is_not_in_the_pod_spec(cluster, mlflow_ip):
    """The server made its admin from the Secret the stage pods read (so they log in as it), and the
    manifest names that Secret's keys, never a value."""
    answer = httpx.get(f"http://{mlflow_ip}:5000/api/2.0/mlflow/users/get", params={"username": MLFLOW_LOGIN[0]},
                       headers={"Host": "mlflow.mlflow.svc.cluster.local:5000"}, auth=MLFLOW_LOGIN)
    assert answer.status_code == 200 and answer.json()["user"]["is_admin"] is True, answer.text
    pod = next(p for p in cluster.kube.list(PODS, "mlflow") if p["metadata"]["name"].startswith("mlflow-"))
    assert MLFLOW_LOGIN[1] not in str(pod)
