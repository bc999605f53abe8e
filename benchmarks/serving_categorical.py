"""The server's time beyond the model's own `predict`, for a hist-gradient-boosting classifier with categorical
(BYTES) inputs: 8 numeric and 4 categorical features, trained and logged by mlpipeline
(benchmarks/serving/make_categorical_model.py), served as the server serves any model with categorical inputs
(validation.batch_from_v2, a DataFrame, sklearn's predict: no linear fold).

Goals: at most 40 us beyond predict per 1-row request, at most 2 us per row at 100 rows.

This process runs on core 0 alone, as the servers under wrk do (and a pod with one CPU): the model's OpenMP
predict then uses one thread wherever it runs, so the floors below are the servers' own.

In process (the server's ASGI app called without HTTP, as benchmarks/serving_inprocess.py does): each iteration
times, in rotating order, one request to our app, one call of the loaded model's own `predict` on a pandas frame
of the same rows (float64 and object columns, as mlpipeline.model.model_inputs gives a model its rows), and one
request to the constant ASGI app of benchmarks/serving/floor_asgi.py with the same body; so a slow moment of the
shared machine hits all three alike. Each call is timed in this thread's CPU time (what the work costs, whatever
else the machine runs) and in wall time. Per case, medians over every round's calls:
    beyond = ours - predict - floor
and, as a check that needs no subtraction of a predict several milliseconds long, ours with the loaded model's
predict replaced by its precomputed answer (a fourth call in the rotation) minus the floor. Then where ours goes
beyond predict: each step of the fast path timed alone on the same request.

Under wrk (unless --no-wrk): our server (mlserving, as `make bench-serving` starts it) and the floor server,
each pinned to core 0, wrk -t1 -c1 on core 1, rounds alternating the two. Per request: wrk's p50 latency, and
the server process's CPU time (/proc/PID/task/*/schedstat, over the measured run) divided by wrk's requests;
    beyond = ours - floor - predict (the in-process median, wall time for p50, CPU time for CPU)
    .venv/serving/bin/python benchmarks/serving_categorical.py [--requests 300] [--rounds 3] [--seconds 5] [--no-wrk]
"""


from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "serving")]

from floor_asgi import app as floor_app  # noqa: E402
from serving_throughput import VENV, lua, start, stop, wrk  # noqa: E402

MODEL = "catbench"
PATH = f"/v2/models/{MODEL}/infer"
GOAL_REQUEST_US, GOAL_ROW_US = 40.0, 2.0  # beyond predict: per 1-row request; per row at 100 rows
JSON_HEADERS = [(b"content-type", b"application/json")]


def json_body(rows: dict, numeric: list[str], categorical: list[str], n: int) -> bytes:
    """A v2 request: one [n] tensor per feature, FP64 numbers and BYTES strings (what the server asks of a
    categorical input: validation.InputSpec.expects)."""
    inputs = [{"name": f, "shape": [n], "datatype": "FP64", "data": rows[f][:n]} for f in numeric] \
        + [{"name": f, "shape": [n], "datatype": "BYTES", "data": rows[f][:n]} for f in categorical]
    return json.dumps({"inputs": inputs}).encode()


def binary_body(rows: dict, numeric: list[str], categorical: list[str], n: int) -> tuple[bytes, int]:
    """The same request in the binary tensor data extension: FP64 columns little-endian, each BYTES value after
    its 4-byte little-endian length (KServe's serialize_byte_tensor); and the JSON header's length."""
    chunks = [np.asarray(rows[f][:n], dtype="<f8").tobytes() for f in numeric]
    chunks += [b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in rows[f][:n]) for f in categorical]
    names = [(f, "FP64") for f in numeric] + [(f, "BYTES") for f in categorical]
    header = json.dumps({"inputs": [{"name": f, "shape": [n], "datatype": d, "parameters": {"binary_data_size": len(c)}}
                                    for (f, d), c in zip(names, chunks, strict=True)]}).encode()
    return header + b"".join(chunks), len(header)


def model_frame(rows: dict, features: tuple[str, ...], numeric: list[str], n: int):
    """The rows as the model is given them by the pipeline: float64 numeric columns, object text columns."""
    import pandas as pd

    return pd.DataFrame({f: np.asarray(rows[f][:n], dtype=np.float64) if f in numeric
                         else np.asarray(rows[f][:n], dtype=object) for f in features}, columns=list(features))


def asgi_call(app, body: bytes, headers: list[tuple[bytes, bytes]]):
    """A coroutine function making one request to `app`; it returns the status and the body."""
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": headers, "query_string": b"",
             "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 8080),
             "client": ("127.0.0.1", 40000), "asgi": {"version": "3.0"}}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def call():
        answer = {}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await app(dict(scope), receive, send)
        return answer

    return call


async def interleaved(ours, floor, predict, stubbed, requests: int) -> dict[str, dict[str, list[float]]]:
    """Per-call seconds (wall and this thread's CPU) of `requests` rounds of (ours, predict, floor, ours with the
    model's predict stubbed), the order rotating each time."""
    ops = {"ours": ours, "floor": floor, "stubbed": stubbed}
    names = ("ours", "predict", "floor", "stubbed")
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for _ in range(max(requests // 10, 5)):  # warm-up
        await ours()
        await floor()
        await stubbed()
        predict()
    for i in range(requests):
        for name in names[i % 4:] + names[:i % 4]:
            c0, t0 = time.thread_time(), time.perf_counter()
            if name == "predict":
                predict()
            else:
                answer = await ops[name]()
            t1, c1 = time.perf_counter(), time.thread_time()
            wall[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
            if name != "predict" and answer["status"] != 200:
                raise SystemExit(f"{name} answered {answer['status']}: {answer.get('body', b'')[:300]!r}")
    return {"wall": wall, "cpu": cpu}


def stub(ours, predictor, positions):
    """A request to our app with the model's predict replaced by its precomputed answer (the server's own work
    around it all done: the frame built, the answer counted and sent)."""
    async def call():
        original = predictor.predict
        predictor.predict = lambda frame: positions
        try:
            return await ours()
        finally:
            predictor.predict = original

    return call


def median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


async def step_times(app, model, calls: tuple, body: bytes, json_length: int | None, frame, requests: int) -> dict:
    """Each step of the fast path on this request (median us of this thread's CPU time), timed alone, every
    step once per iteration in rotating order: decoding and checking the body (routes.RequestChecks), the Batch
    (validation.batch_from_v2), the model's DataFrame (InputSpec.frame), the predictor (sklearn's predict on that
    frame, its labels as positions in classes_), the traffic metrics, the answer (labels, the response document,
    orjson); beside them the whole request, the same with KServe's trace logger off (its timing middleware logs
    two lines a request), the model's own predict on the benchmark's frame and the floor; then, alone, the parts of
    KServe's timing middleware (kserve/protocol/rest/server.py, RESTServer._add_middlewares), and what the frame
    would cost built from a dict of arrays without `columns=` (not what the server does)."""
    import orjson
    import pandas as pd
    from kserve.protocol.rest.server import PrintTimings
    from timing_asgi.integrations import StarletteScopeToName

    from mlserving.validation import batch_from_v2, json_request, tensors_from_binary

    active = model.active
    ours, floor, _, _ = calls
    trace = logging.getLogger("kserve.trace")

    def decode():
        return json_request(orjson.loads(body)) if json_length is None else tensors_from_binary(body, str(json_length))

    async def quiet():
        trace.disabled = True
        try:
            await ours()
        finally:
            trace.disabled = False

    namer, timings = StarletteScopeToName(prefix="kserve.io", starlette_app=app), PrintTimings()
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": [], "query_string": b"", "root_path": ""}
    name = namer(scope)
    batch = batch_from_v2(decode().tensors, active.spec, model.max_rows)
    server_frame = active.predictor.model_input(batch)
    answers = active.predictor.predict(server_frame)
    steps = {
        "decode + check body": decode,
        "batch_from_v2": lambda: batch_from_v2(decode().tensors, active.spec, model.max_rows),
        "InputSpec.frame (DataFrame)": lambda: active.predictor.model_input(batch),
        "predictor on the server's frame": lambda: active.predictor.predict(server_frame),
        "metrics.observe": lambda: model.metrics.observe(active.version, active.classes, batch.numeric, answers,
                                                         batch.categorical),
        "answer (labels, doc, orjson)": lambda: orjson.dumps(model._v2_response(
            active, active.class_values[answers].tolist(), None)),
        "ours, whole request": ours,
        "ours, kserve.trace logger off": quiet,
        "predict (benchmark's frame)": lambda: active.estimator.predict(frame),
        "floor": floor,
        "KServe timing: route name, alone": lambda: namer(scope),
        "KServe timing: two trace lines, alone": lambda: (
            timings.timing(name, 0.001, ["http_status:200", "http_method:POST", "time:wall"]),
            timings.timing(name, 0.001, ["http_status:200", "http_method:POST", "time:cpu"])),
        "what-if: frame, dict of arrays": lambda: pd.DataFrame(
            {f: batch.categorical[i] if c else batch.numeric[:, i] for f, c, i in active.spec.places}),
    }
    names = list(steps)
    times = {name: [] for name in names}
    for i in range(requests + max(requests // 10, 5)):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.thread_time()
            result = steps[name]()
            if asyncio.iscoroutine(result):
                await result
            times[name].append(time.thread_time() - t0)
    out = {name: median_us(values[-requests:]) for name, values in times.items()}  # warm-up calls left out
    out["batch_from_v2"] -= out["decode + check body"]  # it decoded too
    mine = names[:6]
    out["rest (middleware, ASGI, histograms)"] = out["ours, whole request"] - out["floor"] - sum(out[n] for n in mine)
    out["of which KServe's trace lines"] = out["ours, whole request"] - out["ours, kserve.trace logger off"]
    out["predictor - predict (frame, positions)"] = out["predictor on the server's frame"] \
        - out["predict (benchmark's frame)"]
    return out


def verdict(case: str, rows: int, beyond: float) -> str:
    if rows == 1:
        return f"{'PASS' if beyond <= GOAL_REQUEST_US else 'FAIL'} (goal <= {GOAL_REQUEST_US:.0f} us per request)"
    per_row = beyond / rows
    return f"{'PASS' if per_row <= GOAL_ROW_US else 'FAIL'} (goal <= {GOAL_ROW_US:.0f} us per row)"


def in_process(model_dir: Path, data: dict, requests: int, rounds: int) -> tuple[dict, dict]:
    """The in-process tables, printed; returns each case's predict medians (us: wall, cpu) and its bodies."""
    from mlserving.server import create_app, make_server

    server, model, _ = make_server(MODEL, str(model_dir), http_port=0)
    app = create_app(server, model)
    # KServe's timing middleware logs two lines a request (kserve.trace, to stderr): still formatted and written,
    # but to /dev/null, not over the tables
    for handler in logging.getLogger("kserve.trace").handlers:
        handler.setStream(open(os.devnull, "w"))  # open for the process's life
    active = model.active
    numeric, categorical, rows = data["numeric"], data["categorical"], data["rows"]
    cases = {}
    for n in (1, 100):
        cases[f"{n}-row JSON"] = (n, json_body(rows, numeric, categorical, n), None)
    for n in (1, 100):
        cases[f"{n}-row binary"] = (n, *binary_body(rows, numeric, categorical, n))
    results = {case: {clock: {"ours": [], "predict": [], "floor": [], "stubbed": []} for clock in ("wall", "cpu")}
               for case in cases}
    each_round = {case: [] for case in cases}
    calls, frames = {}, {}
    for case, (n, body, json_length) in cases.items():
        headers = JSON_HEADERS if json_length is None else [
            (b"content-type", b"application/octet-stream"), (b"inference-header-content-length", b"%d" % json_length)]
        frame = frames[case] = model_frame(rows, active.features, numeric, n)
        expected = [str(label) for label in active.estimator.predict(frame)]
        ours = asgi_call(app, body, headers)
        answer = asyncio.run(ours())
        assert answer["status"] == 200, answer
        served = json.loads(answer["body"])["outputs"][0]["data"]
        assert served == expected, f"{case}: the server answered {served[:5]}, the model predicts {expected[:5]}"
        calls[case] = (ours, asgi_call(floor_app, body, headers), lambda frame=frame: active.estimator.predict(frame),
                       stub(ours, active.predictor, active.predictor.predict(frame)))
    for _ in range(rounds):  # every case in each round, so a slow spell of the machine hits them alike
        for case, (ours, floor, predict, stubbed) in calls.items():
            times = asyncio.run(interleaved(ours, floor, predict, stubbed, requests))
            for clock, by_name in times.items():
                for name, values in by_name.items():
                    results[case][clock][name] += values
            cpu = times["cpu"]
            each_round[case].append(median_us(cpu["ours"]) - median_us(cpu["predict"]) - median_us(cpu["floor"]))

    print(f"\nIN PROCESS: medians of {rounds} x {requests} interleaved calls per case, us of CPU time (ours: its mean "
          "in brackets); beside: beyond in wall time, and ours with the model's predict stubbed (answers precomputed) "
          "- floor, which needs no subtraction of a predict")
    print(f"{'case':<15} {'ours':>17} {'predict':>9} {'floor':>6} {'beyond':>8} {'per row':>8} {'wall':>8} "
          f"{'stubbed':>8}  {'beyond, each round':<20} verdict (beyond / stubbed)")
    predicts = {}
    for case, by_clock in results.items():
        n = cases[case][0]
        r = by_clock["cpu"]
        ours, predict, floor = (median_us(r[k]) for k in ("ours", "predict", "floor"))
        beyond = ours - predict - floor
        w = by_clock["wall"]
        wall_beyond = median_us(w["ours"]) - median_us(w["predict"]) - median_us(w["floor"])
        predicts[case] = {"wall": median_us(w["predict"]), "cpu": predict}
        stubbed = median_us(r["stubbed"]) - floor
        each = " ".join(f"{v:.0f}" for v in each_round[case])
        print(f"{case:<15} {ours:8.1f} ({statistics.fmean(r['ours']) * 1e6:6.0f}) {predict:9.1f} {floor:6.1f} "
              f"{beyond:8.1f} {beyond / n:8.2f} {wall_beyond:8.1f} {stubbed:8.1f}  {each:<20} "
              f"{verdict(case, n, beyond).split()[0]} / {verdict(case, n, stubbed)}")

    each = max(requests // 2, 50)
    print(f"\nWHERE OURS GOES (in process, each step alone, interleaved, medians of {each} calls, us of CPU time; "
          "rest = ours - floor - the first six steps)")
    steps = {case: asyncio.run(step_times(app, model, calls[case], body, json_length, frames[case], each))
             for case, (_, body, json_length) in cases.items()}
    print(f"{'step':<40}" + "".join(f"{case:>15}" for case in cases))
    for name in next(iter(steps.values())):
        print(f"{name:<40}" + "".join(f"{steps[case][name]:15.1f}" for case in cases))
    return predicts, cases


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, every thread's, to the nanosecond (the scheduler's own account)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError):  # a thread that just ended
            pass
    return total / 1e9


def under_wrk(model_dir: Path, cases: dict, predicts: dict, rounds: int, seconds: int, tmp: Path) -> None:
    """Per request at one connection (wrk -t1 -c1) of ours and the floor server, per case: wrk's p50 latency and
    the server's CPU time; beyond predict."""
    servers = {
        "ours": (9130, [str(VENV / "serving/bin/mlserving"), "--model-dir", str(model_dir), "--model-name", MODEL,
                        "--http-port", "9130", "--quiet-access-log"], f"http://127.0.0.1:9130/v2/models/{MODEL}/ready"),
        "floor": (9133, [str(VENV / "serving/bin/python"), str(HERE / "serving/floor_asgi.py"), "9133"], None),
    }
    measured: dict[str, dict[str, list[dict]]] = {case: {"ours": [], "floor": []} for case in cases}
    for round_ in range(rounds):
        for name, (port, cmd, ready) in servers.items():
            url = f"http://127.0.0.1:{port}{PATH}"
            print(f"wrk: {name}, round {round_ + 1} ...", file=sys.stderr, flush=True)
            proc, _ = start(f"{name}-{round_}", cmd, ready or url, tmp)
            try:
                for case, (_, body, json_length) in cases.items():
                    script = lua(tmp / f"{name}-{case.replace(' ', '-')}.lua",
                                 body.decode() if json_length is None else body, json_length)
                    wrk(url, script, 1, 1)  # warm-up
                    before = cpu_seconds(proc.pid)
                    result = wrk(url, script, 1, seconds)
                    result["cpu"] = (cpu_seconds(proc.pid) - before) / result["requests"]
                    if result["non2xx"] or result["socket_errors"]:
                        raise SystemExit(f"{name} {case}: {result}")
                    measured[case][name].append(result)
            finally:
                stop(proc)
    print(f"\nUNDER WRK: -t1 -c1, {rounds} x {seconds} s per server and case, alternating, best round; us per request: "
          "wrk's p50 latency, and the server's CPU time")
    print(f"{'case':<15} {'ours p50':>9} {'floor':>6} {'predict':>8} {'beyond':>8} {'per row':>8}  "
          f"{'ours CPU':>9} {'floor':>6} {'predict':>8} {'beyond':>8} {'per row':>8}  verdict (p50 / CPU)")
    footnote = False
    for case, runs in measured.items():
        n = cases[case][0]
        ours, floor = (min(r["p50"] for r in runs[k]) * 1000 for k in ("ours", "floor"))
        ours_cpu, floor_cpu = (min(r["cpu"] for r in runs[k]) * 1e6 for k in ("ours", "floor"))
        beyond = ours - floor - predicts[case]["wall"]
        beyond_cpu = ours_cpu - floor_cpu - predicts[case]["cpu"]
        # wall time subtracts a predict measured at another moment: meaningless when the machine was busy then
        contended = predicts[case]["wall"] > 1.1 * predicts[case]["cpu"]
        p50_verdict = "n/a*" if contended else verdict(case, n, beyond).split()[0]
        footnote = footnote or contended
        print(f"{case:<15} {ours:9.1f} {floor:6.1f} {predicts[case]['wall']:8.1f} {beyond:8.1f} {beyond / n:8.2f}  "
              f"{ours_cpu:9.1f} {floor_cpu:6.1f} {predicts[case]['cpu']:8.1f} {beyond_cpu:8.1f} {beyond_cpu / n:8.2f}  "
              f"{p50_verdict} / {verdict(case, n, beyond_cpu)}")
    if footnote:
        print("* no verdict on p50: the in-process predict took over 10 % more wall than CPU time (the machine was "
              "busy), so wall-time beyond is not this server's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="calls per case and round, in process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="wrk's duration per server, case and round")
    parser.add_argument("--no-wrk", action="store_true", help="in process only")
    args = parser.parse_args()
    if not args.no_wrk and not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (or pass --no-wrk)")
    os.sched_setaffinity(0, {0})  # before sklearn's OpenMP starts: one thread, as the servers pinned to core 0
    with tempfile.TemporaryDirectory(prefix="serving-categorical-") as tmp:
        tmp = Path(tmp)
        subprocess.run([str(VENV / "pipeline/bin/python"), str(HERE / "serving/make_categorical_model.py"), str(tmp)],
                       check=True, capture_output=True)
        data = json.loads((tmp / "rows.json").read_text())
        predicts, cases = in_process(tmp / "model", data, args.requests, args.rounds)
        if not args.no_wrk:
            under_wrk(tmp / "model", cases, predicts, min(args.rounds, 2), args.seconds, tmp)
    print("\nbeyond = ours - the model's own predict (median, same rows, a pandas frame) - the floor (a constant ASGI "
          "app; under wrk, its server). The machine is shared: CPU time is the steadier figure; compare figures from "
          "one run only")


if __name__ == "__main__":
    main()
