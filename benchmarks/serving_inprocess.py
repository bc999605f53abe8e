"""The model server's own cost per request, without HTTP: its ASGI app called in-process, next to the
constant ASGI endpoint of benchmarks/serving/floor_asgi.py called the same way.

Under `wrk` the transport, the event loop and the client share the cost (benchmarks/serving_throughput.py);
here only the app runs, so a change to validation, prediction or metrics shows at the microsecond.
1-row v2 requests as JSON and in the binary tensor extension, and 100-row JSON ones: the bodies
`make bench-serving` sends.
    .venv/serving/bin/python benchmarks/serving_inprocess.py [--requests 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "serving")]

from floor_asgi import app as floor_app  # noqa: E402
from serving_throughput import REPO, VENV, binary_body, body  # noqa: E402


def request(payload: bytes, headers: list[tuple[bytes, bytes]]):
    scope = {"type": "http", "method": "POST", "path": "/v2/models/iris/infer", "headers": headers,
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 40000), "asgi": {"version": "3.0"}}

    async def receive():
        return {"type": "http.request", "body": payload, "more_body": False}

    return scope, receive


async def per_request_us(app, scope: dict, receive, requests: int) -> float:
    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(requests // 10):  # warm-up
        await app(dict(scope), receive, send)
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, f"answers other than 200: {set(statuses)}"
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from mlserving.server import create_app, make_server

    with tempfile.TemporaryDirectory(prefix="serving-inprocess-") as tmp:
        subprocess.run([str(VENV / "pipeline/bin/python"), str(REPO / "tests/serving/make_models.py"), tmp],
                       check=True, capture_output=True)
        server, model, _ = make_server("iris", str(Path(tmp) / "good-v1"), http_port=0)
        app = create_app(server, model)
        binary, json_length = binary_body(1)
        cases = {
            "floor (constant ASGI app)": (floor_app, *request(body(1, False).encode(), [])),
            "ours, 1-row JSON": (app, *request(body(1, False).encode(), [(b"content-type", b"application/json")])),
            "ours, 100-row JSON": (app, *request(body(100, False).encode(),
                                                 [(b"content-type", b"application/json")])),
            "ours, 1-row binary": (app, *request(binary, [(b"content-type", b"application/octet-stream"),
                                                          (b"inference-header-content-length",
                                                           str(json_length).encode())])),
        }
        results = {name: [] for name in cases}
        for _ in range(args.rounds):  # rounds interleaved, so a slow moment hits every case alike
            for name, (target, scope, receive) in cases.items():
                results[name].append(asyncio.run(per_request_us(target, scope, receive, args.requests)))
    floor = min(results["floor (constant ASGI app)"])
    print(f"\n{'app':<28} {'us per request (best of ' + str(args.rounds) + ')':>32} {'all rounds':>24}")
    for name, values in results.items():
        print(f"{name:<28} {min(values):32.1f} {' '.join(f'{v:.1f}' for v in values):>24}")
    beyond = {name: min(values) - floor for name, values in results.items() if name.startswith("ours")}
    print("\nours beyond the floor, us per request: "
          + ", ".join(f"{name.removeprefix('ours, ')} {us:.1f}" for name, us in beyond.items()))


if __name__ == "__main__":
    main()
