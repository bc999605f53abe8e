"""The DAG's run-level alerts, defined once: the DAG's callbacks, the manual-state listener and deploy post
the same ones (see mlops.notifications.alertmanager for what each scope groups)."""

from __future__ import annotations

from mlops.notifications.alertmanager import AlertmanagerNotifier

DAG_RUN_FAILED_SUMMARY = "Airflow DAG run failed"
BATCH_LATE = "BatchLate"
BATCH_LATE_SUMMARY = "the run's batch has not arrived (or the run is stuck) well after the run was queued"
BATCH_LATE_LASTS_SECONDS = 24 * 3600  # a deadline fires once: the alert lasts until the run ends, a day at most
CANARY_ROLLED_BACK = "CanaryRolledBack"
CANARY_ROLLED_BACK_SUMMARY = "a new champion's canary was rolled back on its live serving metrics"
CANARY_ALERT_LASTS_SECONDS = 24 * 3600  # nothing resolves a canary alert: a day, for a person to look
CANARY_INCONCLUSIVE = "CanaryInconclusive"


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


def canary_rolled_back(alertmanager_conn_id: str) -> AlertmanagerNotifier:
    """Posted by deploy when Prometheus's verdict rolls a canary back: the run succeeds (the stable version
    kept serving), so no failure alert says it; a person should look at why the new champion failed live."""
    return AlertmanagerNotifier(alertmanager_conn_id=alertmanager_conn_id, alertname=CANARY_ROLLED_BACK,
                                scope="dag_run", severity="warning", summary=CANARY_ROLLED_BACK_SUMMARY,
                                lasts_seconds=CANARY_ALERT_LASTS_SECONDS)


def canary_inconclusive(alertmanager_conn_id: str, requests: float, min_requests: int, window: str
                        ) -> AlertmanagerNotifier:
    """Posted by deploy when a canary got too few requests to judge by its deadline and, as
    `canary_inconclusive = promote` says, the offline verdict was kept: the new champion serves all the traffic
    unchecked live, which a person should know about (or send it traffic, or set the option to `rollback`)."""
    summary = (f"the canary got {requests:.0f} requests (< {min_requests}) over its {window} window; the offline "
               "verdict was kept and the new champion serves all the traffic")
    return AlertmanagerNotifier(alertmanager_conn_id=alertmanager_conn_id, alertname=CANARY_INCONCLUSIVE,
                                scope="dag_run", severity="warning", summary=summary,
                                lasts_seconds=CANARY_ALERT_LASTS_SECONDS)
