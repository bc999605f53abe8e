"""The task logs a user reads to see why a run branched start each message with a headline the UI's log panel
shows whole (at most HEADLINE_MAX characters), the details on the lines below: decide_retraining,
check_decision and deploy (the report's is in tests/airflow/operators/test_report.py)."""

from __future__ import annotations

import logging

import pytest
import structlog
from airflow.sdk.exceptions import TaskDeferred

from mlops.branch_callables import choose_promotion, choose_retraining
from mlops.log_lines import HEADLINE_MAX, message

MODEL = "a-model-name-as-long-as-a-dns-label-allows-sixty-three-characters"  # the longest model_name
FEATURES = [f"feature_number_{i}" for i in range(40)]
PARAMS = {"metric_threshold": 0.85, "drift_limit": 0.5, "force_retrain": True}


def headlines(text: str) -> str:
    return text.splitlines()[0]


def test_a_message_is_a_headline_then_its_details_one_per_line():
    assert message("training decided reject", "no gain") == "training decided reject: no gain"
    long = "x" * HEADLINE_MAX
    assert message("training decided reject", long, details=["at 0.85", None]) == (
        f"training decided reject\n  {long}\n  at 0.85")
    assert message("retraining", ["a", "", "b"]) == "retraining: a; b"
    assert message("retraining", ["a" * 60, "b" * 60]) == f"retraining\n  {'a' * 60}\n  {'b' * 60}"


def test_the_branch_tasks_logs_start_with_a_short_headline(caplog):
    """Every reason at once (the live drift one names each drifted feature), and a long training reason: each
    reason and the whole training reason are on the lines below the headline."""
    caplog.set_level(logging.INFO, logger="mlops.branch_callables")
    detect = {"champion": {"version": "12"}, "fresh_metrics": {"balanced_accuracy": 0.5},
              "drift": {"share_drifted": 1.0},
              "live_drift": {"status": "measured", "share_drifted": 1.0, "window": "1h", "drifted_features": FEATURES},
              "reason": "champion v12: fresh balanced_accuracy 0.5000, 40/40 feature(s) drifted (psi)" * 3}
    assert choose_retraining(detect, PARAMS, "retrain", "keep", metric="balanced_accuracy") == "retrain"
    assert choose_retraining(detect, {**PARAMS, "force_retrain": False, "metric_threshold": 0.1, "drift_limit": 1.0},
                             "retrain", "keep", metric="balanced_accuracy") == "keep"
    reason = ("challenger beats champion by +0.0533 accuracy (>= 0.01), McNemar p=0.0001, bootstrap 95% CI of the "
              "improvement [0.0211, 0.0844]")
    decision = {"run_key": "rk-1", "decision": "promote", "reason": reason, "challenger_run_id": "r1",
                "challenger_model_uri": "models:/m-1", "challenger_metrics": {"accuracy": 0.97},
                "challenger_accuracy": 0.97, "engine": "kfp.local"}
    assert choose_promotion(decision, "register", "keep") == "register"
    retraining, kept, decided = (record.getMessage() for record in caplog.records)
    assert [headlines(m) for m in (retraining, kept, decided)] == [
        "retraining", "no retraining (balanced_accuracy minimum 0.1, drift limit 1.0)", "training decided promote"]
    assert "\n  force_retrain is set\n  fresh balanced_accuracy 0.5000 < threshold 0.85\n" in retraining
    assert ", ".join(FEATURES) in retraining.splitlines()[4] and f"\n  {detect['reason']}" in kept
    assert decided.splitlines()[1] == f"  {reason}"


def test_deploy_s_logs_start_with_a_short_headline(monkeypatch):
    """The canary's start, its verdict, a verdict the registry could not record, a version served, and one
    restored: each headline short whatever the model's name and the reasons' lengths, the rest below it."""
    from mlops.hooks.http import ServiceError
    from mlops.hooks.mlflow import MlflowHook
    from mlops.operators.deploy import LocalDeployOperator

    reason = "canary p99 predict latency 180.0 ms > 100.0 ms; " * 4

    def unrecorded(*_):
        raise ServiceError(f"MLflow at http://mlflow.mlops.svc.cluster.local:5000 did not answer: {reason}")

    monkeypatch.setattr(MlflowHook, "set_model_version_tags", unrecorded)

    class Served:
        infer_url = f"http://127.0.0.1:8085/v2/models/{MODEL}/infer"

        def smoke_test(self, version, regression=False):
            return {"prediction": "setosa", "model_version": version}

    class Backend:
        mode = "local ModelServer"

        def restore(self, previous):
            pass

    class TaskInstance:
        def xcom_push(self, key, value):
            pass

    context = {"ti": TaskInstance()}
    with structlog.testing.capture_logs() as logs:
        deploy = LocalDeployOperator(task_id="deploy", model_name=MODEL, canary_minutes=10, deferrable=True)
        deploy._serving = lambda url: Served()
        with pytest.raises(TaskDeferred):
            deploy._watch_canary(context, {"version": "13", "previous": {"version": "12"}, "percent": 10,
                                           "champion": {"version": "13"}})
        deploy._record_canary(context, "13", {"verdict": "rollback", "reason": reason, "percent": 10, "evidence": {}})
        deploy._verify(context, Backend(), "13", {"version": "12"}, Served.infer_url)
        deploy._restore(context, Backend(), "13", {"version": "12"}, f"the canary of v13 was rolled back: {reason}")
    events = [entry["event"] for entry in logs]
    assert [headlines(event) for event in events] == [
        "canary: v13 serves 10 % of the requests beside v12", "canary verdict for v13: rollback",
        "could not record the canary's verdict on the model version", f"serving {MODEL} v13 (was 12)",
        f"restoring {MODEL} v12 in place of v13"]
    assert all(len(headlines(event)) <= HEADLINE_MAX for event in events)
    assert all(len(event.splitlines()) > 1 for event in events)  # the details are there, below
    assert events[1].splitlines()[1] == f"  {reason}"
