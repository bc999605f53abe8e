"""PartitionTrigger: waits in the triggerer (no worker slot) for a complete landing batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.landing import batch_complete


class PartitionTrigger(BaseTrigger):
    def __init__(self, folder: str, deadline: float, poll_interval: float = 15.0):
        super().__init__()
        self.folder, self.deadline, self.poll_interval = folder, deadline, poll_interval

    def serialize(self):
        return ("mlops.triggers.partition.PartitionTrigger",
                {"folder": self.folder, "deadline": self.deadline, "poll_interval": self.poll_interval})

    async def run(self):
        folder = Path(self.folder)
        while True:
            if await asyncio.to_thread(batch_complete, folder):
                yield TriggerEvent({"status": "ready", "folder": self.folder})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "folder": self.folder})
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, self.deadline - time.time())))
