"""Serving benchmark: our server vs a bare KServe ModelServer vs MLServer + MLflow runtime vs an ASGI floor.

Same machine, same load generator (Debian's wrk, Lua body), each server pinned to core 0 and
wrk to core 1, same requests (v2, one tensor per named feature, 1-row and 100-row), each
measured in two rounds that take every server in turn; in the first, also 1-row requests on a single
connection for p99. Prints requests/s, p50/p99 and ratios (the better round of each).
    .venv/serving/bin/python benchmarks/serving_throughput.py [--seconds 10] [--only ours asgi-floor]
Needs wrk (apt-get install wrk) and the benchmark-only .venv/mlserver (make bench-serving builds both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / ".venv"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]


def body(rows: int, pandas_codec: bool) -> str:
    doc = {"inputs": [{"name": f, "shape": [rows], "datatype": "FP64", "data": [ROW[i] + 0.01 * (r % 7)
                                                                              for r in range(rows)]}
                      for i, f in enumerate(FEATURES)]}
    if pandas_codec:  # MLServer's MLflow runtime decodes named columns into a DataFrame
        doc["parameters"] = {"content_type": "pd"}
    return json.dumps(doc)


def binary_body(rows: int) -> tuple[bytes, int]:
    """The same request in the binary tensor data extension: a JSON header, then each feature's FP64
    values (little-endian), as KServe's and Triton's clients send it; and the header's length."""
    import numpy as np

    columns = [np.asarray([ROW[i] + 0.01 * (r % 7) for r in range(rows)], dtype="<f8") for i in range(len(FEATURES))]
    header = json.dumps({"inputs": [{"name": f, "shape": [rows], "datatype": "FP64",
                                     "parameters": {"binary_data_size": c.nbytes}}
                                    for f, c in zip(FEATURES, columns, strict=True)]}).encode()
    return header + b"".join(c.tobytes() for c in columns), len(header)


def lua(path: Path, payload: str | bytes, json_length: int | None = None) -> Path:
    """A wrk script POSTing `payload`: JSON text, or a binary-extension body (`json_length` given)."""
    if json_length is None:
        head, quoted = 'wrk.headers["Content-Type"] = "application/json"\n', f"[[{payload}]]"
    else:  # every byte as a three-digit decimal escape: safe for any byte in a Lua string
        head = (f'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                f'wrk.headers["Inference-Header-Content-Length"] = "{json_length}"\n')
        quoted = '"' + "".join(f"\\{b:03d}" for b in payload) + '"'
    path.write_text(f'wrk.method = "POST"\n{head}wrk.body = {quoted}\n')
    return path


def wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"server not ready at {url}:\n{log.read_text()[-3000:]}")


def start(name: str, cmd: list[str], ready_url: str, tmp: Path,
          cwd: Path | None = None) -> tuple[subprocess.Popen, float]:
    """The server, ready, and the seconds from its process starting to its model answering ready."""
    log = tmp / f"{name}.log"
    started = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            cwd=cwd, start_new_session=True)
    wait_ready(ready_url, proc, log)
    return proc, time.perf_counter() - started


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def to_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    mean = to_ms(re.search(r"Latency\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "mean": mean, "requests": requests,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def servers(model_dir: Path, tmp: Path) -> dict:
    mlserver_dir = tmp / "mlserver"
    mlserver_dir.mkdir()
    # parallel_workers=0: MLServer 1.7.1's worker pool dies at start with the uvloop it resolves
    # ("There is no current event loop"), so inference runs in the server process.
    (mlserver_dir / "settings.json").write_text(json.dumps({"http_port": 9102, "grpc_port": 9112,
                                                            "metrics_port": 9122, "parallel_workers": 0}))
    (mlserver_dir / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": str(model_dir)}}))
    return {
        "ours": (9100, [str(VENV / "serving/bin/mlserving"), "--model-dir", str(model_dir), "--model-name", "iris",
                        "--http-port", "9100", "--quiet-access-log"], None, False),
        "kserve-bare": (9101, [str(VENV / "serving/bin/python"), str(HERE / "serving/bare_kserve.py"),
                               str(model_dir), "9101"], None, False),
        "mlserver-mlflow": (9102, [str(VENV / "mlserver/bin/mlserver"), "start", "."], mlserver_dir, True),
        "asgi-floor": (9103, [str(VENV / "serving/bin/python"), str(HERE / "serving/floor_asgi.py"), "9103"], None,
                       False),
    }


def measure(name: str, port: int, cmd: list[str], cwd: Path | None, pandas_codec: bool, run: int, tmp: Path,
            seconds: int) -> dict:
    """One round of one server: started, checked, warmed up, then each mix for `seconds`; in the first round
    also the single-connection p99 and the start-up time."""
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    ready = f"http://127.0.0.1:{port}/v2/models/iris/ready" if name != "asgi-floor" else url
    proc, start_up = start(name, cmd, ready, tmp, cwd)
    try:
        scripts = {rows: lua(tmp / f"{name}-{rows}.lua", body(rows, pandas_codec)) for rows in (1, 100)}
        check = httpx.post(url, content=body(1, pandas_codec), headers={"content-type": "application/json"})
        assert check.status_code == 200, check.text
        wrk(url, scripts[1], 8, 2)  # warm-up
        measured = {f"{rows}-row run {run}": wrk(url, scripts[rows], 8, seconds) for rows in (1, 100)}
        if name in ("ours", "kserve-bare"):  # the binary tensor extension (KServe's route decodes it)
            measured[f"1-row binary run {run}"] = wrk(url, lua(tmp / f"{name}-binary.lua", *binary_body(1)), 8,
                                                      seconds)
        if run == 1:
            measured["1-row single connection"] = wrk(url, scripts[1], 1, seconds)
            measured["start to ready"] = start_up
        return measured
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="servers to run (default: all)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        tmp = Path(tmp)
        subprocess.run([str(VENV / "pipeline/bin/python"), str(REPO / "tests/serving/make_models.py"), str(tmp)],
                       check=True, capture_output=True)
        model_dir = tmp / "good-v1"
        chosen = {name: spec for name, spec in servers(model_dir, tmp).items() if not args.only or name in args.only}
        # Two rounds, every server measured once in each: the machine's speed drifts over minutes (the floor
        # alone has moved between 27,000 and 36,000 req/s in one session), and a server measured twice in
        # a row would take a slow or fast spell alone.
        for run in (1, 2):
            for name, (port, cmd, cwd, pandas_codec) in chosen.items():
                print(f"{name}, round {run} ...", file=sys.stderr, flush=True)
                results.setdefault(name, {}).update(measure(name, port, cmd, cwd, pandas_codec, run, tmp, args.seconds))
    report(results)


def report(results: dict) -> None:
    print(f"\n{'server':<16} {'mix':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, runs in results.items():
        for mix, r in sorted(runs.items()):
            if mix == "start to ready":
                continue
            print(f"{name:<16} {mix:<24} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                  f"{r['non2xx'] or r['socket_errors'] or 0:>7}")

    def best(name, rows):
        return max(results[name][f"{rows}-row run {i}"]["rps"] for i in (1, 2)) if name in results else None

    print()
    for rows in (1, 100):
        ours = best("ours", rows)
        for other in ("kserve-bare", "mlserver-mlflow", "asgi-floor"):
            theirs = best(other, rows)
            if ours and theirs:
                print(f"{rows:>3}-row, 8 connections: ours / {other:<16} = {ours / theirs:5.2f}x")
    if "ours" in results and "1-row binary run 1" in results["ours"]:
        binary = max(results["ours"][f"1-row binary run {i}"]["rps"] for i in (1, 2))
        print(f"  1-row binary, 8 connections: ours / ours as JSON = {binary / best('ours', 1):5.2f}x", end="")
        if "kserve-bare" in results:
            bare = max(results["kserve-bare"][f"1-row binary run {i}"]["rps"] for i in (1, 2))
            print(f", ours / kserve-bare = {binary / bare:5.2f}x", end="")
        print()
    print("start to ready (process start to the model's ready route answering 200): " + ", ".join(
        f"{name} {runs['start to ready']:.2f} s" for name, runs in results.items() if name != "asgi-floor"))
    if "ours" in results:
        print(f"ours, 1-row single connection p99: {results['ours']['1-row single connection']['p99']:.2f} ms")


if __name__ == "__main__":
    main()
