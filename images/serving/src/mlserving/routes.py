"""What we add in front of KServe's routes: richer metadata, outcome counting, a v2 inference fast path,
and the limits an inference port open to callers needs.

POST /v2/models/{name}/infer  JSON and binary-extension bodies take a fast path (InferFastPath);
  requests asking for binary outputs go through KServe's own route, which encodes them.
GET /v2/models/{name}  OIP model metadata plus versions and the registry version / run id.
GET /v2/health/ready  503 unless every model can answer (KServe's own answers ready whatever the models are).
POST /v2/repository/...  KServe's model repository extension, guarded (RepositoryGuard): a load needs the
  deployer's token (model swaps: repository.py), an unload is refused, and without a token it is all off.
Every request body is read under a size limit (InferFastPath), answered 413 beyond it.
"""

from __future__ import annotations

import hmac
import logging

import orjson
from fastapi import FastAPI
from kserve.errors import InferenceError, InvalidInput
from starlette.responses import Response

from .metrics import REQUESTS
from .model import RegistryModel
from .validation import tensors_from_binary, tensors_from_json

log = logging.getLogger(__name__)


def _json(document, status_code: int = 200) -> Response:
    # Not FastAPI's ORJSONResponse: it is deprecated and warns on every instantiation.
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "client_error" if status < 500 else "server_error"


class OutcomeCounter:
    """Pure ASGI middleware: counts every inference response KServe gives (including ones it rejects
    before the model sees them) by model, served version and outcome. The fast path counts its own."""

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
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return path[len("/v2/models/"):].split("/", 1)[0]
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return path[len("/v1/models/"):-len(":predict")]
        return None

    async def __call__(self, scope, receive, send):
        model_name = self.target(scope["path"]) if scope["type"] == "http" else None
        if model_name is None:
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.count(model_name, self.models.get(model_name), message["status"])
            await send(message)

        return await self.app(scope, receive, counting_send)


class InferFastPath:
    """Pure ASGI middleware answering v2 infer requests for our models directly, JSON or in the binary
    tensor data extension.

    KServe's route validates the body with pydantic twice (request and response),
    which costs more than the model; this path decodes with orjson and numpy
    and checks with numpy (same checks, same answers; KServe's latency histogram still records).
    Anything else (binary outputs asked for, other models, other paths) goes to KServe, through the
    OutcomeCounter that counts KServe's answers; the fast path counts its own answers with it directly.
    """

    def __init__(self, app, models: dict[str, RegistryModel], counter: OutcomeCounter):
        self.app, self.models, self.counter = app, models, counter

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.endswith("/infer") \
                or not path.startswith("/v2/models/"):
            return await self.app(scope, receive, send)
        name = path[len("/v2/models/"):-len("/infer")]
        model = self.models.get(name)
        if model is None:
            return await self.app(scope, receive, send)
        limit = model.max_body_bytes
        body = await _read_body(scope, receive, limit)
        if body is None:
            self.counter.count(name, model, 413)
            return await _send_json(send, 413, _too_large(limit))
        header_length = next((v for k, v in scope["headers"] if k == b"inference-header-content-length"), None)
        answer = self._answer(model, body, header_length)
        if answer is None:  # binary outputs: KServe's route reads the same body
            return await self.app(scope, _replay(body, receive), send)
        status, document = answer
        self.counter.count(name, model, status)
        await _send_json(send, status, document)

    @staticmethod
    def _answer(model: RegistryModel, body: bytes, header_length: bytes | None) -> tuple[int, dict] | None:
        """(status, JSON document), or None to let KServe's route answer."""
        if not model.ready:
            return 503, {"error": f"Model with name {model.name} is not ready."}
        try:
            if header_length is None:
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    return 400, {"error": f"malformed JSON: {exc}"}
                tensors, request_id = tensors_from_json(doc)
            else:
                tensors, request_id, binary_outputs = tensors_from_binary(body, header_length.decode("latin-1"))
                if binary_outputs:
                    return None
            return 200, model.infer_v2(tensors, request_id)
        except InvalidInput as exc:
            return 400, {"error": str(exc)}
        except InferenceError as exc:
            return 500, {"error": str(exc)}
        except Exception as exc:  # an answer, counted, for what no check foresaw: not an uncounted crash
            log.exception("%s: unexpected error answering an inference request", model.name)
            return 500, {"error": f"internal error: {type(exc).__name__}"}


async def _send_json(send, status: int, document) -> None:
    content = orjson.dumps(document)
    # The two ASGI messages themselves: a Response object would cost more than the model.
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]})
    await send({"type": "http.response.body", "body": content})


def _too_large(limit: int) -> dict:
    return {"error": f"the request body is larger than this server accepts ({limit} bytes: what its row limit "
                     "allows); send fewer rows per request"}


async def _read_body(scope, receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes: by its Content-Length before
    reading anything, else while it streams in (memory stays within the limit)."""
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    message = await receive()
    body = message.get("body", b"")
    if len(body) > limit:
        return None
    if message.get("more_body"):  # uvicorn hands a small body over whole: join only when it does not
        chunks = bytearray(body)
        while message.get("more_body"):
            message = await receive()
            chunks += message.get("body", b"")
            if len(chunks) > limit:
                return None
        body = bytes(chunks)
    return body


class BodyLimit:
    """Pure ASGI middleware: every request that is not the fast path's has its body read under the largest
    model's limit, then replayed to KServe, so no route (v1, binary outputs, unknown models) can be made to
    hold a body of any size."""

    def __init__(self, app, models: dict[str, RegistryModel], counter: OutcomeCounter):
        self.app, self.models, self.counter = app, models, counter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = max((m.max_body_bytes for m in self.models.values()), default=1 << 20)
        body = await _read_body(scope, receive, limit)
        if body is None:
            if (name := self.counter.target(scope["path"])) is not None:
                self.counter.count(name, self.models.get(name), 413)
            return await _send_json(send, 413, _too_large(limit))
        return await self.app(scope, _replay(body, receive), send)


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
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
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


def in_front(kserve_app, models: dict[str, RegistryModel], repository_token: str | None = None):
    """What answers before KServe's stack: the fast path, the body limit for everything else, the outcome
    counter, the repository guard, then KServe's app."""
    counter = OutcomeCounter(RepositoryGuard(kserve_app, repository_token), models)
    return InferFastPath(BodyLimit(counter, models, counter), models, counter)


def install(app: FastAPI, models: dict[str, RegistryModel], repository_token: str | None = None) -> None:
    """Call before KServe registers its routes: the first matching route wins. `repository_token`: the
    bearer token a model load must carry (None: KServe's repository endpoints refused)."""

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

    # FastAPI asks OpenTelemetry, on every request, whether a provider has been configured (three
    # environment lookups, ~5 us of a ~40 us request: benchmarks/serving_inprocess.py). The serving image
    # has no OpenTelemetry SDK to configure one, and KServe makes the app without FastAPI's `telemetry=`
    # argument, so its native telemetry is switched off on the app KServe made.
    app._telemetry.update(tracing=False, metrics=False, logs=False)

    # Both in front of the whole stack Starlette builds at the first request, not added as user
    # middleware: KServe adds its timing middleware when it starts, outermost, and that one matches the
    # path against every route and writes two log lines per request, more than the fast path's own
    # work (benchmarks/serving_profile.py shows it). Fast-path answers skip it, as they skip pydantic.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: in_front(build_stack(), models, repository_token)
