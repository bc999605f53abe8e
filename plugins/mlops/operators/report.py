"""ReportOperator: the run's pipeline metrics to the Prometheus Pushgateway, and a summary as XCom."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from airflow.sdk import BaseOperator


class ReportOperator(BaseOperator):
    """Pushes fresh-set accuracy, drift statistics, the decision, the champion and the run duration.

    `detect`, `train`, `deploy` are the upstream tasks' XCom results (templated; any may be empty
    when the run skipped training). `started_at` (epoch seconds) is when the run began; without it the
    DAG run's own start date is used (dag.test() sets that to the logical date, hence the option).
    """

    template_fields: Sequence[str] = ("detect", "train", "deploy", "model_name", "started_at")

    def __init__(self, *, model_name: str, detect=None, train=None, deploy=None, started_at=None,
                 pushgateway: str | None = None, job: str = "continuous_training", **kwargs):
        super().__init__(**kwargs)
        self.model_name, self.detect, self.train, self.deploy = model_name, detect, train, deploy
        self.started_at = started_at
        self.pushgateway, self.job = pushgateway, job

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
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway  # not at DAG parse time

        summary = self.summary(context)
        registry = CollectorRegistry()
        labels = {"model": self.model_name}

        def gauge(name, doc, value):
            if value is not None:
                Gauge(name, doc, list(labels), registry=registry).labels(**labels).set(float(value))

        gauge("mlops_fresh_accuracy", "Champion accuracy on the run's fresh labelled batch", summary["fresh_accuracy"])
        gauge("mlops_drift_share", "Share of features flagged as drifted", summary["drift_share"])
        gauge("mlops_drift_max_psi", "Largest per-feature PSI", summary["drift_max_psi"])
        gauge("mlops_promoted", "1 if this run promoted a new champion", summary["decision"] == "promote")
        gauge("mlops_champion_version", "Registry version of the champion", summary["champion_version"])
        gauge("mlops_run_duration_seconds", "DAG run duration up to the report", summary["duration_seconds"])
        gauge("mlops_last_run_timestamp_seconds", "When the pipeline last reported", time.time())
        url = self.pushgateway or os.environ.get("MLOPS_PUSHGATEWAY_URL", "127.0.0.1:9091")
        try:
            push_to_gateway(url, job=self.job, registry=registry, grouping_key=labels)
        except OSError as exc:
            self.log.warning("could not push metrics to the Pushgateway at %s: %s", url, exc)
            summary["pushed"] = False
        else:
            summary["pushed"] = True
        self.log.info("run summary: %s", summary)
        return summary
