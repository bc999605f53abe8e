"""What we add in front of KServe's routes: richer metadata, outcome counting, a v2 inference fast path,
and the limits an inference port open to callers needs.

POST /v2/models/{name}/infer  JSON and binary-extension bodies take a fast path (InferFastPath) when KServe's
  own route would answer them the same way; any other request (binary outputs asked for, CloudEvents, a body
  FastAPI would not read as an InferenceRequest, other models) goes to KServe's route. tests/serving/
  test_agreement.py sends the same requests to a server with the fast path and one without it and requires
  the same answers, headers and metric increments.
GET /v2/models/{name}  OIP model metadata plus versions and the registry version / run id.
GET /v2/health/ready  503 unless every model can answer (KServe's own answers ready whatever the models are).
POST /v2/repository/...  KServe's model repository extension, guarded (RepositoryGuard): a load needs the
  deployer's token (model swaps: repository.py), an unload is refused, and without a token it is all off.
Every request body is read under a size limit (BodyLimit), answered 413 beyond it, and a v2 infer request for
one of our models is checked whole (RequestChecks) before either path sees it: both answer the same 400, in the
OIP's error form, for a malformed one.

All of it is one ASGI middleware stack (`in_front`) put on KServe's FastAPI app with Starlette's documented
`app.add_middleware` before KServe adds its own (RESTServer._add_middlewares: the timing middleware, and the
access-log middleware of --access_log_format), so KServe's middleware wraps every answer, the fast path's too,
and Starlette's ServerErrorMiddleware answers an unexpected error with KServe's generic handler on both paths.
"""

from __future__ import annotations

import email.message
import hmac
import os
import time

import orjson
from fastapi import FastAPI
from kserve.errors import InferenceError, InvalidInput
from starlette.responses import Response

from .metrics import REQUESTS
from .model import RegistryModel
from .validation import json_request, tensors_from_binary

# Set (to anything but "" or "0") to serve every request through KServe's own route (as --disable-fast-path).
DISABLE_FAST_PATH_ENV = "MLSERVING_DISABLE_FAST_PATH"
# Where RequestChecks leaves the request it decoded, and OutcomeCounter when a request came in, for the fast
# path (ASGI scope extension keys).
DECODED_SCOPE_KEY, STARTED_SCOPE_KEY = "mlserving.decoded_request", "mlserving.started"
INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"


def _json(document, status_code: int = 200) -> Response:
    # Not FastAPI's ORJSONResponse: it is deprecated and warns on every instantiation.
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "client_error" if status < 500 else "server_error"


def _header(scope, name: bytes) -> bytes | None:
    """The first value of a request header (ASGI header names are lower-case), as Starlette's Headers.get."""
    return next((v for k, v in scope["headers"] if k == name), None)


def infer_target(scope) -> str | None:
    """The model a v2 infer POST names (KServe's route /v2/models/{model_name}/infer), or None."""
    path = scope["path"]
    if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(INFER_PREFIX) \
            or not path.endswith(INFER_SUFFIX):
        return None
    return path[len(INFER_PREFIX):-len(INFER_SUFFIX)]


def body_kind(content_type: bytes | None) -> str:
    """How KServe's infer route receives a body, as FastAPI decides it for a body parameter
    (fastapi/routing.py, get_request_handler): "json" for application/json or application/*+json, "bytes"
    otherwise, a body without a content type too (FastAPI's strict_content_type, True by default and in
    KServe's app, reads no JSON without one)."""
    if content_type is None:
        return "bytes"
    if content_type == b"application/json":  # what nearly every client sends: no header parsing
        return "json"
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    json = message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))
    return "json" if json else "bytes"


class OutcomeCounter:
    """Pure ASGI middleware, the outermost of ours: counts every inference answer, the fast path's and
    KServe's (including the ones the limits give before either sees the request), by model, served version
    and outcome. An error that leaves the stack before any answer began is counted as a server error:
    Starlette's ServerErrorMiddleware, outside, answers it 500 (with KServe's generic exception handler)."""

    def __init__(self, app, models: dict[str, RegistryModel]):
        self.app, self.models = app, models
        self._counters: dict[tuple[str, str, str], object] = {}  # labelled children: no lookup per request

    def count(self, name: str, model: RegistryModel | None, status: int) -> None:
        """One answer to a request for model `name` (None: no such model), by the version it serves."""
        version = model.active.version if model is not None and model.active else "unknown"
        key = (name if model is not None else "unknown", version, _outcome(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(*key)
        counter.inc()

    @staticmethod
    def target(path: str) -> str | None:
        """The model an inference path names (v2 infer, v1 predict), or None for other paths."""
        if path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX):
            return path[len(INFER_PREFIX):].split("/", 1)[0]
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return path[len("/v1/models/"):-len(":predict")]
        return None

    async def __call__(self, scope, receive, send):
        model_name = self.target(scope["path"]) if scope["type"] == "http" else None
        if model_name is None:
            return await self.app(scope, receive, send)
        started = False

        async def counting_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.count(model_name, self.models.get(model_name), message["status"])
            await send(message)

        scope[STARTED_SCOPE_KEY] = time.perf_counter()
        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:
                self.count(model_name, self.models.get(model_name), 500)
            raise


class BodyLimit:
    """Pure ASGI middleware: every request with a body has it read under a limit (the named model's for an
    inference request, else the largest model's), then replayed, so no route (the fast path, v1, binary
    outputs, unknown models) can be made to hold a body of any size."""

    def __init__(self, app, models: dict[str, RegistryModel]):
        self.app, self.models = app, models

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        model = self.models.get(OutcomeCounter.target(scope["path"]) or "")
        limit = model.max_body_bytes if model is not None else \
            max((m.max_body_bytes for m in self.models.values()), default=1 << 20)
        body = await _read_body(scope, receive, limit)
        if body is None:
            return await _send_json(send, 413, _too_large(limit))
        return await self.app(scope, _replay(body, receive), send)


class RequestChecks:
    """Pure ASGI middleware, in front of both paths: a v2 infer request (for any model name: KServe's route, too,
    reads the body before it looks the model up) is decoded and checked whole here, as KServe's route would read
    its body (body_kind), and answered 400 with what is wrong when it is not an Open Inference Protocol request
    KServe takes as it is:
      JSON: malformed (FastAPI answers 422 with its own error format, not the OIP's {"error": ...}), or not an
        InferenceRequest its pydantic model takes unchanged (validation.json_request);
      binary extension (a body read as bytes, with Inference-Header-Content-Length): anything KServe's own
        decoding (InferRequest.from_bytes, InferInput.as_numpy) fails with a KeyError, TypeError or numpy
        error, a 500 (validation.tensors_from_binary).
    So both paths see the same requests, and the fast path takes the decoded one from the scope
    (DECODED_SCOPE_KEY). Bodies read as bytes without the header (which KServe answers 400 itself) go on as
    they came. (Unchecked, a JSON body with Infinity in it, which Python's json reads, makes FastAPI's own 422
    answer fail to serialise, and KServe's route resets the connection.)"""

    def __init__(self, app, models: dict[str, RegistryModel]):
        self.app, self.models = app, models

    async def __call__(self, scope, receive, send):
        if infer_target(scope) is None:
            return await self.app(scope, receive, send)
        kind = body_kind(_header(scope, b"content-type"))
        header_length = _header(scope, b"inference-header-content-length")
        if kind == "bytes" and header_length is None:
            return await self.app(scope, receive, send)
        body = await _read_body(scope, receive, None)
        try:
            if kind == "json":  # FastAPI reads it as JSON, whatever Inference-Header-Content-Length says
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise InvalidInput(f"malformed JSON: {exc}") from None
                decoded = json_request(doc)
            else:
                decoded = tensors_from_binary(body, header_length.decode("latin-1"))
        except InvalidInput as exc:
            return await _send_json(send, 400, {"error": str(exc)})
        scope[DECODED_SCOPE_KEY] = decoded
        return await self.app(scope, _replay(body, receive), send)


class InferFastPath:
    """Pure ASGI middleware answering v2 infer requests for our models directly, JSON or in the binary
    tensor data extension, when KServe's route would give the same answer: a request RequestChecks decoded
    and found plain (validation.DecodedRequest), sent as application/json or in the binary extension, and no
    CloudEvent (KServe answers one with one).

    KServe's route validates the body with pydantic twice (request and response), which costs more than the
    model; this path has decoded it with orjson and numpy, and runs the same model code (RegistryModel.infer_v2,
    which records KServe's latency histograms and its --enable_latency_logging line as its Model.__call__
    does). Everything else goes on to KServe's route with the body as it came."""

    def __init__(self, app, models: dict[str, RegistryModel]):
        self.app, self.models = app, models

    async def __call__(self, scope, receive, send):
        decoded = scope.get(DECODED_SCOPE_KEY)
        model = self.models.get(infer_target(scope)) if decoded is not None else None
        if model is None or not decoded.plain or not self._plain_headers(scope):
            return await self.app(scope, receive, send)
        if not model.ready:  # as KServe's V2Endpoints.infer (ModelNotReady, its handler's 503)
            return await _send_json(send, 503, {"error": f"Model with name {model.name} is not ready."})
        trace_id = _header(scope, b"x-request-id")  # what KServe's latency log line names a request by
        try:
            document = model.infer_v2(decoded.tensors, decoded.request_id, scope.get(STARTED_SCOPE_KEY),
                                      "N.A." if trace_id is None else trace_id.decode("latin-1"))
        except InvalidInput as exc:  # KServe's invalid_input_handler
            return await _send_json(send, 400, {"error": str(exc)})
        except InferenceError as exc:  # KServe's inference_error_handler
            return await _send_json(send, 500, {"error": str(exc)})
        # Any other error propagates, as on KServe's route: Starlette's ServerErrorMiddleware answers it with
        # KServe's generic_exception_handler, and OutcomeCounter counts it.
        await _send_json(send, 200, document)

    @staticmethod
    def _plain_headers(scope) -> bool:
        """Sent as application/json (not another JSON type, which KServe may read as a CloudEvent) or as bytes,
        and without CloudEvents' binary-mode ce- headers."""
        if any(k.startswith(b"ce-") for k, _ in scope["headers"]):
            return False
        content_type = _header(scope, b"content-type")
        if content_type == b"application/json" or body_kind(content_type) == "bytes":
            return True
        message = email.message.Message()
        message["content-type"] = content_type.decode("latin-1")
        return message.get_content_type() == "application/json"


async def _send_json(send, status: int, document) -> None:
    content = orjson.dumps(document)
    # The two ASGI messages themselves: a Response object would cost more than the model.
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]})
    await send({"type": "http.response.body", "body": content})


def _too_large(limit: int) -> dict:
    return {"error": f"the request body is larger than this server accepts ({limit} bytes: what its row limit "
                     "allows); send fewer rows per request"}


async def _read_body(scope, receive, limit: int | None) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes (None: no limit, the body was
    read under BodyLimit's): by its Content-Length before reading anything, else while it streams in (memory
    stays within the limit)."""
    length = _header(scope, b"content-length") if limit is not None else None
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    message = await receive()
    body = message.get("body", b"")
    if limit is not None and len(body) > limit:
        return None
    if message.get("more_body"):  # uvicorn hands a small body over whole: join only when it does not
        chunks = bytearray(body)
        while message.get("more_body"):
            message = await receive()
            chunks += message.get("body", b"")
            if limit is not None and len(chunks) > limit:
                return None
        body = bytes(chunks)
    return body


class RepositoryGuard:
    """Pure ASGI middleware in front of KServe's model repository extension (`/v2/repository/...`), which
    KServe serves on the inference port to anyone: a caller could unload the model (every request then
    503 while KServe's readiness stays true) or make it reload. Loads need the deployer's bearer token;
    unloads are refused (nothing here ever unloads); without a token the extension is off (a cluster
    deploys a version by rolling out pods, not through it)."""

    PREFIX = "/v2/repository/"

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.PREFIX):
            return await self.app(scope, receive, send)
        if scope["path"].endswith("/unload"):
            return await _send_json(send, 403, {"error": "this server does not unload its model: a served model "
                                                         "is replaced by loading another version"})
        if self.token is None:
            return await _send_json(send, 403, {"error": "the model repository endpoints are off: this server "
                                                         "was started without --repository-token-file"})
        given = _header(scope, b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + self.token):
            return await _send_json(send, 401, {"error": "a model load needs the deployer's bearer token "
                                                         "(Authorization: Bearer ...)"})
        return await self.app(scope, receive, send)


def _replay(body: bytes, receive):
    """An ASGI receive that hands the app the body already read, then listens as the server would."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def in_front(app, models: dict[str, RegistryModel], repository_token: str | None = None, fast_path: bool = True):
    """Our middleware around `app` (KServe's routes), outermost first: the outcome counter, the body limit,
    the request checks, the fast path (unless `fast_path` is false), the repository guard. A Starlette
    middleware factory (app.add_middleware(in_front, ...))."""
    inner = RepositoryGuard(app, repository_token)
    if fast_path:
        inner = InferFastPath(inner, models)
    return OutcomeCounter(BodyLimit(RequestChecks(inner, models), models), models)


def fast_path_wanted(disable_flag: bool = False) -> bool:
    """False when --disable-fast-path is given or DISABLE_FAST_PATH_ENV is set (to anything but "" or "0")."""
    return not disable_flag and os.environ.get(DISABLE_FAST_PATH_ENV, "") in ("", "0")


def install(app: FastAPI, models: dict[str, RegistryModel], repository_token: str | None = None,
            fast_path: bool = True) -> None:
    """Our routes and middleware on KServe's app. Call before KServe registers its routes (the first matching
    route wins) and adds its middleware (added later, Starlette puts it outside ours: KServe's timing and
    access-log middleware see every answer). `repository_token`: the bearer token a model load must carry
    (None: KServe's repository endpoints refused); `fast_path`: whether InferFastPath answers what it can."""

    @app.get("/v2/health/ready")
    async def ready():
        # What a readiness probe reads: the status. KServe's answers 200 with ready true for a predictor
        # whatever its models are (DataPlane.ready), so a server that cannot answer would keep its traffic.
        ready = all(model.ready and model.active is not None for model in models.values())
        return _json({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/v2/models/{model_name}")
    async def metadata(model_name: str):
        model = models.get(model_name)
        if model is None:
            return _json({"error": f"Model with name {model_name} does not exist."}, status_code=404)
        return _json(model.metadata())

    # Starlette's documented way to wrap the app (https://www.starlette.io/middleware/: a factory called
    # with the inner app; the last added is the outermost). Inside ServerErrorMiddleware and KServe's own
    # middleware, outside ExceptionMiddleware and the router.
    app.add_middleware(in_front, models=models, repository_token=repository_token, fast_path=fast_path)
