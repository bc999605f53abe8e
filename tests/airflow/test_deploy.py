"""LocalDeployOperator end to end: real MLflow registry, real pipeline stages, a real mlserving process."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from mlops.hooks.stage import StageFailed, StageHook
from mlops.operators.deploy import LocalDeployOperator
from tests import support

from .registry_setup import train_and_register

MODEL = "iris-deploy"


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory):
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture
def deploy_env(local_target, registry_uri, monkeypatch):
    port = support.free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)
    monkeypatch.setenv("MLOPS_SERVING_PORT", str(port))
    monkeypatch.setenv("MLOPS_SERVING_BIN", str(support.SERVING_BIN))
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": registry_uri})
    yield stages, f"http://127.0.0.1:{port}", local_target
    pidfile = local_target / "serving" / "mlserving.pid"
    if pidfile.exists():
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)


def served(url) -> str:
    return httpx.get(f"{url}/v2/models/{MODEL}").json()["parameters"]["registry_version"]


@pytest.mark.timeout(400)
def test_deploy_swap_and_roll_back(deploy_env):
    stages, url, root = deploy_env
    deploy = LocalDeployOperator(task_id="deploy", model_name=MODEL)
    with pytest.raises(StageFailed, match="iris-deploy has no version with alias 'champion'"):
        deploy.execute({})  # nothing registered yet: a clear error, and no server started
    assert not (root / "serving" / "mlserving.pid").exists()

    assert train_and_register(stages, root, MODEL, "2026-11-01", "none", 1)["champion_version"] == "1"
    first = deploy.execute({})
    assert first["changed"] and first["version"] == "1" and first["previous_version"] is None
    assert first["smoke_test"]["model_version"] == "1" and served(url) == "1"
    # The task's links: the registry version in MLflow's UI and the served model's metadata.
    assert deploy.link_urls["MLflow model version"].endswith(f"/#/models/{MODEL}/versions/1")
    assert httpx.get(deploy.link_urls["Serving endpoint"]).json()["parameters"]["registry_version"] == "1"
    assert not deploy.execute({})["changed"]  # the same champion is not redeployed

    assert train_and_register(stages, root, MODEL, "2026-11-02", "concept", 2)["champion_version"] == "2"
    second = deploy.execute({})
    assert second["version"] == "2" and second["previous_version"] == "1" and served(url) == "2"

    # The champion moves to a version whose files are broken: the swap is refused, the alias
    # goes back to v2 (recorded as a rollback) and the server never stops serving v2.
    stages.run("rollback", {"model_name": MODEL, "to_version": "1", "reason": "test: serve v1 again"})
    for skops in (root / "serving" / MODEL / "v1").glob("*.skops"):
        skops.write_bytes(b"corrupted")
    with pytest.raises(RuntimeError, match="deploy of iris-deploy v1 failed: not loaded, still serving version 2"):
        deploy.execute({})
    assert served(url) == "2"
    history = stages.run("champion-at", {"model_name": MODEL})
    assert history["champion_version"] == "2"
    assert history["history"][-1]["event"] == "rollback" and "deploy of v1 failed" in history["history"][-1]["reason"]
