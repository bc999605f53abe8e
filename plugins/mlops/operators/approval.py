"""PromotionApprovalOperator: a human approves or rejects a promotion before `register` moves `champion`.

It is the standard provider's human-in-the-loop branch operator (HITLBranchOperator, Airflow 3.1+):
with the DAG Param `require_approval` set, the task shows the training decision's evidence (metrics,
McNemar p, bootstrap CI of the improvement, the champion's metrics, the batch's drift; for a regression
model both scores with where its metric is better, the relative improvement against the required margin,
the Wilcoxon signed-rank p) in the UI's
*Required actions* and waits, holding no worker slot, for Approve or Reject (the UI, or
`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails`). Approve follows
`register`; Reject, or no answer within `approval_timeout_minutes` (the scheduler then applies the
default, Reject), follows the rejected branch and the champion stays.

Who decided is recorded where the decision lives: tags on the challenger's training run
(`promotion_approval` = approved | rejected | timed_out, `promotion_approval_by`), and for an approval
the XCom `approved_by` that `register` records on the new model version and its promotion. A retry of
the task (its worker lost after the answer was recorded) follows the answer recorded there instead of
asking the approver a second time; an answer that could not be recorded is asked for again.

Answer a request at least a scheduler loop after it appears (any person does; a script should wait a
few seconds): Airflow 3.3.2's scheduler fails a task answered within the loop it was parked in (the
executor's "finished" event for the parked run is read after the resumed run was queued under the same
key), and the retry asks again, the answer being gone with the request it reset.

Without `require_approval` it approves at once, without asking (the default, as before).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from airflow.providers.standard.operators.hitl import HITLBranchOperator

from mlops.hooks.http import ServiceError
from mlops.hooks.mlflow import MlflowHook

APPROVE, REJECT = "Approve", "Reject"
APPROVED_BY = "approved_by"
OUTCOME_TAG, ANSWERED_BY_TAG = "promotion_approval", "promotion_approval_by"
NOBODY = "(nobody: the default applied)"
PAIRED_TESTS = {"mcnemar_exact": "McNemar", "paired_bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon signed-rank"}


def _scores(decision: dict) -> dict:
    score = {"challenger": decision.get("challenger_score"), "champion": decision.get("champion_score")}
    if score["challenger"] is None and decision.get("direction") is None:  # recorded before the file's metric
        score = {"challenger": decision.get("challenger_accuracy"), "champion": decision.get("champion_accuracy")}
    return score


def _paired_test(decision: dict) -> dict:
    return decision.get("paired_test") or ({"name": "mcnemar_exact", **decision["mcnemar"]}
                                           if decision.get("mcnemar") else {})


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f} %"


def in_words(decision: dict) -> str:
    """The decision's evidence in one line: both scores on the metric and where it is better, the relative
    improvement against the required margin (regression), the paired test's p and the bootstrap CI of the
    improvement (positive: the challenger is better). The approver reads it above the table; the report
    carries it."""
    def g(value):
        return "n/a" if value is None else f"{value:.4g}"

    metric, direction = decision.get("metric") or "accuracy", decision.get("direction") or "higher"
    score, champion = _scores(decision), decision.get("champion_version")
    words = [f"challenger {metric} {g(score['challenger'])}"
             + (f" vs champion v{champion} {g(score['champion'])}" if champion else ", no champion")
             + f" ({direction} is better)"]
    if not champion and decision.get("threshold") is not None:
        words.append(f"a first model's {'maximum' if direction == 'lower' else 'minimum'} is "
                     f"{decision['threshold']:g}")
    relative = decision.get("relative_improvement")
    if relative is not None:
        share = " of the champion's unexplained variance (1 - r2)" if metric == "r2" else ""
        words.append(f"{_percent(abs(relative))}{share} {'better' if relative >= 0 else 'worse'}, required margin "
                     f"{_percent(decision.get('min_improvement'))}")
    elif champion and decision.get("improvement") is not None:
        words.append(f"improvement {decision['improvement']:+.4g}")
    test = _paired_test(decision)
    if test.get("pvalue") is not None:
        rows = ""
        if test.get("challenger_lower_loss") is not None:
            rows = (f" (lower {test.get('loss') or 'loss'} on {test['challenger_lower_loss']} rows for the "
                    f"challenger, {test.get('champion_lower_loss')} for the champion)")
        words.append(f"{PAIRED_TESTS.get(test.get('name'), 'paired test')} p={test['pvalue']:.3g}{rows}")
    ci = decision.get("bootstrap_ci95")
    if ci:
        words.append(f"bootstrap 95% CI of the improvement [{ci[0]:.4g}, {ci[1]:.4g}] (positive: the challenger "
                     "is better)")
    return "; ".join(words)


def evidence(decision: dict, detect: dict | None) -> str:
    """The decision's evidence as the Markdown the approver reads."""
    def number(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    metric = decision.get("metric") or "accuracy"
    direction = decision.get("direction")  # a regression decision's: where its metric is better
    champion = decision.get("champion_version")
    score, test = _scores(decision), _paired_test(decision)
    ci = decision.get("bootstrap_ci95") or [None, None]
    drift = (detect or {}).get("drift") or {}
    rows = [(f"challenger {metric} (held-out test set{f', {direction} is better' if direction else ''})",
             number(score["challenger"]))]
    if not direction:  # a regression model has no accuracy
        rows.append(("challenger accuracy", number(decision.get("challenger_accuracy"))))
    rows += [
        (f"champion v{champion} {metric}" if champion else "champion", number(score["champion"]) if champion
         else "none"),
        (f"improvement ({metric})", number(decision.get("improvement"))),
    ]
    if direction and champion:
        rows.append(("relative improvement (required margin)", f"{_percent(decision.get('relative_improvement'))} "
                     f"(at least {_percent(decision.get('min_improvement'))})"))
    if direction and not champion and decision.get("threshold") is not None:
        rows.append((f"first model's {'maximum' if direction == 'lower' else 'minimum'} {metric}",
                     number(decision["threshold"])))
    rows.append((f"{PAIRED_TESTS.get(test.get('name'), 'paired test')} p-value", number(test.get("pvalue"))))
    if test.get("challenger_lower_loss") is not None:
        rows.append((f"rows with the lower {test.get('loss') or 'loss'}: challenger / champion",
                     f"{test['challenger_lower_loss']} / {test.get('champion_lower_loss')}"))
    rows += [
        ("bootstrap 95% CI of the improvement", f"[{number(ci[0])}, {number(ci[1])}]"),
        ("drifted feature share (this batch)", number(drift.get("share_drifted"), 2)),
        ("largest PSI (this batch)", number(drift.get("max_psi"))),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (f"The training run decided **{decision.get('decision')}**: {decision.get('reason')}\n\n"
            f"In short: {in_words(decision)}.\n\n"
            f"| evidence | value |\n|---|---|\n{table}\n\n"
            f"Run key `{decision.get('run_key')}`, MLflow run `{decision.get('challenger_run_id')}`. "
            "Approve to register the challenger and make it the champion; Reject (or no answer in time) "
            "keeps the champion.")


def answer(event: dict) -> tuple[str, str]:
    """(approved | rejected | timed_out, who answered) from the response the task resumes with."""
    user = event.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or ""
    if event.get("timedout"):
        return "timed_out", ""
    return ("approved" if event.get("chosen_options") == [APPROVE] else "rejected"), who


class PromotionApprovalOperator(HITLBranchOperator):
    """`decision`: the training task's result (a TrainingDecision); `detect`: detection's result;
    `approve`, `reject`: the task ids each answer follows."""

    template_fields: Sequence[str] = (*HITLBranchOperator.template_fields, "decision", "detect", "model_name")

    def __init__(self, *, decision, detect, model_name: str, approve: str, reject: str,
                 mlflow_conn_id: str = MlflowHook.default_conn_name, **kwargs):
        super().__init__(subject="Promote the challenger?", options=[APPROVE, REJECT], defaults=[REJECT],
                         options_mapping={APPROVE: approve, REJECT: reject}, **kwargs)
        self.decision, self.detect, self.model_name = decision, detect, model_name
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context):
        params = context["params"]
        if not params.get("require_approval"):
            self.log.info("require_approval is off: the promotion goes ahead without asking")
            context["ti"].xcom_push(key=APPROVED_BY, value="")  # an XComArg cannot resolve a None
            return self.do_branch(context, self.options_mapping[APPROVE])
        if context["ti"].try_number > 1 and (recorded := self._recorded()):
            self.log.info("an earlier try was answered: promotion %s by %s", *recorded)
            return self._follow(context, *recorded)
        self.subject = f"Promote a new {self.model_name} champion?"
        self.body = evidence(self.decision, self.detect)
        self.response_timeout = timedelta(minutes=float(params["approval_timeout_minutes"]))
        self.log.info("waiting up to %s for Approve or Reject", self.response_timeout)
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        outcome, who = answer(event)
        self.log.info("promotion %s%s", outcome.replace("_", " "), f" by {who}" if who else "")
        self._record(outcome, who)
        context["ti"].xcom_push(key=APPROVED_BY, value=who if outcome == "approved" else "")
        return super().execute_complete(context, event)  # follows the chosen branch

    def _follow(self, context, outcome: str, who: str):
        approved = outcome == "approved"
        context["ti"].xcom_push(key=APPROVED_BY, value=who if approved else "")
        return self.do_branch(context, self.options_mapping[APPROVE if approved else REJECT])

    def _record(self, outcome: str, who: str) -> None:
        """On the challenger's training run; a registry that cannot be written to fails the task (the
        decision would otherwise go unrecorded) and a retry asks again."""
        tags = {OUTCOME_TAG: outcome, ANSWERED_BY_TAG: who or NOBODY}
        try:
            MlflowHook(self.mlflow_conn_id).set_run_tags(self.decision["challenger_run_id"], tags)
        except ServiceError as exc:
            raise RuntimeError(f"could not record the {outcome} promotion on the training run: {exc}") from None

    def _recorded(self) -> tuple[str, str] | None:
        """(outcome, who) an earlier try recorded on the training run, or None."""
        tags = MlflowHook(self.mlflow_conn_id).run_tags(self.decision["challenger_run_id"])
        return (tags[OUTCOME_TAG], tags[ANSWERED_BY_TAG]) if OUTCOME_TAG in tags else None
