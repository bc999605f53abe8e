"""Listeners for the end of a DAG run: alerts for run states a user sets by hand, and the report's summary as
the run's note.

A run marked failed or successful in the UI (or through the REST API) ends without the DAG's own
callbacks: the API server fires only the listener hooks for it (Airflow 3.3,
airflow/api_fastapi/core_api/services/public/dag_run.py, `patch_dag_run_state`, with the message
"Dag Run's state was manually set to `failed`."). This listener posts what the DAG's callbacks post
when the scheduler ends a run, for the DAGs tagged `mlops`; runs the scheduler ends are left to those
callbacks, so nothing is posted twice. Registered by plugins/mlops_plugin.py.

**The run's note.** "Why did this run branch?" is answered on the run's page and in the grid by its note: the
`report` task's one-line summary (mlops.operators.report.summary_line). A task cannot set its own run's note
in Airflow 3.3: the Task SDK's execution API has no route and the supervisor no message for it (it reads a
run's note, and sets one only on a run it triggers; apache/airflow#69403, which would add it, is open), and
the REST API's `PATCH .../dagRuns/{run_id}` would need credentials of an Airflow user on every worker. A
listener runs where the run ends, in the scheduler (or the API server, for a run marked by hand), with the
metadata database: when a run of an `mlops` DAG ends, it reads the report's XCom (in a session of its own)
and sets the note on the run, which the scheduler commits with the run's new state (writing it from another
session would wait on the run's row, which the scheduler holds locked until it commits). Workers get no
database access and no new secret.

A note a person wrote is never overwritten: the note is written as NOTE_AUTHOR, and the UI and the REST API
record the user who sets or edits a note (`patch_dag_run_note`), so only an empty note or one still ours (a
re-run's earlier summary) is replaced. Only a report that succeeded in this try is read: a report skipped in
a re-run still holds the XCom of the try before it.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl

from mlops.notifications.alerts import run_failed, run_no_longer_waiting, run_recovered

log = logging.getLogger(__name__)
TAG = "mlops"
MANUAL = "Dag Run's state was manually set"
REPORT_TASK = "report"
NOTE_AUTHOR = "mlops report"  # dag_run_note.user_id of the notes this listener writes: no user's id


def _ours(dag_run) -> bool:
    return TAG in (getattr(dag_run.dag, "tags", None) or ())


def _set_by_hand(dag_run, msg: str | None) -> bool:
    return _ours(dag_run) and (msg or "").startswith(MANUAL)


def _context(dag_run, msg: str) -> dict:
    return {"dag_run": dag_run, "run_id": dag_run.run_id, "reason": msg}


def note_the_report(dag_run) -> None:
    """The report's summary line as the run's note, unless a person's note is there. The run is the one the
    scheduler or the API server holds in its session; `dag.test()` ends a run it holds outside any session,
    which gets no note. The scheduler's session may not commit (Airflow guards its transaction, so not even a
    savepoint is allowed) and a failed query would abort its transaction: the report's state and XCom are read
    in a session of their own (both were committed by the task's end), and the note is only set on the run,
    for the scheduler's own commit. Nothing is raised: pluggy would skip the other listeners."""
    # the scheduler's and the API server's modules: imported where the hook runs, never by a worker's plugin load
    from airflow.models.dagrun import DagRun
    from sqlalchemy.orm import object_session

    session = object_session(dag_run) if isinstance(dag_run, DagRun) and _ours(dag_run) else None
    if session is None:
        return
    try:
        with session.no_autoflush:  # the lazy load of the note must not flush the scheduler's changes
            note = dag_run.dag_run_note
            if note is not None and note.content and note.user_id != NOTE_AUTHOR:
                return  # a person's
            state, line = _report(dag_run.dag_id, dag_run.run_id)
            if not line:
                # no report in this try: an earlier try's summary of ours would answer for a run that did not happen
                if note is not None and note.content:
                    note.content = f"no report in this try (the report task is {state or 'missing'})"
            elif note is None:
                dag_run.note = (line, NOTE_AUTHOR)
            else:
                note.content, note.user_id = line, NOTE_AUTHOR
    except Exception:
        log.exception("the report's summary could not be written as the note of %s", dag_run.run_id)


def _report(dag_id: str, run_id: str) -> tuple[str | None, str | None]:
    """(the report task's state, its summary line when it succeeded in this try), read in a session of its own.
    Only a report that succeeded is read: a report skipped in a re-run still holds the try before's XCom."""
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    # not create_session(): its session is the thread's scoped one, the scheduler's own, and it commits
    reader = settings.NonScopedSession()
    try:
        state = reader.scalar(select(TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == REPORT_TASK,
            TaskInstance.map_index == -1))
        if state != TaskInstanceState.SUCCESS:
            return state, None
        found = reader.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=REPORT_TASK,
                                                  key="return_value", map_indexes=-1)).first()
        summary = XComModel.deserialize_value(found) if found is not None else None
    finally:
        reader.close()  # read only: nothing to commit
    return state, summary.get("note") if isinstance(summary, dict) else None


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    if _set_by_hand(dag_run, msg):
        for notifier in (run_failed(), run_no_longer_waiting()):
            notifier(_context(dag_run, msg))
    note_the_report(dag_run)


@hookimpl
def on_dag_run_success(dag_run, msg: str):
    if _set_by_hand(dag_run, msg):
        for notifier in (run_recovered(), run_no_longer_waiting()):
            notifier(_context(dag_run, msg))
    note_the_report(dag_run)
