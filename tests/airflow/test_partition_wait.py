"""The deferrable partition wait: trigger in an event loop, sensor's defer and outcomes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

from mlops.sensors.partition import PartitionSensor
from mlops.triggers.partition import PartitionTrigger
from tests.support import first_event


def test_trigger_fires_when_the_marker_lands(tmp_path):
    folder = tmp_path / "landing" / "2026-11-01"
    threading.Timer(0.3, lambda: (folder.mkdir(parents=True), (folder / "_SUCCESS").touch())).start()
    started = time.monotonic()
    event = first_event(PartitionTrigger(str(folder), time.time() + 10, poll_interval=0.05))
    assert event == {"status": "ready", "folder": str(folder), "resume": {}} and time.monotonic() - started < 5


def test_trigger_gives_up_at_its_deadline(tmp_path):
    event = first_event(PartitionTrigger(str(tmp_path / "never"), time.time() + 0.2, 0.05))
    assert event["status"] == "timeout"


def test_trigger_serializes_to_its_importable_path(tmp_path):
    path, kwargs = PartitionTrigger(str(tmp_path), 123.0, 5.0).serialize()
    assert path == "mlops.triggers.partition.PartitionTrigger"
    assert PartitionTrigger(**kwargs).serialize() == (path, kwargs)


def test_sensor_returns_at_once_when_the_batch_is_there(local_target):
    folder = local_target / "landing" / "2026-11-01"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").touch()
    before = time.time()
    found = PartitionSensor(task_id="wait", partition="2026-11-01").execute({})
    assert found["folder"] == str(folder) and before <= found["started_at"] <= time.time()
    assert found["partition"] == "2026-11-01"  # what every later task works on


def test_sensor_defers_to_the_trigger_and_skips_on_timeout(local_target):
    sensor = PartitionSensor(task_id="wait", partition="2026-11-02", wait=timedelta(minutes=5))
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, PartitionTrigger) and trigger.folder.endswith("landing/2026-11-02")
    assert 250 < trigger.deadline - time.time() <= 300
    assert 0 < time.time() - trigger.resume["started_at"] < 60  # the run's clock survives the deferral
    with pytest.raises(AirflowSkipException, match="no complete batch"):
        sensor.execute_complete({}, {"status": "timeout", "folder": trigger.folder})
    done = sensor.execute_complete({}, {"status": "ready", "folder": trigger.folder, "resume": trigger.resume})
    assert done == {"partition": "2026-11-02", "folder": trigger.folder, "started_at": trigger.resume["started_at"]}


def land(root, partition: str, complete: bool = True):
    folder = root / "landing" / partition
    folder.mkdir(parents=True)
    if complete:
        (folder / "_SUCCESS").touch()


def test_latest_is_the_newest_complete_batch(local_target):
    land(local_target, "2026-11-01")
    land(local_target, "2026-11-03")
    land(local_target, "2026-11-04", complete=False)  # still being written
    (local_target / "landing" / "notes").mkdir()
    found = PartitionSensor(task_id="wait", partition="latest").execute({})
    assert found["partition"] == "2026-11-03" and found["folder"].endswith("landing/2026-11-03")


def test_latest_without_any_batch_skips_with_the_reason(local_target):
    with pytest.raises(AirflowSkipException, match="partition 'latest': no complete batch in .*landing"):
        PartitionSensor(task_id="wait", partition="latest").execute({})


def test_a_partition_that_is_not_a_date_is_refused(local_target):
    with pytest.raises(ValueError, match="partition must be a date YYYY-MM-DD or 'latest', got '2026-11'"):
        PartitionSensor(task_id="wait", partition="2026-11").execute({})
