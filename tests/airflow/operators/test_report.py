"""ReportOperator: what this run did, read from this try's XComs, the champion from a real MLflow
registry, the metrics on a real Pushgateway."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import httpx
import pytest

from mlops.operators.report import ReportOperator, run_outcome

from ..conftest import connect
from ..monitoring import gauges

MODEL = "iris-report"
DETECT = {"champion": {"version": "1"}, "fresh_metrics": {"accuracy": 0.42, "balanced_accuracy": 0.4},
          "metric": "balanced_accuracy", "fresh_score": 0.4, "drift": {"share_drifted": 0.75, "max_psi": 1.9}}
SKIPPED = {"followed": ["no_retraining"]}
TRAINED = {"followed": ["training.train"]}
TO_APPROVAL = {"followed": ["training.approve_promotion"]}
PROMOTED = {"followed": ["training.register"]}
REJECTED = {"followed": ["training.promotion_rejected"]}


class TaskInstance:
    """This try's XComs: (task id, key) -> value; what is not there was not produced in this try."""

    def __init__(self, xcoms: dict):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids, key="return_value", **_):
        return self.xcoms.get((task_ids, key))


def context(detect=DETECT, retrain=None, promotion=None, register=None, started_at=None, decided=TO_APPROVAL,
            **extra) -> dict:
    """`promotion`: what the approval task followed; `decided`: what check_decision followed."""
    xcoms = {("detect_degradation", "return_value"): detect, ("decide_retraining", "skipmixin_key"): retrain,
             ("training.check_decision", "skipmixin_key"): decided,
             ("training.approve_promotion", "skipmixin_key"): promotion,
             ("training.register", "return_value"): register,
             ("wait_for_batch", "return_value"): {"started_at": started_at} if started_at else None}
    return {"ti": TaskInstance({k: v for k, v in xcoms.items() if v is not None}), **extra}


def report(**kwargs) -> ReportOperator:
    return ReportOperator(task_id="report", model_name=MODEL, batch_task="wait_for_batch",
                          detect_task="detect_degradation", retraining=("decide_retraining", "training.train"),
                          promotion=("training.check_decision", "training.approve_promotion", "training.register"),
                          **kwargs)


@pytest.fixture
def registry(monitoring):
    """MODEL in a real MLflow registry with v1..v3, v3 the champion (what the report must name)."""
    api = f"{monitoring['mlflow']}/api/2.0/mlflow"
    if httpx.get(f"{api}/registered-models/get", params={"name": MODEL}).status_code != 200:
        httpx.post(f"{api}/registered-models/create", json={"name": MODEL}).raise_for_status()
        for _ in range(3):
            httpx.post(f"{api}/model-versions/create", json={"name": MODEL, "source": "s3://mlflow/x"}
                       ).raise_for_status()
        httpx.post(f"{api}/registered-models/alias", json={"name": MODEL, "alias": "champion", "version": "3"}
                   ).raise_for_status()
    return monitoring


@pytest.mark.parametrize(("retrain", "decided", "approval", "register", "outcome"), [
    (SKIPPED, None, None, None, "skipped"),
    (None, None, None, None, "skipped"),
    (TRAINED, {"followed": ["training.keep_champion"]}, None, None, "keep"),
    (TRAINED, TO_APPROVAL, REJECTED, None, "rejected"),
    (TRAINED, TO_APPROVAL, None, None, "rejected"),  # the approval failed or never answered in this try
    (TRAINED, TO_APPROVAL, PROMOTED, {"outcome": "promoted"}, "promote"),
    (TRAINED, TO_APPROVAL, PROMOTED, {"outcome": "already_registered"}, "already_registered"),
    (TRAINED, TO_APPROVAL, PROMOTED, {"outcome": "superseded"}, "superseded"),
])
def test_the_outcome_is_what_this_run_did(retrain, decided, approval, register, outcome):
    assert run_outcome(retrain, decided, approval, register) == outcome


def test_an_approval_from_an_earlier_try_is_not_read(registry):
    """This try kept the champion; the approval task's branch (and register's promotion) from an earlier
    try of the run must not make it a promotion."""
    summary = report().summary(context(retrain=TRAINED, decided={"followed": ["training.keep_champion"]},
                                       promotion=PROMOTED, register={"outcome": "promoted"}))
    assert summary["decision"] == "keep"


def test_a_skipped_tasks_old_xcom_is_not_read(registry):
    """A re-run that took no_retraining: register's XCom from an earlier try of the run (promoted,
    champion 1) must not reach the report; the champion is the registry's (v3)."""
    summary = report().summary(context(retrain=SKIPPED, promotion=PROMOTED,
                                       register={"outcome": "promoted", "champion_version": "1"}))
    assert summary["decision"] == "skipped" and summary["champion_version"] == "3"


def test_a_rerun_that_registered_nothing_reports_no_promotion(registry):
    summary = report().execute(context(retrain=TRAINED, promotion=PROMOTED,
                                       register={"outcome": "already_registered", "version": "2"}))
    assert summary["decision"] == "already_registered" and summary["champion_version"] == "3"
    assert gauges(registry["pushgateway"], MODEL)["mlops_promoted"] == 0
    assert gauges(registry["pushgateway"], MODEL)["mlops_champion_version"] == 3


def test_a_rolled_back_canary_is_reported_as_such_and_not_as_a_promotion(registry):
    canary = {"verdict": "rollback", "reason": "canary p99 predict latency 180.0 ms > 100.0 ms", "percent": 10}
    promoted = {"retrain": TRAINED, "promotion": PROMOTED, "register": {"outcome": "promoted", "version": "4"}}
    deployed = {("deploy", "return_value"): {"version": "3", "rolled_back": "4", "changed": False, "canary": canary}}
    ctx = context(**promoted)
    ctx["ti"].xcoms.update(deployed)
    summary = report().execute(ctx)
    assert summary["decision"] == "rolled_back" and summary["champion_version"] == "3"
    assert summary["canary"] == "rollback" and summary["canary_reason"] == canary["reason"]
    assert gauges(registry["pushgateway"], MODEL)["mlops_promoted"] == 0
    # the same XCom from an earlier try of a run that, this try, kept the champion is not read
    ctx = context(retrain=TRAINED, decided={"followed": ["training.keep_champion"]})
    ctx["ti"].xcoms.update(deployed)
    assert report().summary(ctx)["decision"] == "keep" and report().summary(ctx)["canary"] is None


def test_an_inconclusive_canary_is_a_promotion_reported_as_kept_on_the_offline_verdict(registry):
    """A canary too short of requests to judge by its deadline, kept by canary_inconclusive = promote: the run
    promoted (the champion is new), and the report tells it from a promotion a healthy canary earned."""
    reason = ("too little canary traffic to judge: 0 requests in the last 1801s < 100 by the deadline; the offline "
              "verdict is kept")
    canary = {"verdict": "inconclusive", "reason": reason, "percent": 10, "min_requests": 100,
              "evidence": {"window": "1801s", "canary": {"requests": 0.0}}}
    ctx = context(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted", "version": "3"})
    ctx["ti"].xcoms[("deploy", "return_value")] = {"version": "3", "previous_version": "2", "changed": True,
                                                   "canary": canary}
    summary = report().execute(ctx)
    assert (summary["decision"], summary["champion_version"]) == ("promote", "3")
    assert summary["canary"] == "inconclusive" and summary["canary_reason"] == reason
    assert gauges(registry["pushgateway"], MODEL)["mlops_promoted"] == 1


def test_the_summary_carries_the_detection_figures_and_the_run_clock(registry):
    summary = report().summary(context(retrain=SKIPPED, started_at=time.time() - 30))
    assert summary["fresh_accuracy"] == 0.42 and summary["drift_share"] == 0.75 and summary["drift_max_psi"] == 1.9
    assert 29 < summary["duration_seconds"] < 60
    assert report().summary(context(retrain=SKIPPED))["duration_seconds"] is None


def test_without_the_sensors_start_the_runs_start_date_is_used(registry):
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    summary = report().summary(context(dag_run=SimpleNamespace(start_date=started)))
    assert 119 < summary["duration_seconds"] < 150


def test_without_the_registry_the_champion_detection_saw_is_reported(registry, monkeypatch, capsys):
    from tests import support

    # nothing listens there: MLflow's own retry policy would wait minutes before saying so
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    connect(monkeypatch, mlflow_default=f"http://127.0.0.1:{support.free_port()}")
    assert report().summary(context(retrain=SKIPPED))["champion_version"] == "1"
    assert "cannot read the champion from MLflow" in capsys.readouterr().out


def test_the_report_replaces_the_models_group_on_the_pushgateway(registry):
    pgw = registry["pushgateway"]
    promoted = report().execute(context(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted"}))
    assert promoted["pushed"] is True and gauges(pgw, MODEL)["mlops_promoted"] == 1
    # The next run skipped: the group is replaced, nothing of the promotion is left.
    summary = report().execute(context(retrain=SKIPPED, started_at=time.time() - 5,
                                       params={"metric_threshold": 0.8}))
    now = gauges(pgw, MODEL)
    assert summary["pushed"] is True and now["mlops_promoted"] == 0 and now["mlops_champion_version"] == 3
    assert now["mlops_fresh_accuracy"] == 0.42 and now["mlops_drift_share"] == 0.75
    # the dataset file's metric, the run's threshold and the metric's direction: what FreshScorePastThreshold
    # compares (balanced accuracy is better higher: the threshold is a minimum)
    assert now["mlops_fresh_score"] == 0.4 and now["mlops_metric_threshold"] == 0.8
    assert now["mlops_metric_lower_is_better"] == 0
    assert 4 < now["mlops_run_duration_seconds"] < 60 and now["mlops_last_run_timestamp_seconds"] > time.time() - 60
    assert "mlops_live_drift_share" not in now  # not measured: nothing pushed, so the alert stays silent


def test_a_regression_run_pushes_its_score_with_a_maximum_and_says_what_training_found(registry):
    """rmse is better lower: the threshold pushed is a maximum; the training decision's evidence in words."""
    detect = {"champion": {"version": "3"}, "metric": "rmse", "direction": "lower", "fresh_score": 61.2,
              "fresh_metrics": {"rows": 120, "rmse": 61.2, "mae": 48.0, "r2": 0.31, "mape": 0.42}, "drift": None}
    decision = {"metric": "rmse", "direction": "lower", "challenger_score": 50.1, "champion_version": "3",
                "champion_score": 61.2, "improvement": 11.1, "relative_improvement": 0.1814, "min_improvement": 0.05,
                "paired_test": {"name": "wilcoxon", "pvalue": 0.0012, "challenger_lower_loss": 71,
                                "champion_lower_loss": 40, "loss": "squared error"}, "bootstrap_ci95": [5.1, 16.3]}
    ctx = context(detect=detect, retrain=TRAINED, decided={"followed": ["training.keep_champion"]},
                  params={"metric_threshold": 55})
    ctx["ti"].xcoms[("training.train", "return_value")] = decision
    summary = report(metric_direction="lower").execute(ctx)
    assert summary["pushed"] is True and summary["fresh_accuracy"] is None and summary["metric_direction"] == "lower"
    now = gauges(registry["pushgateway"], MODEL)
    assert (now["mlops_fresh_score"], now["mlops_metric_threshold"], now["mlops_metric_lower_is_better"]) == (
        61.2, 55, 1)
    assert "mlops_fresh_accuracy" not in now
    assert summary["training_evidence"].startswith("challenger rmse 50.1 vs champion v3 61.2 (lower is better); "
                                                   "18.1 % better, required margin 5.0 %; Wilcoxon signed-rank "
                                                   "p=0.0012"), summary["training_evidence"]
    # a run that did not train has no training evidence, even with an earlier try's decision there
    ctx = context(detect=detect, retrain=SKIPPED)
    ctx["ti"].xcoms[("training.train", "return_value")] = decision
    assert report(metric_direction="lower").summary(ctx)["training_evidence"] is None


@pytest.mark.parametrize(("live", "pushed"), [
    ({"status": "measured", "share_drifted": 0.75, "max_psi": 2.5, "window": "1h",
      "drifted_features": ["a", "b", "c"]}, {"mlops_live_drift_share": 0.75, "mlops_live_drift_max_psi": 2.5}),
    ({"status": "insufficient traffic", "observed": 3, "window": "1h"}, {}),
])
def test_live_drift_is_reported_and_pushed_only_when_measured(registry, live, pushed):
    reasons = ["live drift: drifted feature share 0.75 of the traffic served in the last 1h > limit 0.5 (a, b, c)"]
    ctx = context(detect={**DETECT, "live_drift": live}, retrain=TRAINED,
                  decided={"followed": ["training.keep_champion"]})
    ctx["ti"].xcoms[("decide_retraining", "reasons")] = reasons
    summary = report().execute(ctx)
    assert summary["live_drift"] == live["status"] and summary["retraining_reasons"] == reasons
    now = gauges(registry["pushgateway"], MODEL)
    assert {k: v for k, v in now.items() if k.startswith("mlops_live_drift")} == pushed


def test_a_pushgateway_that_is_down_does_not_fail_the_report(registry, monkeypatch, capsys):
    from tests import support

    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, pushgateway_default=down)
    summary = report().execute(context(retrain=SKIPPED))
    assert summary["pushed"] is False
    assert f"could not push the run's metrics: Pushgateway at {down} did not answer" in capsys.readouterr().out


REASONS = ["fresh accuracy 0.0173 < threshold 0.85"]
TRAINED_KEEP = {"run_key": "rk", "decision": "reject", "metric": "accuracy", "direction": "higher",
                "challenger_score": 0.9, "champion_version": "3", "champion_score": 0.91,
                "reason": "accuracy improvement -0.0100 is below the required margin 0.01"}


def deployed(verdict: str | None, requests: float | None = None, **result) -> dict:
    canary = {"verdict": verdict, "reason": "canary p99 predict latency 180.0 ms > 100.0 ms", "percent": 10,
              "evidence": {"canary": {"requests": requests}} if requests is not None else None}
    return {("deploy", "return_value"): {"version": "3", "changed": True, **result,
                                         **({"canary": canary} if verdict else {})}}


@pytest.mark.parametrize(("run", "xcoms", "note"), [
    (dict(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted"}), deployed("promote", 201.0),
     "promote v3: fresh accuracy 0.0173 < threshold 0.85; canary healthy over 201 requests"),
    (dict(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted"}), deployed(None),
     "promote v3: fresh accuracy 0.0173 < threshold 0.85"),  # a straight swap: no canary to speak of
    (dict(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted"}), deployed("inconclusive", 3.0),
     "promote v3: fresh accuracy 0.0173 < threshold 0.85; canary inconclusive over 3 requests, promoted on the "
     "offline verdict"),
    (dict(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "promoted"}),
     deployed("rollback", 150.0, rolled_back="4", changed=False),
     "rolled_back v4: fresh accuracy 0.0173 < threshold 0.85; canary rolled back over 150 requests: canary p99 "
     "predict latency 180.0 ms > 100.0 ms; champion v3"),
    (dict(retrain=TRAINED, decided={"followed": ["training.keep_champion"]}),
     {("training.train", "return_value"): TRAINED_KEEP},
     "keep v3: fresh accuracy 0.0173 < threshold 0.85; not promoted: accuracy improvement -0.0100 is below the "
     "required margin 0.01"),
    (dict(retrain=TRAINED, promotion=REJECTED), {},
     "rejected: fresh accuracy 0.0173 < threshold 0.85; the promotion was not approved; champion v3"),
    (dict(retrain=SKIPPED, params={"metric_threshold": 0.35}), {},
     "skipped: fresh balanced_accuracy 0.4000 >= threshold 0.35; champion v3"),
    (dict(retrain=TRAINED, promotion=PROMOTED, register={"outcome": "already_registered"}), {},
     "already_registered: fresh accuracy 0.0173 < threshold 0.85; champion v3"),
], ids=["promote-canary", "promote-swap", "promote-inconclusive", "rolled-back", "keep", "rejected", "skipped",
        "already-registered"])
def test_the_summary_line_says_what_the_run_did_and_why(registry, run, xcoms, note):
    """The DAG run's note: the decision and its version, the retraining reasons in the metric's direction (or
    the fresh score within its threshold), why training kept the champion, the canary's verdict and requests."""
    ctx = context(**run)
    ctx["ti"].xcoms.update({("decide_retraining", "reasons"): REASONS if run["retrain"] is TRAINED else [], **xcoms})
    assert report().summary(ctx)["note"] == note


def test_a_regression_run_that_skipped_says_its_score_is_within_the_maximum(registry):
    detect = {"champion": {"version": "3"}, "metric": "rmse", "fresh_score": 40.0, "fresh_metrics": {"rmse": 40.0}}
    summary = report(metric_direction="lower").summary(context(detect=detect, retrain=SKIPPED,
                                                               params={"metric_threshold": 55}))
    assert summary["note"] == "skipped: fresh rmse 40 <= threshold 55; champion v3"


def test_the_note_fits_a_dag_run_note_and_the_log_starts_with_a_short_headline(registry, capsys):
    """A run note holds 1,000 characters; the task log's record starts with a headline for the panel, the note
    and the figures on the lines below it."""
    from mlops.log_lines import HEADLINE_MAX
    from mlops.operators.report import NOTE_MAX

    live = ["live drift: drifted feature share 1.00 of the traffic served in the last 1h > limit 0.5 ("
            + ", ".join(f"feature_{i}" for i in range(200)) + ")"]
    ctx = context(retrain=TRAINED, decided={"followed": ["training.keep_champion"]})
    ctx["ti"].xcoms[("decide_retraining", "reasons")] = live
    summary = report().execute(ctx)
    assert len(summary["note"]) == NOTE_MAX and summary["note"].startswith("keep v3: live drift: ")
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if "] run summary: " in line)  # after the record's time and level
    headline = lines[at].split("] ", 1)[1]
    assert headline == "run summary: keep, champion v3" and len(headline) <= HEADLINE_MAX
    assert lines[at + 1] == f"  {summary['note']}" and "  decision: keep" in lines[at + 2:]
