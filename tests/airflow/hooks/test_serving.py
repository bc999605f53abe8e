"""ServingHook and the local target's model server supervisor (mlops.local_serving) against a real
`mlserving` of the serving environment, serving models made by the pipeline environment."""

from __future__ import annotations

import subprocess

import pytest

from mlops.hooks.serving import ServingError, ServingUnreachable
from mlops.local_serving import LocalModelServer
from tests import support

MODEL = "iris"  # what tests/serving/make_models.py names


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    subprocess.run([str(support.PIPELINE_BIN / "python"), str(support.REPO / "tests/serving/make_models.py"), str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture
def server(model_dirs, tmp_path, monkeypatch):
    local = LocalModelServer(support.SERVING_BIN / "mlserving", tmp_path / "serving" / MODEL, MODEL,
                             support.free_port())
    local.folder.mkdir(parents=True)
    local.point_at(model_dirs / "good-v1")
    local.start()
    yield local
    local.stop()


def test_the_supervised_server_serves_what_its_link_names_and_swaps_in_place(server, model_dirs):
    hook = server.serving
    assert hook.is_live() and hook.model_ready() and hook.served_version() == "1"
    assert hook.smoke_test("1")["model_version"] == "1"
    server.point_at(model_dirs / "good-v2")
    hook.load()
    assert hook.served_version() == "2" and server.pointed_at() == (model_dirs / "good-v2").resolve()


def test_a_version_the_server_refuses_is_a_serving_error_and_the_old_one_serves_on(server, model_dirs):
    server.point_at(model_dirs / "corrupt")
    with pytest.raises(ServingError, match="not loaded, still serving version 1"):
        server.serving.load()
    assert server.serving.served_version() == "1"
    with pytest.raises(ServingError, match="smoke test: served version 1, expected 2"):
        server.serving.smoke_test("2")


def test_a_server_that_is_gone_is_unreachable_not_refusing(server):
    server.stop()
    hook = server.serving
    assert not hook.is_live() and hook.served_version() is None
    with pytest.raises(ServingUnreachable, match="model server at http://127.0.0.1:.* did not answer"):
        hook.smoke_test("1")


def test_the_connection_test_asks_the_server_not_a_model(server, monkeypatch):
    """As Airflow builds the hook for the Test button (no model name): the server's liveness, then, once it
    is gone, why not."""
    from mlops.hooks.serving import ServingHook

    from ..conftest import connect

    connect(monkeypatch, mlserving_default=server.url)
    assert ServingHook(mlserving_conn_id="mlserving_default").test_connection() == (
        True, f"model server at {server.url} answered GET /v2/health/live")
    server.stop()
    ok, message = ServingHook(mlserving_conn_id="mlserving_default").test_connection()
    assert not ok and f"model server at {server.url} did not answer" in message


def test_the_server_does_not_hold_the_task_process_stdin(model_dirs, tmp_path):
    """A deploy task leaves its model server running. Airflow's supervisor talks to the task over the
    task's fd 0 and counts it finished when that socket closes. A server that inherited it held it: a
    deferred deploy's first process was counted finished only when that server stopped, after the task
    had resumed, and the scheduler marked the resumed task for retry."""
    local = LocalModelServer(support.SERVING_BIN / "mlserving", tmp_path / "serving" / MODEL, MODEL,
                             support.free_port())
    local.folder.mkdir(parents=True)
    local.point_at(model_dirs / "good-v1")
    with support.task_supervisor_socket() as supervisor:
        local.start()
    try:
        assert local.serving.model_ready()
        assert not support.held_open_by_others(supervisor), "the model server holds the task's stdin"
    finally:
        local.stop()


class V2Server:
    """A v2 model server answering metadata and inference as configured: `output` is its answer's tensor."""

    def __init__(self, output: dict, classes: list[str] | None = None, version: str = "1"):
        import http.server
        import json
        import threading

        meta = {"name": "diabetes", "inputs": [{"name": "bmi", "datatype": "FP64", "shape": [-1]}],
                "parameters": {"registry_version": version, **({"classes": classes} if classes is not None else {})}}
        answer = {"model_name": "diabetes", "model_version": version, "outputs": [output]}

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: dict):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(meta)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._send(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def number(data: list, datatype: str = "FP64") -> dict:
    return {"name": "predictions", "shape": [len(data)], "datatype": datatype, "data": data}


def test_a_regression_model_s_smoke_test_takes_one_finite_fp64_number():
    from mlops.hooks.serving import ServingHook

    with V2Server(number([153.25])) as server:
        hook = ServingHook("diabetes", base_url=server.url)
        smoke = hook.smoke_test("1", regression=True)
        assert smoke["prediction"] == 153.25 and smoke["request"]["inputs"][0]["data"] == [1.0]
        with pytest.raises(ServingError, match="unexpected prediction"):  # a classifier's check: not a class
            hook.smoke_test("1")
    for output in (number([1.0, 2.0]), number(["153.25"], "BYTES"), number([None]), number([True], "BOOL")):
        with V2Server(output) as server, pytest.raises(
                ServingError, match=r"unexpected prediction .*: a regression model answers one FP64 number"):
            ServingHook("diabetes", base_url=server.url).smoke_test("1", regression=True)
    with V2Server(number(["setosa"], "BYTES"), classes=["setosa"]) as server:  # a classifier stays one
        hook = ServingHook("diabetes", base_url=server.url)
        assert hook.smoke_test("1")["prediction"] == "setosa"
        with pytest.raises(ServingError, match=r"unexpected prediction \['setosa'\] \(BYTES"):
            hook.smoke_test("1", regression=True)
