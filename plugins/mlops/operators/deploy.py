"""Deploy: the registry's champion behind the target's model server, smoke-tested, restored on failure.

One core for both targets (DeployOperator); a target only supplies its serving backend, a ServingBackend
(below: the interface the core calls): LocalDeployOperator (the local KServe ModelServers behind nginx,
mlops.operators.local_backend) and KServeDeployOperator (an InferenceService, mlops.operators.kserve). The
steps:

1. the champion from the MLflow registry; if the server already serves it (and is ready), nothing to do;
2. the backend rolls it out: the local server swaps it in at once; an InferenceService is created or
   patched and waited on (KServe's readiness, in the triggerer when deferrable);
3. a real v2 inference, built from the served model's metadata, must be answered by the new version.

**Canary** (`canary_percent` > 0, a version already served, a backend that can split traffic): the new
version starts beside the served one, is smoke-tested, then gets that share of the requests. The
CanaryVerdictTrigger judges both from Prometheus (mlops.canary: error ratio, p99 latency, the
predicted-class mix or a regression model's prediction distribution, a minimum of requests) until the
verdict: promote (the new version takes all the traffic) or roll back. A canary still short of requests at
its deadline is inconclusive: with `canary_inconclusive` = `promote` (the default) the offline verdict is
kept, so it is promoted as a healthy one is, with the verdict `inconclusive`, and `CanaryInconclusive`
alerts; with `rollback` it is rolled back. The verdict and its evidence are the task's `canary` XCom and
`canary.*` tags on the model version. A rolled-back canary is a verdict, not a failure (as `keep` is for an
offline comparison): the stable version never stopped serving, so the task succeeds, its result names the
version it rolled back (`rolled_back`) beside the one still served, the `CanaryRolledBack` alert fires, and it
records the rollback plan (below) for `roll_back_champion`.

When the new model fails (its load is refused, its revision fails or never becomes ready, the smoke
test fails), the backend restores what was served before and the task fails without retrying (the
model will not get better) after recording the rollback plan: the XComs `rollback_to_version` (the
version served before, if any) and `rollback_reason`. The DAG's `roll_back_champion` task, which runs
after every deploy that ran and acts only on a recorded plan, moves the `champion` alias back with the
pipeline's own `rollback` stage, so both targets record the rollback as a promotion is recorded. When
the server itself does not answer (it died) or MLflow is down, nothing is known against the model: the
task fails as any task does (it is retried) and the plan names no version, so the alias stays.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops.canary import INCONCLUSIVE, PROMOTE, CanaryPolicy, check_inconclusive
from mlops.hooks.alertmanager import AlertmanagerHook
from mlops.hooks.http import ServiceError
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.prometheus import PrometheusHook
from mlops.hooks.serving import ServingError, ServingHook, ServingUnreachable
from mlops.links import MlflowModelVersionLink, ServingEndpointLink, result_links
from mlops.notifications.alerts import canary_inconclusive, canary_rolled_back
from mlops.operators.deferral import default_deferrable, wait_for

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

ROLLBACK_TO, ROLLBACK_REASON, CANARY = "rollback_to_version", "rollback_reason", "canary"
ROLLBACK_FROM = "rollback_from_version"  # the version that failed: the champion the rollback expects to replace


class ModelFailed(Exception):
    """The new version cannot serve: restore the previous one and roll the alias back."""


@runtime_checkable
class ServingBackend(Protocol):
    """What the deploy core asks of a target's model server (the local servers: mlops.operators.local_backend;
    an InferenceService: mlops.operators.kserve). Each call acts at once or hands back a trigger the task
    defers on; ModelFailed from any of them means the new version cannot serve (restore, roll the alias back),
    anything else is the infrastructure's (the task fails and is retried)."""

    mode: str  # how it serves, for the log ("local ModelServer", "Serverless", "RawDeployment")
    supports_canary: bool  # it can split one model's traffic between two versions (CanaryServingBackend)

    def current(self) -> dict | None:
        """What is served ({"version", "url", ...}: enough to restore it), None when nothing is."""

    def is_ready(self, current: dict) -> bool:
        """The served version answers and clients reach it."""

    def roll_out(self, champion: dict) -> str | BaseTrigger:
        """Serve `champion` (the registry's {"version", "run_id", ...}): the URL to smoke-test, or a trigger
        whose "ready" event carries it."""

    def restore(self, previous: dict) -> None:
        """What `current()` returned before, served again, with all the traffic."""


@runtime_checkable
class CanaryServingBackend(ServingBackend, Protocol):
    """A backend with `supports_canary`: the new version beside the served one on a share of the traffic."""

    def start_canary(self, champion: dict, percent: int) -> BaseTrigger | None:
        """The new version beside the served one. None: it already serves `percent` of the requests; a
        trigger: once its "ready" event comes, `share(percent)` gives it its share."""

    def share(self, percent: int) -> None:
        """After start_canary's trigger: the ready canary gets `percent` of the requests."""

    def promote(self, champion: dict) -> str | BaseTrigger:
        """The canary's version takes all the traffic (as roll_out: a URL or a trigger)."""

    def promoted(self) -> None:
        """After a promotion waited on: what only the canary needed is removed."""


class DeployOperator(BaseOperator):
    """The core; subclasses give `_backend()`: a ServingBackend, a CanaryServingBackend when it can split
    traffic (`supports_canary`)."""

    template_fields: Sequence[str] = ("model_name", "canary_percent", "canary_minutes", "canary_inconclusive")
    ui_color = "#fdf1e6"
    operator_extra_links = (MlflowModelVersionLink(), ServingEndpointLink())

    def __init__(self, *, model_name: str, canary_percent: int | str = 0, canary_minutes: float | str = 10,
                 canary_inconclusive: str | None = None, regression: bool = False,
                 mlflow_conn_id: str = MlflowHook.default_conn_name,
                 prometheus_conn_id: str = PrometheusHook.default_conn_name,
                 alertmanager_conn_id: str = AlertmanagerHook.default_conn_name, deferrable: bool | None = None,
                 **kwargs):
        """`canary_percent`, `canary_minutes` (templated, e.g. from the DAG's Params): a new champion first
        gets this share of the requests for this long; 0 %: a straight swap. `canary_inconclusive` (templated;
        None or empty: `[mlops] canary_inconclusive`): what a canary too short of requests to judge by its
        deadline does, `promote` (the offline verdict is kept) or `rollback`. `regression`: the dataset file's
        task is regression (the smoke test expects a number, the canary compares prediction distributions)."""
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name, self.mlflow_conn_id, self.prometheus_conn_id = model_name, mlflow_conn_id, prometheus_conn_id
        self.canary_percent, self.canary_minutes, self.regression = canary_percent, canary_minutes, regression
        self.canary_inconclusive = canary_inconclusive
        self.alertmanager_conn_id = alertmanager_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    def _backend(self) -> ServingBackend:
        raise NotImplementedError

    def _serving(self, url: str) -> ServingHook:
        return ServingHook(self.model_name, base_url=url)

    def _served(self, version: str, endpoint: str = "") -> dict:
        served = {"model_name": self.model_name, "version": version, "endpoint": endpoint}
        self.link_urls = result_links(served, self.mlflow_conn_id)
        return served

    def execute(self, context):
        champion = MlflowHook(self.mlflow_conn_id).champion(self.model_name)
        if champion is None:
            raise RuntimeError(f"{self.model_name} has no champion to deploy")
        backend = self._backend()
        previous = backend.current()
        previous_version = (previous or {}).get("version")
        if previous_version == champion["version"] and backend.is_ready(previous):
            self.log.info("version %s is already served and ready; nothing to deploy", champion["version"])
            return {**self._served(champion["version"], self._serving(previous["url"]).infer_url),
                    "previous_version": previous_version, "changed": False}
        self._served(champion["version"])
        percent = int(float(self.canary_percent or 0))
        if not 0 <= percent < 100:
            raise AirflowFailException(f"canary_percent must be from 0 to 99, got {self.canary_percent}")
        if self.canary_inconclusive:  # refused before any traffic moves, not when the canary's time is up
            try:
                check_inconclusive(self.canary_inconclusive)
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None
        if percent and previous_version and backend.supports_canary:
            return self._start_canary(context, backend, champion, previous, percent)
        if percent and previous_version:
            self.log.warning("%s has no canary rollout: swapping straight to v%s", backend.mode, champion["version"])
        try:
            pending = backend.roll_out(champion)
        except ModelFailed as exc:
            self._fail(context, backend, champion["version"], previous, str(exc))
        if isinstance(pending, str):
            return self._verify(context, backend, champion["version"], previous, pending)
        pending.resume = {"version": champion["version"], "previous": previous}  # back in the event
        return wait_for(self, context, pending)

    def execute_complete(self, context, event: dict):
        """After the backend's trigger: {"status": "ready", "url"} or a failure with the reason."""
        version, previous = event["resume"]["version"], event["resume"]["previous"]
        self._served(version)
        backend = self._backend()
        if event.get("status") == "ready":
            if "canary" not in event["resume"]:
                return self._verify(context, backend, version, previous, event["url"])
            backend.promoted()
            verified = self._verify(context, backend, version, previous, event["url"])
            return self._canary_promoted(context, verified, event["resume"]["canary"])
        if event.get("status") == "error":  # the API itself failed: nothing known against the model
            raise RuntimeError(f"deploy of {self.model_name} v{version}: {event.get('message')}")
        reason = event.get("message") or f"unexpected event {event}"
        if event.get("status") == "timeout":
            reason = f"not rolled out and ready by the deadline: {reason}"
        self._fail(context, backend, version, previous, reason)

    def _start_canary(self, context, backend, champion: dict, previous: dict, percent: int):
        """The new version beside the stable one on `percent` of the requests: the backend starts it (and
        waits, or hands back a trigger that waits, until it serves its share)."""
        version = champion["version"]
        try:
            pending = backend.start_canary(champion, percent)
        except ModelFailed as exc:
            self._fail(context, backend, version, previous, f"the canary did not start: {exc}")
        resume = {"version": version, "previous": previous, "percent": percent, "champion": champion}
        if pending is None:
            return self._watch_canary(context, resume)
        pending.resume = resume
        return wait_for(self, context, pending, method_name="canary_started")

    def canary_started(self, context, event: dict):
        """After the backend's trigger: the canary serves its share ({"status": "ready"}), or it failed."""
        if event.get("status") == "ready":
            self._backend().share(event["resume"]["percent"])
            return self._watch_canary(context, event["resume"])
        version, previous = event["resume"]["version"], event["resume"]["previous"]
        self._served(version)
        if event.get("status") == "error":
            raise RuntimeError(f"canary of {self.model_name} v{version}: {event.get('message')}")
        self._fail(context, self._backend(), version, previous, f"the canary did not start: {event.get('message')}")

    def _watch_canary(self, context, resume: dict):
        """Prometheus's view of both versions, until the verdict (CanaryVerdictTrigger)."""
        from mlops.settings import mlops_settings
        from mlops.triggers.canary import CanaryVerdictTrigger

        settings, minutes, now = mlops_settings(), float(self.canary_minutes), time.time()
        policy = CanaryPolicy.from_settings(settings)
        if self.canary_inconclusive:  # the run's choice (the DAG's Param) over the option's
            policy = dataclasses.replace(policy, inconclusive=self.canary_inconclusive)
        self.log.info("canary: v%s serves %d %% of the requests beside v%s\n  %s, for %s min; judged by Prometheus "
                      "(inconclusive: %s)", resume["version"], resume["percent"], resume["previous"]["version"],
                      self.model_name, minutes, policy.inconclusive)
        # the minimum travels with the verdict, for the CanaryInconclusive alert's summary
        resume = {**resume, "min_requests": policy.min_requests}
        trigger = CanaryVerdictTrigger(
            self.model_name, resume["previous"]["version"], resume["version"], now, now + minutes * 60,
            now + max(minutes, settings.canary_deadline_minutes) * 60,
            dataclasses.asdict(policy), self.prometheus_conn_id,
            settings.canary_poll_seconds, resume=resume, regression=self.regression)
        return wait_for(self, context, trigger, method_name="canary_complete")

    def canary_complete(self, context, event: dict):
        """After the verdict: promote, or inconclusive with the offline verdict kept (the new version takes
        all the traffic; waited on like a roll-out), or roll back (all the traffic back to the unchanged stable
        version; the task succeeds and alerts)."""
        version, previous = event["resume"]["version"], event["resume"]["previous"]
        self._served(version)
        backend = self._backend()
        canary = {"verdict": event["status"], "reason": event["reason"], "percent": event["resume"]["percent"],
                  "evidence": event.get("evidence")}
        if event["status"] == INCONCLUSIVE:
            canary["min_requests"] = event["resume"].get("min_requests")
        self._record_canary(context, version, canary)
        if event["status"] not in (PROMOTE, INCONCLUSIVE):
            return self._roll_back_canary(context, backend, version, previous, canary)
        try:
            pending = backend.promote(event["resume"]["champion"])
        except ModelFailed as exc:
            self._fail(context, backend, version, previous, str(exc))
        if isinstance(pending, str):
            return self._canary_promoted(context, self._verify(context, backend, version, previous, pending), canary)
        pending.resume = {"version": version, "previous": previous, "canary": canary}
        return wait_for(self, context, pending)

    def _canary_promoted(self, context, verified: dict, canary: dict) -> dict:
        """The result of a promoted canary; an inconclusive one alerts once the new version serves everything."""
        if canary["verdict"] == INCONCLUSIVE:
            evidence = canary["evidence"]
            canary_inconclusive(self.alertmanager_conn_id, evidence["canary"]["requests"], canary["min_requests"],
                                evidence["window"]).notify(
                {**context, "reason": f"{self.model_name} v{verified['version']}: {canary['reason']}"})
        return {**verified, "canary": canary}

    def _record_canary(self, context, version: str, canary: dict) -> None:
        """The verdict and its evidence (the PromQL and what it returned) on the task's XCom and on the
        model version in MLflow; the registry is only a record here, so its failure fails nothing."""
        self.log.info("canary verdict for v%s: %s\n  %s", version, canary["verdict"], canary["reason"])
        context["ti"].xcom_push(key=CANARY, value=canary)
        tags = {"canary.verdict": canary["verdict"], "canary.reason": canary["reason"][:5000],
                "canary.percent": str(canary["percent"]),
                "canary.evidence": json.dumps(canary["evidence"], sort_keys=True)[:5000]}
        try:
            MlflowHook(self.mlflow_conn_id).set_model_version_tags(self.model_name, version, tags)
        except ServiceError as exc:
            self.log.warning("could not record the canary's verdict on the model version\n  %s", exc)

    def _verify(self, context, backend, version: str, previous: dict | None, url: str) -> dict:
        serving = self._serving(url)
        try:
            smoke = serving.smoke_test(version, regression=self.regression)
        except ServingUnreachable as exc:
            raise RuntimeError(f"deploy of {self.model_name} v{version}: {exc}; the registry is left as it is "
                               "(a retry deploys again)") from None
        except ServingError as exc:
            self._fail(context, backend, version, previous, str(exc))
        self.log.info("serving %s v%s (was %s)\n  at %s (%s); smoke test answered %s", self.model_name, version,
                      (previous or {}).get("version"), serving.infer_url, backend.mode, smoke["prediction"])
        return {**self._served(version, serving.infer_url), "previous_version": (previous or {}).get("version"),
                "smoke_test": smoke, "changed": True}

    def _roll_back_canary(self, context, backend, version: str, previous: dict, canary: dict) -> dict:
        reason = f"the canary of v{version} was rolled back: {canary['reason']}"
        self._restore(context, backend, version, previous, reason)
        canary_rolled_back(self.alertmanager_conn_id).notify({**context, "reason": f"{self.model_name}: {reason}"})
        return {**self._served(previous["version"], self._serving(previous.get("url") or "").infer_url),
                "previous_version": previous["version"], "changed": False, "rolled_back": version, "canary": canary}

    def _restore(self, context, backend, version: str, previous: dict | None, reason: str) -> None:
        """What was served before, back; and the plan roll_back_champion carries out on the alias (`reason`
        is recorded with it)."""
        to_version = (previous or {}).get("version")
        if to_version:
            self.log.error("restoring %s v%s in place of v%s\n  %s", self.model_name, to_version, version, reason)
            backend.restore(previous)
        else:
            self.log.error("nothing to restore: no earlier version was being served")
        ti = context["ti"]
        ti.xcom_push(key=ROLLBACK_FROM, value=version)
        ti.xcom_push(key=ROLLBACK_TO, value=to_version)
        ti.xcom_push(key=ROLLBACK_REASON, value=reason[:1000])

    def _fail(self, context, backend, version: str, previous: dict | None, reason: str):
        self._restore(context, backend, version, previous, f"deploy of v{version} failed: {reason}")
        raise AirflowFailException(f"deploy of {self.model_name} v{version} failed: {reason}")

class LocalDeployOperator(DeployOperator):
    """The local target: the core with the local model servers behind the one router
    (mlops.operators.local_backend)."""

    def __init__(self, *, mlserving_conn_id: str = ServingHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.mlserving_conn_id = mlserving_conn_id

    def _backend(self) -> CanaryServingBackend:
        from mlops.operators.local_backend import LocalServingBackend  # imports the supervisor: not at parse

        return LocalServingBackend(self.model_name, self.mlflow_conn_id, self.mlserving_conn_id, self.regression)

    def _serving(self, url: str) -> ServingHook:
        return ServingHook(self.model_name, self.mlserving_conn_id)
