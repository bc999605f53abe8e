"""ReportOperator: what this run did, as pipeline metrics on the Prometheus Pushgateway and a summary XCom.

It reports what happened, not what was decided: the run's outcome comes from the branches this
run took and from what `register` did; a task skipped in this try may still hold an XCom from an
earlier try of the same run, so its XCom is only read when this try's branch went through it. The
champion comes from the registry, the one record of what is served.

Which branch a BranchPythonOperator followed is the XCom Airflow itself records under SkipMixin's key
(`{"followed": [task ids]}`, rewritten by every try): in Airflow 3 a branch operator ends by raising
DownstreamTasksSkipped, so its callable's return value is never pushed as an XCom.

Outcomes: `skipped` (no retraining needed), `keep` (trained, the champion stayed better), `rejected`
(trained and better, but the promotion was rejected or not approved in time), `promote`
(a new champion now), `rolled_back` (promoted, but its canary was rolled back on its live serving
metrics: the champion before it serves and is the champion again), `already_registered` (a re-run of
a run key registered before: nothing moved), `superseded` (decided promote against a champion that has
changed since: not promoted).

After a promotion, the summary's `canary` is how the new champion went live: `straight swap`, `promote` (a
healthy canary), `inconclusive` (its canary got too few requests to judge by the deadline and
`canary_inconclusive` kept the offline verdict: promoted on the offline comparison alone, `canary_reason` says
so) or `rollback`.

The run in one line, `note` in the summary ("promote v4: fresh accuracy 0.0173 < threshold 0.85; canary healthy
over 201 requests"), becomes the DAG run's note, which the UI shows on the run's page and in the grid; the
listener in mlops.listeners puts it there when the run ends (a task cannot set its run's note in Airflow 3.3).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.providers.standard.utils.skipmixin import XCOM_SKIPMIXIN_FOLLOWED, XCOM_SKIPMIXIN_KEY
from airflow.sdk import BaseOperator

from mlops.hooks.http import ServiceError
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.pushgateway import PushgatewayHook
from mlops.log_lines import message
from mlops.operators.approval import in_words

NOTE_MAX = 1000  # what a DAG run's note holds (Airflow's dag_run_note.content, and its REST API's limit)


def _followed(recorded) -> list[str]:
    return list((recorded or {}).get(XCOM_SKIPMIXIN_FOLLOWED) or []) if isinstance(recorded, dict) else []


def run_outcome(retrain_branch: dict | None, promotion_branch: dict | None, approval_branch: dict | None,
                register: dict | None, retrain_task: str = "training.train",
                approve_task: str = "training.approve_promotion", promote_task: str = "training.register") -> str:
    """`retrain_branch`, `promotion_branch`, `approval_branch`: what the three branch tasks recorded this
    try (SkipMixin's XCom); `register`: register's result, read only when this try's branch went through it."""
    if retrain_task not in _followed(retrain_branch):
        return "skipped"
    if approve_task not in _followed(promotion_branch):
        return "keep"
    if promote_task not in _followed(approval_branch):
        return "rejected"
    outcome = (register or {}).get("outcome")
    return "promote" if outcome == "promoted" else outcome or "unknown"


def _fresh_within_bound(summary: dict) -> str | None:
    """Why a run did not retrain, on the metric: the fresh score on the right side of the run's threshold."""
    score, threshold = summary["fresh_score"], summary["metric_threshold"]
    if score is None or threshold is None:
        return None
    if summary["metric_direction"] == "lower":  # as decide_retraining words a reason: significant digits
        return f"fresh {summary['metric']} {score:.4g} <= threshold {threshold:g}"
    return f"fresh {summary['metric']} {score:.4f} >= threshold {threshold}"


def _canary_words(summary: dict) -> str | None:
    """The canary's verdict (mlops.canary's promote, rollback or inconclusive) with its request count."""
    requests = summary["canary_requests"]
    over = f" over {requests:.0f} requests" if requests is not None else ""
    return {"promote": f"canary healthy{over}",
            "inconclusive": f"canary inconclusive{over}, promoted on the offline verdict",
            "rollback": f"canary rolled back{over}: {summary['canary_reason']}"}.get(summary["canary"])


def summary_line(summary: dict) -> str:
    """The run in one line, the DAG run's note: what it did and to which version (the new champion, the
    champion kept, the version rolled back), then why: the retraining reasons as decide_retraining gave them
    (the metric against its threshold in the metric's direction, drift, no champion, force_retrain) or, when it
    did not retrain, the fresh score within its threshold; why training kept the champion; the canary's
    verdict with its request count; and the champion after the run where the head does not name it."""
    decision, champion = summary["decision"], summary["champion_version"]
    subject = {"promote": champion, "keep": champion, "rolled_back": summary["rolled_back_version"]}.get(decision)
    why = [_fresh_within_bound(summary)] if decision == "skipped" else list(summary["retraining_reasons"] or [])
    if decision == "keep" and summary["training_reason"]:
        why.append(f"not promoted: {summary['training_reason']}")
    if decision == "rejected":
        why.append("the promotion was not approved")
    why.append(_canary_words(summary))
    if decision not in ("promote", "keep") and champion:
        why.append(f"champion v{champion}")
    head, because = f"{decision} v{subject}" if subject else decision, "; ".join(part for part in why if part)
    line = f"{head}: {because}" if because else head
    return line if len(line) <= NOTE_MAX else line[:NOTE_MAX - 1] + "…"


class ReportOperator(BaseOperator):
    """The run's upstream results are read here, by task id: an XComArg argument would make each of
    those tasks a direct upstream of the report (Airflow draws the edge), and some of them do not run
    in every try.

    `batch_task`, `detect_task`: the sensor (its `started_at` is the run's clock: dag.test() sets the
    run's own start date to the logical date) and detection; `retraining`: (branch task, the task it
    follows to retrain); `promotion`: (the decision's branch task, the approval task, register);
    `deploy_task`: its canary's verdict (a rolled-back canary turns `promote` into `rolled_back`);
    `metric_direction`: where the dataset file's metric is better (higher | lower), pushed with the fresh
    score and the threshold so that `FreshScorePastThreshold` compares them the right way round."""

    template_fields: Sequence[str] = ("model_name",)

    def __init__(self, *, model_name: str, batch_task: str, detect_task: str, retraining: tuple[str, str],
                 promotion: tuple[str, str, str], deploy_task: str = "deploy", metric_direction: str = "higher",
                 mlflow_conn_id: str = MlflowHook.default_conn_name,
                 pushgateway_conn_id: str = PushgatewayHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.model_name, self.batch_task, self.detect_task = model_name, batch_task, detect_task
        self.retraining, self.promotion, self.deploy_task = tuple(retraining), tuple(promotion), deploy_task
        self.mlflow_conn_id, self.pushgateway_conn_id = mlflow_conn_id, pushgateway_conn_id
        self.metric_direction = metric_direction

    def _champion_version(self, detect: dict) -> str | None:
        """The champion now, from the registry; detection's champion if the registry cannot answer."""
        try:
            champion = MlflowHook(self.mlflow_conn_id).champion(self.model_name)
        except ServiceError as exc:
            self.log.warning("cannot read the champion from MLflow (%s); reporting the one detection saw", exc)
            return (detect.get("champion") or {}).get("version")
        return champion["version"] if champion else None

    def summary(self, context) -> dict:
        ti = context["ti"]
        detect = ti.xcom_pull(task_ids=self.detect_task) or {}
        decided, approval, register_task = self.promotion
        promotion_branch = ti.xcom_pull(task_ids=decided, key=XCOM_SKIPMIXIN_KEY)
        # the approval's branch is only this try's if the decision's branch went through it this try
        approval_branch = ti.xcom_pull(task_ids=approval, key=XCOM_SKIPMIXIN_KEY) \
            if approval in _followed(promotion_branch) else None
        register = ti.xcom_pull(task_ids=register_task) if register_task in _followed(approval_branch) else None
        outcome = run_outcome(ti.xcom_pull(task_ids=self.retraining[0], key=XCOM_SKIPMIXIN_KEY), promotion_branch,
                              approval_branch, register, self.retraining[1], approval, register_task)
        # deploy runs only after this try's register: its result is this try's only when the run promoted
        deployed = (ti.xcom_pull(task_ids=self.deploy_task) or {}) if outcome == "promote" else {}
        canary = deployed.get("canary") or {}
        if deployed.get("rolled_back"):
            outcome = "rolled_back"
        live = detect.get("live_drift") or {}
        measured = live.get("status") == "measured"
        # the training decision's evidence, in words, when this try trained (its branch went through training)
        trained = ti.xcom_pull(task_ids=self.retraining[1]) if outcome != "skipped" else None
        started = (ti.xcom_pull(task_ids=self.batch_task) or {}).get("started_at")
        if started is None and getattr(context.get("dag_run"), "start_date", None):
            started = context["dag_run"].start_date.timestamp()
        summary = {
            "model_name": self.model_name,
            "fresh_accuracy": (detect.get("fresh_metrics") or {}).get("accuracy"),
            "metric": detect.get("metric"),
            "fresh_score": detect.get("fresh_score"),
            "metric_threshold": (context.get("params") or {}).get("metric_threshold"),
            "metric_direction": self.metric_direction,
            "drift_share": (detect.get("drift") or {}).get("share_drifted"),
            "drift_max_psi": (detect.get("drift") or {}).get("max_psi"),
            "live_drift": live.get("status", "off"),
            "live_drift_share": live["share_drifted"] if measured else None,
            "live_drift_max_psi": live["max_psi"] if measured else None,
            "retraining_reasons": ti.xcom_pull(task_ids=self.retraining[0], key="reasons"),
            "decision": outcome,
            "training_evidence": in_words(trained) if trained else None,
            "training_reason": (trained or {}).get("reason"),
            "champion_version": self._champion_version(detect),
            "rolled_back_version": deployed.get("rolled_back"),
            "canary": canary.get("verdict") or ("straight swap" if deployed.get("changed") else None),
            "canary_reason": canary.get("reason"),
            "canary_requests": ((canary.get("evidence") or {}).get("canary") or {}).get("requests"),
            "duration_seconds": time.time() - float(started) if started else None,
        }
        # The note names the version this run promoted (register's), not whatever is champion when the report
        # runs: another run may have moved it since, or the registry may not answer.
        summary["note"] = summary_line({**summary, "champion_version": (register or {}).get("version")}
                                       if outcome == "promote" and (register or {}).get("version") else summary)
        return summary

    def execute(self, context):
        summary = self.summary(context)
        gauges = {
            "mlops_fresh_accuracy": ("Champion accuracy on the run's fresh labelled batch", summary["fresh_accuracy"]),
            "mlops_fresh_score": ("Champion score on the run's fresh labelled batch, on the dataset file's metric",
                                  summary["fresh_score"]),
            "mlops_metric_threshold": ("The run's metric_threshold: past it (below a metric better higher, above "
                                       "one better lower) the champion is retrained", summary["metric_threshold"]),
            "mlops_metric_lower_is_better": ("1 if the dataset file's metric is better lower (rmse, mae, mape): "
                                             "the threshold is a maximum", summary["metric_direction"] == "lower"),
            "mlops_drift_share": ("Share of features flagged as drifted", summary["drift_share"]),
            "mlops_drift_max_psi": ("Largest per-feature PSI", summary["drift_max_psi"]),
            "mlops_live_drift_share": ("Share of features drifted in the traffic served (live window)",
                                       summary["live_drift_share"]),
            "mlops_live_drift_max_psi": ("Largest per-feature PSI of the traffic served (live window)",
                                         summary["live_drift_max_psi"]),
            "mlops_promoted": ("1 if this run promoted a new champion", summary["decision"] == "promote"),
            "mlops_champion_version": ("Registry version of the champion", summary["champion_version"]),
            "mlops_run_duration_seconds": ("DAG run duration up to the report", summary["duration_seconds"]),
            "mlops_last_run_timestamp_seconds": ("When the pipeline last reported", time.time()),
        }
        try:
            PushgatewayHook(self.pushgateway_conn_id).push(self.model_name, gauges, replace=True)
        except ServiceError as exc:
            self.log.warning("could not push the run's metrics: %s", exc)
            summary["pushed"] = False
        else:
            summary["pushed"] = True
        champion = summary["champion_version"]
        headline = f"run summary: {summary['decision']}, " + (f"champion v{champion}" if champion else "no champion")
        self.log.info("%s", message(headline, details=[summary["note"], *(f"{key}: {value}" for key, value
                                                                          in summary.items() if key != "note")]))
        return summary
