"""PartitionSensor: a deferrable wait for landing/<partition>/_SUCCESS; no data in time -> skipped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

from mlops.landing import MARKER, batch_complete
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
        folder = self._folder()
        if batch_complete(folder):
            self.log.info("batch complete: %s", folder / MARKER)
            return {"folder": str(folder), "started_at": started_at}
        self.log.info("waiting up to %s for %s (in the triggerer)", self.wait, folder / MARKER)
        from mlops.triggers.partition import PartitionTrigger  # only runs that wait pay for the trigger machinery

        self.defer(trigger=PartitionTrigger(str(folder), time.time() + self.wait.total_seconds(),
                                            self.poll_interval, resume={"started_at": started_at}),
                   method_name="execute_complete")

    def execute_complete(self, context, event=None):
        """Returns the batch folder and when the run started waiting for it (the run's clock for the report)."""
        if not event or event.get("status") != "ready":
            raise AirflowSkipException(f"no complete batch in {self._folder()} within {self.wait}; nothing to do")
        return {"folder": event["folder"], "started_at": (event.get("resume") or {}).get("started_at")}
