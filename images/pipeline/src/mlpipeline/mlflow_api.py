"""MLflow's tracking server over its REST API, with the standard library only.

A stage that only reads aliases or moves one would otherwise import MLflow's client (about a second of
CPU per process) to send a handful of HTTP calls. This sends the calls MLflow's client sends (MLflow's
REST API; its `store/tracking/rest_store.py`, `store/model_registry/rest_store.py` and
`store/artifact/http_artifact_repo.py`) and reads the client's settings from the same environment
variables, with the same defaults (`mlflow/environment_variables.py`, `utils/rest_utils.py`):
- MLFLOW_TRACKING_URI; MLFLOW_TRACKING_TOKEN (Bearer), else MLFLOW_TRACKING_USERNAME/_PASSWORD (Basic);
- MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH;
- MLFLOW_HTTP_REQUEST_TIMEOUT, _MAX_RETRIES, _BACKOFF_FACTOR, _BACKOFF_JITTER. A failed connection and the
  codes MLflow counts as transient are retried on urllib3's schedule: the first retry at once, then waits
  that double (factor x 2^(n-1), at most 120 s), plus up to `jitter` seconds.

It is also what the Airflow side's MlflowHook shares with the pipeline: which artifact URIs the server
proxies, which sources are logged models, and the walk of the proxy's folder listings.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlparse
from urllib.request import Request, urlopen

from .errors import PipelineError

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"  # the artifact proxy (`mlflow server --serve-artifacts`)
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})  # mlflow.utils.request_utils._TRANSIENT_FAILURE_RESPONSE_CODES
MAX_BACKOFF = 120.0


class MlflowUnanswered(PipelineError):
    """A call that changes state reached the server, or may have, and no answer came back: whether it took
    effect is unknown, so it is not sent again blindly (the caller looks first)."""


class MlflowApiError(PipelineError):
    """The tracking server refused a call, or could not be reached; one line that says which."""

    def __init__(self, message: str, status: int | None = None, error_code: str = ""):
        super().__init__(message)
        self.status, self.error_code = status, error_code

    @property
    def not_found(self) -> bool:
        # A missing alias is INVALID_PARAMETER_VALUE (400) "... not found"; a missing model or version 404.
        return (self.status == 404 or self.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
                or "not found" in str(self).lower())


def proxied_path(uri: str) -> str | None:
    """The path of an artifact URI the tracking server serves itself (`mlflow-artifacts:/...`), else None
    (another store: s3://, a shared path, another server's proxy)."""
    location = urlparse(uri)
    if location.scheme != "mlflow-artifacts" or location.netloc:
        return None
    return location.path.strip("/")


def logged_model_id(source: str) -> str | None:
    """The logged model a version's source names (MLflow 3 `models:/m-...`), else None."""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def artifact_files(list_folder: Callable[[str], dict], root: str, error: type[Exception],
                   folder: str = "") -> Iterator[str]:
    """Every file under `root`, as paths relative to it: the proxy lists one folder at a time, by name,
    through `list_folder(path)`. A name that would lead out of the folder raises `error`."""
    for entry in list_folder(f"{root}/{folder}" if folder else root).get("files", []):
        name = entry.get("path", "")
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise error(f"MLflow listed an unsafe artifact name {name!r} under {root}/{folder}")
        relative = f"{folder}/{name}" if folder else name
        if entry.get("is_dir"):
            yield from artifact_files(list_folder, root, error, relative)
        else:
            yield relative


def _env_number(name: str, default: float, kind=int):
    value = os.environ.get(name, "")
    try:
        return kind(value) if value else default
    except ValueError:
        raise PipelineError(f"{name} must be a number, got {value!r}") from None


class MlflowApi:
    def __init__(self, tracking_uri: str | None = None):
        uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")).rstrip("/")
        if urlparse(uri).scheme not in ("http", "https"):
            raise PipelineError(f"cannot use MLflow tracking URI {uri!r}: the registry is reached through a "
                                "tracking server (http:// or https://)")
        self.base = uri
        self.timeout = _env_number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
        self.retries = _env_number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7)
        self.backoff = _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
        self.jitter = _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0, float)
        self.headers = {"User-Agent": "mlpipeline"}
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {token}"
        elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
            pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            self.headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        self.tls = None
        if uri.startswith("https://"):
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
                self.tls = ssl._create_unverified_context()
            else:
                self.tls = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))

    # -- the calls ------------------------------------------------------------------------------------------
    def get(self, endpoint: str, **params) -> dict:
        return self._json(self.call("GET", f"{API}/{endpoint}", params=params))

    def post(self, endpoint: str, body: dict, *, idempotent: bool = True) -> dict:
        """`idempotent=False` for a create: a request that may have reached the server unanswered raises
        MlflowUnanswered instead of being sent again (a retried create would create twice)."""
        return self._json(self.call("POST", f"{API}/{endpoint}", body=body, idempotent=idempotent))

    def pages(self, endpoint: str, key: str, body: dict, method: str = "POST") -> Iterator[dict]:
        """Every item of a paged search (`next_page_token`)."""
        token = None
        while True:
            page_body = {**body, **({"page_token": token} if token else {})}
            page = self.post(endpoint, page_body) if method == "POST" else self.get(endpoint, **page_body)
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return

    def artifact(self, path: str) -> bytes:
        """One file through the artifact proxy."""
        return self.call("GET", f"{ARTIFACTS}/{quote(path)}")

    def artifact_files(self, root: str) -> Iterator[str]:
        return artifact_files(lambda folder: self._json(self.call("GET", ARTIFACTS, params={"path": folder})),
                              root, MlflowApiError)

    @staticmethod
    def _json(content: bytes) -> dict:
        return json.loads(content) if content else {}

    def call(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None,
             idempotent: bool = True) -> bytes:
        query = f"?{urlencode(params, doseq=True)}" if params else ""
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        request = Request(f"{self.base}{path}{query}", data=data, method=method, headers=headers)
        for attempt in range(self.retries + 1):
            if attempt > 1:
                time.sleep(min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1) + random.uniform(0, self.jitter)))
            try:
                with urlopen(request, timeout=self.timeout, context=self.tls) as answer:
                    return answer.read()
            except HTTPError as exc:
                refused = self._refused(method, path, exc.code, exc.read())
                if exc.code not in TRANSIENT:
                    raise refused from None
            except (URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if not idempotent and not isinstance(reason, ConnectionRefusedError):  # refused: never sent
                    raise MlflowUnanswered(f"MLflow at {self.base} did not answer {method} {path}: {reason}; "
                                           "it may have been carried out") from None
                refused = MlflowApiError(f"MLflow at {self.base} did not answer {method} {path} after "
                                         f"{attempt + 1} attempt(s): {reason}")
        raise refused

    @staticmethod
    def _refused(method: str, path: str, status: int, content: bytes) -> MlflowApiError:
        """MLflow's own error (`{"error_code", "message"}`), or the start of whatever else answered."""
        try:
            error = json.loads(content)
            code, message = error.get("error_code", ""), error.get("message", "")
        except (ValueError, AttributeError):
            code, message = "", content[:300].decode("utf-8", "replace")
        named = f"HTTP {status} {code}" if code else f"HTTP {status}"
        return MlflowApiError(f"MLflow refused {method} {path}: {named}: {message}", status, code)
