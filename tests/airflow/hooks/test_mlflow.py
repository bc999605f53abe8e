"""MlflowHook against a real MLflow tracking server: the champion, a logged model's files, the decision
a training run recorded (mlpipeline.contracts), what a local stage needs to reach the same server."""

from __future__ import annotations

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
    answer.raise_for_status()
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
