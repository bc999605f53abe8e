"""MLflow registry I/O: the champion, model versions with lineage, and the promotion record.

Aliases only (`champion` = served, `challenger` = last candidate), never stages.
Every champion move is also an MLflow run in the "<model>.promotions"
experiment (start time = the move), so "which version was champion at time T"
is a query: the latest event at or before T. A record counts once its move is
done (status FINISHED): one left RUNNING or FAILED is a move that did not happen.

Moves are compare-and-swap: the caller names the champion it expects to replace,
and a champion that moved meanwhile (another run promoted or rolled back) is
refused with ChampionMoved, never overwritten.

Every call goes through MLflow's own client (`mlflow.tracking.MlflowClient`), so the stages authenticate,
retry and verify TLS exactly as MLflow does, from MLflow's environment variables
(`mlflow/environment_variables.py`; `mlflow/utils/rest_utils.py` `http_request`): user and password (Basic,
also when MLFLOW_TRACKING_TOKEN is set), else a token (Bearer); MLFLOW_TRACKING_AUTH plugins,
MLFLOW_TRACKING_AWS_SIGV4, client certificates, ~/.mlflow/credentials, request-header providers;
MLFLOW_HTTP_REQUEST_* retries, honouring Retry-After. A model's files come through MLflow's artifact
repository for their store (`mlflow.store.artifact`: the server's proxy, s3://, a shared path). MLflow is
imported when a Registry is made (about a second), so a stage that never touches the registry does not
pay for it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from .environment import environment
from .errors import PipelineError
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
REGISTRATION_WAIT_SECONDS = 120
PAGE = 1000  # search results per call; every page is read (next page token)


# MLflow's UI opens an experiment without this tag as a GenAI project (traces, token usage, an assistant): ours
# are model-training experiments (the value MLflow 3's UI and its own onboarding read as "traditional ML").
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


class ChampionMoved(PipelineError):
    """The champion is not the version the move expected to replace: the move is refused."""


REFERENCE_ARTIFACT = "reference/train_sample.parquet"


@dataclass(frozen=True)
class ModelVersion:
    """A registered version (the fields the stages read)."""
    version: str
    run_id: str
    source: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mlflow(cls, found) -> ModelVersion:
        """From MLflow's `mlflow.entities.model_registry.ModelVersion`."""
        return cls(version=str(found.version), run_id=found.run_id or "", source=found.source or "",
                   status=found.status or "", tags=dict(found.tags or {}))


def logged_model_id(source: str) -> str | None:
    """The logged model a version's source names (MLflow 3: `models:/<model id>`), read by MLflow's own
    parser (mlflow/store/artifact/utils/models.py); None for any other source."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import _parse_model_uri, is_models_uri

    try:
        return _parse_model_uri(source).model_id if is_models_uri(source) else None
    except MlflowException:  # a models:/ URI MLflow cannot read names no logged model
        return None


def _iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time, to the millisecond."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _not_found(exc: Exception) -> bool:
    """MLflow's own answer that the thing does not exist: a missing model, version or experiment is
    RESOURCE_DOES_NOT_EXIST (404), a missing alias INVALID_PARAMETER_VALUE "... not found" (400). Only an
    answer in MLflow's error format counts (RestException): a proxy's 404 page is not "no champion"."""
    from mlflow.exceptions import RestException

    return isinstance(exc, RestException) and (
        exc.error_code == "RESOURCE_DOES_NOT_EXIST"
        or (exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message.lower()))


def _unanswered(exc: Exception) -> bool:
    """The call failed in transport (no connection, no answer, 5xx with no retries left): MLflow's
    http_request raises MlflowException while handling the `requests` error, which stays its context."""
    from requests.exceptions import RequestException

    return isinstance(exc.__cause__ or exc.__context__, RequestException)


@contextmanager
def _sent_once():
    """MLflow's client retries every method, POST included (`mlflow/utils/request_utils.py`:
    `allowed_methods=None`), so a create whose answer was lost would be sent again by the client itself and
    register twice (test_a_create_whose_answer_is_dropped_registers_once). Within this block a call is sent
    once: MLFLOW_HTTP_REQUEST_MAX_RETRIES is read on every call (`rest_utils.http_request`). The environment
    is the process's: the stages call the registry from one thread."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    with environment({MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "0"}):
        yield


class Registry:
    """The registry of one model, through MLflow's client."""

    def __init__(self, model_name: str, tracking_uri: str | None = None):
        uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")).rstrip("/")
        # Both targets run a tracking server; the pipeline image's mlflow-skinny has no SQL store, so any
        # other URI is a misconfiguration, named here rather than by a failed import later.
        if urlparse(uri).scheme not in ("http", "https"):
            raise PipelineError(f"cannot use MLflow tracking URI {uri!r}: the registry is reached through a "
                                "tracking server (http:// or https://)")
        from mlflow.tracking import MlflowClient  # here, not at import: about a second of imports

        self.name, self.uri = model_name, uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # -- reading ----------------------------------------------------------------
    def alias(self, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            # MLflow's basic-auth answers a user who is not an admin 403 for an alias of a model that does
            # not exist (MLflow 3.17: no model, no permission to check), where an admin gets 404.
            if _not_found(exc) or (exc.get_http_status_code() == 403 and not self._exists()):
                return None
            raise PipelineError(f"MLflow registry error reading {self.name}@{alias}: {_line(exc)}") from None
        return ModelVersion.from_mlflow(found)

    def _exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise PipelineError(f"MLflow registry error reading {self.name}: {_line(exc)}") from None
        return True

    def champion(self) -> ModelVersion | None:
        return self.alias(CHAMPION)

    def version(self, number: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return ModelVersion.from_mlflow(self.client.get_model_version(self.name, str(number)))
        except MlflowException as exc:
            if _not_found(exc):
                raise PipelineError(f"{self.name} has no version {number!r}") from None
            raise

    def version_for_run_key(self, run_key: str) -> ModelVersion | None:
        found, token = [], None
        while True:
            page = self.client.search_model_versions(f"name = '{self.name}' and tags.run_key = '{run_key}'",
                                                     max_results=PAGE, page_token=token)
            found += [ModelVersion.from_mlflow(v) for v in page]
            token = page.token
            if not token:
                break
        return min(found, key=lambda v: int(v.version)) if found else None

    def _model_location(self, source: str) -> str:
        """Where a model's files are: a logged model's artifact location (MLflow 3), else the source itself."""
        model_id = logged_model_id(source)
        return self.client.get_logged_model(model_id).artifact_location if model_id else source

    def _files(self, location: str):
        """MLflow's artifact repository for the store at `location` (the server's proxy, s3://, a shared
        path, ...). Its downloads keep the relative path under the destination and refuse a listed name that
        leads out of it (`store/artifact/artifact_repo.py`, `http_artifact_repo.py`)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(location, tracking_uri=self.uri, registry_uri=self.uri)

    def load_version(self, version: ModelVersion):
        """The version's estimator (load_model)."""
        return self.load_model(version.source, f"{self.name} v{version.version}")

    def load_model(self, model_uri: str, where: str):
        """The estimator at `model_uri`, loaded under the one loading policy (model_format): its MLmodel is
        fetched, read and checked first, then its skops file alone is fetched and loaded trusting only allowed
        types. A model the policy refuses is a PipelineError naming it (`where`) and what was refused."""
        location = self._model_location(model_uri)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder, files = Path(tmp), self._files(location)
                spec = parse_mlmodel(Path(files.download_artifacts("MLmodel", tmp)).read_bytes(), where)
                model_file = PurePosixPath(spec.model_file)
                if model_file.is_absolute() or ".." in model_file.parts:
                    raise ModelLoadError(f"{where}: the model file {spec.model_file!r} is outside the model "
                                         "directory")
                files.download_artifacts(str(model_file), tmp)
                return load_estimator(read_mlmodel(folder, where), folder, where)
        except ModelLoadError as exc:
            raise PipelineError(f"refused to load {exc}") from None

    def prediction_edges(self, version: ModelVersion) -> tuple[float, ...] | None:
        """The version's prediction histogram edges (model_format.PREDICTION_BUCKETS_FILE), checked as the
        model server checks them; None when the version has none (a classifier)."""
        where = f"{self.name} v{version.version}"
        files = self._files(self._model_location(version.source))
        # Listed first: only a listing without the file means "no edges". A failed download must not pass for
        # it (the next version would get edges of its own, which the canary cannot compare).
        listed = files.list_artifacts(str(PurePosixPath(PREDICTION_BUCKETS_FILE).parent))
        if not any(f.path == PREDICTION_BUCKETS_FILE and not f.is_dir for f in listed):
            return None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files.download_artifacts(PREDICTION_BUCKETS_FILE, tmp)
                found = read_feature_buckets(Path(tmp), (PREDICTION_BUCKETS_KEY,), where, PREDICTION_BUCKETS_FILE)
        except ModelLoadError as exc:
            raise PipelineError(f"refused {exc}") from None
        return found[PREDICTION_BUCKETS_KEY] if found else None

    def reference_sample(self, version: ModelVersion):
        import pandas as pd
        from mlflow.exceptions import MlflowException

        try:
            with tempfile.TemporaryDirectory() as tmp:
                return pd.read_parquet(self.client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, tmp))
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"champion {self.name} v{version.version} has no training reference "
                                f"({REFERENCE_ARTIFACT} in run {version.run_id}): {_line(exc)}") from None

    def download(self, version: ModelVersion, destination: Path) -> Path:
        """The version's MLflow model directory at destination (complete or absent), plus registry.json
        naming the version, which the serving runtime reports (served_model_dir)."""
        destination = Path(destination)
        if holds_version(destination, self.name, version.version):
            return destination
        from mlflow.exceptions import MlflowException

        location = self._model_location(version.source)
        with staged(destination, self.name, version.version, version.run_id) as staging:
            try:
                self._files(location).download_artifacts("", str(staging))
            except (MlflowException, OSError) as exc:  # OSError: also `requests`' errors, which a listing raises
                raise PipelineError(f"cannot download {self.name} v{version.version} from {location}: "
                                    f"{_line(exc)}") from None
            if not (staging / "MLmodel").is_file():
                raise PipelineError(f"{self.name} v{version.version} has no MLmodel at {location}")
        return destination

    # -- writing ----------------------------------------------------------------
    def ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        if self._exists():
            return
        try:
            self.client.create_registered_model(self.name, description=(
                "Continuously trained model; aliases: champion (served), challenger (last candidate)."))
        except MlflowException as race:  # another run created it meanwhile
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def create_version(self, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """A new version tagged with its run key (tags["run_key"]); a create that went unanswered is looked up
        by that key before it is sent again, so one run key never registers twice."""
        from mlflow.exceptions import MlflowException

        self.ensure_model()
        for attempt in range(1, UNANSWERED_CREATE_ATTEMPTS + 1):
            try:
                with _sent_once():
                    created = self.client.create_model_version(self.name, model_uri, run_id, tags=tags,
                                                               await_creation_for=0,
                                                               model_id=logged_model_id(model_uri))
                version = ModelVersion.from_mlflow(created)
                break
            except MlflowException as exc:
                if not _unanswered(exc):
                    raise
                found = self.version_for_run_key(tags["run_key"])
                if found is not None:
                    log.warning("%s; it was: run key %s is v%s", _line(exc), tags["run_key"], found.version)
                    version = found
                    break
                if attempt == UNANSWERED_CREATE_ATTEMPTS:
                    raise
                log.warning("%s; no version has run key %s, so it is sent again", _line(exc), tags["run_key"])
        deadline = time.monotonic() + REGISTRATION_WAIT_SECONDS
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            version = self.version(version.version)
        if version.status != "READY":
            raise PipelineError(f"model version {self.name} v{version.version} is {version.status}, not READY")
        return version

    def _set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def _set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.name, str(version), key, value)

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
        # RUNNING until the alias has moved: the history counts FINISHED records only.
        run_id = self.client.create_run(experiment_id, start_time=now_ms, tags=tags,
                                        run_name=f"{event} v{version.version}").info.run_id
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
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_terminated(run_id, status, end_time=at_ms)
        except MlflowException as exc:
            if status == "FINISHED":
                raise
            log.warning("the record %s of a move that failed stays RUNNING (not in the history): %s", run_id,
                        _line(exc))

    def champion_history(self) -> list[dict]:
        experiment = self.client.get_experiment_by_name(self._promotions_name)  # None: no such experiment
        if experiment is None:
            return []
        history, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment.experiment_id], f"tags.model_name = '{self.name}' and attributes.status = 'FINISHED'",
                max_results=PAGE, order_by=["attributes.start_time ASC"], page_token=token)
            for run in page:
                tags = run.data.tags
                history.append({"at_ms": int(run.info.start_time), "event": tags.get("event"),
                                "version": tags.get("version"),
                                "previous_version": tags.get("previous_version") or None,
                                "reason": tags.get("reason")})
            token = page.token
            if not token:
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

    def _promotions_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self._promotions_name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self._promotions_name,
                                                 tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as race:  # another run's first move created it meanwhile
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(self._promotions_name).experiment_id


def _line(exc: Exception, limit: int = 1000) -> str:
    """An exception's message as one line: MLflow's can run to several (a download's per-file failures, whose
    first line names only the store)."""
    return " ".join(str(getattr(exc, "message", "") or exc).split())[:limit] or type(exc).__name__
