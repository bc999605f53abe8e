"""Alerts for DAG-run states a user sets by hand.

A run marked failed or successful in the UI (or through the REST API) ends without the DAG's own
callbacks: the API server fires only the listener hooks for it (Airflow 3.3,
airflow/api_fastapi/core_api/services/public/dag_run.py, `patch_dag_run_state`, with the message
"Dag Run's state was manually set to `failed`."). This listener posts what the DAG's callbacks post
when the scheduler ends a run, for the DAGs tagged `mlops`; runs the scheduler ends are left to those
callbacks, so nothing is posted twice. Registered by plugins/mlops_plugin.py.
"""

from __future__ import annotations

from airflow.listeners import hookimpl

from mlops.notifications.alerts import run_failed, run_no_longer_waiting, run_recovered

TAG = "mlops"
MANUAL = "Dag Run's state was manually set"


def _set_by_hand(dag_run, msg: str | None) -> bool:
    return TAG in (getattr(dag_run.dag, "tags", None) or ()) and (msg or "").startswith(MANUAL)


def _context(dag_run, msg: str) -> dict:
    return {"dag_run": dag_run, "run_id": dag_run.run_id, "reason": msg}


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    if _set_by_hand(dag_run, msg):
        for notifier in (run_failed(), run_no_longer_waiting()):
            notifier(_context(dag_run, msg))


@hookimpl
def on_dag_run_success(dag_run, msg: str):
    if _set_by_hand(dag_run, msg):
        for notifier in (run_recovered(), run_no_longer_waiting()):
            notifier(_context(dag_run, msg))
