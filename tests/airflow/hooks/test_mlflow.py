"""MlflowHook against a real MLflow tracking server: the champion, a logged model's files, the decision
a training run recorded (mlpipeline.contracts), what a local stage needs to reach the same server."""

from __future__ import annotations

import json

import httpx
import pytest

from mlops.hooks.mlflow import MlflowError, MlflowHook
from tests import support

from ..conftest import connect


@pytest.fixture
def mlflow(monitoring):
    return monitoring["mlflow"]


def api(mlflow: str, path: str, body: dict) -> dict:
    answer = httpx.post(f"{mlflow}/api/2.0/mlflow/{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_champion_is_what_the_alias_names(mlflow):
    hook = MlflowHook()
    assert hook.champion("iris-nothing") is None  # no such model
    api(mlflow, "registered-models/create", {"name": "iris-hook"})
    assert hook.champion("iris-hook") is None  # no alias yet
    for source in ("s3://mlflow/1", "s3://mlflow/2"):
        api(mlflow, "model-versions/create", {"name": "iris-hook", "source": source, "run_id": "r"})
    api(mlflow, "registered-models/alias", {"name": "iris-hook", "alias": "champion", "version": "2"})
    assert hook.champion("iris-hook") == {"version": "2", "run_id": "r", "source": "s3://mlflow/2"}
    assert hook.artifact_location("s3://mlflow/2") == "s3://mlflow/2"  # not a logged model: the source itself


def test_the_training_decision_is_the_recorded_contract(mlflow):
    from mlpipeline.contracts import TrainingDecision

    hook = MlflowHook()
    assert hook.training_decision("iris-undecided", "rk-1") is None  # no experiment
    experiment = api(mlflow, "experiments/create", {"name": "iris-decided"})["experiment_id"]
    run = api(mlflow, "runs/create", {"experiment_id": experiment, "tags": [
        {"key": "run_key", "value": "rk-1"}, {"key": "stage", "value": "train"}]})["run"]["info"]["run_id"]
    assert hook.training_decision("iris-decided", "rk-1") is None  # trained, not decided yet
    decision = TrainingDecision(run_key="rk-1", decision="reject", reason="not significant", challenger_run_id=run,
                                challenger_model_uri="models:/m-1", challenger_metrics={"accuracy": 0.9},
                                challenger_accuracy=0.9, champion_version="4", mcnemar={"pvalue": 0.3})
    for key, value in decision.tags().items():
        api(mlflow, "runs/set-tag", {"run_id": run, "key": key, "value": value})
    assert hook.training_decision("iris-decided", "rk-1") == decision
    assert hook.training_decision("iris-decided", "rk-other") is None


def test_a_local_stage_reaches_the_same_server_with_the_same_token(monkeypatch):
    connect(monkeypatch, mlflow_default='{"conn_type": "http", "host": "http://mlflow.test:5000", "password": "t"}')
    assert MlflowHook().client_env() == {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000", "MLFLOW_TRACKING_TOKEN": "t"}
    assert MlflowHook().ui_url == "http://mlflow.test:5000"
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert MlflowHook().ui_url == "https://mlflow.example.com"


def test_a_server_that_is_down_is_named(monkeypatch):
    down = f"http://127.0.0.1:{support.free_port()}"
    with pytest.raises(MlflowError, match=f"MLflow at {down} did not answer after 2 attempt"):
        MlflowHook(base_url=down, retries=2, backoff_seconds=0.01).champion("iris")


def logged_model(mlflow: str, name: str, files: dict[str, bytes]) -> str:
    """A model version whose files are a logged model's, uploaded through the server's artifact proxy as
    MLflow's client uploads them (PUT /api/2.0/mlflow-artifacts/artifacts/<path>); its version number."""
    experiment = api(mlflow, "experiments/create", {"name": f"{name}-experiment"})["experiment_id"]
    model = api(mlflow, "logged-models", {"experiment_id": experiment, "name": "model"})["model"]["info"]
    root = model["artifact_uri"].removeprefix("mlflow-artifacts:")
    assert model["artifact_uri"].startswith("mlflow-artifacts:/"), model["artifact_uri"]
    for relative, content in files.items():
        httpx.put(f"{mlflow}/api/2.0/mlflow-artifacts/artifacts{root}/{relative}", content=content).raise_for_status()
    api(mlflow, "registered-models/create", {"name": name})
    return api(mlflow, "model-versions/create", {"name": name, "source": f"models:/{model['model_id']}",
                                                 "model_id": model["model_id"], "run_id": "run-7"}
               )["model_version"]["version"]


def test_a_version_is_downloaded_whole_through_the_artifact_proxy(mlflow, tmp_path):
    files = {"MLmodel": b"flavors: {}\n", "model.skops": bytes(range(256)) * 40, "extra/nested/notes.txt": b"n"}
    version = logged_model(mlflow, "iris-proxied", files)
    destination = tmp_path / "serving" / "v1"

    assert MlflowHook().download_version("iris-proxied", version, destination) == destination
    assert {str(p.relative_to(destination)): p.read_bytes() for p in destination.rglob("*") if p.is_file()} == {
        **files, "registry.json": json.dumps({"name": "iris-proxied", "version": version, "run_id": "run-7",
                                              "model_uri": f"models:/iris-proxied/{version}"}).encode()}
    assert [p.name for p in destination.parent.iterdir()] == ["v1"]  # no staging folder left behind
    # What mlserving reads to name the version it serves
    assert json.loads((destination / "registry.json").read_text())["version"] == version

    # A directory that already holds the version is kept as it is (the deploy serves what is there).
    (destination / "model.skops").write_bytes(b"kept")
    assert MlflowHook().download_version("iris-proxied", version, destination) == destination
    assert (destination / "model.skops").read_bytes() == b"kept"


def test_a_version_without_mlmodel_is_refused_and_the_served_copy_kept(mlflow, tmp_path):
    version = logged_model(mlflow, "iris-no-mlmodel", {"model.skops": b"x"})
    destination = tmp_path / "v1"
    destination.mkdir()
    (destination / "MLmodel").write_text("the copy being served")
    with pytest.raises(MlflowError, match=f"iris-no-mlmodel v{version} has no MLmodel at mlflow-artifacts:/"):
        MlflowHook().download_version("iris-no-mlmodel", version, destination)
    assert [p.name for p in destination.iterdir()] == ["MLmodel"]
    assert (destination / "MLmodel").read_text() == "the copy being served"
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_files_in_a_store_the_server_does_not_proxy_are_left_to_an_mlflow_client(mlflow, tmp_path):
    api(mlflow, "registered-models/create", {"name": "iris-in-s3"})
    api(mlflow, "model-versions/create", {"name": "iris-in-s3", "source": "s3://mlflow/3/model", "run_id": "r"})
    assert MlflowHook().download_version("iris-in-s3", "1", tmp_path / "v1") is None
    assert not list(tmp_path.iterdir())
