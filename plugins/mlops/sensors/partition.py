"""PartitionSensor: the standard provider's FileSensor, waiting for `landing/<model_name>/<partition>/_SUCCESS`
on the data volume (`mlops_data`, an fs connection, the one FileSensor takes), deferrable through its
FileTrigger, with BaseSensorOperator's own `timeout`, `poke_interval` and `soft_fail` (no batch in
time: the run is skipped).

What it adds to FileSensor:
- `model_name`: whose landing area it watches (each model has its own, `landing/<model_name>/`);
- `partition` (templated): a date YYYY-MM-DD, or `latest`: the newest partition of that model whose batch
  is complete when the task runs (a manual "retrain on what we have"); anything else is refused by name;
- its result, which every later task reads: {"partition", "folder", "started_at"}, `started_at` being
  when the run began waiting (the report's clock). FileSensor returns nothing and FileTrigger's event
  is a bare True, so the start is kept as an XCom pushed before deferring (it survives the deferral,
  which kwargs given to defer() do not under dag.test()).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSkipException

from mlops.landing import LATEST, MARKER, PARTITION, latest_partition, model_landing
from mlops.volume import DATA_CONN_ID, data_root

STARTED_AT = "started_at"


class PartitionSensor(FileSensor):
    template_fields: Sequence[str] = (*FileSensor.template_fields, "partition")

    def __init__(self, *, model_name: str, partition: str, fs_conn_id: str = DATA_CONN_ID, **kwargs):
        kwargs.setdefault("soft_fail", True)
        kwargs.setdefault("mode", "reschedule")  # when not deferrable: no worker slot held between pokes
        super().__init__(filepath="", fs_conn_id=fs_conn_id, multiple_outputs=True, **kwargs)
        self.landing = model_landing(model_name)  # refuses a name that is not one path component
        self.model_name, self.partition = model_name, partition

    def _resolve(self) -> str:
        partition = str(self.partition or "")
        if partition == LATEST:
            landing = data_root(self.fs_conn_id) / self.landing
            latest = latest_partition(landing)
            if latest is None:
                raise AirflowSkipException(f"partition 'latest': no complete batch in {landing}; nothing to train on")
            self.log.info("partition 'latest' is %s", latest)
            return latest
        if not PARTITION.match(partition):
            raise ValueError(f"partition must be a date YYYY-MM-DD or 'latest', got {partition!r}")
        return partition

    def _marker(self) -> str:
        return str(self.landing / self.partition / MARKER)

    def _result(self) -> dict:
        return {"partition": self.partition, "folder": str(Path(self.path).parent)}

    def execute(self, context):
        self.partition = self._resolve()
        self.filepath = self._marker()
        # A rescheduled poke (not deferrable) runs execute again: the first one's start stands.
        started_at = context["ti"].xcom_pull(task_ids=self.task_id, key=STARTED_AT) or time.time()
        context["ti"].xcom_push(key=STARTED_AT, value=started_at)
        self.log.info("waiting up to %s s for %s", self.timeout, self.path)
        super().execute(context)  # returns when the marker is there; defers (execute_complete) if not yet
        return {**self._result(), STARTED_AT: started_at}

    def execute_complete(self, context, event=None):
        super().execute_complete(context, event)  # raises unless the trigger found the marker
        self.partition = self._resolve()  # a deferred wait is always for a date: `latest` never waits
        self.filepath = self._marker()
        started_at = context["ti"].xcom_pull(task_ids=self.task_id, key=STARTED_AT)
        return {**self._result(), STARTED_AT: started_at}
