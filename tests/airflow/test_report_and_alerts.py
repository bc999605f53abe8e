"""The report task and the Alertmanager notifier, against a real Pushgateway and a real Alertmanager."""

from __future__ import annotations

import datetime as dt
import logging
import time
from types import SimpleNamespace

import httpx
import pytest

from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.operators.report import ReportOperator
from tests import support

MODEL = "iris-report"
DETECT = {"champion": {"version": "1"}, "fresh_metrics": {"accuracy": 0.42},
          "drift": {"share_drifted": 0.75, "max_psi": 1.9}}
TRAIN = {"decision": "promote", "reason": "challenger beats champion"}
DEPLOY = {"version": "2", "previous_version": "1", "changed": True}


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    with support.alertmanager(root) as am, support.pushgateway(root) as pgw:
        yield {"alertmanager": am, "pushgateway": pgw}


def gauges(pushgateway: str, model: str) -> dict[str, float]:
    """The group's gauges as the Pushgateway serves them to Prometheus."""
    values = {}
    for line in httpx.get(f"http://{pushgateway}/metrics").text.splitlines():
        if line.startswith("mlops_") and f'model="{model}"' in line:
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return values


def report(**kwargs) -> ReportOperator:
    return ReportOperator(task_id="report", model_name=MODEL, **kwargs)


def test_the_summary_of_a_skipped_run_keeps_the_champion_from_detection():
    summary = report(detect=DETECT, started_at=str(time.time() - 30)).summary({})
    assert summary["decision"] == "skipped" and summary["champion_version"] == "1"
    assert summary["fresh_accuracy"] == 0.42 and summary["drift_share"] == 0.75 and summary["drift_max_psi"] == 1.9
    assert 29 < summary["duration_seconds"] < 60


def test_the_summary_of_a_promotion_names_the_deployed_champion():
    summary = report(detect=DETECT, train=TRAIN, deploy=DEPLOY).summary({})
    assert summary["decision"] == "promote" and summary["champion_version"] == "2"
    assert summary["duration_seconds"] is None  # neither the sensor's start nor a DAG run start date


def test_without_the_sensors_start_the_runs_start_date_is_used():
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    summary = report(detect=DETECT).summary({"dag_run": SimpleNamespace(start_date=started)})
    assert 119 < summary["duration_seconds"] < 150


def test_a_first_run_without_a_champion_reports_no_version():
    summary = report(detect={"champion": None, "fresh_metrics": None, "drift": None}).summary({})
    assert summary["champion_version"] is None and summary["fresh_accuracy"] is None


def test_the_report_replaces_the_models_group_on_the_pushgateway(monitoring):
    pgw = monitoring["pushgateway"]
    stale = report(detect=DETECT, train=TRAIN, deploy=DEPLOY, pushgateway=pgw).execute({})
    assert stale["pushed"] is True
    assert gauges(pgw, MODEL)["mlops_promoted"] == 1 and gauges(pgw, MODEL)["mlops_champion_version"] == 2
    # The next run skipped: the group is replaced, nothing of the promotion is left.
    summary = report(detect={**DETECT, "champion": {"version": "2"}}, pushgateway=pgw,
                     started_at=str(time.time() - 5)).execute({})
    now = gauges(pgw, MODEL)
    assert summary["pushed"] is True and now["mlops_promoted"] == 0 and now["mlops_champion_version"] == 2
    assert now["mlops_fresh_accuracy"] == 0.42 and now["mlops_drift_share"] == 0.75
    assert 4 < now["mlops_run_duration_seconds"] < 60 and now["mlops_last_run_timestamp_seconds"] > time.time() - 60


def test_a_pushgateway_that_is_down_does_not_fail_the_report(capsys):
    down = f"127.0.0.1:{support.free_port()}"
    summary = report(detect=DETECT, pushgateway=down).execute({})
    assert summary["pushed"] is False
    assert f"could not push metrics to the Pushgateway at {down}" in capsys.readouterr().out  # the task log


def failure_context(error: Exception, model: str | None = MODEL) -> dict:
    ti = SimpleNamespace(dag_id="continuous_training", task_id="data.ingest", run_id="manual__2026-11-04",
                         try_number=2, log_url="http://airflow.example/log")
    return {"ti": ti, "dag_run": SimpleNamespace(run_id="manual__2026-11-04"), "exception": error,
            "params": {"model_name": model} if model else {}}


def test_the_alert_names_the_task_run_try_and_error():
    alert = AlertmanagerNotifier(severity="warning", summary="retrying").alert(
        failure_context(RuntimeError("mlpipeline ingest: error: partition 2026-11-04 yielded no usable data")))
    assert alert["labels"] == {"alertname": "AirflowTaskFailed", "severity": "warning",
                               "dag_id": "continuous_training", "task_id": "data.ingest",
                               "run_id": "manual__2026-11-04"}
    assert alert["annotations"]["try_number"] == "2" and alert["annotations"]["summary"] == "retrying"
    assert alert["annotations"]["error"].endswith("yielded no usable data")
    assert dt.datetime.fromisoformat(alert["startsAt"]) <= dt.datetime.now(dt.UTC)


def test_a_failure_reaches_alertmanager_and_the_pushgateway(monitoring, monkeypatch):
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", monitoring["pushgateway"])
    model = "iris-alerts"
    AlertmanagerNotifier(url=monitoring["alertmanager"]).notify(failure_context(ValueError("no rows"), model))
    alerts = httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="AirflowTaskFailed"', 'task_id="data.ingest"']}).json()
    assert [a["annotations"]["error"] for a in alerts] == ["no rows"]
    assert alerts[0]["labels"]["severity"] == "critical"
    assert gauges(monitoring["pushgateway"], model)["mlops_last_failure_timestamp_seconds"] > time.time() - 60


def test_a_retry_alerts_but_records_no_failure(monitoring, monkeypatch):
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", monitoring["pushgateway"])
    model = "iris-retries"
    AlertmanagerNotifier(url=monitoring["alertmanager"], severity="warning",
                         record_failure=False).notify(failure_context(TimeoutError("slow"), model))
    alerts = httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts",
                       params={"filter": ['severity="warning"']}).json()
    assert [a["annotations"]["error"] for a in alerts] == ["slow"]
    assert gauges(monitoring["pushgateway"], model) == {}


def test_alerting_never_masks_the_tasks_own_failure(monitoring, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="mlops.notifications.alertmanager")
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", f"127.0.0.1:{support.free_port()}")
    down = f"http://127.0.0.1:{support.free_port()}"
    AlertmanagerNotifier(url=down, timeout=2).notify(failure_context(ValueError("no rows")))  # does not raise
    assert "could not post the alert to Alertmanager" in caplog.text
    assert "could not push the failure to the Pushgateway" in caplog.text
    assert "ALERT AirflowTaskFailed: continuous_training.data.ingest" in caplog.text
