"""Runs marked by hand: the listener plugin posts the alerts the DAG's callbacks would (a real
Alertmanager), and only it is loaded as a plugin. Runs that end: the listener writes the report's summary as
the run's note (a real metadata database), never over a person's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import support

from .monitoring import alerts

MARKED = "Dag Run's state was manually set to `failed`."


def run(dag_id, tags, run_id="manual__2026-11-09"):
    return SimpleNamespace(dag_id=dag_id, run_id=run_id, dag=SimpleNamespace(dag_id=dag_id, tags=tags))


def test_a_run_marked_by_hand_alerts_through_the_listener(monitoring):
    """The API server fires only listener hooks when a user sets a run's state (the DAG's callbacks do
    not run): the listener posts what those callbacks would, for the DAGs tagged mlops only, and nothing
    for the runs the scheduler ends (the callbacks post those)."""
    from mlops import listeners

    def run_alerts(dag_id):
        return alerts(monitoring, 'alertname="AirflowDagRunFailed"', f'dag_id="{dag_id}"', active=True)

    listeners.on_dag_run_failed(run("by_scheduler", ["mlops"]), "task_failure")
    listeners.on_dag_run_failed(run("not_ours", ["other"]), MARKED)
    assert run_alerts("by_scheduler") == [] and run_alerts("not_ours") == []

    listeners.on_dag_run_failed(run("marked", ["mlops"]), MARKED)
    [alert] = run_alerts("marked")
    assert alert["annotations"]["error"] == MARKED and alert["annotations"]["run_id"] == "manual__2026-11-09"
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



# dag.test() runs only DAGs it finds in a DAG bundle: a stand-in DAG whose `report` returns the summary the
# run's conf gives it, as the real report's XCom holds it.
REPORT_DAG = """
import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def report(dag_run):
    return {{"decision": "promote", "note": dag_run.conf["note"]}}


with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)):
    PythonOperator(task_id="report", python_callable=report)
"""
SUMMARY = "promote v2: fresh accuracy 0.0173 < threshold 0.85; canary healthy over 201 requests"


@pytest.fixture
def report_run(airflow_db, tmp_path, monkeypatch):
    """A finished run of the stand-in DAG (dag.test()), its report's XCom in the metadata database."""
    import datetime as dt
    import json

    dag_id = "report_note"
    (tmp_path / f"{dag_id}.py").write_text(REPORT_DAG.format(dag_id=dag_id))
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": f"test-{dag_id}", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(tmp_path)}}]))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    dagrun = bag.dags[dag_id].test(logical_date=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), run_conf={"note": SUMMARY})
    assert dagrun.state == "success"
    return dagrun


def stored_note(dagrun) -> tuple[str | None, str | None]:
    """(the run's note, who wrote it) as the metadata database has them."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        note = session.get(DagRun, dagrun.id).dag_run_note
        return (note.content, note.user_id) if note else (None, None)


def ended(dagrun, change=lambda run, session: None, tags=("mlops",)) -> tuple[str | None, str | None]:
    """`change(run, session)` committed (the state the run's tasks left), then the run's end as the scheduler
    fires it: the run loaded in a session under the scheduler's guard (Airflow's prohibit_commit: no commit,
    not even a savepoint's, but the guard's own), its DAG (tags) set on it; the note as stored after that commit."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.sqlalchemy import prohibit_commit

    from mlops import listeners

    with create_session() as session:
        change(session.get(DagRun, dagrun.id), session)
    with create_session() as session, prohibit_commit(session) as guard:
        run = session.get(DagRun, dagrun.id)
        run.dag = SimpleNamespace(dag_id=run.dag_id, tags=list(tags))
        listeners.on_dag_run_success(run, "success")
        guard.commit()
    return stored_note(dagrun)


def noted(content: str):
    """A change that leaves `content` as the run's note, the listener's own (an earlier try's summary)."""
    from mlops.listeners import NOTE_AUTHOR

    def change(run, session):
        if run.dag_run_note is None:
            run.note = (content, NOTE_AUTHOR)
        else:
            run.dag_run_note.content, run.dag_run_note.user_id = content, NOTE_AUTHOR
    return change


def test_the_report_s_summary_becomes_the_run_s_note_unless_a_person_wrote_one(report_run):
    from airflow.api_fastapi.core_api.services.public.dag_run import patch_dag_run_note

    from mlops.listeners import NOTE_AUTHOR

    person = SimpleNamespace(get_id=lambda: "admin")

    def by_hand(note):  # the UI's and the REST API's way: the writer is recorded
        return lambda run, session: patch_dag_run_note(dag_run=run, note=note, user=person)

    assert ended(report_run) == (SUMMARY, NOTE_AUTHOR)
    # An earlier try's summary, still the listener's, is replaced by this try's.
    assert ended(report_run, noted("keep v1: an earlier try")) == (SUMMARY, NOTE_AUTHOR)
    # A note a person edited is theirs: kept; so is one they wrote on a run without one.
    edited = "promote v2: checked the batch by hand, fine"
    assert ended(report_run, by_hand(edited)) == (edited, "admin")
    assert ended(report_run, by_hand("")) == (SUMMARY, NOTE_AUTHOR)  # cleared: empty, the summary again
    assert ended(report_run, by_hand("investigating this batch")) == ("investigating this batch", "admin")


def test_a_report_that_did_not_succeed_in_this_try_is_not_read(report_run):
    """A re-run that skipped the report: its XCom is the earlier try's."""
    def report_skipped(run, session):
        run.get_task_instance("report", session=session).state = "skipped"

    assert ended(report_run, report_skipped) == (None, None)
    # ... and an earlier try's summary, still the listener's, no longer answers for this try
    from mlops.listeners import NOTE_AUTHOR

    def earlier_summary_then_skipped(run, session):
        noted(SUMMARY)(run, session)
        report_skipped(run, session)

    assert ended(report_run, earlier_summary_then_skipped) == ("no report in this try (the report task is skipped)",
                                                               NOTE_AUTHOR)


def test_a_failure_while_reading_the_report_is_logged_not_raised(report_run, monkeypatch, caplog):
    """The listener runs in the scheduler's transaction: a failure is logged, never raised, and the scheduler's
    commit still goes through."""
    from airflow.models.xcom import XComModel

    def broken(*args, **kwargs):
        raise RuntimeError("the XCom table is unreadable")

    monkeypatch.setattr(XComModel, "get_many", broken)
    assert ended(report_run) == (None, None)  # the guard's commit went through
    assert "could not be written as the note" in caplog.text and "the XCom table is unreadable" in caplog.text


def test_runs_of_other_dags_get_no_note(report_run):
    assert ended(report_run, tags=["other"]) == (None, None)
