"""AlertmanagerNotifier: a task failure (or retry) becomes an Alertmanager alert, and a log line.

Usable as `on_failure_callback` and `on_retry_callback`. Posts to Alertmanager's API v2
(`POST /api/v2/alerts`) with the dag, task, run, try, log URL and error as labels/annotations.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

import httpx
from airflow.sdk import BaseNotifier

from mlops.pipeline_metrics import push, pushgateway_url

log = logging.getLogger(__name__)


class AlertmanagerNotifier(BaseNotifier):
    template_fields = ("summary",)

    def __init__(self, url: str | None = None, severity: str = "critical", summary: str = "Airflow task failed",
                 timeout: float = 10.0, record_failure: bool = True):
        """record_failure: also push the failure's time to the Pushgateway (`mlops_last_failure_timestamp_seconds`,
        which the PipelineRunFailed rule watches); off for retries, which are not failures yet."""
        super().__init__()
        self.url = url
        self.severity, self.summary, self.timeout = severity, summary, timeout
        self.record_failure = record_failure

    def alert(self, context) -> dict:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        error = context.get("exception")
        now = dt.datetime.now(dt.UTC)
        return {
            "labels": {
                "alertname": "AirflowTaskFailed",
                "severity": self.severity,
                "dag_id": getattr(ti, "dag_id", "") or "",
                "task_id": getattr(ti, "task_id", "") or "",
                "run_id": getattr(dag_run, "run_id", "") or getattr(ti, "run_id", "") or "",
            },
            "annotations": {
                "summary": self.summary,
                "try_number": str(getattr(ti, "try_number", "")),
                "log_url": str(getattr(ti, "log_url", "") or ""),
                "error": str(error)[:2000] if error else "",
            },
            "startsAt": now.isoformat(),
        }

    def notify(self, context) -> None:
        alert = self.alert(context)
        url = (self.url or os.environ.get("MLOPS_ALERTMANAGER_URL", "http://127.0.0.1:9093")).rstrip("/")
        log.error("ALERT %s: %s.%s run %s try %s: %s", alert["labels"]["alertname"], alert["labels"]["dag_id"],
                  alert["labels"]["task_id"], alert["labels"]["run_id"], alert["annotations"]["try_number"],
                  alert["annotations"]["error"])
        try:
            response = httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:  # alerting must never mask the task's own failure
            log.error("could not post the alert to Alertmanager at %s: %s", url, exc)
        model = (context.get("params") or {}).get("model_name")
        if self.record_failure and model:
            try:
                push(model, {"mlops_last_failure_timestamp_seconds": (
                    "When a pipeline task last failed (cleared by the next successful run's report)",
                    dt.datetime.now(dt.UTC).timestamp())}, replace=False)
            except OSError as exc:
                log.error("could not push the failure to the Pushgateway at %s: %s", pushgateway_url(), exc)
