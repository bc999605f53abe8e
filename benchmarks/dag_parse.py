"""DAG parse cost: importing dags/continuous_training.py minus a bare `import airflow.sdk`.

Each measurement is a fresh interpreter (as the DAG processor's parse is), repeated; prints the
medians, the extra cost in percent and the modules the DAG file adds.
    .venv/airflow/bin/python benchmarks/dag_parse.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
sys.path.insert(0, 'plugins')
t0 = time.perf_counter(); import airflow.sdk; t1 = time.perf_counter()
before = set(sys.modules)
import runpy
if {parse} == "dag":
    runpy.run_path('dags/continuous_training.py')
elif {parse} == "trivial":
    runpy.run_path('benchmarks/trivial_dag.py')
t2 = time.perf_counter()
print(json.dumps({{"sdk": t1 - t0, "dag": t2 - t1, "added": sorted(set(sys.modules) - before)}}))
"""


def measure(parse: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(parse=repr(parse))], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    bare, trivial, full = [], [], []
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits all alike
        bare.append(measure("none"))
        trivial.append(measure("trivial"))
        full.append(measure("dag"))
    # The minimum: start-up noise only ever adds time.
    sdk = min(r["sdk"] + r["dag"] for r in bare)
    total = min(r["sdk"] + r["dag"] for r in full)
    one_task = min(r["sdk"] + r["dag"] for r in trivial)
    spread = statistics.pstdev(r["sdk"] + r["dag"] for r in bare)
    added = full[0]["added"]
    top = sorted({m.split(".")[0] for m in added})
    print(f"bare `import airflow.sdk`:            {sdk * 1000:8.1f} ms (min of {args.repeat}; "
          f"run-to-run spread {spread * 1000:.0f} ms)")
    print(f"airflow.sdk + the DAG file:           {total * 1000:8.1f} ms")
    print(f"extra for the DAG file:               {(total - sdk) * 1000:8.1f} ms = {(total - sdk) / sdk:.1%}")
    print(f"a one-task DAG (what any DAG pays):   {one_task * 1000:8.1f} ms; ours over it: "
          f"{(total - one_task) * 1000:.1f} ms = {(total - one_task) / one_task:.1%}")
    print(f"modules the DAG file adds: {len(added)} ({', '.join(top)})")
    heavy = {"sklearn", "mlflow", "kfp", "kserve", "pandas"} & set(top)
    print(f"heavy modules imported: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
