"""The tracking server as k8s-yaml/mlflow/deployment.yaml starts it (the MLflow image, its args, env and
security context, on the emulated cluster), called the way its in-cluster clients call it.

MLflow 3 refuses Host headers other than localhost and private IPs unless --allowed-hosts names them
(mlflow/server/security_utils.py); every client here calls it by the Service's DNS name."""

from __future__ import annotations

import httpx
import pytest

from tests.cluster.apiserver import PODS

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def mlflow_ip(cluster) -> str:
    return cluster.services.wait_for("mlops", "mlflow")


@pytest.mark.parametrize("host", ["mlflow.mlops.svc.cluster.local:5000", "mlflow.mlops.svc:5000", "mlflow.mlops:5000",
                                  "mlflow:5000", "mlflow.mlops.example.com"])
def test_every_name_clients_use_is_answered(mlflow_ip, host):
    answer = httpx.get(f"http://{mlflow_ip}:5000{SEARCH}", headers={"Host": host})
    assert answer.status_code == 200, answer.text


def test_other_hosts_are_still_refused(mlflow_ip):
    answer = httpx.get(f"http://{mlflow_ip}:5000{SEARCH}", headers={"Host": "attacker.example.com"})
    assert answer.status_code == 403 and "Invalid Host header" in answer.text


def test_the_server_runs_as_the_manifest_declares(cluster):
    pod = next(p for p in cluster.kube.list(PODS, "mlops") if p["metadata"]["name"].startswith("mlflow-"))
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mlops-ct/mlflow:3.17.2"
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["restartCount"] == 0
