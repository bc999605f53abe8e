"""PartitionTrigger: waits in the triggerer (no worker slot) for a complete landing batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.landing import batch_complete


class PartitionTrigger(BaseTrigger):
    """`resume` (what the sensor needs when it resumes) comes back in the event: dag.test() hands the
    resumed method only the event, not the kwargs given to defer()."""

    def __init__(self, folder: str, deadline: float, poll_interval: float = 15.0, resume: dict | None = None):
        super().__init__()
        self.folder, self.deadline, self.poll_interval, self.resume = folder, deadline, poll_interval, resume or {}

    def serialize(self):
        return ("mlops.triggers.partition.PartitionTrigger",
                {"folder": self.folder, "deadline": self.deadline, "poll_interval": self.poll_interval,
                 "resume": self.resume})

    async def run(self):
        folder = Path(self.folder)
        while True:
            if await asyncio.to_thread(batch_complete, folder):
                yield TriggerEvent({"status": "ready", "folder": self.folder, "resume": self.resume})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "folder": self.folder, "resume": self.resume})
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, self.deadline - time.time())))
