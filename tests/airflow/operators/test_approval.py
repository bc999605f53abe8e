"""PromotionApprovalOperator: the evidence the approver reads, how an answer is read, and the record it
leaves on a real MLflow training run. (Waiting for a person, approving, rejecting and timing out run on
the real scheduler and API server: test_live_stack.py.)"""

from __future__ import annotations

import httpx
import pytest
from airflow.sdk.exceptions import TaskAwaitingInput

from mlops.operators.approval import PromotionApprovalOperator, answer, evidence, in_words
from tests import support

from ..conftest import connect

DECISION = {"run_key": "rk-1", "decision": "promote", "reason": "challenger better (p=0.031)",
            "challenger_run_id": "", "challenger_accuracy": 0.9667, "challenger_metrics": {"macro_f1": 0.966},
            "champion_version": "3", "champion_accuracy": 0.9, "improvement": 0.0667,
            "mcnemar": {"pvalue": 0.0312}, "bootstrap_ci95": [0.01, 0.08]}
DETECT = {"drift": {"share_drifted": 0.75, "max_psi": 1.9}}


def approval(decision=DECISION) -> PromotionApprovalOperator:
    return PromotionApprovalOperator(task_id="approve_promotion", decision=decision, detect=DETECT,
                                     model_name="iris-approval", approve="register", reject="rejected")


def test_the_approver_sees_the_decisions_evidence():
    body = evidence(DECISION, DETECT)
    assert "decided **promote**: challenger better (p=0.031)" in body
    for row in ("| challenger accuracy (held-out test set) | 0.9667 |", "| champion v3 accuracy | 0.9000 |",
                "| McNemar p-value | 0.0312 |", "| bootstrap 95% CI of the improvement | [0.0100, 0.0800] |",
                "| drifted feature share (this batch) | 0.75 |", "| largest PSI (this batch) | 1.9000 |"):
        assert row in body
    first = evidence({**DECISION, "champion_version": None, "mcnemar": None, "bootstrap_ci95": None}, None)
    assert "| champion | none |" in first and "| paired test p-value | n/a |" in first
    # A dataset file held to another metric: the evidence is on that metric and its paired test.
    balanced = evidence({**DECISION, "metric": "balanced_accuracy", "challenger_score": 0.91, "champion_score": 0.8,
                         "improvement": 0.11, "paired_test": {"name": "paired_bootstrap", "pvalue": 0.004},
                         "mcnemar": None}, DETECT)
    for row in ("| challenger balanced_accuracy (held-out test set) | 0.9100 |",
                "| champion v3 balanced_accuracy | 0.8000 |", "| improvement (balanced_accuracy) | 0.1100 |",
                "| paired bootstrap p-value | 0.0040 |", "| challenger accuracy | 0.9667 |"):
        assert row in balanced


# A regression decision as mlpipeline.decide.decide_regression makes it (TrainingDecision's keys).
REGRESSION = {"run_key": "rk-2", "decision": "promote", "challenger_run_id": "",
              "reason": "challenger beats champion by 18.1 % rmse (>= 5 %)", "challenger_model_uri": "models:/m-2",
              "challenger_metrics": {"rmse": 50.1, "mae": 40.2, "r2": 0.55, "mape": 0.31},
              "challenger_accuracy": None, "metric": "rmse", "direction": "lower", "challenger_score": 50.1,
              "champion_version": "3", "champion_score": 61.2, "champion_accuracy": None, "improvement": 11.1,
              "relative_improvement": 0.1814, "min_improvement": 0.05, "mcnemar": None,
              "paired_test": {"name": "wilcoxon", "pvalue": 0.0012, "statistic": 1834.0, "alternative": "less",
                              "challenger_lower_loss": 71, "champion_lower_loss": 40, "loss": "squared error"},
              "bootstrap_ci95": [5.1, 16.3]}


def test_a_regression_decision_s_evidence_is_in_its_metric_and_direction():
    body = evidence(REGRESSION, DETECT)
    for row in ("| challenger rmse (held-out test set, lower is better) | 50.1000 |", "| champion v3 rmse | 61.2000 |",
                "| improvement (rmse) | 11.1000 |",
                "| relative improvement (required margin) | 18.1 % (at least 5.0 %) |",
                "| Wilcoxon signed-rank p-value | 0.0012 |",
                "| rows with the lower squared error: challenger / champion | 71 / 40 |",
                "| bootstrap 95% CI of the improvement | [5.1000, 16.3000] |"):
        assert row in body, row
    assert "challenger accuracy" not in body  # a regression model has none
    assert in_words(REGRESSION) == (
        "challenger rmse 50.1 vs champion v3 61.2 (lower is better); 18.1 % better, required margin 5.0 %; "
        "Wilcoxon signed-rank p=0.0012 (lower squared error on 71 rows for the challenger, 40 for the champion); "
        "bootstrap 95% CI of the improvement [5.1, 16.3] (positive: the challenger is better)")
    assert f"In short: {in_words(REGRESSION)}." in body
    # r2 is better higher; its relative improvement is of the champion's unexplained variance
    r2 = {**REGRESSION, "metric": "r2", "direction": "higher", "challenger_score": 0.62, "champion_score": 0.55,
          "relative_improvement": -0.0444, "decision": "reject"}
    assert in_words(r2).startswith("challenger r2 0.62 vs champion v3 0.55 (higher is better); 4.4 % of the "
                                   "champion's unexplained variance (1 - r2) worse, required margin 5.0 %")
    # a first model: held to the file's bound, no paired test
    first = {**REGRESSION, "champion_version": None, "champion_score": None, "improvement": None,
             "relative_improvement": None, "min_improvement": None, "paired_test": None, "bootstrap_ci95": None,
             "threshold": 65.0}
    assert in_words(first) == "challenger rmse 50.1, no champion (lower is better); a first model's maximum is 65"
    body = evidence(first, None)
    assert "| first model's maximum rmse | 65.0000 |" in body and "| champion | none |" in body


def test_a_classification_decision_in_words_says_higher_is_better():
    words = in_words({**DECISION, "challenger_score": 0.9667, "champion_score": 0.9})
    assert words == ("challenger accuracy 0.9667 vs champion v3 0.9 (higher is better); improvement +0.0667; "
                     "McNemar p=0.0312; bootstrap 95% CI of the improvement [0.01, 0.08] (positive: the challenger "
                     "is better)")


def test_reject_is_the_default_and_each_answer_has_its_branch():
    task = approval()
    assert task.options == ["Approve", "Reject"] and task.defaults == ["Reject"]
    assert task.options_mapping == {"Approve": "register", "Reject": "rejected"}


@pytest.mark.parametrize(("event", "read"), [
    ({"chosen_options": ["Approve"], "responded_by_user": {"id": "1", "name": "alice"}}, ("approved", "alice")),
    ({"chosen_options": ["Reject"], "responded_by_user": {"id": "2", "name": "bob"}}, ("rejected", "bob")),
    ({"chosen_options": ["Reject"], "responded_by_user": None, "timedout": True}, ("timed_out", "")),
])
def test_an_answer_is_read_with_who_gave_it(event, read):
    assert answer(event) == read


@pytest.fixture
def training_run(monitoring) -> str:
    api = f"{monitoring['mlflow']}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": f"approval-{support.free_port()}"}).json()
    return httpx.post(f"{api}/runs/create", json={"experiment_id": experiment["experiment_id"]}).json()["run"]["info"][
        "run_id"]


def run_tags(mlflow: str, run_id: str) -> dict[str, str]:
    run = httpx.get(f"{mlflow}/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_the_answer_is_recorded_on_the_training_run(monitoring, training_run):
    approval({**DECISION, "challenger_run_id": training_run})._record("rejected", "bob")
    tags = run_tags(monitoring["mlflow"], training_run)
    assert (tags["promotion_approval"], tags["promotion_approval_by"]) == ("rejected", "bob")
    approval({**DECISION, "challenger_run_id": training_run})._record("timed_out", "")
    tags = run_tags(monitoring["mlflow"], training_run)
    assert (tags["promotion_approval"], tags["promotion_approval_by"]) == ("timed_out",
                                                                          "(nobody: the default applied)")


def test_an_answer_that_cannot_be_recorded_fails_the_task(monkeypatch, monitoring, training_run):
    # nothing listens there: MLflow's own retry policy would wait minutes before saying so
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    connect(monkeypatch, mlflow_default=f"http://127.0.0.1:{support.free_port()}")
    with pytest.raises(RuntimeError, match="could not record the approved promotion on the training run: MLflow at"):
        approval({**DECISION, "challenger_run_id": training_run})._record("approved", "alice")
    assert "promotion_approval" not in run_tags(monitoring["mlflow"], training_run)  # nothing half-written


class RetriedTask:
    """What execute reads of its task instance on a second try, and what it pushes."""
    try_number = 2

    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


@pytest.mark.parametrize(("outcome", "who", "branch", "approved_by"), [
    ("approved", "alice", "register", "alice"), ("rejected", "bob", "rejected", ""),
    ("timed_out", "", "rejected", "")])
def test_a_retry_follows_the_answer_an_earlier_try_recorded(monkeypatch, training_run, outcome, who, branch,
                                                            approved_by):
    task = approval({**DECISION, "challenger_run_id": training_run})
    task._record(outcome, who)
    followed, ti = [], RetriedTask()
    monkeypatch.setattr(task, "do_branch", lambda context, branch: followed.append(branch))
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail",
                        lambda **_: pytest.fail("asked the approver a second time"))
    task.execute({"params": {"require_approval": True, "approval_timeout_minutes": 5}, "ti": ti})
    assert followed == [branch] and ti.pushed == {"approved_by": approved_by}


def test_a_retry_with_no_recorded_answer_asks_again(monkeypatch, training_run):
    task = approval({**DECISION, "challenger_run_id": training_run})
    asked = []
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail", lambda **kw: asked.append(kw))
    with pytest.raises(TaskAwaitingInput) as parked:
        task.execute({"params": {"require_approval": True, "approval_timeout_minutes": 5}, "ti": RetriedTask(),
                      "task_instance": type("TI", (), {"id": "ti-1"})()})
    assert parked.value.method_name == "execute_complete"
    assert asked and "McNemar p-value" in asked[0]["body"]
