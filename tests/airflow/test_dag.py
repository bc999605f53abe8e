"""DAG integrity: it parses, has the designed shape, and parsing it imports nothing heavy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

EDGES = {
    ("wait_for_batch", "data.ingest"), ("data.ingest", "data.split"), ("data.split", "detect_degradation"),
    ("detect_degradation", "decide_retraining"), ("decide_retraining", "skip"),
    ("decide_retraining", "training.train"), ("training.train", "training.check_decision"),
    ("training.check_decision", "training.register"), ("training.check_decision", "training.keep_champion"),
    ("training.register", "deploy"), ("skip", "report"), ("training.keep_champion", "report"), ("deploy", "report"),
}


def parse_dag():
    """The DAG as the DAG processor parses it (for the target the environment names)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["continuous_training"]


@pytest.fixture(scope="module")
def dag():
    return parse_dag()


def test_tasks_and_edges(dag):
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == EDGES
    assert dag.schedule == "@daily"


def test_a_waiting_run_does_not_block_others_but_registry_moves_are_serial(dag):
    assert dag.max_active_runs > 1  # a run waiting hours for its batch holds no one up
    for task_id in ("training.register", "deploy"):
        assert dag.get_task(task_id).max_active_tis_per_dag == 1, task_id


def test_every_task_after_the_sensor_works_on_the_partition_it_resolved(dag):
    assert dag.get_task("wait_for_batch").partition == "{{ params.partition or ds }}"
    resolved = "{{ ti.xcom_pull(task_ids='wait_for_batch')['partition'] }}"
    for task_id in ("data.ingest", "data.split"):
        assert dag.get_task(task_id).options["partition"] == resolved
    param = dag.params.get_param("partition")
    assert param.value is None and "latest" in param.description


def test_params_are_typed_and_described(dag):
    for name in ("accuracy_threshold", "drift_limit", "force_retrain", "model_name", "training_window", "partition"):
        param = dag.params.get_param(name)
        assert param.schema.get("type") and param.description, name
    assert dag.doc_md and "Continuous training" in dag.doc_md


def test_retries_back_off_and_alert(dag, monkeypatch):
    from mlops.settings import task_retries

    task = dag.get_task("data.ingest")
    assert task.retries == task_retries() and task.retry_exponential_backoff  # the tests set 0 retries
    monkeypatch.delenv("MLOPS_TASK_RETRIES")
    assert task_retries() == 2
    assert task.on_failure_callback and task.on_retry_callback


def test_parsing_the_dag_folder_imports_nothing_heavy():
    # Also not Airflow's task supervisor: outside a task or a DAG-processor parse the settings do not
    # go looking for Variables.
    code = ("import sys; sys.path.insert(0, 'plugins'); import runpy; runpy.run_path('dags/continuous_training.py'); "
            "heavy = {'sklearn', 'mlflow', 'kfp', 'kserve', 'pandas', 'kubernetes'} & "
            "{m.split('.')[0] for m in sys.modules} | {'airflow.sdk.execution_time.supervisor'} & set(sys.modules); "
            "print(sorted(heavy))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_VAR_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_extra_links_survive_serialization(dag):
    """The UI reads links through the serialized DAG; the stages that produce runs, versions and an endpoint
    carry them."""
    from airflow.serialization.serialized_objects import DagSerialization

    tasks = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(dag)["dag"]["tasks"]}
    assert tasks["training.train"]["_operator_extra_links"] == {"MLflow run": "_link_MlflowRunLink"}
    assert set(tasks["deploy"]["_operator_extra_links"]) == {"MLflow model version", "Serving endpoint"}
    assert "MLflow model version" in tasks["training.register"]["_operator_extra_links"]
