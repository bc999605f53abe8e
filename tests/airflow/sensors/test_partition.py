"""PartitionSensor: the standard FileSensor on the data volume's connection, waiting in one model's landing
area, with `latest`, a partition check and the result every later task reads; the wait itself is
FileSensor's and FileTrigger's."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.providers.standard.triggers.file import FileTrigger
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

from mlops.sensors.partition import PartitionSensor
from tests.support import first_event


class TaskInstance:
    """The XCom side of a task instance: what the sensor pushes before it defers, it reads on resume."""

    def __init__(self):
        self.xcoms = {}

    def xcom_push(self, key, value):
        self.xcoms[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", **_):
        return self.xcoms.get(key)


MODEL = "iris-classifier"


def land(root, partition: str, complete: bool = True, model: str = MODEL):
    folder = root / "landing" / model / partition
    folder.mkdir(parents=True)
    if complete:
        (folder / "_SUCCESS").touch()
    return folder


def sensor(partition: str, model: str = MODEL, **kwargs) -> PartitionSensor:
    return PartitionSensor(task_id="wait", model_name=model, partition=partition, deferrable=True, **kwargs)


def test_the_batch_there_returns_at_once_with_what_later_tasks_read(local_target):
    folder = land(local_target, "2026-11-01")
    before = time.time()
    found = sensor("2026-11-01").execute({"ti": TaskInstance()})
    assert found["partition"] == "2026-11-01" and found["folder"] == str(folder)
    assert before <= found["started_at"] <= time.time()


def test_a_missing_batch_defers_to_the_file_trigger_with_the_sensor_s_timeout(local_target):
    ti = TaskInstance()
    waiting = sensor("2026-11-02", timeout=600, poke_interval=0.05, soft_fail=True)
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, FileTrigger) and deferred.value.timeout.total_seconds() == 600
    assert trigger.filepath == str(local_target / "landing" / MODEL / "2026-11-02" / "_SUCCESS")
    started = ti.xcoms["started_at"]
    # The writer drops the marker; the trigger fires; the resumed sensor reports the run's clock.
    threading.Timer(0.2, lambda: land(local_target, "2026-11-02")).start()
    assert first_event(trigger) is True
    done = sensor("2026-11-02").resume_execution("execute_complete", {"event": True}, {"ti": ti})
    assert done == {"partition": "2026-11-02", "folder": str(local_target / "landing" / MODEL / "2026-11-02"),
                    "started_at": started}


def test_no_batch_by_the_timeout_skips_the_run(local_target):
    """Airflow fails a deferral past its timeout with __fail__ TIMEOUT (BaseOperator.resume_execution);
    the sensor makes it AirflowSensorTimeout, and soft_fail a skip."""
    with pytest.raises(AirflowSkipException):
        sensor("2026-11-02").resume_execution("__fail__", {"error": "TIMEOUT"}, {"ti": TaskInstance()})


def test_another_model_s_batch_is_not_this_model_s(local_target):
    land(local_target, "2026-11-01", model="wine-classifier")
    with pytest.raises(TaskDeferred):  # still waiting: the wine batch is in wine's landing area
        sensor("2026-11-01").execute({"ti": TaskInstance()})
    found = sensor("2026-11-01", model="wine-classifier").execute({"ti": TaskInstance()})
    assert found["folder"] == str(local_target / "landing" / "wine-classifier" / "2026-11-01")


def test_latest_is_the_model_s_newest_complete_batch(local_target):
    land(local_target, "2026-11-01")
    land(local_target, "2026-11-03")
    land(local_target, "2026-11-04", complete=False)  # still being written
    land(local_target, "2026-11-05", model="wine-classifier")  # another model's
    (local_target / "landing" / MODEL / "notes").mkdir()
    found = sensor("latest").execute({"ti": TaskInstance()})
    assert found["partition"] == "2026-11-03" and found["folder"].endswith(f"landing/{MODEL}/2026-11-03")


def test_latest_without_any_batch_skips_with_the_reason(local_target):
    land(local_target, "2026-11-05", model="wine-classifier")  # another model's batch is no batch of this one
    with pytest.raises(AirflowSkipException, match=f"partition 'latest': no complete batch in .*landing/{MODEL}; "):
        sensor("latest").execute({"ti": TaskInstance()})


@pytest.mark.parametrize("model", ["../iris", "Iris", "", "iris/2026"])
def test_a_model_name_that_is_not_one_path_component_is_refused(model):
    with pytest.raises(ValueError, match="model name must be lower-case letters, digits and '-'"):
        sensor("latest", model=model)


def test_a_partition_that_is_not_a_date_is_refused(local_target):
    with pytest.raises(ValueError, match="partition must be a date YYYY-MM-DD or 'latest', got '2026-11'"):
        sensor("2026-11").execute({"ti": TaskInstance()})


def test_without_the_data_volume_s_connection_the_error_says_how_to_set_it(monkeypatch):
    from mlops.settings import SettingsError

    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_DATA", raising=False)
    with pytest.raises(SettingsError, match="the data volume's connection 'mlops_data' is not defined"):
        sensor("latest").execute({"ti": TaskInstance()})
