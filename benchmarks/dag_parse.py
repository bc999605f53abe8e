"""DAG parse cost: importing dags/continuous_training.py minus a bare `import airflow.sdk`.

The DAG file defines one DAG per dataset file, so it is measured with the repository's dataset folder
(datasets/: one file) and with 20 dataset files (datasets/iris.yaml under 20 names and model names, in a
temporary folder named by `[mlops] datasets_folder`). Budget: at most 10 % of the bare import plus 5 ms per
dataset file.

Each measurement is a fresh interpreter (as the DAG processor's parse is), repeated; prints the
minimums, the extra cost in percent, the budget check and the modules the DAG file adds, and the floor
a DAG of the loop's shape costs in Airflow itself: as many EmptyOperators, with the same Params (Airflow
validates a scheduled DAG's Params against their JSON schemas and deep-copies them once per operator
class level: apache/airflow#32434), beside the same DAGs without Params.
    .venv/airflow/bin/python benchmarks/dag_parse.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DATASET = REPO / "datasets" / "iris.yaml"
MANY = 20
BUDGET_SHARE, BUDGET_PER_DATASET = 0.10, 0.005  # of the bare import; seconds per dataset file
PROBE = """
import json, sys, time
sys.path.insert(0, 'plugins')
t0 = time.perf_counter(); import airflow.sdk; t1 = time.perf_counter()
before = set(sys.modules)
import runpy
dags = []
if {parse} == "dag":
    found = runpy.run_path('dags/continuous_training.py')
    dags = sorted(k for k, v in found.items() if isinstance(v, airflow.sdk.DAG))
elif {parse} == "trivial":
    runpy.run_path('benchmarks/trivial_dag.py')
t2 = time.perf_counter()
floor = {{}}
if {parse} == "floor":  # Airflow's own cost per DAG of the loop's shape: as many EmptyOperators, the same Params
    import copy
    from airflow.providers.standard.operators.empty import EmptyOperator
    ours = next(v for v in runpy.run_path('dags/continuous_training.py').values() if isinstance(v, airflow.sdk.DAG))
    params = {{key: ours.params.get_param(key) for key in ours.params.keys()}}
    for with_params in (False, True):
        started = time.perf_counter()
        for i in range({many}):
            with airflow.sdk.DAG(dag_id=f"floor_{{i}}", schedule="@daily",
                                 params=copy.deepcopy(params) if with_params else None):
                tasks = [EmptyOperator(task_id=f"t{{n}}") for n in range(len(ours.tasks))]
                for upstream, downstream in zip(tasks, tasks[1:]):
                    upstream >> downstream
        floor["with_params" if with_params else "without_params"] = (time.perf_counter() - started) / {many}
    floor.update(tasks=len(ours.tasks), param_count=len(params))
print(json.dumps({{"sdk": t1 - t0, "dag": t2 - t1, "dags": dags, "added": sorted(set(sys.modules) - before),
                  "floor": floor}}))
"""


def measure(parse: str, datasets: Path | None = None) -> dict:
    env = {"AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"}
    if datasets is not None:
        env["AIRFLOW__MLOPS__DATASETS_FOLDER"] = str(datasets)
    out = subprocess.run([sys.executable, "-c", PROBE.format(parse=repr(parse), many=MANY)], cwd=REPO,
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def many_datasets(folder: Path, count: int = MANY) -> Path:
    """The example dataset file under `count` names, each declaring a model of its own (one model, one file)."""
    text = EXAMPLE_DATASET.read_text()
    for i in range(1, count + 1):
        renamed, replaced = re.subn(r"(?m)^model_name:.*$", f"model_name: bench-model-{i:02d}", text)
        assert replaced == 1, "datasets/iris.yaml names no model_name on a line of its own"
        (folder / f"bench_{i:02d}.yaml").write_text(renamed)
    return folder


def budget(sdk: float, datasets: int) -> float:
    return BUDGET_SHARE * sdk + BUDGET_PER_DATASET * datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    bare, trivial, full, many, floors = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="datasets-") as folder:
        datasets = many_datasets(Path(folder))
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits all alike
            bare.append(measure("none"))
            trivial.append(measure("trivial"))
            full.append(measure("dag"))
            many.append(measure("dag", datasets))
            floors.append(measure("floor"))
    one_file = len(full[0]["dags"])
    assert len(many[0]["dags"]) == MANY, f"{MANY} dataset files gave the DAGs {many[0]['dags']}"
    # Each probe times `import airflow.sdk` and the DAG file in the same interpreter, so the ratio is not
    # swamped by start-up noise between processes; the minimum, since noise only ever adds time.
    runs = bare + trivial + full + many
    sdk = min(r["sdk"] for r in runs)
    extra = min(r["dag"] for r in full)
    extra_many = min(r["dag"] for r in many)
    one_task = min(r["dag"] for r in trivial)
    spread = statistics.pstdev(r["sdk"] for r in runs)
    total = sdk + extra
    added = full[0]["added"]
    top = sorted({m.split(".")[0] for m in added})

    def check(cost: float, files: int) -> str:
        allowed = budget(sdk, files)
        return (f"budget 10% + {files} x 5 ms = {allowed * 1000:.1f} ms: "
                f"{'within' if cost <= allowed else 'OVER'}")

    print(f"bare `import airflow.sdk`:            {sdk * 1000:8.1f} ms (min of {len(runs)}; "
          f"run-to-run spread {spread * 1000:.0f} ms)")
    print(f"airflow.sdk + the DAG file:           {total * 1000:8.1f} ms")
    print(f"extra for the DAG file, {one_file} dataset:    {extra * 1000:8.1f} ms = {extra / sdk:.1%} "
          f"({check(extra, one_file)})")
    print(f"extra for the DAG file, {MANY} datasets:  {extra_many * 1000:8.1f} ms = {extra_many / sdk:.1%} "
          f"({check(extra_many, MANY)})")
    print(f"each dataset file beyond the first:   {(extra_many - extra) / (MANY - one_file) * 1000:8.1f} ms")
    print(f"extra for a one-task @daily DAG:      {one_task * 1000:8.1f} ms = {one_task / sdk:.1%}; ours over it: "
          f"{(extra - one_task) * 1000:.1f} ms")
    print(f"modules the DAG file adds: {len(added)} ({', '.join(top)})")
    shape = floors[0]["floor"]
    floor_params, floor_bare = (min(r["floor"][k] for r in floors) for k in ("with_params", "without_params"))
    print(f"Airflow's floor per DAG of this shape ({shape['tasks']} EmptyOperators, the loop's {shape['param_count']} "
          f"Params): {floor_params * 1000:.1f} ms (without the Params {floor_bare * 1000:.1f} ms); "
          f"ours per dataset file over it: {((extra_many - extra) / (MANY - one_file) - floor_params) * 1000:.1f} ms")
    heavy = {"sklearn", "mlflow", "kfp", "kserve", "pandas"} & set(top)
    print(f"heavy modules imported: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
