"""Where a served request's time goes: our model server under `wrk` load, sampled by py-spy.

Same setup as `make bench-serving` (server pinned to core 0, wrk to core 1, 1-row v2 JSON requests
on 8 connections, access log off as the ClusterServingRuntime runs it). py-spy samples the server's
Python stacks; the samples are summed per component (which package's code was running, innermost
frame first) and per function, and the share of time each takes is printed. Garbage-collector pauses,
which py-spy shows only as whichever Python frame triggered them, are read from the server's own
`mlserving_gc_pause_seconds` histogram, before and after the load.
    .venv/serving/bin/python benchmarks/serving_profile.py [--seconds 15] [--rate 200]
Needs wrk and py-spy (`make bench-serving-profile` installs both).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_throughput import REPO, VENV, body, lua, start, stop, wrk  # noqa: E402

# Innermost frame's file (py-spy prints it relative to its sys.path entry) -> component; first match wins.
COMPONENTS = (
    ("mlserving (ours)", "(mlserving/"), ("kserve", "(kserve/"), ("KServe's timing middleware", "(timing_asgi/"),
    ("prometheus_client", "(prometheus_client/"), ("logging", "(logging/"), ("starlette/fastapi", "(starlette/"),
    ("starlette/fastapi", "(fastapi/"), ("uvicorn", "(uvicorn/"), ("asyncio", "(asyncio/"), ("numpy", "(numpy/"),
    ("sklearn", "(sklearn/"), ("uuid", "(uuid.py"), ("threading", "(threading.py"), ("urllib", "(urllib/"),
)


def component(frame: str) -> str:
    return next((name for name, marker in COMPONENTS if marker in frame), "other")


def summarize(raw: Path, top: int) -> None:
    """py-spy's raw format: one line per distinct stack, `frame;frame;...;frame count`, outermost first."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    components: collections.Counter = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")[1:]]  # drop line numbers
        n = int(count)
        total += n
        if not frames or "select (selectors.py" in frames[-1] or "_run_once (asyncio" in frames[-1] and len(frames) < 4:
            idle += n
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        components[component(frames[-1])] += n
    busy = total - idle
    print(f"\n{total} samples, {idle} waiting for the network ({idle / total:.0%}), {busy} busy")
    print("\nbusy time by component (innermost frame):")
    for name, n in components.most_common():
        print(f"  {n / busy:6.1%}  {name}")
    print(f"\ntop {top} functions by own time:")
    for frame, n in own.most_common(top):
        print(f"  {n / busy:6.1%}  {frame[:130]}")
    print(f"\ntop {top} functions by inclusive time:")
    for frame, n in inclusive.most_common(top):
        print(f"  {n / busy:6.1%}  {frame[:130]}")


def gc_pauses(metrics_url: str) -> dict[str, dict[str, float]]:
    """The server's GC pause histogram: per generation, its count, sum and count above each bucket edge."""
    import httpx

    pauses: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for line in httpx.get(metrics_url).text.splitlines():
        if line.startswith("mlserving_gc_pause_seconds_"):
            series, value = line.rsplit(" ", 1)
            labels = dict(part.split("=") for part in series[series.index("{") + 1:-1].split(","))
            kind = series[len("mlserving_gc_pause_seconds_"):series.index("{")]
            key = kind if kind != "bucket" else f"le {labels['le'].strip(chr(34))}"
            pauses[labels["generation"].strip('"')][key] = float(value)
    return pauses


def print_gc(before: dict, after: dict, requests: float) -> None:
    print(f"\ngarbage-collector pauses during the load ({requests:.0f} requests):")
    for generation in sorted(after):
        b, a = before.get(generation, {}), after[generation]
        count = a["count"] - b.get("count", 0)
        seconds = a["sum"] - b.get("sum", 0)
        over = {edge: count - (a[edge] - b.get(edge, 0)) for edge in ("le 0.001", "le 0.002", "le 0.005")}
        print(f"  generation {generation}: {count:7.0f} collections, {seconds * 1000:8.1f} ms in all"
              f" ({seconds / max(count, 1) * 1e6:6.0f} us each), over 1/2/5 ms: "
              f"{over['le 0.001']:.0f}/{over['le 0.002']:.0f}/{over['le 0.005']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    py_spy = VENV / "serving/bin/py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} is missing: make bench-serving-profile installs it")
    with tempfile.TemporaryDirectory(prefix="serving-profile-") as tmp:
        tmp = Path(tmp)
        subprocess.run([str(VENV / "pipeline/bin/python"), str(REPO / "tests/serving/make_models.py"), str(tmp)],
                       check=True, capture_output=True)
        url = "http://127.0.0.1:9100/v2/models/iris/infer"
        proc, _ = start("ours", [str(VENV / "serving/bin/mlserving"), "--model-dir", str(tmp / "good-v1"),
                                 "--model-name", "iris", "--http-port", "9100", "--quiet-access-log"],
                        "http://127.0.0.1:9100/v2/models/iris/ready", tmp)
        try:
            script = lua(tmp / "one-row.lua", body(1, False))
            wrk(url, script, 8, 2)  # warm-up
            raw = tmp / "profile.txt"
            spy = subprocess.Popen([str(py_spy), "record", "--pid", str(proc.pid), "--rate", str(args.rate),
                                    "--duration", str(args.seconds + 1), "--format", "raw", "--output", str(raw),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            metrics = "http://127.0.0.1:9100/metrics"
            before = gc_pauses(metrics)
            loaded = wrk(url, script, 8, args.seconds)
            single = wrk(url, script, 1, args.seconds)
            after = gc_pauses(metrics)
            if spy.wait(timeout=120):
                raise SystemExit(f"py-spy failed: {spy.stderr.read().decode()[-2000:]}")
            print(f"8 connections: {loaded['rps']:.0f} req/s, p50 {loaded['p50']:.2f} ms, p99 {loaded['p99']:.2f} ms "
                  f"(while sampled; 1 connection after it: p50 {single['p50']:.2f} ms, p99 {single['p99']:.2f} ms)")
            summarize(raw, args.top)
            print_gc(before, after, (loaded["rps"] + single["rps"]) * args.seconds)
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
