"""DAG integrity: it parses, has the designed shape, and parsing it imports nothing heavy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

EDGES = {
    ("wait_for_batch", "data.ingest"), ("data.ingest", "data.split"), ("data.split", "detect_degradation"),
    ("detect_degradation", "decide_retraining"), ("decide_retraining", "no_retraining"),
    ("decide_retraining", "training.train"), ("training.train", "training.check_decision"),
    ("training.check_decision", "training.approve_promotion"), ("training.check_decision", "training.keep_champion"),
    ("training.approve_promotion", "training.register"), ("training.approve_promotion", "training.promotion_rejected"),
    ("training.register", "deploy"), ("deploy", "roll_back_champion"),
    ("no_retraining", "report"), ("training.keep_champion", "report"), ("training.promotion_rejected", "report"),
    ("deploy", "report"), ("roll_back_champion", "report"),
    # data handed on as XComArgs: train takes detection's run key, register the training's, the approval
    # shows the decision and the drift
    ("detect_degradation", "training.train"), ("training.train", "training.register"),
    ("training.train", "training.approve_promotion"), ("detect_degradation", "training.approve_promotion"),
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


def test_each_task_takes_its_upstream_s_result(dag):
    """XComArgs, not Jinja strings: the partition the sensor resolved, the run key split made."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    def reads(task_id, option):
        arg = dag.get_task(task_id).options[option]
        assert isinstance(arg, PlainXComArg), (task_id, option, arg)
        return arg.operator.task_id, arg.key

    assert dag.get_task("wait_for_batch").partition == "{{ params.partition or ds }}"
    assert reads("data.ingest", "partition") == ("wait_for_batch", "partition")
    assert reads("data.split", "partition") == ("data.ingest", "partition")
    assert reads("detect_degradation", "run_key") == ("data.split", "run_key")
    assert reads("training.register", "run_key") == ("training.train", "run_key")
    assert reads("training.register", "approved_by") == ("training.approve_promotion", "approved_by")
    assert reads("roll_back_champion", "to_version") == ("deploy", "rollback_to_version")
    assert reads("roll_back_champion", "from_version") == ("deploy", "rollback_from_version")
    assert not dag.render_template_as_native_obj
    param = dag.params.get_param("partition")
    assert param.value is None and "latest" in param.description


def test_a_failed_deploy_is_rolled_back_by_a_task_of_its_own(dag):
    roll_back = dag.get_task("roll_back_champion")
    assert roll_back.trigger_rule == "none_skipped" and roll_back.upstream_task_ids == {"deploy"}
    assert roll_back.stage == "rollback" and roll_back.options["data_root"] is None
    assert "roll_back_champion" in dag.get_task("report").upstream_task_ids  # a rolled-back canary is reported
    # none_skipped also lets a deploy that never ran (upstream_failed) by: without a plan it skips itself.
    assert (roll_back.only_with.operator.task_id, roll_back.only_with.key) == ("deploy", "rollback_reason")


def test_params_are_typed_and_described(dag):
    for name in ("accuracy_threshold", "drift_limit", "force_retrain", "model_name", "training_window", "partition"):
        param = dag.params.get_param(name)
        assert param.schema.get("type") and param.description, name
    assert dag.doc_md and "Continuous training" in dag.doc_md


def test_retries_back_off_and_alert(dag):
    from mlops.notifications.alertmanager import AlertmanagerNotifier
    from mlops.notifications.pushgateway import FailureMetricNotifier

    task = dag.get_task("data.ingest")
    assert task.retries == 0 and task.retry_exponential_backoff  # the tests set [mlops] task_retries = 0
    assert {type(n) for n in task.on_failure_callback} == {AlertmanagerNotifier, FailureMetricNotifier}
    assert [n.severity for n in task.on_retry_callback] == ["warning"]


def test_parsing_the_dag_folder_imports_nothing_heavy():
    # Also not Airflow's task supervisor: reading the settings asks nothing of a running Airflow.
    code = ("import sys; sys.path.insert(0, 'plugins'); import runpy; runpy.run_path('dags/continuous_training.py'); "
            "heavy = {'sklearn', 'mlflow', 'kfp', 'kserve', 'pandas', 'kubernetes'} & "
            "{m.split('.')[0] for m in sys.modules} | {'airflow.sdk.execution_time.supervisor'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "AIRFLOW__MLOPS__TARGET": "local"})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_wrong_target_fails_the_parse_with_its_reason(monkeypatch):
    """No silent fallback to `local`: the import error the Airflow UI shows names the option."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "moon")
    errors = DagBag(dag_folder=str(REPO / "dags")).import_errors
    [message] = errors.values()
    assert "[mlops] target must be one of local, kubernetes, got 'moon' (AIRFLOW__MLOPS__TARGET)" in message


def test_extra_links_survive_serialization(dag):
    """The UI reads links through the serialized DAG; the stages that produce runs, versions and an endpoint
    carry them."""
    from airflow.serialization.serialized_objects import DagSerialization

    tasks = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(dag)["dag"]["tasks"]}
    assert tasks["training.train"]["_operator_extra_links"] == {"MLflow run": "_link_MlflowRunLink"}
    assert set(tasks["deploy"]["_operator_extra_links"]) == {"MLflow model version", "Serving endpoint"}
    assert "MLflow model version" in tasks["training.register"]["_operator_extra_links"]
