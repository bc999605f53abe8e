"""The tracking server as k8s-yaml/mlflow/deployment.yaml starts it (the MLflow image, its args, env and
security context, on the emulated cluster), called the way its in-cluster clients call it: with the
pipeline's login (MLflow's basic-auth app: a user of its own, which the Job of
k8s-yaml/mlflow/pipeline-user-job.yaml made with the admin's login), by the Service's DNS name.

MLflow 3 refuses Host headers other than localhost and private IPs unless --allowed-hosts names them
(mlflow/server/security_utils.py); every client here calls it by the Service's DNS name."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.cluster.apiserver import JOBS, PODS, SECRETS
from tests.cluster.cluster import MLFLOW_ADMIN, MLFLOW_LOGIN

API = "/api/2.0/mlflow"
SEARCH = f"{API}/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def mlflow_ip(cluster) -> str:
    return cluster.services.wait_for("mlflow", "mlflow")


def server_pod(cluster) -> dict:
    return next(p for p in cluster.kube.list(PODS, "mlflow")
                if p["metadata"]["labels"].get("app.kubernetes.io/name") == "mlflow")


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
    pod = server_pod(cluster)
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


def test_the_pipelines_login_is_a_user_of_its_own_and_no_password_is_in_a_pod_spec(cluster, mlflow_ip):
    """The server made its admin from the mlflow-admin Secret, which stays in its namespace; the Job made
    the pipeline's login from the Secret the stage pods read: not an admin, so it cannot manage users.
    The manifests name the Secrets' keys, never a value."""
    base, host = f"http://{mlflow_ip}:5000{API}", {"Host": "mlflow.mlflow.svc.cluster.local:5000"}
    for (user, _), admin in ((MLFLOW_ADMIN, True), (MLFLOW_LOGIN, False)):
        answer = httpx.get(f"{base}/users/get", params={"username": user}, headers=host, auth=MLFLOW_ADMIN)
        assert answer.status_code == 200 and answer.json()["user"]["is_admin"] is admin, answer.text
    made = httpx.post(f"{base}/users/create", json={"username": "mallory", "password": "x" * 24}, headers=host,
                      auth=MLFLOW_LOGIN)
    assert made.status_code == 403, made.text
    assert httpx.get(f"{base}/users/get", params={"username": "mallory"}, headers=host,
                     auth=MLFLOW_ADMIN).status_code == 404
    job = cluster.kube.stored(JOBS, "mlflow", "mlflow-pipeline-user")
    assert job["status"]["succeeded"] == 1 and job["status"]["failed"] == 0
    pods = [server_pod(cluster), *(p for p in cluster.kube.list(PODS, "mlflow")
                                   if p["metadata"]["labels"].get("job-name") == "mlflow-pipeline-user")]
    assert len(pods) == 2 and not any(secret in str(pods) for secret in (MLFLOW_LOGIN[1], MLFLOW_ADMIN[1]))
    # The admin's login is nowhere the pipeline's pods can mount it.
    assert not [s for s in cluster.kube.list(SECRETS, "mlops") if MLFLOW_ADMIN[1] in str(decoded(s))]


def decoded(secret: dict) -> dict:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
