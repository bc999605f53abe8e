"""How the fast path is put on KServe's app, and the flags that shape it (tests/serving/test_agreement.py
proves its answers equal to KServe's route's): Starlette's add_middleware and nothing private, inside KServe's own
middleware, KServe's latency log line when KServe asks for it, and the flag and environment variable that turn it
off."""

from __future__ import annotations

import copy
import importlib.util
import logging
import re

import numpy as np
import pytest

from .conftest import MODEL
from .test_binary import encoded
from .test_endpoints import EXPECTED, ROWS, matrix_request

INFER = f"/v2/models/{MODEL}/infer"


class Lines(logging.Handler):
    """The messages a logger writes (KServe's trace logger does not propagate to pytest's handler)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def trace_lines():
    logger = logging.getLogger("kserve.trace")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_installing_changes_no_private_attribute_and_answers_through_starlettes_middleware(served):
    """On an app of our own with no route at all: install() adds its routes and one middleware through
    Starlette's add_middleware, leaves every private attribute of the app as it was and shadows no method; the
    fast path then answers an inference request the app itself has no route for, and hands what it does not
    answer (binary outputs) on to the app's router (here: 404)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mlserving.routes import in_front, install

    _, model = served
    app = FastAPI()
    private = {name: (value, copy.copy(value)) for name, value in vars(app).items() if name.startswith("_")}
    install(app, {MODEL: model})
    after = vars(app)
    for name, (value, copied) in private.items():  # the same objects, and containers with the same contents
        assert after[name] is value, name
        if isinstance(value, (dict, list, set, tuple)):
            assert value == copied, name
    assert not [name for name in after if name.startswith("_") and name not in private]
    assert not [name for name in after if callable(getattr(type(app), name, None))], "a method is shadowed"
    assert [m.cls for m in app.user_middleware] == [in_front]
    client = TestClient(app)
    answer = client.post(INFER, json=matrix_request())
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == EXPECTED
    body, headers = encoded({"features": np.asarray(ROWS)}, binary_outputs=True)
    assert client.post(INFER, content=body, headers=headers).status_code == 404
    # KServe's own app, as the session's server built it: no method replaced on it either
    from kserve.model_server import app as kserve_app

    assert "build_middleware_stack" not in vars(kserve_app)
    assert in_front in [m.cls for m in kserve_app.user_middleware]


def test_kserves_middleware_wraps_fast_path_answers_and_its_latency_line_follows_its_flag(client, served,
                                                                                           trace_lines):
    """KServe's timing middleware (RESTServer._add_middlewares, added after ours, so outside it) times a fast
    path answer as it times its own route's; the latency line of --enable_latency_logging (which ModelServer
    copies onto each model's enable_latency_logging when it starts) is written when the model asks for it,
    word for word as KServe's Model.__call__ writes it, and not otherwise."""
    _, model = served
    assert model.enable_latency_logging is False  # the in-process server was never start()ed
    assert client.post(INFER, json=matrix_request(), headers={"x-request-id": "quiet"}).status_code == 200
    assert not [m for m in trace_lines if m.startswith("requestId:")]
    # its PrintTimings: "kserve.io.<route or path>: <seconds> [tags]", wall then CPU time
    timings = [m for m in trace_lines if re.match(r"kserve\.io\.\S*infer: ", m)]
    assert len(timings) == 2 and all("'http_status:200'" in m for m in timings), trace_lines
    model.enable_latency_logging = True
    try:
        assert client.post(INFER, json=matrix_request(), headers={"x-request-id": "t-1"}).status_code == 200
        assert client.post(INFER, json=matrix_request()).status_code == 200
    finally:
        model.enable_latency_logging = False
    number = r"\d+(\.\d+)?(e-?\d+)?"
    lines = [m for m in trace_lines if m.startswith("requestId:")]
    assert len(lines) == 2
    for line, name in zip(lines, ("t-1", "N.A."), strict=True):
        assert re.fullmatch(rf"requestId: {re.escape(name)}, preprocess_ms: {number}, explain_ms: 0, "
                            rf"predict_ms: {number}, postprocess_ms: {number}", line), line


@pytest.mark.parametrize(("flag", "environment", "wanted"), [
    (False, None, True), (False, "", True), (False, "0", True), (False, "1", False), (False, "yes", False),
    (True, None, False)])
def test_the_flag_or_the_environment_turns_the_fast_path_off(monkeypatch, flag, environment, wanted):
    from mlserving.routes import DISABLE_FAST_PATH_ENV, fast_path_wanted
    from mlserving.server import build_parser

    if environment is None:
        monkeypatch.delenv(DISABLE_FAST_PATH_ENV, raising=False)
    else:
        monkeypatch.setenv(DISABLE_FAST_PATH_ENV, environment)
    assert fast_path_wanted(flag) is wanted
    from kserve.model_server import parser as kserve_parser

    args = build_parser(kserve_parser).parse_args(["--model-name", MODEL] + (["--disable-fast-path"] if flag else []))
    assert args.disable_fast_path is flag


def test_an_access_log_format_this_image_cannot_honour_is_refused_with_the_reason(model_dirs, capsys):
    """KServe's --access_log_format needs asgi-logger, which KServe imports only when it starts serving (and
    stops there); the server refuses the flag at once instead, saying what is missing."""
    from mlserving.server import main

    assert importlib.util.find_spec("asgi_logger") is None  # the image's pins leave KServe's `logging` extra out
    code = main(["--model-dir", str(model_dirs / "good-v1"), "--model-name", MODEL, "--access_log_format", "%(h)s"])
    assert code == 2
    assert "--access_log_format needs asgi-logger" in capsys.readouterr().err
