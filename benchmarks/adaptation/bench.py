"""Does the loop keep the model good? Prequential evaluation of the continuous-training loop on drift streams.

Each stream (streams.py) lands partition after partition in a data volume and goes through the loop's own
stages, as the DAG runs them on the local target: ingest, split, detect (the champion scored on the fresh
batch before its labels train anything: the prequential score), the DAG's retraining rule
(mlops.branch_callables.retraining_reasons with the DAG's Param defaults: the dataset file's metric bound and
DRIFT_LIMIT), the compiled KFP training pipeline under kfp.local, and register (which moves the champion when
the training run decided to promote), against a real `mlflow server` this script starts. Not run: Airflow's
scheduling and the deployment to a model server, which add seconds per partition and decide nothing.

Baselines, from the same splits (the loop's train sets) and the same estimator, fitted in this process:
never retrain after the first model; retrain and deploy every partition; every PERIOD partitions; an oracle
that retrains exactly at the declared drift points; and river's Adaptive Random Forest learning row by row,
scored prequentially on the same rows. The loop's champion is checked against the in-process fit of the
same partition (the same predictions): the baselines are the loop's models, not look-alikes.

    .venv/adaptation/bin/python benchmarks/adaptation/bench.py [--fresh-seeds] [--streams NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

# One OpenMP thread per process: the loop's fits (and its kfp.local steps, which inherit this) run beside the
# ARF process on a 2-core machine, where a second thread only spins against it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent), str(REPO / "plugins")]

import pipeline_stages as stage_benchmark  # noqa: E402
from report import write_results  # noqa: E402
from streams import STREAMS, TUNING_SEEDS, Stream  # noqa: E402

from mlops.branch_callables import retraining_reasons  # noqa: E402  (the DAG's rule, Airflow-free)
from mlops.settings import DRIFT_LIMIT  # noqa: E402  (the DAG's drift_limit Param default)

PERIOD = 5
FIRST_PARTITION = dt.date(2026, 1, 1)
METRIC_MIN = 0.6  # every stream's dataset file: the floor a first model must reach (metric.min)


def dataset_file(stream: Stream, folder: Path) -> Path:
    """The dataset file a user would write for the stream: hist-gradient boosting on accuracy, window last:1."""
    doc = {
        "model_name": f"adapt-{stream.name}",
        "description": stream.description.split("\n")[0],
        "label": {"column": "label", "task": "classification"},
        "features": [{"name": f.name, "type": "categorical" if f.categorical else "numeric"}
                     for f in stream.features],
        "source": {"format": "csv"},
        "model": {"estimator": "hist_gradient_boosting"},
        "metric": {"name": "accuracy", "min": METRIC_MIN},
        "schedule": "@daily",
        "window": "last:1",
    }
    path = folder / f"{doc['model_name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start_mlflow(run_dir: Path, port: int) -> dict:
    """A real MLflow server as `make up` starts it (the stage benchmark's), the stages logged in as its pipeline
    user; returns the environment services.sh stops it with."""
    services = stage_benchmark.start_mlflow(run_dir, port)
    os.environ.update({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", **stage_benchmark.pipeline_login(run_dir)})
    return services


@contextlib.contextmanager
def output_to(log: Path):
    """The process's stdout and stderr (file descriptors: kfp.local's step subprocesses inherit them) into `log`
    for the block; the log's tail is printed when the block fails."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_loop(stream: Stream, frames: list, work: Path) -> dict:
    """Every partition through the loop's stages; the baselines' models fitted on the same splits."""
    from mlpipeline.config import run_config
    from mlpipeline.dataset import load
    from mlpipeline.detect import detect
    from mlpipeline.ingest import ingest_partition
    from mlpipeline.kfp_local import run_training_locally
    from mlpipeline.model import fit
    from mlpipeline.register import register_run
    from mlpipeline.split import load_set, split_partition
    from mlpipeline.volume import DataVolume

    dataset = load(dataset_file(stream, work))
    volume = DataVolume(work / "volume", dataset.model_name)
    config = run_config(dataset)
    loop, fits, fresh_sets = [], [], []
    for t in range(stream.partitions):
        partition = (FIRST_PARTITION + dt.timedelta(days=t)).isoformat()
        landing = volume.landing(partition)
        landing.mkdir(parents=True, exist_ok=True)
        frames[t].to_csv(landing / f"batch-{t:03d}.csv", index=False)
        (landing / "_SUCCESS").write_bytes(b"")
        ingest_partition(volume, partition, dataset)
        run_key = split_partition(volume, partition, dataset, config)["run_key"]
        found = detect(volume, run_key, dataset.model_name)
        reasons = retraining_reasons(found, dataset.metric_threshold, DRIFT_LIMIT, False, dataset.metric,
                                     dataset.metric_direction)
        step = {"partition": t, "fresh_score": found["fresh_score"], "reasons": reasons,
                "degradation": found.get("degradation"), "retrained": bool(reasons), "promoted": False,
                "decision": None, "loop_seconds": 0.0}
        if reasons:
            started = time.perf_counter()
            with output_to(work / "training.log"):
                trained = run_training_locally(volume, run_key, dataset.model_name,
                                               os.environ["MLFLOW_TRACKING_URI"], "bench-adaptation",
                                               f"{stream.name}-{t}")
                registered = register_run(volume, run_key, dataset.model_name,
                                          {"airflow_dag_id": "bench-adaptation",
                                           "airflow_run_id": f"{stream.name}-{t}",
                                           "kfp_run_id": trained.get("kfp_run_id", ""), "approved_by": ""})
            step.update(decision=trained["decision"], promoted=registered["promotion"] is not None,
                        loop_seconds=time.perf_counter() - started, reason=trained.get("reason"))
        loop.append(step)
        started = time.perf_counter()
        model = fit(load_set(volume, run_key, "train"), dataset)
        fits.append((model, time.perf_counter() - started))
        fresh_sets.append(load_set(volume, run_key, "fresh"))
        print(f"  {stream.name} {t:>2}: fresh {_fmt(step['fresh_score'])}"
              f"{'  retrain: ' + '; '.join(reasons) if reasons else ''}"
              f"{'  -> ' + step['decision'] + ': ' + step['reason'] if step['decision'] else ''}", file=sys.stderr,
              flush=True)
    return {"dataset": dataset, "loop": loop, "fits": fits, "fresh": fresh_sets}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


class Scores:
    """Each partition's model scored on later partitions' fresh rows, computed once."""

    def __init__(self, dataset, fits, fresh_sets):
        from mlpipeline.evaluate import score_labelled
        from mlpipeline.model import model_inputs, targets

        self._score = lambda model, frame: score_labelled(dataset, targets(frame, dataset),
                                                          model.predict(model_inputs(frame, dataset)),
                                                          list(dataset.classes) or sorted(
                                                              targets(frame, dataset).unique()))[dataset.metric]
        self.fits, self.fresh, self._cache = fits, fresh_sets, {}

    def __call__(self, trained_on: int, partition: int) -> float:
        key = (trained_on, partition)
        if key not in self._cache:
            self._cache[key] = self._score(self.fits[trained_on][0], self.fresh[partition])
        return self._cache[key]


def baseline(scores: Scores, partitions: int, retrain_at) -> dict:
    """A policy that retrains (and deploys) at the partitions `retrain_at(t)` says, always from partition 0."""
    serving, served, retrains, false_promotions, seconds = 0, [], [], 0, scores.fits[0][1]
    for t in range(1, partitions):
        served.append(scores(serving, t))
        if retrain_at(t):
            retrains.append(t)
            seconds += scores.fits[t][1]
            if t + 1 < partitions and scores(t, t + 1) < scores(serving, t + 1):
                false_promotions += 1
            serving = t
    return {"scores": served, "retrains": retrains, "promotions": list(retrains), "false_promotions": false_promotions,
            "fit_seconds": seconds}


def ours(run: dict, scores: Scores, partitions: int) -> dict:
    """The loop's own record; its champion at each partition is matched to the in-process fit of its partition."""
    loop, serving, served, mismatches, false_promotions = run["loop"], None, [], 0, 0
    seconds = 0.0
    for step in loop:
        t = step["partition"]
        if t > 0:
            served.append(step["fresh_score"])
            mismatches += abs(step["fresh_score"] - scores(serving, t)) > 1e-9
        if step["retrained"]:
            seconds += scores.fits[t][1]
        if step["promoted"]:
            if serving is not None and t + 1 < partitions and scores(t, t + 1) < scores(serving, t + 1):
                false_promotions += 1
            serving = t
    retrains = [s["partition"] for s in loop if s["retrained"] and s["partition"] > 0]
    return {"scores": served, "retrains": retrains,
            "promotions": [s["partition"] for s in loop if s["promoted"] and s["partition"] > 0],
            "false_promotions": false_promotions, "fit_seconds": seconds,
            "loop_seconds": sum(s["loop_seconds"] for s in loop), "mismatches": mismatches}


def arf(stream: Stream, frames: list, seed: int) -> dict:
    """river's Adaptive Random Forest (its defaults), learning every row after predicting it (prequential), on
    the same rows; run in a process of its own beside the loop."""
    from river import forest

    model = forest.ARFClassifier(seed=seed)
    names = [f.name for f in stream.features]
    categorical = {f.name for f in stream.features if f.categorical}
    served, seconds = [], 0.0
    for t, frame in enumerate(frames):
        started, right = time.perf_counter(), 0
        for row, label in zip(frame[names].to_dict("records"), frame["label"].astype(str), strict=True):
            row = {k: (str(v) if k in categorical else v) for k, v in row.items()}
            right += model.predict_one(row) == label
            model.learn_one(row, label)
        seconds += time.perf_counter() - started
        if t > 0:
            served.append(right / len(frame))
    return {"scores": served, "retrains": None, "promotions": None, "false_promotions": None,
            "fit_seconds": seconds}


def delays(stream: Stream, retrains: list[int]) -> list[int | None]:
    """Partitions from each declared abrupt drift to the loop's first retrain at or after it (None: missed,
    before the next drift or the end)."""
    if stream.kind != "abrupt":
        return []
    out = []
    for i, drift in enumerate(stream.drifts):
        end = stream.drifts[i + 1] if i + 1 < len(stream.drifts) else stream.partitions
        found = [t - drift for t in retrains if drift <= t < end]
        out.append(found[0] if found else None)
    return out


def stream_frames(stream: Stream, seed: int) -> list:
    partition_rows = stream.make(seed, stream.rows)
    return [partition_rows(t) for t in range(stream.partitions)]


def evaluate_stream(stream: Stream, seed: int, frames: list, online, work: Path) -> dict:
    """The loop and the baselines on one stream; `online` is the ARF run's future."""
    started = time.perf_counter()
    run = run_loop(stream, frames, work)
    scores = Scores(run["dataset"], run["fits"], run["fresh"])
    n = stream.partitions
    drift_points = set(stream.drifts)
    policies = {
        "loop": ours(run, scores, n),
        "never": baseline(scores, n, lambda t: False),
        "every": baseline(scores, n, lambda t: True),
        f"every {PERIOD}": baseline(scores, n, lambda t: t % PERIOD == 0),
        "oracle": baseline(scores, n, lambda t: t in drift_points),
    }
    policies["river ARF"] = online.result()
    loop = policies["loop"]
    return {"stream": stream, "seed": seed, "policies": policies, "delays": delays(stream, loop["retrains"]),
            "decisions": [s for s in run["loop"] if s["retrained"]], "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-seeds", action="store_true", help="draw new seeds (printed) instead of the tuned ones")
    parser.add_argument("--streams", nargs="+", choices=[s.name for s in STREAMS], help="a subset (default: all)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results, or "
                                                 "build/adaptation-fresh-seeds with --fresh-seeds)")
    parser.add_argument("--port", type=int, default=5098)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    streams = [s for s in STREAMS if not args.streams or s.name in args.streams]
    draw = random.SystemRandom()
    seeds = {s.name: draw.randrange(1, 10**6) if args.fresh_seeds else TUNING_SEEDS[s.name] for s in streams}
    print("seeds: " + ", ".join(f"{name} {seed}" for name, seed in seeds.items()), file=sys.stderr)
    out = args.out or (REPO / "build/adaptation-fresh-seeds" if args.fresh_seeds else REPO / "benchmarks/results")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-adaptation-") as tmp:
        tmp = Path(tmp)
        services = start_mlflow(tmp / "run", args.port)
        try:
            results = []
            frames = {s.name: stream_frames(s, seeds[s.name]) for s in streams}
            # river's ARF (one core, row by row: the longest part) runs every stream in a process of its own
            # while the loop takes the streams in turn on the other core.
            with ProcessPoolExecutor(1) as pool:
                online = {s.name: pool.submit(arf, s, frames[s.name], seeds[s.name]) for s in streams}
                for stream in streams:
                    work = tmp / stream.name
                    work.mkdir()
                    results.append(evaluate_stream(stream, seeds[stream.name], frames[stream.name],
                                                   online[stream.name], work))
        finally:
            subprocess.run(["bash", str(REPO / "scripts/services.sh"), "stop"], env={**os.environ, **services},
                           stdout=subprocess.DEVNULL)
    passed = write_results(results, out, fresh_seeds=args.fresh_seeds, seconds=time.perf_counter() - started)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
