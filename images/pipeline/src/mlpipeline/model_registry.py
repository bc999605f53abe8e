"""MLflow registry I/O: the champion, model versions with lineage, and the promotion record.

Aliases only (`champion` = served, `challenger` = last candidate), never stages.
Every champion move is also an MLflow run in the "<model>.promotions"
experiment (start time = the move), so "which version was champion at time T"
is a query: the latest event at or before T. A record counts once its move is
done (status FINISHED): one left RUNNING or FAILED is a move that did not happen.

Moves are compare-and-swap: the caller names the champion it expects to replace,
and a champion that moved meanwhile (another run promoted or rolled back) is
refused with ChampionMoved, never overwritten.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError
from .mlflow_api import MlflowApi, MlflowApiError, MlflowUnanswered, logged_model_id, proxied_path
from .model_format import (
    PREDICTION_BUCKETS_FILE,
    PREDICTION_BUCKETS_KEY,
    ModelLoadError,
    load_estimator,
    parse_mlmodel,
    read_feature_buckets,
    read_mlmodel,
)
from .served_model_dir import holds_version, staged

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
UNANSWERED_CREATE_ATTEMPTS = 3


# MLflow's UI opens an experiment without this tag as a GenAI project (traces, token usage, an assistant): ours
# are model-training experiments (the value MLflow 3's UI and its own onboarding read as "traditional ML").
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


class ChampionMoved(PipelineError):
    """The champion is not the version the move expected to replace: the move is refused."""
REFERENCE_ARTIFACT = "reference/train_sample.parquet"


@dataclass(frozen=True)
class ModelVersion:
    """A registered version, as the registry's REST API describes it (the fields the stages read)."""
    version: str
    run_id: str
    source: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict) -> ModelVersion:
        return cls(version=str(doc["version"]), run_id=doc.get("run_id", ""), source=doc.get("source", ""),
                   status=doc.get("status", ""), tags={t["key"]: t.get("value", "") for t in doc.get("tags", [])})


def _iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time, to the millisecond."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


class Registry:
    """The registry through the tracking server's REST API (mlflow_api): no MLflow import for the calls;
    a model's files come through the server's artifact proxy, and only files the server does not proxy
    are read with MLflow's client."""

    def __init__(self, model_name: str, tracking_uri: str | None = None):
        self.name = model_name
        self.api = MlflowApi(tracking_uri)

    # -- reading ----------------------------------------------------------------
    def alias(self, alias: str) -> ModelVersion | None:
        try:
            found = self.api.get("registered-models/alias", name=self.name, alias=alias)
        except MlflowApiError as exc:
            # MLflow's basic-auth answers a user who is not an admin 403 for an alias of a model that does
            # not exist (MLflow 3.17: no model, no permission to check), where an admin gets 404.
            if exc.not_found or (exc.status == 403 and not self._exists()):
                return None
            raise PipelineError(f"MLflow registry error reading {self.name}@{alias}: {exc}") from None
        return ModelVersion.from_json(found["model_version"])

    def _exists(self) -> bool:
        try:
            self.api.get("registered-models/get", name=self.name)
        except MlflowApiError as exc:
            if exc.not_found:
                return False
            raise PipelineError(f"MLflow registry error reading {self.name}: {exc}") from None
        return True

    def champion(self) -> ModelVersion | None:
        return self.alias(CHAMPION)

    def version(self, number: str) -> ModelVersion:
        try:
            return ModelVersion.from_json(self.api.get("model-versions/get", name=self.name,
                                                       version=str(number))["model_version"])
        except MlflowApiError as exc:
            if exc.not_found:
                raise PipelineError(f"{self.name} has no version {number!r}") from None
            raise

    def version_for_run_key(self, run_key: str) -> ModelVersion | None:
        found = [ModelVersion.from_json(v) for v in self.api.pages(
            "model-versions/search", "model_versions", method="GET",
            body={"filter": f"name = '{self.name}' and tags.run_key = '{run_key}'", "max_results": 1000})]
        return min(found, key=lambda v: int(v.version)) if found else None

    def _model_location(self, source: str) -> str:
        """Where a model's files are: a logged model's artifact URI (MLflow 3), else the source itself."""
        model_id = logged_model_id(source)
        return self.api.get(f"logged-models/{model_id}")["model"]["info"]["artifact_uri"] if model_id else source

    def _fetch(self, root: str, destination: Path) -> None:
        for relative in self.api.artifact_files(root):
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            (destination / relative).write_bytes(self.api.artifact(f"{root}/{relative}"))

    def load_version(self, version: ModelVersion):
        """The version's estimator (load_model)."""
        return self.load_model(version.source, f"{self.name} v{version.version}",
                               f"models:/{self.name}/{version.version}")

    def load_model(self, model_uri: str, where: str, download_uri: str | None = None):
        """The estimator at `model_uri`, loaded under the one loading policy (model_format): its MLmodel is
        read and checked first, then its skops file alone is fetched and loaded trusting only allowed
        types. A model the policy refuses is a PipelineError naming it (`where`) and what was refused."""
        root = proxied_path(self._model_location(model_uri))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                if root is None:  # a store the server does not proxy: MLflow's client fetches the folder
                    import mlflow.artifacts

                    mlflow.artifacts.download_artifacts(artifact_uri=download_uri or model_uri, dst_path=tmp)
                    spec = read_mlmodel(folder, where)
                else:
                    spec = parse_mlmodel(self.api.artifact(f"{root}/MLmodel"), where)
                    (folder / spec.model_file).parent.mkdir(parents=True, exist_ok=True)
                    (folder / spec.model_file).write_bytes(self.api.artifact(f"{root}/{spec.model_file}"))
                return load_estimator(spec, folder, where)
        except ModelLoadError as exc:
            raise PipelineError(f"refused to load {exc}") from None

    def prediction_edges(self, version: ModelVersion) -> tuple[float, ...] | None:
        """The version's prediction histogram edges (model_format.PREDICTION_BUCKETS_FILE), checked as the
        model server checks them; None when the version has none (a classifier)."""
        where = f"{self.name} v{version.version}"
        location = self._model_location(version.source)
        root = proxied_path(location)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / PREDICTION_BUCKETS_FILE
                path.parent.mkdir()
                if root is None:
                    import mlflow.artifacts
                    from mlflow.exceptions import MlflowException

                    try:
                        mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{PREDICTION_BUCKETS_FILE}",
                                                            dst_path=str(path.parent))
                    except (OSError, MlflowException) as exc:
                        # only "no such file" means no edges: any other failure must not pass for it (the
                        # next version would get edges of its own, which the canary cannot compare)
                        if not (isinstance(exc, FileNotFoundError)
                                or getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"):
                            raise
                        return None
                else:
                    path.write_bytes(self.api.artifact(f"{root}/{PREDICTION_BUCKETS_FILE}"))
                found = read_feature_buckets(Path(tmp), (PREDICTION_BUCKETS_KEY,), where, PREDICTION_BUCKETS_FILE)
        except MlflowApiError as exc:
            if exc.not_found:
                return None
            raise
        except ModelLoadError as exc:
            raise PipelineError(f"refused {exc}") from None
        return found[PREDICTION_BUCKETS_KEY] if found else None

    def reference_sample(self, version: ModelVersion):
        import pandas as pd

        try:
            run = self.api.get("runs/get", run_id=version.run_id)["run"]
            root = proxied_path(run["info"]["artifact_uri"])
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "reference.parquet"
                if root is None:
                    import mlflow.artifacts

                    path = mlflow.artifacts.download_artifacts(run_id=version.run_id,
                                                               artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
                else:
                    path.write_bytes(self.api.artifact(f"{root}/{REFERENCE_ARTIFACT}"))
                return pd.read_parquet(path)
        except (MlflowApiError, OSError) as exc:
            raise PipelineError(f"champion {self.name} v{version.version} has no training reference "
                                f"({REFERENCE_ARTIFACT} in run {version.run_id}): {exc}") from None

    def download(self, version: ModelVersion, destination: Path) -> Path:
        """The version's MLflow model directory at destination (complete or absent), plus registry.json
        naming the version, which the serving runtime reports (served_model_dir)."""
        destination = Path(destination)
        if holds_version(destination, self.name, version.version):
            return destination
        location = self._model_location(version.source)
        root = proxied_path(location)
        with staged(destination, self.name, version.version, version.run_id) as staging:
            if root is None:
                import mlflow.artifacts

                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.name}/{version.version}",
                                                    dst_path=str(staging))
            else:
                self._fetch(root, staging)
            if not (staging / "MLmodel").is_file():
                raise PipelineError(f"{self.name} v{version.version} has no MLmodel at {location}")
        return destination

    # -- writing ----------------------------------------------------------------
    def ensure_model(self) -> None:
        try:
            self.api.get("registered-models/get", name=self.name)
        except MlflowApiError as exc:
            if not exc.not_found:
                raise
            try:
                self.api.post("registered-models/create", {
                    "name": self.name, "description": "Continuously trained model; aliases: champion "
                                                      "(served), challenger (last candidate)."})
            except MlflowApiError as race:  # another run created it meanwhile
                if race.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def create_version(self, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """A new version tagged with its run key (tags["run_key"]); a create that went unanswered is looked up
        by that key before it is sent again, so one run key never registers twice."""
        self.ensure_model()
        body = {"name": self.name, "source": model_uri, "run_id": run_id, "tags": _tags(tags)}
        if model_id := logged_model_id(model_uri):
            body["model_id"] = model_id
        for attempt in range(1, UNANSWERED_CREATE_ATTEMPTS + 1):
            try:
                version = ModelVersion.from_json(self.api.post("model-versions/create", body,
                                                               idempotent=False)["model_version"])
                break
            except MlflowUnanswered as exc:
                found = self.version_for_run_key(tags["run_key"])
                if found is not None:
                    log.warning("%s; it was: run key %s is v%s", exc, tags["run_key"], found.version)
                    version = found
                    break
                if attempt == UNANSWERED_CREATE_ATTEMPTS:
                    raise
                log.warning("%s; no version has run key %s, so it is sent again", exc, tags["run_key"])
        deadline = time.monotonic() + 120
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            version = self.version(version.version)
        if version.status != "READY":
            raise PipelineError(f"model version {self.name} v{version.version} is {version.status}, not READY")
        return version

    def _set_alias(self, alias: str, version: str) -> None:
        self.api.post("registered-models/alias", {"name": self.name, "alias": alias, "version": str(version)})

    def _set_version_tag(self, version: str, key: str, value: str) -> None:
        self.api.post("model-versions/set-tag", {"name": self.name, "version": str(version), "key": key,
                                                 "value": value})

    def set_challenger(self, version: ModelVersion) -> None:
        self._set_alias(CHALLENGER, version.version)

    def move_champion(self, version: ModelVersion, event: str, reason: str, context: dict[str, str], *,
                      expected: str | None) -> dict:
        """Point `champion` at version and record the move (promotion or rollback), if the champion is still
        `expected` (a version number, None for no champion); else ChampionMoved, and nothing is written.

        MLflow's alias call has no condition of its own, so the check is a read just before the write: a
        move that raced another within those milliseconds is not caught here."""
        previous = self.champion()
        current = previous.version if previous else None
        if current != expected:
            raise ChampionMoved(f"{self.name}: champion is {f'v{current}' if current else 'none'}, not "
                                f"{f'v{expected}' if expected else 'none'} as this {event} of v{version.version} "
                                "expected: another run moved it; not moving it again")
        now_ms = int(time.time() * 1000)
        experiment_id = self._promotions_experiment()
        tags = {"event": event, "model_name": self.name, "version": str(version.version),
                "previous_version": current or "", "reason": reason[:4000],
                **{k: str(v) for k, v in context.items() if v}}
        run_name = f"{event} v{version.version}"
        # As MlflowClient.create_run sends it: the name also as the mlflow.runName tag, the user "unknown".
        # RUNNING until the alias has moved: the history counts FINISHED records only.
        run_id = self.api.post("runs/create", {
            "experiment_id": experiment_id, "user_id": "unknown", "start_time": now_ms, "run_name": run_name,
            "tags": _tags({**tags, "mlflow.runName": run_name})})["run"]["info"]["run_id"]
        try:
            self._set_alias(CHAMPION, version.version)
        except Exception:
            self._end_record(run_id, "FAILED", now_ms)
            raise
        # epoch milliseconds for programs (champion-at), an ISO 8601 time beside it for people reading the UI
        self._set_version_tag(version.version, "champion_since_ms", str(now_ms))
        self._set_version_tag(version.version, "champion_since", _iso(now_ms))
        if current and current != version.version:
            self._set_version_tag(current, "champion_until_ms", str(now_ms))
            self._set_version_tag(current, "champion_until", _iso(now_ms))
        self._end_record(run_id, "FINISHED", now_ms)
        log.info("%s: champion %s -> v%s (%s)", event, f"v{current}" if current else "none", version.version, reason)
        return {"event": event, "version": version.version, "previous_version": current,
                "at_ms": now_ms, "record_run_id": run_id}

    def _end_record(self, run_id: str, status: str, at_ms: int) -> None:
        try:
            self.api.post("runs/update", {"run_id": run_id, "status": status, "end_time": at_ms})
        except PipelineError as exc:
            if status == "FINISHED":
                raise
            log.warning("the record %s of a move that failed stays RUNNING (not in the history): %s", run_id, exc)

    def champion_history(self) -> list[dict]:
        experiment_id = self._experiment_id(self._promotions_name)
        if experiment_id is None:
            return []
        history = []
        for run in self.api.pages("runs/search", "runs", {
                "experiment_ids": [experiment_id],
                "filter": f"tags.model_name = '{self.name}' and attributes.status = 'FINISHED'",
                "order_by": ["attributes.start_time ASC"], "max_results": 1000}):
            tags = {t["key"]: t.get("value") for t in run["data"].get("tags", [])}
            history.append({"at_ms": int(run["info"]["start_time"]), "event": tags.get("event"),
                            "version": tags.get("version"), "previous_version": tags.get("previous_version") or None,
                            "reason": tags.get("reason")})
        return history

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

    def _experiment_id(self, name: str) -> str | None:
        try:
            return self.api.get("experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"]
        except MlflowApiError as exc:
            if exc.not_found:
                return None
            raise

    def _promotions_experiment(self) -> str:
        found = self._experiment_id(self._promotions_name)
        return found if found is not None else self.api.post("experiments/create", {
            "name": self._promotions_name, "tags": [{"key": EXPERIMENT_KIND_TAG, "value": MODEL_TRAINING_KIND}]})[
                "experiment_id"]

