"""The DAG's run-level alerts, defined once: the DAG's callbacks and the manual-state listener post
the same ones (see mlops.notifications.alertmanager for what each scope groups)."""

from __future__ import annotations

from mlops.notifications.alertmanager import AlertmanagerNotifier

DAG_RUN_FAILED_SUMMARY = "Airflow DAG run failed"
BATCH_LATE = "BatchLate"
BATCH_LATE_SUMMARY = "the run's batch has not arrived (or the run is stuck) well after the run was queued"
BATCH_LATE_LASTS_SECONDS = 24 * 3600  # a deadline fires once: the alert lasts until the run ends, a day at most


def run_failed() -> AlertmanagerNotifier:
    return AlertmanagerNotifier(scope="dag", summary=DAG_RUN_FAILED_SUMMARY)


def run_recovered() -> AlertmanagerNotifier:
    return AlertmanagerNotifier(scope="dag", summary=DAG_RUN_FAILED_SUMMARY, resolve=True)


def run_no_longer_waiting() -> AlertmanagerNotifier:
    """A run that ends, either way, no longer waits for its batch."""
    return AlertmanagerNotifier(alertname=BATCH_LATE, scope="dag_run", severity="warning", resolve=True)


def batch_late_kwargs() -> dict:
    """The kwargs of the deadline's AsyncCallback(AlertmanagerNotifier, kwargs=...): the triggerer builds
    the notifier from them."""
    return {"alertname": BATCH_LATE, "scope": "dag_run", "severity": "warning",
            "lasts_seconds": BATCH_LATE_LASTS_SECONDS, "summary": BATCH_LATE_SUMMARY}
