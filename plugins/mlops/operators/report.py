"""ReportOperator: what this run did, as pipeline metrics on the Prometheus Pushgateway and a summary XCom.

It reports what happened, not what was decided: the run's outcome comes from the branches this
run took and from what `register` did; a task skipped in this try may still hold an XCom from an
earlier try of the same run, so its XCom is only read when this try's branch went through it. The
champion comes from the registry, the one record of what is served.

Which branch a BranchPythonOperator followed is the XCom Airflow itself records under SkipMixin's key
(`{"followed": [task ids]}`, rewritten by every try): in Airflow 3 a branch operator ends by raising
DownstreamTasksSkipped, so its callable's return value is never pushed as an XCom.

Outcomes: `skipped` (no retraining needed), `keep` (trained, the champion stayed better), `promote`
(a new champion now), `already_registered` (a re-run of a run key registered before: nothing moved),
`superseded` (decided promote against a champion that has changed since: not promoted).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.providers.standard.utils.skipmixin import XCOM_SKIPMIXIN_FOLLOWED, XCOM_SKIPMIXIN_KEY
from airflow.sdk import BaseOperator

from mlops.pipeline_metrics import push, pushgateway_url

RETRAIN_BRANCH, PROMOTE_BRANCH = "training.train", "training.register"


def followed_branches(task_id: str) -> str:
    """A template for the task ids the branch task `task_id` followed in this run."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}', key='{XCOM_SKIPMIXIN_KEY}') }}}}"


def _followed(recorded) -> list[str]:
    return list((recorded or {}).get(XCOM_SKIPMIXIN_FOLLOWED) or []) if isinstance(recorded, dict) else []


def run_outcome(retrain_branch: dict | None, promotion_branch: dict | None, register: dict | None) -> str:
    """`retrain_branch`, `promotion_branch`: what the two branch tasks recorded (see followed_branches)."""
    if RETRAIN_BRANCH not in _followed(retrain_branch):
        return "skipped"
    if PROMOTE_BRANCH not in _followed(promotion_branch):
        return "keep"
    outcome = (register or {}).get("outcome")
    return "promote" if outcome == "promoted" else outcome or "unknown"


class ReportOperator(BaseOperator):
    """`detect`, `register`: those tasks' XComs; `retrain_branch` and `promotion_branch`: what
    decide_retraining and training.check_decision chose (all templated).
    `started_at` (epoch seconds) is when the run began; without it the DAG run's own start date is
    used (dag.test() sets that to the logical date, hence the option)."""

    template_fields: Sequence[str] = ("detect", "register", "retrain_branch", "promotion_branch", "model_name",
                                      "started_at")

    def __init__(self, *, model_name: str, detect=None, register=None, retrain_branch=None, promotion_branch=None,
                 started_at=None, pushgateway: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_name, self.detect, self.register = model_name, detect, register
        self.retrain_branch, self.promotion_branch = retrain_branch, promotion_branch
        self.started_at = started_at
        self.pushgateway = pushgateway

    def _champion_version(self, detect: dict) -> str | None:
        """The champion now, from the registry; detection's champion if the registry cannot answer."""
        from mlops.hooks.mlflow import MlflowError, MlflowRestHook
        from mlops.settings import load_settings

        try:
            champion = MlflowRestHook(load_settings().mlflow_tracking_uri).champion(self.model_name)
        except MlflowError as exc:
            self.log.warning("cannot read the champion from MLflow (%s); reporting the one detection saw", exc)
            return (detect.get("champion") or {}).get("version")
        return champion["version"] if champion else None

    def summary(self, context) -> dict:
        detect = self.detect or {}
        outcome = run_outcome(self.retrain_branch, self.promotion_branch, self.register)
        started = float(self.started_at) if self.started_at else None
        if started is None and getattr(context.get("dag_run"), "start_date", None):
            started = context["dag_run"].start_date.timestamp()
        return {
            "model_name": self.model_name,
            "fresh_accuracy": (detect.get("fresh_metrics") or {}).get("accuracy"),
            "drift_share": (detect.get("drift") or {}).get("share_drifted"),
            "drift_max_psi": (detect.get("drift") or {}).get("max_psi"),
            "decision": outcome,
            "champion_version": self._champion_version(detect),
            "duration_seconds": time.time() - started if started else None,
        }

    def execute(self, context):
        summary = self.summary(context)
        gauges = {
            "mlops_fresh_accuracy": ("Champion accuracy on the run's fresh labelled batch", summary["fresh_accuracy"]),
            "mlops_drift_share": ("Share of features flagged as drifted", summary["drift_share"]),
            "mlops_drift_max_psi": ("Largest per-feature PSI", summary["drift_max_psi"]),
            "mlops_promoted": ("1 if this run promoted a new champion", summary["decision"] == "promote"),
            "mlops_champion_version": ("Registry version of the champion", summary["champion_version"]),
            "mlops_run_duration_seconds": ("DAG run duration up to the report", summary["duration_seconds"]),
            "mlops_last_run_timestamp_seconds": ("When the pipeline last reported", time.time()),
        }
        url = self.pushgateway or pushgateway_url()
        try:
            push(self.model_name, gauges, replace=True, url=url)
        except OSError as exc:
            self.log.warning("could not push metrics to the Pushgateway at %s: %s", url, exc)
            summary["pushed"] = False
        else:
            summary["pushed"] = True
        self.log.info("run summary: %s", summary)
        return summary
