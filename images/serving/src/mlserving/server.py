"""`mlserving`: serve an MLflow-logged model directory with KServe's ModelServer.

    mlserving --model-dir DIR --model-name NAME --http-port PORT
KServe's own flags (--http_port, --model_name, ...) work too; --workers must stay 1 (ONE_WORKER says why).

The v2 fast path (routes.InferFastPath) answers inside KServe's middleware, so KServe's flags that shape an
inference answer hold for it too: --enable_latency_logging (its log line per request, on by default in
KServe) and --access_log_format (KServe's access-log middleware would wrap it, but it needs asgi-logger, which
the image leaves out: the flag is refused at start). --enable_docs_url only adds /docs; the --predictor_* flags
are a transformer's. --disable-fast-path (or MLSERVING_DISABLE_FAST_PATH=1) sends every request through KServe's
own route.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from .loader import ModelLoadError

# KServe's --workers > 1 spawns processes that are handed the models by pickling them, and each would hold
# its own copy of what this server keeps in memory: the active model (so a swap would reach the one
# worker its request landed on) and the Prometheus counters (so /metrics would count one worker).
ONE_WORKER = ("mlserving: error: --workers {workers}: this server runs one worker per process. Model swaps "
              "(POST /v2/repository/models/NAME/load) and the metrics on /metrics belong to the process that "
              "serves them, so several workers would serve different versions after a swap and each report "
              "part of the traffic. Scale with replicas of the InferenceService instead (one worker and one "
              "CPU per pod, as the ClusterServingRuntime sets it).")


def build_parser(kserve_parser) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlserving", parents=[kserve_parser], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", "--model_dir", dest="model_dir", default="/mnt/models",
                        help="MLflow model directory (KServe's storage initializer uses /mnt/models)")
    parser.add_argument("--model-name", dest="model_name", help="alias of --model_name")
    parser.add_argument("--http-port", dest="http_port", type=int, help="alias of --http_port")
    parser.add_argument("--max-batch-rows", type=int, default=10_000, help="rows accepted per request")
    parser.add_argument("--disable-fast-path", "--disable_fast_path", action="store_true",
                        help="answer every v2 inference request through KServe's own route, none on the fast path "
                             "(also: MLSERVING_DISABLE_FAST_PATH=1)")
    parser.add_argument("--quiet-access-log", action="store_true",
                        help="no per-request access log lines (faster under load)")
    parser.add_argument("--feature-buckets", type=feature_buckets, metavar="EDGES",
                        help="histogram edges for every numeric feature's live values, comma-separated and "
                             "increasing (e.g. 0.5,1,2,5), over the edges each model carries from its training "
                             "data (default: the model's own; for a model without them, a 0.1-30 scale)")
    parser.add_argument("--repository-token-file", default=os.environ.get("MLSERVING_REPOSITORY_TOKEN_FILE"),
                        help="a file holding the bearer token that POST /v2/repository/models/NAME/load must "
                             "carry (the local deploy's); without it the repository endpoints are refused")
    return parser


def feature_buckets(text: str) -> tuple[float, ...]:
    """--feature-buckets: finite numbers, strictly increasing, at most model_format.MAX_FEATURE_EDGES."""
    import math

    from mlpipeline.model_format import MAX_FEATURE_EDGES

    try:
        edges = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not all(map(math.isfinite, edges)) or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)) \
            or len(edges) > MAX_FEATURE_EDGES:
        raise argparse.ArgumentTypeError(f"{text!r}: the edges must be finite, strictly increasing and at most "
                                         f"{MAX_FEATURE_EDGES}")
    return edges


def read_token(path: str | None) -> str | None:
    """The repository token in `path` (None: no file given); an empty or unreadable file is an error, not
    an open endpoint."""
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ModelLoadError(f"--repository-token-file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise ModelLoadError(f"--repository-token-file {path}: the token must be at least 16 characters")
    return token


def make_server(model_name: str, model_dir: str, http_port: int, max_rows: int = 10_000,
                repository_token: str | None = None, buckets: tuple[float, ...] | None = None,
                fast_path: bool = True, **server_args):
    """The ModelServer with our model loaded, its repository (swaps through KServe's load route, for the
    holder of `repository_token` only) and our routes installed on KServe's app (the v2 fast path unless
    `fast_path` is false)."""
    from kserve import ModelServer
    from kserve.model_server import app

    from . import routes
    from .model import RegistryModel
    from .repository import RegistryModelRepository

    model = RegistryModel(model_name, model_dir, max_rows=max_rows, buckets=buckets)
    model.load()
    routes.install(app, {model_name: model}, repository_token, fast_path=fast_path)
    server = ModelServer(http_port=http_port, enable_grpc=False, registered_models=RegistryModelRepository([model]),
                         **server_args)
    return server, model, app


def create_app(server, model):
    """The FastAPI app ModelServer.start() would serve, without starting it (for in-process clients)."""
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    server.register_model(model)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension,
                      server.http_port)
    rest.create_application()
    from kserve.model_server import app

    return app


def use_event_loop(choice: str) -> None:
    """Honour KServe's --event-loop ('auto', its default, means uvloop when installed, as its help says).

    KServe 0.21 passes the flag to uvicorn only when it runs several workers; with one it serves from
    asyncio.run(), which builds the loop from the event-loop policy, so the policy is where the choice
    is made. uvloop runs the loop and the sockets in C, the per-request work the pure-Python loop does.
    """
    import asyncio

    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # KServe's start() asks for the current loop before asyncio.run() makes its own; uvloop's policy,
    # unlike asyncio's, does not create one on that request.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    logging.getLogger("kserve").info("mlserving: event loop %s", type(loop).__module__.split(".")[0])


def main(argv: list[str] | None = None) -> int:
    from kserve.model_server import parser as kserve_parser

    args = build_parser(kserve_parser).parse_args(argv)
    if not args.model_name:
        print("mlserving: error: --model-name is required", file=sys.stderr)
        return 2
    if args.workers != 1:
        print(ONE_WORKER.format(workers=args.workers), file=sys.stderr)
        return 2
    if args.access_log_format and importlib.util.find_spec("asgi_logger") is None:
        # KServe imports it only when it starts serving, and would stop there with an ImportError
        print("mlserving: error: --access_log_format needs asgi-logger (KServe's `logging` extra), which this "
              "image does not install; leave the flag out (uvicorn's access log is on by default)", file=sys.stderr)
        return 2
    from .routes import fast_path_wanted

    fast_path = fast_path_wanted(args.disable_fast_path)
    try:
        server, model, _ = make_server(args.model_name, args.model_dir, args.http_port, args.max_batch_rows,
                                       read_token(args.repository_token_file), args.feature_buckets,
                                       fast_path=fast_path, workers=args.workers)
    except ModelLoadError as exc:
        print(f"mlserving: error: {exc}", file=sys.stderr)
        return 1
    # KServe's logger: the ModelServer has configured its handler by now
    logging.getLogger("kserve").info(
        "mlserving: v2 fast path on: requests KServe's route would answer alike are answered in front of it, inside "
        "KServe's middleware" if fast_path else "mlserving: v2 fast path off (--disable-fast-path or "
        "MLSERVING_DISABLE_FAST_PATH): every request goes through KServe's route")
    if args.quiet_access_log:
        # Without handlers, not only disabled: uvicorn formats each line's arguments (the quoted path
        # among them) whenever its access logger has a handler, and only then asks whether to log.
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
        access.disabled = True
    from .metrics import time_gc_pauses

    time_gc_pauses()
    use_event_loop(args.event_loop)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
