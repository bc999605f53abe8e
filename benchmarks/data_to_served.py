"""Data-to-served latency on the local target: from a drifted batch landing to the new champion
answering, through the real DAG under dag.test() (real MLflow, kfp.local, mlserving).

A first run (clean data, no champion) sets the stage; the measured run lands a concept-drift batch (a
regression dataset's: a changed coefficient) and times until a v2 inference is answered by the new version.
Prints the time per task. Any of the test datasets (tests/datasets.py: iris, wine, breast-cancer,
cancer-mixed, diabetes, friedman) as its own DAG:
    .venv/airflow/bin/python benchmarks/data_to_served.py [--dataset NAME]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from tests import support  # noqa: E402
from tests.airflow.dag_test import deadline_alerts_decoded  # noqa: E402


def main() -> None:
    import argparse

    import httpx
    import yaml

    from tests import datasets

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="iris", choices=datasets.NAMES)
    name = parser.parse_args().dataset
    tmp = Path(tempfile.mkdtemp(prefix="latency-"))
    model = f"{datasets.load(name).model_name}-latency"
    folder = tmp / "datasets"
    folder.mkdir(parents=True)
    document = {**yaml.safe_load(datasets.dataset_path(name).read_text()), "model_name": model}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    reference = tmp / "reference.parquet"  # pandas: in the pipeline's environment, as the request
    datasets.in_pipeline_environment("write-reference", name, str(reference))
    request = json.loads(datasets.in_pipeline_environment("v2-request", name))
    serving = support.serving_url()
    os.environ.update({"AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                       "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                       "AIRFLOW__MLOPS__TARGET": "local", "AIRFLOW__MLOPS__TASK_RETRIES": "0",
                       "AIRFLOW__MLOPS__DATASETS_FOLDER": str(folder),
                       "AIRFLOW__MLOPS__CANARY_PERCENT": "0",  # measured: the straight swap, no canary window
                       "AIRFLOW__MLOPS__PIPELINE_BIN": str(support.PIPELINE_BIN),
                       "AIRFLOW__MLOPS__SERVING_BIN": str(support.SERVING_BIN),
                       "AIRFLOW_CONN_MLOPS_DATA": json.dumps({"conn_type": "fs",
                                                              "extra": {"path": str(tmp / "volume")}}),
                       "AIRFLOW_CONN_MLSERVING_DEFAULT": serving})
    (tmp / "volume").mkdir(parents=True)
    import subprocess

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import DagBag

    from mlops.hooks.stage import StageHook

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[f"continuous_training_{name}"]
    with support.mlflow_server(tmp) as mlflow_uri, support.alertmanager(tmp) as am, \
            support.pushgateway(tmp) as pgw, deadline_alerts_decoded():
        os.environ.update({"AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_uri, "AIRFLOW_CONN_ALERTMANAGER_DEFAULT": am,
                           "AIRFLOW_CONN_PUSHGATEWAY_DEFAULT": pgw})
        stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": mlflow_uri})
        try:
            regression = name in datasets.REGRESSION  # a changed coefficient, not relabelled classes
            for day, drift in (("2026-11-01", "none"), ("2026-11-02", "coefficient" if regression else "concept")):
                stages.run("simulate", {"data_root": tmp / "volume", "partition": day, "rows": 1000, "drift": drift,
                                        "severity": 1.0 if name == "iris" or regression else 0.5,
                                        "reference": reference, "dataset": folder / f"{name}.yaml"},
                           on_line=lambda _: None)
                started = time.monotonic()  # the batch has landed (its _SUCCESS marker is written)
                dagrun = dag.test(logical_date=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC))
                answer = httpx.post(f"{serving}/v2/models/{model}/infer", json=request).json()
                elapsed = time.monotonic() - started
                print(f"\n{day} ({drift}): batch landed -> v{answer['model_version']} answering: {elapsed:.1f} s "
                      f"(dag run {dagrun.state})")
                in_tasks = 0.0
                for ti in sorted(dagrun.get_task_instances(), key=lambda t: t.start_date or dt.datetime.max.replace(
                        tzinfo=dt.UTC)):
                    if ti.start_date and ti.end_date:
                        seconds = (ti.end_date - ti.start_date).total_seconds()
                        in_tasks += seconds
                        print(f"  {ti.task_id:<26} {seconds:6.1f} s  {ti.state}")
                print(f"  {'(between tasks: Airflow)':<26} {elapsed - in_tasks:6.1f} s")
        finally:
            support.stop_local_serving(tmp / "volume")


if __name__ == "__main__":
    main()
