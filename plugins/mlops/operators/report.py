"""ReportOperator: the run's pipeline metrics to the Prometheus Pushgateway, and a summary as XCom."""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.pipeline_metrics import push, pushgateway_url


class ReportOperator(BaseOperator):
    """Pushes fresh-set accuracy, drift statistics, the decision, the champion and the run duration.

    `detect`, `train`, `deploy` are the upstream tasks' XCom results (templated; any may be empty
    when the run skipped training). `started_at` (epoch seconds) is when the run began; without it the
    DAG run's own start date is used (dag.test() sets that to the logical date, hence the option).
    """

    template_fields: Sequence[str] = ("detect", "train", "deploy", "model_name", "started_at")

    def __init__(self, *, model_name: str, detect=None, train=None, deploy=None, started_at=None,
                 pushgateway: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_name, self.detect, self.train, self.deploy = model_name, detect, train, deploy
        self.started_at = started_at
        self.pushgateway = pushgateway

    def summary(self, context) -> dict:
        detect, train, deploy = self.detect or {}, self.train or {}, self.deploy or {}
        started = float(self.started_at) if self.started_at else None
        if started is None and getattr(context.get("dag_run"), "start_date", None):
            started = context["dag_run"].start_date.timestamp()
        return {
            "model_name": self.model_name,
            "fresh_accuracy": (detect.get("fresh_metrics") or {}).get("accuracy"),
            "drift_share": (detect.get("drift") or {}).get("share_drifted"),
            "drift_max_psi": (detect.get("drift") or {}).get("max_psi"),
            "decision": train.get("decision", "skipped"),
            "champion_version": deploy.get("version") or (detect.get("champion") or {}).get("version"),
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
