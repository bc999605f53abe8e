"""InferenceServiceReadyTrigger: waits in the triggerer until an InferenceService is Ready for a given
generation (the controller's observedGeneration), fails, or the deadline passes."""

from __future__ import annotations

import asyncio
import time

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.hooks.kserve import KServeError, KServeHook
from mlops.inference_service import readiness


class InferenceServiceReadyTrigger(BaseTrigger):
    """Fires once: {"status": "ready", "url"}, {"status": "failed", "message"} (the controller's own
    condition message), {"status": "timeout", "message"} or {"status": "error", "message"}."""

    def __init__(self, name: str, namespace: str, generation: int, deadline: float,
                 kubernetes_conn_id: str = "kubernetes_default", poll_interval: float = 5.0,
                 resume: dict | None = None):
        super().__init__()
        self.name, self.namespace, self.generation = name, namespace, generation
        self.deadline, self.kubernetes_conn_id, self.poll_interval = deadline, kubernetes_conn_id, poll_interval
        self.resume = resume or {}  # echoed in the event: dag.test() hands the resumed method only the event

    def serialize(self):
        return ("mlops.triggers.kserve.InferenceServiceReadyTrigger",
                {"name": self.name, "namespace": self.namespace, "generation": self.generation,
                 "deadline": self.deadline, "kubernetes_conn_id": self.kubernetes_conn_id,
                 "poll_interval": self.poll_interval, "resume": self.resume})

    def _event(self, **payload) -> TriggerEvent:
        return TriggerEvent({**payload, "resume": self.resume})

    async def run(self):
        hook = KServeHook(self.kubernetes_conn_id, self.namespace)
        why = "not checked yet"
        while True:
            try:
                isvc = await asyncio.to_thread(hook.get, self.name)
            except KServeError as exc:
                yield self._event(status="error", message=str(exc))
                return
            if isvc is None:
                yield self._event(status="failed", message=f"InferenceService {self.namespace}/{self.name} was "
                                                           "deleted while waiting for it")
                return
            ready, why = readiness(isvc, self.generation)
            if ready is not None:
                yield self._event(status="ready", url=why) if ready else self._event(status="failed", message=why)
                return
            if time.time() >= self.deadline:
                yield self._event(status="timeout", message=why)
                return
            self.log.info("InferenceService %s/%s: %s", self.namespace, self.name, why)
            await asyncio.sleep(self.poll_interval)
