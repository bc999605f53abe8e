"""AlertmanagerNotifier against a real Alertmanager: each scope's alert, the resolving callbacks, the
deadline callback as the triggerer runs it, and alerting that never masks the task's own failure."""

from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace

import pytest

from mlops.notifications.alertmanager import AlertmanagerNotifier
from tests import support

from ..conftest import connect
from ..monitoring import alerts

RUN = "manual__2026-11-04"


def task_instance():
    return SimpleNamespace(dag_id="continuous_training", task_id="data.ingest", run_id=RUN, try_number=2,
                           log_url="http://airflow.example/log")


def failure_context(error: Exception | None) -> dict:
    return {"ti": task_instance(), "dag_run": SimpleNamespace(run_id=RUN), "exception": error,
            "params": {"model_name": "iris-alerts"}}


def test_the_alert_names_the_task_run_try_and_error():
    alert = AlertmanagerNotifier(severity="warning", summary="retrying").alert(
        failure_context(RuntimeError("mlpipeline ingest: error: partition 2026-11-04 yielded no usable data")))
    assert alert["labels"] == {"alertname": "AirflowTaskFailed", "severity": "warning",
                               "dag_id": "continuous_training", "task_id": "data.ingest", "run_id": RUN}
    assert alert["annotations"]["try_number"] == "2" and alert["annotations"]["summary"] == "retrying"
    assert alert["annotations"]["error"].endswith("yielded no usable data")
    assert dt.datetime.fromisoformat(alert["startsAt"]) <= dt.datetime.now(dt.UTC)


def test_a_failure_reaches_alertmanager(monitoring):
    AlertmanagerNotifier().notify(failure_context(ValueError("no rows")))
    found = alerts(monitoring, 'alertname="AirflowTaskFailed"', 'task_id="data.ingest"', 'severity="critical"')
    assert [a["annotations"]["error"] for a in found] == ["no rows"]


def test_alerting_never_masks_the_tasks_own_failure(monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="mlops.notifications.alertmanager")
    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, alertmanager_default=down)
    AlertmanagerNotifier().notify(failure_context(ValueError("no rows")))  # does not raise
    assert f"could not post the alert: Alertmanager at {down} did not answer after 3 attempt(s)" in caplog.text
    assert "ALERT AirflowTaskFailed: continuous_training.data.ingest" in caplog.text


def test_a_failed_dag_run_alerts_once_for_the_dag_and_the_next_success_resolves_it(monitoring):
    """Also a run a user marks failed alerts (mlops.listeners). The DAG processor's context carries the
    run's last task instance too (airflow.dag_processing.processor, _execute_dag_callbacks): it is still
    one alert for the DAG, not one for that task."""
    context = {"dag_run": SimpleNamespace(dag_id="continuous_training", run_id="manual__2026-11-05"),
               "ti": task_instance(), "reason": "run marked failed by admin"}
    AlertmanagerNotifier(scope="dag", summary="Airflow DAG run failed").notify(context)
    query = ('alertname="AirflowDagRunFailed"', 'dag_id="continuous_training"')
    [alert] = alerts(monitoring, *query)
    assert alert["annotations"]["error"] == "run marked failed by admin"
    assert "task_id" not in alert["labels"] and alert["annotations"]["run_id"] == "manual__2026-11-05"
    later = {"dag": SimpleNamespace(dag_id="continuous_training"), "run_id": "manual__2026-11-06"}  # no task: minimal
    AlertmanagerNotifier(scope="dag", summary="Airflow DAG run failed", resolve=True).notify(later)
    assert alerts(monitoring, *query, active=True) == []


def test_a_success_reported_late_leaves_a_later_failure_active(monitoring, caplog):
    """Airflow runs a DAG's success callback in the DAG processor, seconds after the run ended; a run
    that failed in between (e.g. marked failed by a user) must stay alerted until a run that ended after
    it succeeds."""
    caplog.set_level(logging.INFO, logger="mlops.notifications.alertmanager")
    dag_id = "late_callbacks"
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def run(run_id: str, ended_minutes: int) -> SimpleNamespace:
        return SimpleNamespace(dag_id=dag_id, run_id=run_id, end_date=t0 + dt.timedelta(minutes=ended_minutes))

    failed = AlertmanagerNotifier(scope="dag", summary="Airflow DAG run failed")
    resolved = AlertmanagerNotifier(scope="dag", summary="Airflow DAG run failed", resolve=True)
    query = ('alertname="AirflowDagRunFailed"', f'dag_id="{dag_id}"')
    failed.notify({"dag_run": run("failed_run", 2), "reason": "marked failed"})
    resolved.notify({"dag_run": run("earlier_success", 1)})  # its callback arrives after the failure's
    [alert] = alerts(monitoring, *query, active=True)
    assert alert["annotations"]["run_id"] == "failed_run"
    assert "kept AirflowDagRunFailed: run failed_run failed after run earlier_success ended" in caplog.text
    resolved.notify({"dag_run": run("later_success", 3)})
    assert alerts(monitoring, *query, active=True) == []


def test_a_missed_deadline_alerts_from_the_triggerer_until_the_run_ends(monitoring):
    """How Airflow's CallbackTrigger runs a deadline's AsyncCallback: the notifier built with the DAG's
    kwargs and the context the scheduler sends (the DAG run as JSON), then awaited."""
    import asyncio

    from airflow.triggers.callback import CallbackTrigger

    from mlops.notifications.alerts import batch_late_kwargs, run_no_longer_waiting

    kwargs = {**batch_late_kwargs(),
              "context": {"dag_run": {"dag_id": "continuous_training", "dag_run_id": "scheduled__2026-11-07"},
                          "deadline": {"id": "d-1", "deadline_time": "2026-11-07T02:00:00+00:00"}}}
    trigger = CallbackTrigger("mlops.notifications.alertmanager.AlertmanagerNotifier", kwargs)

    async def run():
        return [event.payload async for event in trigger.run()]

    events = asyncio.run(run())
    assert events[-1]["state"] == "success", events
    [alert] = alerts(monitoring, 'alertname="BatchLate"')
    assert alert["labels"]["dag_id"] == "continuous_training" and alert["labels"]["severity"] == "warning"
    assert alert["labels"]["run_id"] == "scheduled__2026-11-07"
    assert alert["annotations"]["deadline"] == "2026-11-07T02:00:00+00:00"
    # It stays active for lasts_seconds (not Alertmanager's 5-minute resolve timeout), until the run ends.
    ends = dt.datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
    assert ends > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    run_no_longer_waiting().notify({"dag_run": SimpleNamespace(dag_id="continuous_training",
                                                               run_id="scheduled__2026-11-07"), "ti": task_instance()})
    assert alerts(monitoring, 'alertname="BatchLate"', active=True) == []


def test_a_notifier_s_scope_is_checked():
    with pytest.raises(ValueError, match="scope must be one of task, dag, dag_run, got 'run'"):
        AlertmanagerNotifier(scope="run")
    with pytest.raises(ValueError, match="an alert of scope dag_run needs an alertname"):
        AlertmanagerNotifier(scope="dag_run")
