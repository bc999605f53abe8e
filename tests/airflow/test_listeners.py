"""Runs marked by hand: the listener plugin posts the alerts the DAG's callbacks would (a real
Alertmanager), and only it is loaded as a plugin."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

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
