"""StageOperator (the local target's stage task) against the real `mlpipeline` CLI."""

from __future__ import annotations

import json

import pytest

from mlops.operators.stage import StageOperator

from ..conftest import connect
from ..dag_test import EXAMPLE_DATASET

MODEL = "iris-classifier"  # the example dataset file's model: its batches land in landing/<model>/


@pytest.fixture
def mlflow(local_target, monkeypatch):
    connect(monkeypatch, mlflow_default="http://127.0.0.1:1")  # the stages below never call it


def test_operator_returns_the_stage_result_as_its_xcom(local_target, mlflow):
    task = StageOperator(task_id="simulate", stage="simulate",
                         options={"dataset": EXAMPLE_DATASET, "partition": "2026-11-02", "rows": 12})
    result = task.execute(context={})
    assert result["rows"] == 12 and result["path"].startswith(str(local_target / "landing" / MODEL))
    json.dumps(result)  # XCom-serialisable


def test_operator_fails_the_task_with_the_stage_message_and_changes_nothing(local_target, mlflow):
    (local_target / "landing" / MODEL / "2026-11-03").mkdir(parents=True)
    (local_target / "landing" / MODEL / "2026-11-03" / "bad.csv").write_bytes(b"")
    task = StageOperator(task_id="ingest", stage="ingest",
                         options={"dataset_content": EXAMPLE_DATASET.read_text(), "partition": "2026-11-03"})
    with pytest.raises(RuntimeError, match="partition 2026-11-03 yielded no usable data"):
        task.execute(context={})
    assert not (local_target / "curated").exists()


def test_options_hold_the_upstream_results_the_dag_passes(local_target, mlflow):
    """The DAG hands a stage its upstream's result as an XComArg: rendered like any template field, a
    None value leaves its flag out; each key of the result is its own XCom too (task.output["run_key"])."""
    from airflow.sdk import DAG

    with DAG("xcomargs", schedule=None):
        upstream = StageOperator(task_id="simulate", stage="simulate", options={"partition": "2026-11-05"})
        task = StageOperator(task_id="ingest", stage="ingest",
                             options={"partition": upstream.output["partition"], "schema": None})
    assert task.multiple_outputs and task.upstream_task_ids == {"simulate"}

    class TaskInstance:
        def xcom_pull(self, task_ids, key="return_value", default=None, **_):
            return {"simulate": {"partition": "2026-11-05"}}[task_ids].get(key, default)

    task.render_template_fields({"ti": TaskInstance()})
    assert task.options == {"partition": "2026-11-05", "schema": None}


def test_a_task_that_runs_only_with_an_upstream_result_skips_itself_without_it(local_target, mlflow):
    from airflow.sdk.exceptions import AirflowSkipException

    task = StageOperator(task_id="roll_back", stage="rollback", only_with=None,
                         only_with_reason="deploy recorded no rollback", options={"data_root": None})
    with pytest.raises(AirflowSkipException, match="nothing to do: deploy recorded no rollback"):
        task.execute({})
