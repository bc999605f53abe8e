"""MLflow registry I/O: the champion, model versions with lineage, and the promotion record.

Aliases only (`champion` = served, `challenger` = last candidate), never stages.
Every champion move is also an MLflow run in the "<model>.promotions"
experiment (start time = the move), so "which version was champion at time T"
is a query: the latest event at or before T.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from .errors import PipelineError
from .served_model_dir import holds_version, staged

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
REFERENCE_ARTIFACT = "reference/train_sample.parquet"


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


class Registry:
    def __init__(self, model_name: str, tracking_uri: str | None = None):
        self.name = model_name
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
        except MlflowException as exc:
            raise PipelineError(f"cannot use MLflow tracking URI {tracking_uri!r}: {exc.message}") from exc

    # -- reading ----------------------------------------------------------------
    def alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if _missing(exc):
                return None
            raise PipelineError(f"MLflow registry error reading {self.name}@{alias}: {exc.message}") from exc

    def champion(self) -> ModelVersion | None:
        return self.alias(CHAMPION)

    def version(self, number: str) -> ModelVersion:
        try:
            return self.client.get_model_version(self.name, str(number))
        except MlflowException as exc:
            if _missing(exc):
                raise PipelineError(f"{self.name} has no version {number!r}") from exc
            raise

    def version_for_run_key(self, run_key: str) -> ModelVersion | None:
        found = self.client.search_model_versions(f"name = '{self.name}' and tags.run_key = '{run_key}'")
        return min(found, key=lambda v: int(v.version)) if found else None

    def load_version(self, version: ModelVersion):
        import mlflow.sklearn

        return mlflow.sklearn.load_model(f"models:/{self.name}/{version.version}")

    def reference_sample(self, version: ModelVersion) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, tmp)
            except (MlflowException, OSError) as exc:
                raise PipelineError(f"champion {self.name} v{version.version} has no training reference "
                                    f"({REFERENCE_ARTIFACT} in run {version.run_id}): {exc}") from exc
            return pd.read_parquet(path)

    def download(self, version: ModelVersion, destination: Path) -> Path:
        """The version's MLflow model directory at destination (complete or absent), plus registry.json
        naming the version, which the serving runtime reports (served_model_dir)."""
        import mlflow.artifacts

        destination = Path(destination)
        if holds_version(destination, self.name, version.version):
            return destination
        with staged(destination, self.name, version.version, version.run_id) as staging:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.name}/{version.version}",
                                                dst_path=str(staging))
        return destination

    # -- writing ----------------------------------------------------------------
    def ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if not _missing(exc):
                raise
            self.client.create_registered_model(
                self.name, description="Continuously trained classifier; aliases: champion (served), "
                                        "challenger (last candidate).")

    def create_version(self, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        self.ensure_model()
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = self.client.create_model_version(self.name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        deadline = time.monotonic() + 120
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            version = self.client.get_model_version(self.name, version.version)
        if version.status != "READY":
            raise PipelineError(f"model version {self.name} v{version.version} is {version.status}, not READY")
        return version

    def set_challenger(self, version: ModelVersion) -> None:
        self.client.set_registered_model_alias(self.name, CHALLENGER, version.version)

    def move_champion(self, version: ModelVersion, event: str, reason: str, context: dict[str, str]) -> dict:
        """Point `champion` at version and record the move (promotion or rollback)."""
        previous = self.champion()
        now_ms = int(time.time() * 1000)
        experiment_id = self._promotions_experiment()
        tags = {"event": event, "model_name": self.name, "version": str(version.version),
                "previous_version": previous.version if previous else "", "reason": reason[:4000],
                **{k: str(v) for k, v in context.items() if v}}
        run = self.client.create_run(experiment_id, start_time=now_ms, tags=tags,
                                     run_name=f"{event} v{version.version}")
        self.client.set_registered_model_alias(self.name, CHAMPION, version.version)
        self.client.set_model_version_tag(self.name, version.version, "champion_since_ms", str(now_ms))
        if previous and previous.version != version.version:
            self.client.set_model_version_tag(self.name, previous.version, "champion_until_ms", str(now_ms))
        self.client.set_terminated(run.info.run_id, status="FINISHED", end_time=now_ms)
        log.info("%s: champion %s -> v%s (%s)", event, f"v{previous.version}" if previous else "none",
                 version.version, reason)
        return {"event": event, "version": version.version, "previous_version": tags["previous_version"] or None,
                "at_ms": now_ms, "record_run_id": run.info.run_id}

    def champion_history(self) -> list[dict]:
        experiment = self.client.get_experiment_by_name(self._promotions_name)
        if experiment is None:
            return []
        runs = self.client.search_runs([experiment.experiment_id], f"tags.model_name = '{self.name}'",
                                       order_by=["attributes.start_time ASC"], max_results=10000)
        return [{"at_ms": r.info.start_time, "event": r.data.tags.get("event"),
                 "version": r.data.tags.get("version"), "previous_version": r.data.tags.get("previous_version") or None,
                 "reason": r.data.tags.get("reason")} for r in runs]

    def champion_at(self, at_ms: int) -> str | None:
        """The champion version at a moment (epoch ms), from the promotion record."""
        current = None
        for event in self.champion_history():
            if event["at_ms"] > at_ms:
                break
            current = event["version"]
        return current

    @property
    def _promotions_name(self) -> str:
        return f"{self.name}.promotions"

    def _promotions_experiment(self) -> str:
        experiment = self.client.get_experiment_by_name(self._promotions_name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(self._promotions_name)

