"""Stage benchmark: simulate, ingest, split, train on 10k to 10M rows, against a floor.

Ours: the `mlpipeline` CLI, as the DAG runs it (train = `train-local`, the compiled KFP
pipeline under kfp.local, logging to a real MLflow server this script starts).
Floor: benchmarks/bare_stages.py doing the same work directly, unchecked, in the same
interpreter, one process per stage like ours, measured in the same run.
Prints wall time and peak RSS per stage and size, our/floor ratios with and without simulate (which
makes the test data rather than being a pipeline stage), and how time grows with rows.

    .venv/pipeline/bin/python benchmarks/pipeline_stages.py [--sizes 10000 100000 1000000 10000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
STAGES = ["simulate", "ingest", "split", "train"]
PARTITION = "2026-11-01"


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command and its descendants."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def ours(root: Path, rows: int, model: str) -> dict[str, tuple[float, float]]:
    cli = [str(BIN / "mlpipeline"), "--quiet"]
    data = ["--data-root", str(root), "--dataset", str(REPO / "datasets" / "iris.yaml")]
    results = {
        "simulate": measure([*cli, "simulate", *data, "--partition", PARTITION, "--rows", str(rows), "--seed", "0"]),
        "ingest": measure([*cli, "ingest", *data, "--partition", PARTITION]),
        "split": measure([*cli, "split", *data, "--partition", PARTITION, "--run-key", "bench"]),
    }
    results["train"] = measure([*cli, "train-local", "--data-root", str(root), "--run-key", "bench", "--model-name",
                                model])
    return results


def floor(root: Path, rows: int) -> dict[str, tuple[float, float]]:
    script = [sys.executable, str(HERE / "bare_stages.py")]
    return {stage: measure([*script, stage, str(root), *([str(rows)] if stage == "simulate" else [])])
            for stage in STAGES}


def start_mlflow(run_dir: Path, port: int) -> dict:
    env = {"RUN_DIR": str(run_dir), "MLFLOW_PORT": str(port)}
    subprocess.run(["bash", str(REPO / "scripts/services.sh"), "start", "mlflow"], check=True,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        services = start_mlflow(tmp / "run", args.port)
        os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{args.port}"
        try:
            rows_out = []
            for rows in args.sizes:
                print(f"{rows:>9,} rows ...", file=sys.stderr, flush=True)
                floor_res = floor(tmp / f"floor-{rows}", rows)
                our_res = ours(tmp / f"ours-{rows}", rows, f"bench-{uuid.uuid4().hex[:6]}")
                rows_out.append((rows, our_res, floor_res))
        finally:
            subprocess.run(["bash", str(REPO / "scripts/services.sh"), "stop"], env={**os.environ, **services},
                           stdout=subprocess.DEVNULL)
    report(rows_out)


def report(results) -> None:
    print(f"\n{'rows':>9} {'stage':<9} {'ours s':>7} {'floor s':>8} {'ratio':>6} {'ours MiB':>9} {'floor MiB':>9}")
    for rows, our_res, floor_res in results:
        for stage in STAGES:
            (ow, om), (fw, fm) = our_res[stage], floor_res[stage]
            print(f"{rows:>9,} {stage:<9} {ow:7.2f} {fw:8.2f} {ow / fw:6.2f} {om:9.0f} {fm:9.0f}")
        ot, ft = sum(v[0] for v in our_res.values()), sum(v[0] for v in floor_res.values())
        om, fm = max(v[1] for v in our_res.values()), max(v[1] for v in floor_res.values())
        print(f"{rows:>9,} {'TOTAL':<9} {ot:7.2f} {ft:8.2f} {ot / ft:6.2f} {om:9.0f} {fm:9.0f}")
        # simulate makes the test data (pyarrow's CSV writer against the floor's pandas one), so the
        # pipeline's own stages are also compared without it
        op, fp = (sum(res[s][0] for s in STAGES if s != "simulate") for res in (our_res, floor_res))
        print(f"{rows:>9,} {'PIPELINE':<9} {op:7.2f} {fp:8.2f} {op / fp:6.2f}")
    if len(results) > 1:
        (r0, o0, _), (r1, o1, _) = results[0], results[-1]
        t0, t1 = sum(v[0] for v in o0.values()), sum(v[0] for v in o1.values())
        print(f"\ngrowth: {r1 / r0:.0f}x rows -> {t1 / t0:.1f}x time (ours, total)")


if __name__ == "__main__":
    main()
