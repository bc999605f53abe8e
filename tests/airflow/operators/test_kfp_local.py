"""KfpLocalRunOperator: what it makes of `mlpipeline train-local`'s result. The stage here is a script
printing a given result (its real run, kfp.local against a real MLflow, is in test_dag_run.py); the
operator must hand on a TrainingDecision or fail naming what is wrong."""

from __future__ import annotations

import json

import pytest

from mlops.operators.kfp_local import KfpLocalRunOperator

from ..conftest import connect

DECISION = {"run_key": "rk-1", "decision": "promote", "reason": "no champion", "challenger_run_id": "r1",
            "challenger_model_uri": "models:/m-1", "challenger_metrics": {"accuracy": 0.97},
            "challenger_accuracy": 0.97, "kfp_run_id": "local-1"}


@pytest.fixture
def stage_prints(local_target, tmp_path, monkeypatch):
    def prints(result: dict):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        script = bin_dir / "mlpipeline"
        script.write_text(f"#!/bin/sh\necho '{json.dumps(result)}'\n")
        script.chmod(0o755)
        monkeypatch.setenv("AIRFLOW__MLOPS__PIPELINE_BIN", str(bin_dir))
        connect(monkeypatch, mlflow_default="http://127.0.0.1:5000")

    return prints


def operator() -> KfpLocalRunOperator:
    return KfpLocalRunOperator(task_id="train", run_key="rk-1", model_name="iris")


def test_the_result_is_the_decision_with_the_engine(stage_prints):
    stage_prints({**DECISION, "pipeline_root": "/data/runs/rk-1/kfp-local"})
    result = operator().execute({})
    assert result == {**DECISION, "metric": "accuracy", "challenger_score": None, "champion_version": None,
                      "champion_metrics": None, "champion_accuracy": None, "champion_score": None,
                      "improvement": None, "paired_test": None, "mcnemar": None, "bootstrap_ci95": None,
                      "engine": "kfp.local"}
    assert operator().multiple_outputs  # register reads train.output["run_key"]


def test_a_result_off_the_contract_fails_the_task_by_name(stage_prints):
    from mlpipeline.contracts import ContractError

    stage_prints({k: v for k, v in DECISION.items() if k != "challenger_model_uri"})
    with pytest.raises(ContractError, match="training decision without challenger_model_uri"):
        operator().execute({})
