"""HttpServiceHook, the one HTTP base of the hooks: the endpoint from a connection, the retry policy
(connection errors and 5xx retried with backoff, other answers returned at once), sync and async,
against a real HTTP server on loopback whose answers the test scripts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops.hooks.http import HttpServiceHook, ServiceError
from tests import support

from ..conftest import connect


class Scripted:
    """A loopback HTTP server answering each request with the next (status, body) of its script, the
    last one again once the script runs out; it records what it was sent."""

    def __init__(self, *script: tuple[int, dict]):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": self.rfile.read(length)})
                support.send_json(self, *(outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]))

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class Service(HttpServiceHook):
    default_conn_name = "service_default"
    hook_name = "the service"


def test_5xx_answers_are_retried_with_backoff_then_the_answer_comes_back():
    with Scripted((503, {"message": "warming up"}), (502, {}), (200, {"ok": True})) as server:
        hook = Service(base_url=server.url, retries=3, backoff_seconds=0.05)
        started = time.monotonic()
        assert hook.json("GET", "/thing") == {"ok": True}
        assert len(server.requests) == 3 and time.monotonic() - started >= 0.1  # waited 0.05 s, then 0.1 s


def test_a_4xx_answer_is_the_caller_s_at_once():
    with Scripted((404, {"error_code": "RESOURCE_DOES_NOT_EXIST"})) as server:
        hook = Service(base_url=server.url, retries=3, backoff_seconds=0.05)
        assert hook.request("GET", "/thing").status_code == 404 and len(server.requests) == 1
        with pytest.raises(ServiceError, match="the service refused GET /thing: HTTP 404 RESOURCE_DOES_NOT_EXIST"):
            hook.json("GET", "/thing")


def test_5xx_to_the_end_fails_naming_the_service_and_its_last_answer():
    with Scripted((500, {"message": "database is locked"})) as server:
        hook = Service(base_url=server.url, retries=2, backoff_seconds=0.01)
        with pytest.raises(ServiceError, match=f"the service at {server.url} failed after 2 attempt\\(s\\) "
                                               r"\(POST /x\): HTTP 500: database is locked"):
            hook.request("POST", "/x", json={})
        assert len(server.requests) == 2


def test_no_answer_at_all_is_retried_then_named():
    down = f"http://127.0.0.1:{support.free_port()}"
    hook = Service(base_url=down, retries=3, backoff_seconds=0.01)
    with pytest.raises(ServiceError, match=f"the service at {down} did not answer after 3 attempt\\(s\\)"):
        hook.request("GET", "/health")
    with pytest.raises(ServiceError, match="did not answer after 1 attempt"):
        hook.request("GET", "/health", attempts=1)  # a probe


def test_the_async_requests_follow_the_same_policy():
    with Scripted((503, {}), (200, {"ok": True})) as server:
        hook = Service(base_url=server.url, retries=3, backoff_seconds=0.01)
        assert asyncio.run(hook.async_request("POST", "/x", json={"a": 1})).json() == {"ok": True}
        assert len(server.requests) == 2 and json.loads(server.requests[-1]["body"]) == {"a": 1}


def test_the_endpoint_and_token_come_from_the_connection(monkeypatch):
    with Scripted((200, {})) as server:
        connect(monkeypatch, service_default=f'{{"conn_type": "http", "host": "127.0.0.1", '
                                             f'"port": {server.server.server_port}, "password": "t0k"}}')
        hook = Service()
        assert hook.base_url == server.url
        hook.request("GET", "/who")
        assert server.requests[0]["headers"]["Authorization"] == "Bearer t0k"
    connect(monkeypatch, service_default="https://svc.example.com:8443")
    assert Service().base_url == "https://svc.example.com:8443"


def test_a_missing_connection_says_how_to_define_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SERVICE_DEFAULT", raising=False)
    with pytest.raises(ServiceError, match="the service: Airflow connection 'service_default' is not defined .*"
                                           "AIRFLOW_CONN_SERVICE_DEFAULT="):
        assert Service().base_url


# -- Airflow's connection test and form -----------------------------------------------------------------------
def hook_classes():
    from mlops.hooks.alertmanager import AlertmanagerHook
    from mlops.hooks.kfp import KfpHook
    from mlops.hooks.prometheus import PrometheusHook
    from mlops.hooks.pushgateway import PushgatewayHook
    from mlops.hooks.serving import ServingHook

    return [AlertmanagerHook, KfpHook, PrometheusHook, PushgatewayHook, ServingHook]


def as_airflow_builds_it(hook_class, conn_id: str):
    """The hook the UI's Test button uses: airflow/models/connection.py's get_hook calls the class with the
    connection's id under the hook's conn_name_attr, and nothing else."""
    return hook_class(**{hook_class.conn_name_attr: conn_id})


def test_airflow_can_build_each_hook_for_a_connection_and_test_it(monkeypatch):
    """Each hook takes its connection under its own keyword and asks its service's own read-only path once."""
    for hook_class in hook_classes():
        with Scripted((200, {})) as server:
            connect(monkeypatch, some_service=server.url)
            ok, message = as_airflow_builds_it(hook_class, "some_service").test_connection()
            assert ok and server.url in message, (hook_class, message)
            assert [(r["method"], r["path"]) for r in server.requests] == [("GET", hook_class.test_path)]
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['kfp_conn_id'\\]"):
        Service(kfp_conn_id="x")  # another hook's keyword is no connection of this one


def test_a_connection_test_that_fails_says_why_after_one_attempt(monkeypatch):
    with Scripted((401, {"message": "Unauthenticated: missing or wrong bearer token"})) as server:
        connect(monkeypatch, service_default=server.url)
        ok, message = Service().test_connection()
        assert not ok and message == (f"the service at {server.url} answered GET / with HTTP 401: Unauthenticated: "
                                      "missing or wrong bearer token")
    with Scripted((503, {"message": "warming up"})) as server:
        ok, message = Service(base_url=server.url, retries=3).test_connection()
        assert not ok and "failed after 1 attempt(s)" in message and len(server.requests) == 1
    down = f"http://127.0.0.1:{support.free_port()}"
    ok, message = Service(base_url=down).test_connection()
    assert not ok and f"the service at {down} did not answer after 1 attempt(s)" in message
    monkeypatch.delenv("AIRFLOW_CONN_SERVICE_DEFAULT", raising=False)
    ok, message = Service().test_connection()
    assert not ok and "Airflow connection 'service_default' is not defined" in message


def test_each_hook_s_connection_form_is_what_airflow_s_provider_schema_allows():
    """The connection-types entries validate against Airflow's own provider.yaml schema (what
    providers_manager reads), each hook a type of its own; the form shows the extra field only to a hook
    that reads extras, and offers exactly those."""
    import importlib.resources

    import jsonschema

    schema = json.loads(importlib.resources.files("airflow").joinpath("provider.yaml.schema.json").read_text())
    entries = {hook_class: hook_class.connection_type() for hook_class in hook_classes()}
    for hook_class, entry in entries.items():
        jsonschema.validate(entry, schema["properties"]["connection-types"]["items"])
        assert entry["hook-class-name"] == f"{hook_class.__module__}.{hook_class.__name__}"
        hidden = entry["ui-field-behaviour"]["hidden-fields"]
        assert ("extra" in hidden) == (not entry["conn-fields"]), hook_class
    assert len({entry["connection-type"] for entry in entries.values()}) == len(entries)
    assert "http" not in {entry["connection-type"] for entry in entries.values()}  # the HTTP provider's own


def test_the_kfp_form_offers_the_extras_the_hook_reads(monkeypatch, tmp_path):
    """Each extra field the form offers changes what the hook does."""
    from mlops.hooks.kfp import KfpHook

    fields = KfpHook.connection_type()["conn-fields"]
    token = tmp_path / "token"
    token.write_text("from-file")
    connect(monkeypatch, kfp_default=json.dumps({"conn_type": "kfp", "host": "http://kfp:8888", "extra": {
        "namespace": "team-a", "ui_url": "https://kfp.example.com", "token_path": str(token)}}))
    hook = KfpHook()
    assert set(fields) == {"namespace", "ui_url", "token_path"}
    assert (hook.namespace, hook.run_url("r"), hook.headers()) == (
        "team-a", "https://kfp.example.com/#/runs/details/r", {"Authorization": "Bearer from-file"})
