"""The report task and the Alertmanager notifier, against a real Pushgateway and a real Alertmanager."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.operators.report import ReportOperator, run_outcome
from tests import support

MODEL = "iris-report"
DETECT = {"champion": {"version": "1"}, "fresh_metrics": {"accuracy": 0.42},
          "drift": {"share_drifted": 0.75, "max_psi": 1.9}}
def followed(*task_ids):  # what a branch task records in Airflow 3 (the report reads it)
    return {"followed": list(task_ids)}


TRAINED = {"retrain_branch": followed("training.train"), "promotion_branch": followed("training.register")}
SKIPPED = followed("skip")


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    with support.alertmanager(root) as am, support.pushgateway(root) as pgw, support.mlflow_server(root) as mlflow:
        yield {"alertmanager": am, "pushgateway": pgw, "mlflow": mlflow}


@pytest.fixture(scope="module")
def registered(monitoring):
    """MODEL in a real MLflow registry with v1..v3, v3 the champion (what the report must name)."""
    api = f"{monitoring['mlflow']}/api/2.0/mlflow"
    httpx.post(f"{api}/registered-models/create", json={"name": MODEL}).raise_for_status()
    for _ in range(3):
        httpx.post(f"{api}/model-versions/create", json={"name": MODEL, "source": "s3://mlflow/x"}).raise_for_status()
    httpx.post(f"{api}/registered-models/alias", json={"name": MODEL, "alias": "champion", "version": "3"}
               ).raise_for_status()
    return monitoring


@pytest.fixture
def registry(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["mlflow"])
    return registered


def gauges(pushgateway: str, model: str) -> dict[str, float]:
    """The group's gauges as the Pushgateway serves them to Prometheus."""
    values = {}
    for line in httpx.get(f"http://{pushgateway}/metrics").text.splitlines():
        if line.startswith("mlops_") and f'model="{model}"' in line:
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return values


def report(**kwargs) -> ReportOperator:
    return ReportOperator(task_id="report", model_name=MODEL, **kwargs)


@pytest.mark.parametrize(("branches", "register", "outcome"), [
    ({"retrain_branch": SKIPPED}, None, "skipped"),
    ({}, None, "skipped"),
    ({"retrain_branch": followed("training.train"), "promotion_branch": followed("training.keep_champion")}, None,
     "keep"),
    (TRAINED, {"outcome": "promoted"}, "promote"),
    (TRAINED, {"outcome": "already_registered"}, "already_registered"),
    (TRAINED, {"outcome": "superseded"}, "superseded"),
])
def test_the_outcome_is_what_this_run_did(branches, register, outcome):
    assert run_outcome(branches.get("retrain_branch"), branches.get("promotion_branch"), register) == outcome


def test_a_skipped_tasks_old_xcom_is_not_read(registry):
    """A re-run that took the skip branch: register's XCom from an earlier try of the run (promoted,
    champion 1) must not reach the report; the champion is the registry's (v3)."""
    summary = report(detect=DETECT, retrain_branch=SKIPPED, promotion_branch=followed("training.register"),
                     register={"outcome": "promoted", "champion_version": "1"}).summary({})
    assert summary["decision"] == "skipped" and summary["champion_version"] == "3"


def test_a_rerun_that_registered_nothing_reports_no_promotion(registry):
    summary = report(detect=DETECT, register={"outcome": "already_registered", "version": "2"},
                     pushgateway=registry["pushgateway"], **TRAINED).execute({})
    assert summary["decision"] == "already_registered" and summary["champion_version"] == "3"
    assert gauges(registry["pushgateway"], MODEL)["mlops_promoted"] == 0
    assert gauges(registry["pushgateway"], MODEL)["mlops_champion_version"] == 3


def test_the_summary_carries_the_detection_figures_and_the_run_clock(registry):
    summary = report(detect=DETECT, retrain_branch=SKIPPED, started_at=str(time.time() - 30)).summary({})
    assert summary["fresh_accuracy"] == 0.42 and summary["drift_share"] == 0.75 and summary["drift_max_psi"] == 1.9
    assert 29 < summary["duration_seconds"] < 60
    assert report(detect=DETECT, retrain_branch=SKIPPED).summary({})["duration_seconds"] is None


def test_without_the_sensors_start_the_runs_start_date_is_used(registry):
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    summary = report(detect=DETECT).summary({"dag_run": SimpleNamespace(start_date=started)})
    assert 119 < summary["duration_seconds"] < 150


def test_without_the_registry_the_champion_detection_saw_is_reported(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{support.free_port()}")
    assert report(detect=DETECT, retrain_branch=SKIPPED).summary({})["champion_version"] == "1"
    assert "cannot read the champion from MLflow" in capsys.readouterr().out


def test_the_report_replaces_the_models_group_on_the_pushgateway(registry):
    pgw = registry["pushgateway"]
    promoted = report(detect=DETECT, register={"outcome": "promoted"}, pushgateway=pgw, **TRAINED).execute({})
    assert promoted["pushed"] is True and gauges(pgw, MODEL)["mlops_promoted"] == 1
    # The next run skipped: the group is replaced, nothing of the promotion is left.
    summary = report(detect=DETECT, retrain_branch=SKIPPED, pushgateway=pgw,
                     started_at=str(time.time() - 5)).execute({})
    now = gauges(pgw, MODEL)
    assert summary["pushed"] is True and now["mlops_promoted"] == 0 and now["mlops_champion_version"] == 3
    assert now["mlops_fresh_accuracy"] == 0.42 and now["mlops_drift_share"] == 0.75
    assert 4 < now["mlops_run_duration_seconds"] < 60 and now["mlops_last_run_timestamp_seconds"] > time.time() - 60


def test_a_pushgateway_that_is_down_does_not_fail_the_report(registry, capsys):
    down = f"127.0.0.1:{support.free_port()}"
    summary = report(detect=DETECT, retrain_branch=SKIPPED, pushgateway=down).execute({})
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


def test_a_failed_dag_run_alerts_and_the_next_success_resolves_it(monitoring):
    """The DAG's own callbacks: also a run a user marks failed in the UI (no task failed) alerts. The DAG
    processor's context carries the run's last task instance too (airflow.dag_processing.processor,
    _execute_dag_callbacks): it is still one alert for the DAG, not one for that task."""
    context = {"dag_run": SimpleNamespace(dag_id="continuous_training", run_id="manual__2026-11-05"),
               "ti": failure_context(None)["ti"], "reason": "run marked failed by admin",
               "params": {"model_name": "iris-runs"}}
    AlertmanagerNotifier(url=monitoring["alertmanager"], scope="dag",
                         summary="Airflow DAG run failed").notify(context)
    query = {"filter": ['alertname="AirflowDagRunFailed"', 'dag_id="continuous_training"']}
    alerts = httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts", params=query).json()
    assert [a["annotations"]["error"] for a in alerts] == ["run marked failed by admin"]
    assert "task_id" not in alerts[0]["labels"] and alerts[0]["annotations"]["run_id"] == "manual__2026-11-05"
    later = {"dag": SimpleNamespace(dag_id="continuous_training"), "run_id": "manual__2026-11-06"}  # no task: minimal
    AlertmanagerNotifier(url=monitoring["alertmanager"], scope="dag", summary="Airflow DAG run failed",
                         resolve=True).notify(later)
    assert httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts", params={**query, "active": "true"}).json() == []


def test_a_missed_deadline_alerts_from_the_triggerer(monitoring):
    """How Airflow's CallbackTrigger runs a deadline's AsyncCallback: the notifier built with the DAG's
    kwargs and the context the scheduler sends (the DAG run as JSON), then awaited."""
    import asyncio

    from airflow.triggers.callback import CallbackTrigger

    from mlops.settings import batch_deadline  # noqa: F401  (the DAG's interval setting)

    kwargs = {"alertname": "BatchLate", "scope": "dag_run", "severity": "warning", "summary": "batch late",
              "lasts_seconds": 3600,
              "url": monitoring["alertmanager"],
              "context": {"dag_run": {"dag_id": "continuous_training", "dag_run_id": "scheduled__2026-11-07"},
                          "deadline": {"id": "d-1", "deadline_time": "2026-11-07T02:00:00+00:00"}}}
    trigger = CallbackTrigger("mlops.notifications.alertmanager.AlertmanagerNotifier", kwargs)

    async def run():
        return [event.payload async for event in trigger.run()]

    events = asyncio.run(run())
    assert events[-1]["state"] == "success", events
    alerts = httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="BatchLate"']}).json()
    assert alerts[0]["labels"]["dag_id"] == "continuous_training" and alerts[0]["labels"]["severity"] == "warning"
    assert alerts[0]["labels"]["run_id"] == "scheduled__2026-11-07"
    assert alerts[0]["annotations"]["deadline"] == "2026-11-07T02:00:00+00:00"
    # It stays active for lasts_seconds (not Alertmanager's 5-minute resolve timeout), until the run ends.
    ends = dt.datetime.fromisoformat(alerts[0]["endsAt"].replace("Z", "+00:00"))
    assert ends > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)
    from .test_dag import parse_dag

    [ended] = [c for c in parse_dag().on_success_callback if c.alertname == "BatchLate"]
    ended.url = monitoring["alertmanager"]
    ended.notify({"dag_run": SimpleNamespace(dag_id="continuous_training", run_id="scheduled__2026-11-07"),
                  "ti": failure_context(None)["ti"]})
    assert httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts",
                     params={"filter": ['alertname="BatchLate"'], "active": "true"}).json() == []


def test_the_dag_alerts_on_its_runs_and_its_batch_deadline():
    from .test_dag import parse_dag

    dag = parse_dag()
    assert dag.on_failure_callback and dag.on_success_callback
    failed = {(c.alertname, c.scope, c.resolve) for c in dag.on_failure_callback}
    succeeded = {(c.alertname, c.scope, c.resolve) for c in dag.on_success_callback}
    assert failed == {("AirflowDagRunFailed", "dag", False), ("BatchLate", "dag_run", True)}
    assert succeeded == {("AirflowDagRunFailed", "dag", True), ("BatchLate", "dag_run", True)}
    [deadline] = dag.deadline
    assert deadline.callback.kwargs["alertname"] == "BatchLate" and deadline.callback.kwargs["scope"] == "dag_run"


def test_a_notifier_s_scope_is_checked():
    with pytest.raises(ValueError, match="scope must be one of task, dag, dag_run, got 'run'"):
        AlertmanagerNotifier(scope="run")
    with pytest.raises(ValueError, match="an alert of scope dag_run needs an alertname"):
        AlertmanagerNotifier(scope="dag_run")


def test_a_run_marked_by_hand_alerts_through_the_listener(monitoring, monkeypatch):
    """The API server fires only listener hooks when a user sets a run's state (the DAG's callbacks do
    not run): the listener posts what those callbacks would, for the DAGs tagged mlops only, and nothing
    for the runs the scheduler ends (the callbacks post those)."""
    from mlops import listeners

    monkeypatch.setenv("MLOPS_ALERTMANAGER_URL", monitoring["alertmanager"])

    def run(dag_id, tags, run_id="manual__2026-11-09"):
        return SimpleNamespace(dag_id=dag_id, run_id=run_id, dag=SimpleNamespace(dag_id=dag_id, tags=tags))

    def run_alerts(dag_id):
        return httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts",
                         params={"filter": ['alertname="AirflowDagRunFailed"', f'dag_id="{dag_id}"'],
                                 "active": "true"}).json()

    listeners.on_dag_run_failed(run("by_scheduler", ["mlops"]), "task_failure")
    listeners.on_dag_run_failed(run("not_ours", ["other"]), "Dag Run's state was manually set to `failed`.")
    assert run_alerts("by_scheduler") == [] and run_alerts("not_ours") == []

    listeners.on_dag_run_failed(run("marked", ["mlops"]), "Dag Run's state was manually set to `failed`.")
    [alert] = run_alerts("marked")
    assert alert["annotations"]["error"] == "Dag Run's state was manually set to `failed`."
    assert alert["annotations"]["run_id"] == "manual__2026-11-09"
    listeners.on_dag_run_success(run("marked", ["mlops"], "manual__2026-11-10"),
                                 "Dag Run's state was manually set to `success`.")
    assert run_alerts("marked") == []


def test_only_the_plugin_module_is_loaded_as_a_plugin():
    """Airflow's plugin manager imports every .py file of the plugins folder under its bare name
    (`stage`, `kserve`, ...); .airflowignore leaves it only the registration module."""
    from airflow._shared.module_loading import find_path_from_directory

    found = [Path(p).name for p in find_path_from_directory(str(support.REPO / "plugins"), ".airflowignore", "glob")]
    assert [p for p in found if p.endswith(".py")] == ["mlops_plugin.py"]
    from mlops_plugin import MlopsPlugin

    from mlops import listeners

    assert MlopsPlugin.listeners == [listeners]
