"""Drive three daily partitions through the stage CLIs and print what happened.

Each run gets a fresh data volume under .run/demo/ and a model name of its own,
so re-running the demo works and never mixes with earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MLPIPELINE = str(Path(sys.executable).parent / "mlpipeline")
STORY = [  # partition, rows, drift, what the day is
    ("2026-11-01", 1500, "none", "initial clean data"),
    ("2026-11-02", 1500, "none", "another clean batch"),
    ("2026-11-03", 1500, "concept", "concept drift: the labelling changed"),
]
ACCURACY_THRESHOLD = 0.8  # what the DAG's branch will compare with (a DAG Param there)


def stage(*args) -> dict:
    started = time.monotonic()
    proc = subprocess.run([MLPIPELINE, "--quiet", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo failed at `mlpipeline {' '.join(map(str, args))}`:\n{proc.stderr.strip()}")
    print(f"  {args[0]:<12} {time.monotonic() - started:5.1f} s", flush=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(args.data_root or f".run/demo/{stamp}").resolve()
    model = f"iris-demo-{stamp}"
    print(f"data volume {root}\nmodel       {model}\nMLflow      {os.environ['MLFLOW_TRACKING_URI']}\n")
    summary = []
    for seed, (partition, rows, drift, story) in enumerate(STORY, 1):
        print(f"{partition}: {story}")
        common = ["--data-root", root]
        stage("simulate", *common, "--partition", partition, "--rows", rows, "--drift", drift, "--seed", seed)
        stage("ingest", *common, "--partition", partition)
        run_key = stage("split", *common, "--partition", partition)["run_key"]
        detected = stage("detect", *common, "--run-key", run_key, "--model-name", model)
        accuracy = (detected["fresh_metrics"] or {}).get("accuracy")
        retrain = detected["champion"] is None or accuracy < ACCURACY_THRESHOLD
        row = {"partition": partition, "fresh_accuracy": accuracy, "retrain": retrain, "why": detected["reason"]}
        if retrain:
            trained = stage("train-local", *common, "--run-key", run_key, "--model-name", model)
            registered = stage("register", *common, "--run-key", run_key, "--model-name", model)
            row.update(decision=trained["decision"], decision_reason=trained["reason"],
                       version=registered["version"], champion=registered["champion_version"])
        summary.append(row)
    history = stage("champion-at", "--model-name", model)
    print("\nsummary")
    for row in summary:
        accuracy = "n/a" if row["fresh_accuracy"] is None else f"{row['fresh_accuracy']:.3f}"
        print(f"  {row['partition']}  champion accuracy on the fresh batch: {accuracy}")
        if row["retrain"]:
            print(f"    retrained -> v{row['version']} {row['decision']}: {row['decision_reason']}")
        else:
            print(f"    no retraining needed (>= {ACCURACY_THRESHOLD}): {row['why']}")
    print(f"\nchampion now: {model} v{history['champion_version']}")
    for event in history["history"]:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(event['at_ms'] / 1000))} {event['event']} "
              f"v{event['version']} (was {event['previous_version'] or 'none'})")
    print(f"\nMLflow UI: {os.environ['MLFLOW_TRACKING_URI']}/#/models/{model}\nstop services with: make down")


if __name__ == "__main__":
    main()
