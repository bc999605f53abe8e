"""KfpRunTrigger: polls a Kubeflow Pipelines run in the triggerer until it ends or its deadline passes."""

from __future__ import annotations

import asyncio
import time

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.hooks.kfp import FINAL_STATES, KfpError, KfpHook, run_error


class KfpRunTrigger(BaseTrigger):
    """Fires once: {"status": "done", "state", "error"} when the run ends, {"status": "timeout"} at the
    deadline, {"status": "error", "message"} when the API stays unreachable (after the hook's retries)."""

    def __init__(self, run_id: str, deadline: float, kfp_conn_id: str = "kfp_default", host: str | None = None,
                 poll_interval: float = 15.0):
        super().__init__()
        self.run_id, self.deadline, self.kfp_conn_id = run_id, deadline, kfp_conn_id
        self.host, self.poll_interval = host, poll_interval

    def serialize(self):
        # No token here: the trigger row is stored in the metadata DB; the hook reads it from the connection.
        return ("mlops.triggers.kfp.KfpRunTrigger",
                {"run_id": self.run_id, "deadline": self.deadline, "kfp_conn_id": self.kfp_conn_id,
                 "host": self.host, "poll_interval": self.poll_interval})

    def _hook(self) -> KfpHook:
        return KfpHook(self.kfp_conn_id, host=self.host)

    async def on_kill(self) -> None:
        """A user cleared or marked the deferred task: the KFP run is terminated too (not on triggerer
        restarts or redistribution, where Airflow does not call this)."""
        await asyncio.to_thread(self._hook().terminate_run, self.run_id)

    async def run(self):
        hook = await asyncio.to_thread(self._hook)
        while True:
            try:
                run = await asyncio.to_thread(hook.get_run, self.run_id)
            except KfpError as exc:
                yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(exc)})
                return
            state = run.get("state", "RUNTIME_STATE_UNSPECIFIED")
            if state in FINAL_STATES:
                yield TriggerEvent({"status": "done", "run_id": self.run_id, "state": state,
                                    "error": None if state == "SUCCEEDED" else run_error(run)})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "run_id": self.run_id, "state": state})
                return
            self.log.info("KFP run %s is %s", self.run_id, state)
            await asyncio.sleep(self.poll_interval)
