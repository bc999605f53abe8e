"""InferenceServiceReadyTrigger: waits in the triggerer until a change to an InferenceService is rolled
out and Ready (see mlops.inference_service.readiness for what that means in each deployment mode),
fails, or the deadline passes."""

from __future__ import annotations

import asyncio
import time

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.hooks.kserve import KServeError, KServeHook
from mlops.inference_service import is_standard, readiness


class InferenceServiceReadyTrigger(BaseTrigger):
    """Fires once: {"status": "ready", "url"}, {"status": "failed", "message"} (the controller's own
    condition message), {"status": "timeout", "message"} or {"status": "error", "message"}."""

    def __init__(self, name: str, namespace: str, before, mode: str, deadline: float,
                 kubernetes_conn_id: str = "kubernetes_default", poll_interval: float = 5.0,
                 resume: dict | None = None, canary_percent: int | None = None):
        """`before`: the rollout marker read before the change (mlops.inference_service.rollout_marker);
        `canary_percent`: wait for a canary serving that share instead of a full roll-out."""
        super().__init__()
        self.canary_percent = canary_percent
        self.name, self.namespace, self.before, self.mode = name, namespace, before, mode
        self.deadline, self.kubernetes_conn_id, self.poll_interval = deadline, kubernetes_conn_id, poll_interval
        self.resume = resume or {}  # echoed in the event: dag.test() hands the resumed method only the event

    def serialize(self):
        return ("mlops.triggers.kserve.InferenceServiceReadyTrigger",
                {"name": self.name, "namespace": self.namespace, "before": self.before, "mode": self.mode,
                 "deadline": self.deadline, "kubernetes_conn_id": self.kubernetes_conn_id,
                 "poll_interval": self.poll_interval, "resume": self.resume, "canary_percent": self.canary_percent})

    def _event(self, **payload) -> TriggerEvent:
        return TriggerEvent({**payload, "resume": self.resume})

    async def run(self):
        hook = KServeHook(self.kubernetes_conn_id, self.namespace)
        why = "not checked yet"
        while True:
            try:
                isvc = await asyncio.to_thread(hook.get, self.name)
                deployment = await asyncio.to_thread(hook.predictor_deployment, self.name) \
                    if is_standard(self.mode) else None
            except KServeError as exc:
                yield self._event(status="error", message=str(exc))
                return
            if isvc is None:
                yield self._event(status="failed", message=f"InferenceService {self.namespace}/{self.name} was "
                                                           "deleted while waiting for it")
                return
            ready, why = readiness(isvc, self.before, self.mode, deployment, self.canary_percent)
            if ready is not None:
                yield self._event(status="ready", url=why) if ready else self._event(status="failed", message=why)
                return
            if time.time() >= self.deadline:
                yield self._event(status="timeout", message=why)
                return
            self.log.info("InferenceService %s/%s: %s", self.namespace, self.name, why)
            await asyncio.sleep(self.poll_interval)
