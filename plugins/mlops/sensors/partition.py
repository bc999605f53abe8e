"""PartitionSensor: a deferrable wait for landing/<partition>/_SUCCESS; no data in time -> skipped.

`partition` is a date YYYY-MM-DD, or `latest`: the newest partition whose batch is complete when the
task runs (a manual "retrain on what we have"). The partition the run works on is in the result, so
every later task reads it from there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

from mlops.landing import LATEST, MARKER, PARTITION, batch_complete, latest_partition
from mlops.settings import load_settings


class PartitionSensor(BaseSensorOperator):
    template_fields: Sequence[str] = ("partition",)

    def __init__(self, *, partition: str, wait: timedelta = timedelta(hours=6), poll_interval: float = 30.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.partition, self.wait, self.poll_interval = partition, wait, poll_interval

    def _folder(self) -> Path:
        return load_settings().data_root / "landing" / self.partition

    def execute(self, context):
        started_at = time.time()
        if self.partition == LATEST:
            landing = load_settings().data_root / "landing"
            latest = latest_partition(landing)
            if latest is None:
                raise AirflowSkipException(f"partition 'latest': no complete batch in {landing}; nothing to train on")
            self.log.info("partition 'latest' is %s", latest)
            self.partition = latest
        if not PARTITION.match(str(self.partition)):
            raise ValueError(f"partition must be a date YYYY-MM-DD or 'latest', got {self.partition!r}")
        folder = self._folder()
        if batch_complete(folder):
            self.log.info("batch complete: %s", folder / MARKER)
            return {"partition": self.partition, "folder": str(folder), "started_at": started_at}
        self.log.info("waiting up to %s for %s (in the triggerer)", self.wait, folder / MARKER)
        from mlops.triggers.partition import PartitionTrigger  # only runs that wait pay for the trigger machinery

        self.defer(trigger=PartitionTrigger(str(folder), time.time() + self.wait.total_seconds(),
                                            self.poll_interval,
                                            resume={"started_at": started_at, "partition": self.partition}),
                   method_name="execute_complete")

    def execute_complete(self, context, event=None):
        """Returns the partition, its batch folder and when the run started waiting for it (the run's
        clock for the report)."""
        if not event or event.get("status") != "ready":
            raise AirflowSkipException(f"no complete batch in {self._folder()} within {self.wait}; nothing to do")
        resume = event.get("resume") or {}
        return {"partition": resume.get("partition", Path(event["folder"]).name), "folder": event["folder"],
                "started_at": resume.get("started_at")}
