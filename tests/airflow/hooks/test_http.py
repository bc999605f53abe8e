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
