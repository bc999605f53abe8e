"""LocalDeployOperator: put the registry's champion behind the local KServe ModelServer, or roll back.

Steps: fetch the registry champion's model directory (one pipeline stage) -> start
`mlserving` if it is not running, else swap the new directory in through its load endpoint -> wait
until ready -> a real v2 inference built from the signature must be answered by the new version.
If the new model fails (its load is refused, the smoke test fails) after the server was serving an
earlier version, the `champion` alias moves back to that version (recorded as a rollback) and the
server keeps/gets that version back; the task fails with the failing step's own message. If the
server itself does not answer (it died), nothing is known against the model: the task fails with the
registry left as it is, and its retry starts the server again with the champion.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlops.hooks.serving import ServingError, ServingHook, ServingUnreachable
from mlops.hooks.stage import StageFailed, StageHook
from mlops.links import MlflowModelVersionLink, ServingEndpointLink, result_links
from mlops.settings import load_settings, target


class LocalDeployOperator(BaseOperator):
    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#fdf1e6"
    operator_extra_links = (MlflowModelVersionLink(), ServingEndpointLink())

    def __init__(self, *, model_name: str, **kwargs):
        super().__init__(**kwargs)
        self.model_name = model_name

    def execute(self, context):
        settings = load_settings()
        stages = StageHook.from_settings(settings)
        serving = ServingHook(settings.serving_url, self.model_name)
        registry = {"model_name": self.model_name}
        served_dir = settings.data_root / "serving" / self.model_name

        previous = serving.served_version()
        # One stage call resolves the champion and fetches it (a no-op when that version is already on disk).
        fetched = stages.run("fetch-model", {**registry, "alias": "champion", "into": served_dir})
        champion = fetched["version"]
        served = {"model_name": self.model_name, "version": champion, "previous_version": previous,
                  "endpoint": serving.infer_url}
        self.link_urls = result_links(served, settings.mlflow_ui_url)
        if champion == previous:
            self.log.info("version %s is already served; nothing to deploy", champion)
            return {**served, "changed": False}
        try:
            model_dir = fetched["model_dir"]
            if previous is None and not serving.is_live():
                serving.start(settings.serving_bin, model_dir, settings.serving_port,
                              settings.data_root / "serving" / "mlserving.log")
            else:
                serving.load(model_dir)
            smoke = serving.smoke_test(champion)
        except ServingUnreachable as exc:
            raise RuntimeError(f"deploy of {self.model_name} v{champion} failed: {exc}; the registry is left as "
                               "it is, a retry starts the model server again") from None
        except (ServingError, StageFailed) as exc:
            self._roll_back(stages, serving, registry, served_dir, previous, champion, str(exc))
            raise RuntimeError(f"deploy of {self.model_name} v{champion} failed: {exc}") from None
        self.log.info("serving %s v%s (was %s); smoke test answered %s", self.model_name, champion, previous,
                      smoke["prediction"])
        return {**served, "smoke_test": smoke, "changed": True}

    def _roll_back(self, stages, serving, registry, served_dir, previous, failed, reason) -> None:
        if previous is None:
            self.log.error("nothing to roll back to: no version was being served")
            return
        self.log.error("rolling back %s from v%s to v%s: %s", self.model_name, failed, previous, reason)
        stages.run("rollback", {**registry, "to_version": previous,
                                "reason": f"deploy of v{failed} failed: {reason}"[:1000]})
        if serving.served_version() != previous:
            serving.load(served_dir / f"v{previous}")


def deploy_task(*, task_id: str, model_name: str, **kwargs) -> BaseOperator:
    """The deploy task for the configured target (read when the DAG is parsed): the local model server,
    or a KServe InferenceService on `kubernetes`."""
    if target() == "kubernetes":
        from mlops.operators.kserve import KServeDeployOperator

        return KServeDeployOperator(task_id=task_id, model_name=model_name, **kwargs)
    return LocalDeployOperator(task_id=task_id, model_name=model_name, **kwargs)
