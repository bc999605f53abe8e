"""Stage benchmark: simulate, ingest, split, train on 10k to 10M rows, against a floor.

Ours: the `mlpipeline` CLI, as the DAG runs it (train = `train-local`, the compiled KFP
pipeline under kfp.local, logging to a real MLflow server this script starts).
Floor: benchmarks/bare_stages.py doing the same work directly, unchecked, in the same
interpreter, one process per stage like ours, measured in the same run.
Prints wall time and peak RSS per stage and size, our/floor ratios with and without simulate (which
makes the test data rather than being a pipeline stage), and how time grows with rows.

--shape wide (make bench-wide): the dataset of wide_dataset.py (100 features, 20 categorical, 5 % missing,
hist_gradient_boosting) at 1M and 10M rows. Its batch is generated once per size, untimed in PIPELINE, and
both sides read the same files; the floor's model is checked identical to mlpipeline's before measuring.
Prints PIPELINE (ingest + split + train) and peak RSS per size, with a verdict against the goals.

    .venv/pipeline/bin/python benchmarks/pipeline_stages.py [--shape iris|wide] [--sizes 10000 100000 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import wide_dataset as wide_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
STAGES = ["simulate", "ingest", "split", "train"]
PARTITION = "2026-11-01"
WIDE_STAGES = ["ingest", "split", "train"]
WIDE_GOALS = {"ratio": 1.2, "peak_gib": 6.0, "peak_at_rows": 10_000_000}


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


def wide(tmp: Path, rows: int, dataset: Path, model: str) -> tuple[dict, dict]:
    """Ours and the floor on the wide dataset, stage by stage in turn (a stage's two figures are taken
    minutes apart at most, whatever else loads the machine), each side's progress on stderr. The batch
    lands once where ours ingests it, and the floor reads those files."""
    ours_root, floor_root = tmp / f"ours-{rows}", tmp / f"floor-{rows}"
    landing = ours_root / "landing" / wide_data.NAME / PARTITION
    started = time.perf_counter()
    files = wide_data.write_batches(landing, rows)
    print(f"{rows:>10,} rows generated in {time.perf_counter() - started:.1f} s ({len(files)} CSV file(s), "
          f"{sum(f.stat().st_size for f in files) / 2**20:,.0f} MiB; not in PIPELINE)", file=sys.stderr, flush=True)
    cli = [str(BIN / "mlpipeline"), "--quiet"]
    data = ["--data-root", str(ours_root), "--dataset", str(dataset), "--partition", PARTITION]
    bare = [sys.executable, str(HERE / "bare_stages.py")]
    commands = {
        "ingest": ([*cli, "ingest", *data], [*bare, "wide-ingest", str(floor_root), str(landing)]),
        "split": ([*cli, "split", *data, "--run-key", "bench"], [*bare, "wide-split", str(floor_root)]),
        "train": ([*cli, "train-local", "--data-root", str(ours_root), "--run-key", "bench", "--model-name", model],
                  [*bare, "wide-train", str(floor_root)]),
    }
    our_res, floor_res = {}, {}
    for stage, (our_cmd, floor_cmd) in commands.items():
        for side, cmd, res in (("floor", floor_cmd, floor_res), ("ours", our_cmd, our_res)):
            res[stage] = measure(cmd)
            print(f"{rows:>10,} {stage:<6} {side:<5} {res[stage][0]:8.1f} s {res[stage][1]:7.0f} MiB", file=sys.stderr,
                  flush=True)
    shutil.rmtree(ours_root)  # 10M rows leave ~15 GB of files
    shutil.rmtree(floor_root)
    return our_res, floor_res


def wide_dataset_file(folder: Path) -> Path:
    """The wide dataset file, after checking that the floor fits the very model mlpipeline builds of it."""
    from mlpipeline import dataset, model

    path = folder / f"{wide_data.NAME}.yaml"
    path.write_text(wide_data.dataset_yaml())
    ours_spec, floor_spec = _spec(model.build_model(dataset.load(path))), _spec(wide_data.floor_model())
    if ours_spec != floor_spec:
        raise SystemExit(f"the floor's model is not mlpipeline's:\nours  {ours_spec}\nfloor {floor_spec}")
    return path


def _spec(value):
    """An estimator as its class and every parameter, nested estimators included (repr elides long ones)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return type(value).__qualname__, {k: _spec(v) for k, v in value.get_params(deep=False).items()}
    if isinstance(value, (list, tuple)):
        return [_spec(v) for v in value]
    return value


def start_mlflow(run_dir: Path, port: int) -> dict:
    env = {"RUN_DIR": str(run_dir), "MLFLOW_PORT": str(port)}
    subprocess.run(["bash", str(REPO / "scripts/services.sh"), "start", "mlflow"], check=True,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return env


def pipeline_login(run_dir: Path) -> dict:
    """The stages' MLflow login: the pipeline user services.sh made for this run's own server (its basic-auth
    app refuses anonymous calls), as the DAG's stages log in."""
    password = (run_dir / "mlflow" / "pipeline-credentials").read_text().split("pipeline=", 1)[1].split()[0]
    return {"MLFLOW_TRACKING_USERNAME": "pipeline", "MLFLOW_TRACKING_PASSWORD": password}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["iris", "wide"], default="iris")
    parser.add_argument("--sizes", type=int, nargs="+", help="rows (default: 10k to 10M; wide: 1M and 10M)")
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    sizes = args.sizes or ([1_000_000, 10_000_000] if args.shape == "wide" else
                           [10_000, 100_000, 1_000_000, 10_000_000])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        dataset = wide_dataset_file(tmp) if args.shape == "wide" else None
        services = start_mlflow(tmp / "run", args.port)
        os.environ.update({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{args.port}", **pipeline_login(tmp / "run")})
        try:
            rows_out = []
            for rows in sizes:
                print(f"{rows:>9,} rows ...", file=sys.stderr, flush=True)
                model = f"bench-{uuid.uuid4().hex[:6]}"
                if dataset is None:
                    floor_res = floor(tmp / f"floor-{rows}", rows)
                    our_res = ours(tmp / f"ours-{rows}", rows, model)
                else:
                    our_res, floor_res = wide(tmp, rows, dataset, model)
                rows_out.append((rows, our_res, floor_res))
        finally:
            subprocess.run(["bash", str(REPO / "scripts/services.sh"), "stop"], env={**os.environ, **services},
                           stdout=subprocess.DEVNULL)
    (report if dataset is None else report_wide)(rows_out)


def print_stages(rows: int, stages, our_res: dict, floor_res: dict, width: int) -> None:
    """One line per stage: wall seconds, ratio and peak MiB, ours beside the floor's."""
    for stage in stages:
        (ow, om), (fw, fm) = our_res[stage], floor_res[stage]
        print(f"{rows:>{width},} {stage:<9} {ow:7.2f} {fw:8.2f} {ow / fw:6.2f} {om:9.0f} {fm:9.0f}")


def report(results) -> None:
    print(f"\n{'rows':>9} {'stage':<9} {'ours s':>7} {'floor s':>8} {'ratio':>6} {'ours MiB':>9} {'floor MiB':>9}")
    for rows, our_res, floor_res in results:
        print_stages(rows, STAGES, our_res, floor_res, 9)
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


def report_wide(results) -> None:
    print(f"\nwide: {len(wide_data.FEATURES)} features ({len(wide_data.CATEGORICAL)} categorical, up to "
          f"{max(wide_data.CATEGORICAL.values())} categories), {wide_data.MISSING:.0%} missing, hist_gradient_boosting")
    print(f"{'rows':>10} {'stage':<9} {'ours s':>7} {'floor s':>8} {'ratio':>6} {'ours MiB':>9} {'floor MiB':>9}")
    verdicts = []
    for rows, our_res, floor_res in results:
        print_stages(rows, WIDE_STAGES, our_res, floor_res, 10)
        ot, ft = sum(v[0] for v in our_res.values()), sum(v[0] for v in floor_res.values())
        om, fm = max(v[1] for v in our_res.values()), max(v[1] for v in floor_res.values())
        print(f"{rows:>10,} {'PIPELINE':<9} {ot:7.2f} {ft:8.2f} {ot / ft:6.2f} {om:9.0f} {fm:9.0f}")
        ratio_ok = ot / ft <= WIDE_GOALS["ratio"]
        memory = (f"{'met' if om / 1024 <= WIDE_GOALS['peak_gib'] else 'MISSED'}"
                  if rows == WIDE_GOALS["peak_at_rows"] else f"goal is at {WIDE_GOALS['peak_at_rows']:,} rows")
        verdicts.append(f"verdict {rows:>10,} rows: PIPELINE {ot / ft:.2f}x the floor (goal <= {WIDE_GOALS['ratio']}x: "
                        f"{'met' if ratio_ok else 'MISSED'}), peak {om / 1024:.2f} GiB (floor {fm / 1024:.2f} GiB; "
                        f"goal <= {WIDE_GOALS['peak_gib']:g} GiB: {memory})")
    print("\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
