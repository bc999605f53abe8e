"""CanaryVerdictTrigger: watches a canary in the triggerer, reading both versions' serving metrics from
Prometheus every `poll_interval` until the verdict (mlops.canary.verdict) is promote, inconclusive or rollback.

The PromQL covers everything since the canary started. Prometheus not answering decides nothing: the
trigger keeps asking, and at the deadline the canary is rolled back with that reason, whatever
`canary_inconclusive` says: that a canary got too few requests is known, that Prometheus saw nothing is not
(it may have failed every one), so it is never promoted blind."""

from __future__ import annotations

import asyncio
import time

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.canary import ROLLBACK, WAIT, CanaryPolicy, measure, verdict, window_since
from mlops.hooks.http import ServiceError
from mlops.hooks.prometheus import PrometheusHook


class CanaryVerdictTrigger(BaseTrigger):
    """Fires once: {"status": "promote" | "inconclusive" | "rollback", "reason", "evidence"} (evidence:
    mlops.canary.measure's, None when Prometheus never answered)."""

    def __init__(self, model_name: str, stable_version: str, canary_version: str, started: float,
                 window_over: float, deadline: float, policy: dict, prometheus_conn_id: str = "prometheus_default",
                 poll_interval: float = 15.0, resume: dict | None = None, regression: bool = False):
        super().__init__()
        self.model_name, self.stable_version, self.canary_version = model_name, stable_version, canary_version
        self.started, self.window_over, self.deadline = started, window_over, deadline
        self.policy, self.prometheus_conn_id, self.poll_interval = dict(policy), prometheus_conn_id, poll_interval
        self.resume = resume or {}  # echoed in the event: dag.test() hands the resumed method only the event
        self.regression = regression  # the model's task (its dataset file's): which distribution check applies

    def serialize(self):
        return ("mlops.triggers.canary.CanaryVerdictTrigger",
                {"model_name": self.model_name, "stable_version": self.stable_version,
                 "canary_version": self.canary_version, "started": self.started, "window_over": self.window_over,
                 "deadline": self.deadline, "policy": self.policy, "prometheus_conn_id": self.prometheus_conn_id,
                 "poll_interval": self.poll_interval, "resume": self.resume, "regression": self.regression})

    async def run(self):
        # a canary deferred before `inconclusive` existed keeps the meaning it was started with: roll back
        policy, evidence, unavailable = CanaryPolicy(**{"inconclusive": ROLLBACK, **self.policy}), None, ""
        while True:
            now = time.time()
            try:
                hook = PrometheusHook(self.prometheus_conn_id)
                evidence = await asyncio.to_thread(measure, hook.query, self.model_name, self.stable_version,
                                                   self.canary_version, window_since(self.started, now),
                                                   self.regression)
            except ServiceError as exc:
                unavailable = f"Prometheus did not answer: {exc}"
                decided, why = (ROLLBACK, f"{unavailable}; the deadline has passed") if now >= self.deadline \
                    else (WAIT, unavailable)
            else:
                decided, why = verdict(evidence, policy, now >= self.window_over, now >= self.deadline)
            if decided != WAIT:
                yield TriggerEvent({"status": decided, "reason": why, "evidence": evidence, "resume": self.resume})
                return
            self.log.info("canary %s v%s: %s", self.model_name, self.canary_version, why)
            await asyncio.sleep(self.poll_interval)
