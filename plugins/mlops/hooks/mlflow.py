"""MlflowHook: the MLflow tracking server through MLflow's own client (`MlflowClient`, from mlflow-skinny):
the champion, where a version's files are (and, when the server proxies them, the files themselves), the
decision a training run recorded, tags on runs and versions.

Connection `mlflow_default` (type `mlflow`; a URI-form `http://...` connection works the same):
host = the tracking URI (`http://mlflow:5000`; or a host name, with the schema field as its scheme and
the port field); login and password = an MLflow user (HTTP Basic, what MLflow's basic-auth app checks), or
a password alone = a bearer token; extra = MLflow's client TLS settings, `insecure_tls` (true: do not
verify the server's certificate), `server_cert_path` (a CA bundle), `client_cert_path` (a client
certificate). Where users' browsers reach the MLflow UI (task links) is the option `[mlops] mlflow_ui_url`.

How the connection becomes the client's settings. MLflow's client takes its credentials from the process
environment only (MLFLOW_TRACKING_USERNAME, ..., read on every request; setters are asked for in
mlflow/mlflow#8584 and #12520, both open). Writing the connection's secrets into the worker's os.environ
would hand them to every process the worker starts later; MLflow's request-auth plugins
(MLFLOW_TRACKING_AUTH) are found through installed entry points and named by an environment variable, so
they cannot carry one connection's login either. What MLflow does expose is the credentials callable of its
REST stores: it builds each as `RestStore(get_host_creds)` and calls it before every request. So the hook
builds the client's two stores with a callable that returns `MlflowHostCreds` made from the connection
(`mlops.hooks.mlflow_client`); requests, authentication headers, TLS checks and retries are MLflow's.

Retries are MLflow's policy (`mlflow/utils/rest_utils.py` `http_request`): connection errors, 429 and 5xx
answers are retried MLFLOW_HTTP_REQUEST_MAX_RETRIES times (default 7) with exponential back-off
(MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, _JITTER), each try at most MLFLOW_HTTP_REQUEST_TIMEOUT seconds; the
worker's environment sets them as for any MLflow client. A failure is an MlflowError of one line.

The Airflow environment has mlflow-skinny without boto3 or any cloud SDK: a version whose files the
tracking server does not proxy (`s3://...`, a shared path) is left to the pipeline's fetch-model stage
(`download_version` answers None).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from airflow.sdk import BaseHook

from mlops.hooks.http import ServiceError

T = TypeVar("T")

# The connection's extra fields: MLflow's client TLS settings (MlflowHostCreds' arguments, which MLflow's
# own client reads from MLFLOW_TRACKING_INSECURE_TLS, _SERVER_CERT_PATH, _CLIENT_CERT_PATH).
EXTRA_FIELDS = {
    "insecure_tls": ("Skip TLS verification", "Do not verify the server's certificate (MLFLOW_TRACKING_INSECURE_TLS)."
                     " For tests only.", {"type": ["boolean", "null"]}),
    "server_cert_path": ("Server CA bundle", "A CA bundle the server's certificate is verified against "
                         "(MLFLOW_TRACKING_SERVER_CERT_PATH).", {"type": ["string", "null"]}),
    "client_cert_path": ("Client certificate", "A client certificate (.pem) sent to the server "
                         "(MLFLOW_TRACKING_CLIENT_CERT_PATH).", {"type": ["string", "null"]}),
}
CHAMPION = "champion"
UNSAFE_FILTER_VALUE = re.compile(r"['\\]")  # what would end a quoted value in MLflow's search filter


class MlflowError(ServiceError):
    """The tracking server refused a request or could not be reached; one line says which and why."""


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


class MlflowHook(BaseHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = None):
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id or self.default_conn_name

    # -- the connection form ---------------------------------------------------------------------------
    @classmethod
    def connection_type(cls) -> dict[str, Any]:
        """This hook's entry of a provider's `connection-types` (Airflow's provider.yaml.schema.json): how
        the UI's connection form shows an MLflow connection, and the extra fields it offers. Since Airflow
        3.2 these are declared, as apache-airflow-providers-http 6.3.0 declares HttpHook's (its
        get_provider_info.py): airflow/providers_manager.py reads `conn-fields` and `ui-field-behaviour`
        without importing the hook, and warns that the hook methods `get_connection_form_widgets` (wtforms
        fields: this environment has no wtforms) and `get_ui_field_behaviour` are deprecated. The UI shows
        the form once a provider's info lists this entry."""
        return {
            "connection-type": cls.conn_type,
            "hook-class-name": f"{cls.__module__}.{cls.__qualname__}",
            "hook-name": cls.hook_name,
            "ui-field-behaviour": {
                "hidden-fields": [],
                "relabeling": {"host": "Tracking URI", "schema": "Scheme", "login": "MLflow user",
                               "password": "Password (with a user) or token"},
                "placeholders": {"host": "http://mlflow.mlflow.svc.cluster.local:5000",
                                 "schema": "http, when the tracking URI is a bare host name",
                                 "login": "pipeline"},
            },
            "conn-fields": {name: {"label": label, "description": description, "schema": schema}
                            for name, (label, description, schema) in EXTRA_FIELDS.items()},
        }

    @cached_property
    def connection(self):
        """The Airflow connection, or a clear error naming how to define it."""
        try:
            return self.get_connection(self.mlflow_conn_id)
        except Exception as exc:  # AirflowNotFoundException, or no secrets backend answering
            raise MlflowError(
                f"{self.hook_name}: Airflow connection {self.mlflow_conn_id!r} is not defined ({exc}); set it, e.g. "
                f"as AIRFLOW_CONN_{self.mlflow_conn_id.upper()}='http://host:port' (docs/configuration.md)") from None

    def _extra(self) -> dict[str, Any]:
        """The connection's extra fields, checked: a misspelt TLS setting must not be dropped silently. The
        UI stores a form field plainly; Airflow 2 prefixed it `extra__<conn type>__`."""
        extra = {key.removeprefix(f"extra__{self.conn_type}__"): value
                 for key, value in self.connection.extra_dejson.items()}
        unknown = sorted(set(extra) - set(EXTRA_FIELDS))
        if unknown:
            raise MlflowError(f"{self.hook_name}: connection {self.mlflow_conn_id!r} has unknown extra field(s) "
                              f"{unknown}; known: {sorted(EXTRA_FIELDS)}")
        if extra.get("insecure_tls") not in (None, True, False):
            raise MlflowError(f"{self.hook_name}: connection {self.mlflow_conn_id!r}: insecure_tls must be true or "
                              f"false, got {extra['insecure_tls']!r}")
        return extra

    @property
    def tracking_uri(self) -> str:
        conn = self.connection
        host = conn.host or ""
        if not host:
            raise MlflowError(f"{self.hook_name}: connection {self.mlflow_conn_id!r} has no host (the tracking URI)")
        if "://" not in host:
            # As Airflow's HttpHook: the schema field names the scheme; a URI-form connection
            # (AIRFLOW_CONN_X=https://host:port) carries it as its conn type.
            scheme = conn.schema or (conn.conn_type if conn.conn_type in ("http", "https") else "http")
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        return host.rstrip("/")

    @property
    def ui_url(self) -> str:
        from mlops.settings import mlops_settings

        return (mlops_settings().mlflow_ui_url or self.tracking_uri).rstrip("/")

    def host_creds(self, host: str | None = None):
        """MLflow's `MlflowHostCreds` for `host` (the tracking URI, or a URL under it) from the connection:
        what MLflow's client would build from its environment variables (mlflow/utils/credentials.py
        `get_default_host_creds`), with a login sent as HTTP Basic and a password alone as a bearer token."""
        from mlflow.exceptions import MlflowException
        from mlflow.utils.rest_utils import MlflowHostCreds

        conn, extra = self.connection, self._extra()
        login, password = conn.login or None, conn.password or None
        if login and not password:
            # MLflow sends Basic only with both (rest_utils.http_request): the call would go out anonymous.
            raise MlflowError(f"{self.hook_name}: connection {self.mlflow_conn_id!r} has a login but no password")
        try:
            return MlflowHostCreds(host or self.tracking_uri, username=login, password=password if login else None,
                                   token=None if login else password,
                                   ignore_tls_verification=bool(extra.get("insecure_tls")),
                                   server_cert_path=extra.get("server_cert_path") or None,
                                   client_cert_path=extra.get("client_cert_path") or None)
        except MlflowException as exc:  # e.g. insecure_tls together with server_cert_path
            raise MlflowError(f"{self.hook_name}: connection {self.mlflow_conn_id!r}: "
                              f"{_one_line(exc.message)}") from None

    def client_env(self) -> dict[str, str]:
        """What an MLflow client process (a local stage) needs to reach the same server, as the MLflow
        client's own environment variables (mlflow/environment_variables.py): the secrets go to the stage
        process that needs them, never into this process's environment."""
        creds = self.host_creds()
        env = {"MLFLOW_TRACKING_URI": creds.host}
        if creds.username:
            env |= {"MLFLOW_TRACKING_USERNAME": creds.username, "MLFLOW_TRACKING_PASSWORD": creds.password}
        elif creds.token:
            env["MLFLOW_TRACKING_TOKEN"] = creds.token
        if creds.ignore_tls_verification:
            env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
        if creds.server_cert_path:
            env["MLFLOW_TRACKING_SERVER_CERT_PATH"] = creds.server_cert_path
        if creds.client_cert_path:
            env["MLFLOW_TRACKING_CLIENT_CERT_PATH"] = creds.client_cert_path
        return env

    @cached_property
    def client(self):
        """`MlflowClient` for the connection's server, with the connection's credentials."""
        from mlops.hooks.mlflow_client import ConnectionClient

        self.host_creds()  # a connection that cannot work fails here, with its own message
        return ConnectionClient(self.tracking_uri, self.host_creds)

    # -- calls -----------------------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[Any], T], *, quiet: tuple[int, ...] = ()) -> T | None:
        """`call(client)`, its MLflow failure as an MlflowError naming `what`; None for an answer whose
        HTTP status is in `quiet` (a 404 that means "none")."""
        from mlflow.exceptions import MlflowException

        try:
            return call(self.client)
        except MlflowException as exc:
            if exc.get_http_status_code() in quiet and not self._unanswered(exc):
                return None
            raise self._error(what, exc) from None

    @staticmethod
    def _unanswered(exc: BaseException) -> bool:
        """Whether MLflow gave up without an answer it could read: it wraps the requests error (connection
        refused, timeout, retries exhausted) in an MlflowException (rest_utils.http_request)."""
        import requests

        return isinstance(exc.__cause__ or exc.__context__, requests.RequestException)

    def _error(self, what: str, exc: BaseException) -> MlflowError:
        """One line: no answer; the server's own JSON error (RestException); or another failure MLflow
        reports (an error page without JSON, such as the basic-auth app's 401, or a check of its own)."""
        from mlflow.exceptions import MlflowException, RestException

        where = f"{self.hook_name} at {self.tracking_uri}"
        if self._unanswered(exc):
            reason = exc.__cause__ or exc.__context__
            return MlflowError(f"{where} did not answer ({what}): {type(reason).__name__}: {_one_line(reason, 240)}")
        if isinstance(exc, RestException):
            said = exc.json.get("message") or exc.message  # RestException's message repeats the code
            return MlflowError(f"{where} refused {what}: HTTP {exc.get_http_status_code()} {exc.error_code}: "
                               f"{_one_line(said)}")
        if isinstance(exc, MlflowException):
            return MlflowError(f"{where} failed ({what}): {exc.error_code}: {_one_line(exc.message)}")
        return MlflowError(f"{where} failed ({what}): {type(exc).__name__}: {_one_line(exc)}")

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection test: one read any user may make (the first experiment the user may see),
        which checks the address, TLS and the login; one try of at most ten seconds (the person pressing Test
        waits), not MLflow's retries."""
        try:
            with self.request_settings(max_retries=0, timeout=10):
                self._call("the experiments list", lambda c: c.search_experiments(max_results=1))
        except MlflowError as exc:
            return False, str(exc)
        return True, f"{self.hook_name} at {self.tracking_uri} answered"

    @staticmethod
    @contextlib.contextmanager
    def request_settings(*, max_retries: int | None = None, timeout: int | None = None) -> Iterator[None]:
        """MLflow's own retry and timeout settings for the calls in the block (a task link lookup: one try,
        five seconds). MLflow reads them from the environment on every request (rest_utils.http_request)
        and its stores take no per-call value; they are no secret, and are put back when the block ends."""
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

        from mlpipeline.environment import environment

        wanted = {MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: max_retries, MLFLOW_HTTP_REQUEST_TIMEOUT.name: timeout}
        with environment({name: str(value) for name, value in wanted.items() if value is not None}):
            yield

    # -- what the operators ask ------------------------------------------------------------------------
    def training_decision(self, model_name: str, run_key: str):
        """The TrainingDecision the pipeline recorded on its training run for this run key, or None."""
        from mlpipeline.contracts import TrainingDecision

        if UNSAFE_FILTER_VALUE.search(run_key):
            raise MlflowError(f"{self.hook_name}: run key {run_key!r} cannot be searched for")
        experiment = self._call(f"experiment {model_name!r}", lambda c: c.get_experiment_by_name(model_name))
        if experiment is None:
            return None
        runs = self._call(f"the training runs of {model_name!r}", lambda c: c.search_runs(
            [experiment.experiment_id], filter_string=f"tags.run_key = '{run_key}' and tags.stage = 'train'",
            max_results=1, order_by=["attributes.start_time DESC"]))
        if not runs:
            return None
        return TrainingDecision.from_tags(dict(runs[0].data.tags))

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """All at once (one log-batch request, which the server writes in one transaction): a failure
        leaves none of them."""
        from mlflow.entities import RunTag

        self._call(f"tags on run {run_id}", lambda c: c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))

    def experiment_of(self, run_id: str, *, max_retries: int | None = None, timeout: int | None = None) -> str:
        """The id of the experiment a run is in (MLflow's request settings for this call, if given)."""
        with self.request_settings(max_retries=max_retries, timeout=timeout):
            return self._call(f"run {run_id}", lambda c: c.get_run(run_id)).info.experiment_id

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._call(f"run {run_id}", lambda c: c.get_run(run_id)).data.tags)

    def set_model_version_tags(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        """MLflow's REST API sets a model version's tags one at a time (`model-versions/set-tag`)."""
        for key, value in tags.items():
            self._call(f"tag {key!r} on {model_name} v{version}",
                       lambda c, k=key, v=value: c.set_model_version_tag(model_name, str(version), k, v))

    def model_version_tags(self, model_name: str, version: str) -> dict[str, str]:
        found = self._call(f"{model_name} v{version}", lambda c: c.get_model_version(model_name, str(version)))
        return dict(found.tags)

    def champion(self, model_name: str) -> dict | None:
        """The version the `champion` alias points at: {"version", "run_id", "source"}, or None."""
        # 400 INVALID_PARAMETER_VALUE: no such alias; 404: no such model; 403 to a user who is not an admin
        # when there is no such model (MLflow 3.17's basic-auth: no model, no permission to check), which a
        # read of the model itself tells apart from a refusal (that read answers such a user 404).
        from mlflow.exceptions import MlflowException

        what = f"the {CHAMPION} of {model_name!r}"
        try:
            version = self.client.get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException as exc:
            status = None if self._unanswered(exc) else exc.get_http_status_code()
            if status in (400, 404):
                return None
            if status == 403 and self._call(f"model {model_name!r}", lambda c: c.get_registered_model(model_name),
                                            quiet=(404,)) is None:
                return None
            raise self._error(what, exc) from None
        return {"version": str(version.version), "run_id": version.run_id or None, "source": version.source}

    def artifact_location(self, source: str) -> str:
        """Where a version's files are: a logged model's artifact location (MLflow 3 `models:/<model id>`
        sources), else the source itself."""
        from mlpipeline.model_registry import logged_model_id  # the pipeline's reading, MLflow's parser

        model_id = logged_model_id(source)
        if model_id is None:
            return source
        return self._call(f"logged model {model_id}", lambda c: c.get_logged_model(model_id)).artifact_location

    def download_version(self, model_name: str, version: str, destination: Path) -> Path | None:
        """The version's model directory at `destination` (mlpipeline.served_model_dir: written whole, or
        left as it was), downloaded through the server's artifact proxy by MLflow's artifact repository.
        None when the server does not proxy the version's files (another store, which the pipeline's
        fetch-model stage reads with its credentials)."""
        from mlflow.exceptions import MlflowException

        from mlops.hooks.mlflow_client import ProxiedArtifacts
        from mlpipeline.served_model_dir import holds_version, staged

        if holds_version(destination, model_name, version):
            return destination
        found = self._call(f"{model_name} v{version}", lambda c: c.get_model_version(model_name, str(version)))
        location = self.artifact_location(found.source)
        proxied = urlparse(location)
        if proxied.scheme != "mlflow-artifacts" or proxied.netloc:  # not this server's proxy
            return None
        what = f"the files of {model_name} v{version} at {location}"
        with staged(destination, model_name, version, found.run_id or None) as staging:
            try:
                ProxiedArtifacts(location, self.tracking_uri, self.host_creds).download_artifacts("", str(staging))
            except MlflowException as exc:
                raise self._error(what, exc) from None
            except OSError as exc:  # the listing was refused (MLflow raises requests' HTTPError, an OSError)
                raise MlflowError(f"{self.hook_name} at {self.tracking_uri} failed ({what}): "
                                  f"{_one_line(exc)}") from None
            if not (staging / "MLmodel").is_file():
                raise MlflowError(f"{self.hook_name}: {model_name} v{version} has no MLmodel at {location}")
        return destination

