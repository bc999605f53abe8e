"""Deploy: the registry's champion behind the target's model server, smoke-tested, restored on failure.

One core for both targets (DeployOperator); a target only supplies its serving backend:
LocalDeployOperator (the local KServe ModelServer, below) and KServeDeployOperator (an
InferenceService, mlops.operators.kserve). The steps:

1. the champion from the MLflow registry; if the server already serves it (and is ready), nothing to do;
2. the backend rolls it out: the local server swaps it in at once; an InferenceService is created or
   patched and waited on (KServe's readiness, in the triggerer when deferrable);
3. a real v2 inference, built from the served model's metadata, must be answered by the new version.

When the new model fails (its load is refused, its revision fails or never becomes ready, the smoke
test fails), the backend restores what was served before and the task fails without retrying (the
model will not get better) after recording the rollback plan: the XComs `rollback_to_version` (the
version served before, if any) and `rollback_reason`. The DAG's `roll_back_champion` task, which runs
only when deploy failed, moves the `champion` alias back with the pipeline's own `rollback` stage, so
both targets record the rollback as a promotion is recorded. When the server itself does not answer
(it died) or MLflow is down, nothing is known against the model: the task fails as any task does (it
is retried) and the plan names no version, so the alias stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops.hooks.http import ServiceError
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.serving import ServingError, ServingHook, ServingUnreachable
from mlops.hooks.stage import StageFailed, StageHook
from mlops.links import MlflowModelVersionLink, ServingEndpointLink, result_links
from mlops.operators.deferral import default_deferrable, wait_for

ROLLBACK_TO, ROLLBACK_REASON = "rollback_to_version", "rollback_reason"


class ModelFailed(Exception):
    """The new version cannot serve: restore the previous one and roll the alias back."""


class DeployOperator(BaseOperator):
    """The core; subclasses give `_backend()`: an object with
    `current() -> dict | None` (what is served: {"version", ...}, enough to restore it),
    `is_ready(current) -> bool`, `roll_out(champion) -> str | BaseTrigger` (the URL to smoke-test, or a
    trigger to wait on whose "ready" event carries the URL), `restore(previous)`, and `mode`."""

    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#fdf1e6"
    operator_extra_links = (MlflowModelVersionLink(), ServingEndpointLink())

    def __init__(self, *, model_name: str, mlflow_conn_id: str = MlflowHook.default_conn_name,
                 deferrable: bool | None = None, **kwargs):
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name, self.mlflow_conn_id = model_name, mlflow_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    def _backend(self):
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
            return self._verify(context, backend, version, previous, event["url"])
        if event.get("status") == "error":  # the API itself failed: nothing known against the model
            raise RuntimeError(f"deploy of {self.model_name} v{version}: {event.get('message')}")
        reason = event.get("message") or f"unexpected event {event}"
        if event.get("status") == "timeout":
            reason = f"not rolled out and ready by the deadline: {reason}"
        self._fail(context, backend, version, previous, reason)

    def _verify(self, context, backend, version: str, previous: dict | None, url: str) -> dict:
        serving = self._serving(url)
        try:
            smoke = serving.smoke_test(version)
        except ServingUnreachable as exc:
            raise RuntimeError(f"deploy of {self.model_name} v{version}: {exc}; the registry is left as it is "
                               "(a retry deploys again)") from None
        except ServingError as exc:
            self._fail(context, backend, version, previous, str(exc))
        self.log.info("serving %s v%s at %s (%s, was %s); smoke test answered %s", self.model_name, version,
                      serving.infer_url, backend.mode, (previous or {}).get("version"), smoke["prediction"])
        return {**self._served(version, serving.infer_url), "previous_version": (previous or {}).get("version"),
                "smoke_test": smoke, "changed": True}

    def _fail(self, context, backend, version: str, previous: dict | None, reason: str):
        to_version = (previous or {}).get("version")
        if to_version:
            self.log.error("restoring %s v%s in place of v%s: %s", self.model_name, to_version, version, reason)
            backend.restore(previous)
        else:
            self.log.error("nothing to restore: no earlier version was being served")
        ti = context["ti"]
        ti.xcom_push(key=ROLLBACK_TO, value=to_version)
        ti.xcom_push(key=ROLLBACK_REASON, value=f"deploy of v{version} failed: {reason}"[:1000])
        raise AirflowFailException(f"deploy of {self.model_name} v{version} failed: {reason}")


class LocalServingBackend:
    """The local target's model server (mlops.local_serving): fetch the version with the pipeline's
    `fetch-model` stage, point the server's link at it, start the server or swap it in."""

    mode = "local ModelServer"

    def __init__(self, model_name: str, mlflow_conn_id: str, mlserving_conn_id: str):
        from mlops.local_serving import LocalModelServer
        from mlops.settings import mlops_settings
        from mlops.volume import data_root

        self.model_name = model_name
        self.stages = StageHook.local(mlflow_conn_id)
        self.serving = ServingHook(model_name, mlserving_conn_id)
        self.server = LocalModelServer(mlops_settings().mlserving, data_root() / "serving" / model_name, self.serving)

    def current(self) -> dict | None:
        version = self.serving.served_version()
        return {"version": version, "url": self.serving.base_url} if version else None

    def is_ready(self, current: dict) -> bool:
        return True  # it answered with its version

    def roll_out(self, champion: dict) -> str:
        """Raises ModelFailed when the server refuses the version; anything else is the infrastructure's."""
        self.server.folder.mkdir(parents=True, exist_ok=True)
        try:
            fetched = self.stages.run("fetch-model", {"model_name": self.model_name, "version": champion["version"],
                                                      "into": self.server.folder})
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        self.server.point_at(fetched["model_dir"])
        try:
            if self.serving.is_live():
                self.serving.load()
            else:
                self.server.start()
        except ServingUnreachable:
            raise
        except ServingError as exc:
            raise ModelFailed(str(exc)) from None
        return self.serving.base_url

    def restore(self, previous: dict) -> None:
        self.server.point_at(self.server.version_dir(previous["version"]))
        try:
            if self.serving.is_live():
                self.serving.load()
            else:
                self.server.start()
        except ServiceError as exc:
            raise RuntimeError(f"restoring v{previous['version']} failed too: {exc}") from None


class LocalDeployOperator(DeployOperator):
    def __init__(self, *, mlserving_conn_id: str = ServingHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.mlserving_conn_id = mlserving_conn_id

    def _backend(self) -> LocalServingBackend:
        return LocalServingBackend(self.model_name, self.mlflow_conn_id, self.mlserving_conn_id)

    def _serving(self, url: str) -> ServingHook:
        return ServingHook(self.model_name, self.mlserving_conn_id)
