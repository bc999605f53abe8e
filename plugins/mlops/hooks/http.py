"""HttpServiceHook: the one HTTP client base of the hooks (MLflow, the model server, Alertmanager, the
Pushgateway, KFP): the endpoint from an Airflow connection, one retry policy, sync and async.

Connection (type `http`): host = a URL (`http://mlflow:5000`), or a host name with the schema and port
fields; login and password = HTTP Basic (as Airflow's HttpHook), a password alone = a bearer token;
extra = the fields a hook documents. A `base_url` given to the hook
replaces the connection (callers that already know the address, such as an InferenceService's URL).

Retry policy, tenacity's (as the cncf-kubernetes triggers use it): connection errors and 5xx answers
are retried `retries` times in all, waiting `backoff_seconds` doubled each time, then raise the hook's
error naming the system and the last failure; every other answer, 4xx included, goes back to the
caller, which knows what it means.

As a provider's hook: `test_connection()` is what the connection page's Test button and `airflow connections
test` call once a provider registers the hook for its connection type (airflow/models/connection.py looks the
hook up through ProvidersManager().hooks, builds it with its `conn_name_attr` keyword and calls it; `plugins/`
as a folder registers none, so today it serves the project's own checks and a packaged provider later), one
read-only request that needs the service up and the connection's credentials;
`connection_type()` is the hook's entry of a provider's `connection-types` (the connection form's labels,
placeholders and extra fields). Airflow 3.2 made that entry declarative, as apache-airflow-providers-http
declares HttpHook's: airflow/providers_manager.py warns that the hook methods get_ui_field_behaviour and
get_connection_form_widgets (wtforms fields, which this environment does not have) are deprecated.
"""

from __future__ import annotations

import base64
import json
from functools import cached_property

import httpx
import tenacity
from airflow.sdk import BaseHook

GATEWAY_NO_ANSWER = (502, 504)  # Bad Gateway, Gateway Timeout: the upstream did not answer


class ServiceError(RuntimeError):
    """A service refused a request or could not be reached; the message says which and why."""


class _Retryable(Exception):
    """An attempt worth repeating: the service did not answer, or answered 5xx."""

    def __init__(self, reason: str, response: httpx.Response | None = None):
        super().__init__(reason)
        self.reason, self.response = reason, response


def error_message(response: httpx.Response) -> str:
    """A service's own reason for an error answer: its JSON error or message field, else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body.get("error_code") or json.dumps(body))[:500]
    return json.dumps(body)[:500]


class HttpServiceHook(BaseHook):
    conn_type = "http"
    conn_name_attr = "conn_id"
    default_conn_name = ""
    hook_name = "HTTP service"
    error_class: type[ServiceError] = ServiceError  # what failures raise
    unreachable_class: type[ServiceError] | None = None  # what "no answer" raises; default error_class
    # Airflow's connection test and form (module docstring); a hook sets its own.
    test_path = "/"  # a read-only request answered 200 when the service is up and the credentials are right
    host_placeholder = "http://service:port"
    extra_fields: dict[str, tuple[str, str, dict]] = {}  # the `extra` keys the hook reads: label, description, schema

    def __init__(self, conn_id: str | None = None, *, base_url: str | None = None, token: str | None = None,
                 retries: int = 3, backoff_seconds: float = 1.0, timeout_seconds: float = 30.0, **named):
        """`conn_id`, or the same under the hook's `conn_name_attr` keyword (`alertmanager_conn_id=...`), as
        Airflow passes it when it builds a hook for a connection."""
        super().__init__()
        by_name = named.pop(self.conn_name_attr, None) if self.conn_name_attr != "conn_id" else None
        if named:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(named)}")
        self.conn_id = conn_id or by_name or self.default_conn_name
        self._base_url, self._token = base_url, token
        self.retries, self.backoff_seconds, self.timeout_seconds = retries, backoff_seconds, timeout_seconds

    # -- the connection ------------------------------------------------------------------------------------
    @cached_property
    def connection(self):
        """The Airflow connection, or a clear error naming how to define it."""
        try:
            return self.get_connection(self.conn_id)
        except Exception as exc:  # AirflowNotFoundException, or no secrets backend answering
            raise self.error_class(
                f"{self.hook_name}: Airflow connection {self.conn_id!r} is not defined ({exc}); set it, e.g. as "
                f"AIRFLOW_CONN_{self.conn_id.upper()}='http://host:port' (docs/configuration.md)") from None

    @property
    def extra(self) -> dict:
        return {} if self._base_url else self.connection.extra_dejson

    @property
    def base_url(self) -> str:
        if self._base_url:
            return self._base_url.rstrip("/")
        conn = self.connection
        host = conn.host or ""
        if "://" not in host:
            # As HttpHook: the schema field names the scheme; a URI-form connection
            # (AIRFLOW_CONN_X=https://host:port) carries it as its conn type.
            scheme = conn.schema or (conn.conn_type if conn.conn_type in ("http", "https") else "http")
            host = f"{scheme}://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        return host.rstrip("/")

    def token(self) -> str | None:
        if self._token is not None or self._base_url:
            return self._token
        return self.connection.password or None

    def login(self) -> str | None:
        """The connection's user: with one, the password is sent as HTTP Basic, as Airflow's HttpHook does."""
        return None if self._base_url else (self.connection.login or None)

    def headers(self) -> dict[str, str]:
        token, login = self.token(), self.login()
        if login:
            pair = base64.b64encode(f"{login}:{token or ''}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {"Authorization": f"Bearer {token}"} if token else {}

    # -- Airflow's connection test and form ---------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """One attempt at `test_path` (no retries: the person pressing Test waits): (True, what answered), or
        (False, why not), as Airflow's hooks answer."""
        try:
            response = self.request("GET", self.test_path, attempts=1, timeout=10)
        except ServiceError as exc:  # no answer, a 5xx, or no such connection
            return False, str(exc)
        if response.status_code != 200:
            return False, (f"{self.hook_name} at {self.base_url} answered GET {self.test_path} with HTTP "
                           f"{response.status_code}: {error_message(response)}")
        return True, f"{self.hook_name} at {self.base_url} answered GET {self.test_path}"

    @classmethod
    def connection_type(cls) -> dict:
        """This hook's entry of a provider's `connection-types` (Airflow's provider.yaml.schema.json): the
        form's fields as this hook reads them (the URL, or a host with the scheme and port fields; a user and
        password as HTTP Basic, a password alone as a bearer token) and the extra fields it reads."""
        return {
            "connection-type": cls.conn_type,
            "hook-class-name": f"{cls.__module__}.{cls.__qualname__}",
            "hook-name": cls.hook_name,
            "ui-field-behaviour": {
                "hidden-fields": [] if cls.extra_fields else ["extra"],
                "relabeling": {"host": "URL or host", "schema": "Scheme", "login": "User (HTTP Basic)",
                               "password": "Password (with a user) or bearer token"},
                "placeholders": {"host": cls.host_placeholder, "schema": "http, when the host has no scheme"},
            },
            "conn-fields": {name: {"label": label, "description": description, "schema": schema}
                            for name, (label, description, schema) in cls.extra_fields.items()},
        }

    # -- requests ------------------------------------------------------------------------------------------
    def _policy(self, retrying, attempts: int | None):
        return retrying(stop=tenacity.stop_after_attempt(max(1, attempts or self.retries)),
                        wait=tenacity.wait_exponential(multiplier=self.backoff_seconds),
                        retry=tenacity.retry_if_exception_type(_Retryable), reraise=True,
                        before_sleep=self._log_retry)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        self.log.warning("%s: attempt %d/%d failed (%s); retrying", self.hook_name, state.attempt_number,
                         self.retries, state.outcome.exception())

    @staticmethod
    def _answered(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {error_message(response)}", response)
        return response

    def _gave_up(self, method: str, path: str, failure: _Retryable, attempts: int | None) -> ServiceError:
        # A gateway in front of the service (the local router, Istio's) answering 502 or 504 says that the
        # service behind it did not answer: as unreachable as no answer at all.
        answered = failure.response is not None and failure.response.status_code not in GATEWAY_NO_ANSWER
        kind = self.error_class if answered else (self.unreachable_class or self.error_class)
        what = "failed" if answered else "did not answer"
        return kind(f"{self.hook_name} at {self.base_url} {what} after {attempts or self.retries} attempt(s) "
                    f"({method} {path}): {failure.reason}")

    def request(self, method: str, path: str, *, timeout: float | None = None, attempts: int | None = None,
                **kwargs) -> httpx.Response:
        """One call, retried per the policy (`attempts` overrides the hook's count for this call: 1 for a
        probe, or a call whose failure is final); returns any answer below 500."""
        url = f"{self.base_url}{path}"
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        try:
            for attempt in self._policy(tenacity.Retrying, attempts):
                with attempt:
                    try:
                        response = httpx.request(method, url, headers=headers, timeout=timeout or self.timeout_seconds,
                                                 **kwargs)
                    except httpx.TransportError as exc:
                        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
                    return self._answered(response)
        except _Retryable as failure:
            raise self._gave_up(method, path, failure, attempts) from None

    async def async_request(self, method: str, path: str, *, timeout: float | None = None,
                            attempts: int | None = None, **kwargs) -> httpx.Response:
        """The same, for the triggerer's event loop."""
        url = f"{self.base_url}{path}"
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        try:
            async with httpx.AsyncClient(timeout=timeout or self.timeout_seconds) as client:
                async for attempt in self._policy(tenacity.AsyncRetrying, attempts):
                    with attempt:
                        try:
                            response = await client.request(method, url, headers=headers, **kwargs)
                        except httpx.TransportError as exc:
                            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
                        return self._answered(response)
        except _Retryable as failure:
            raise self._gave_up(method, path, failure, attempts) from None

    def json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), body=None, **kwargs) -> dict:
        """A call whose answer must be one of `ok`: its JSON body ({} when empty); anything else raises.
        `body` is sent as JSON; other keywords go to the request (params, content, headers, ...)."""
        if body is not None:
            kwargs["json"] = body
        return self._accepted(method, path, self.request(method, path, **kwargs), ok)

    async def async_json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), body=None, **kwargs) -> dict:
        """The same, for the triggerer's event loop."""
        if body is not None:
            kwargs["json"] = body
        return self._accepted(method, path, await self.async_request(method, path, **kwargs), ok)

    def _accepted(self, method: str, path: str, response: httpx.Response, ok: tuple[int, ...]) -> dict:
        if response.status_code not in ok:
            raise self.error_class(f"{self.hook_name} refused {method} {path}: HTTP {response.status_code} "
                                   f"{error_message(response)}")
        return response.json() if response.content else {}
