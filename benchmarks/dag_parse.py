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
    # Each probe times `import airflow.sdk` and the DAG file in the same interpreter, so the ratio is not
    # swamped by start-up noise between processes; the minimum, since noise only ever adds time.
    sdk = min(r["sdk"] for r in bare + trivial + full)
    extra = min(r["dag"] for r in full)
    one_task = min(r["dag"] for r in trivial)
    spread = statistics.pstdev(r["sdk"] for r in bare + trivial + full)
    total = sdk + extra
    added = full[0]["added"]
    top = sorted({m.split(".")[0] for m in added})
    print(f"bare `import airflow.sdk`:            {sdk * 1000:8.1f} ms (min of {3 * args.repeat}; "
          f"run-to-run spread {spread * 1000:.0f} ms)")
    print(f"airflow.sdk + the DAG file:           {total * 1000:8.1f} ms")
    print(f"extra for the DAG file:               {extra * 1000:8.1f} ms = {extra / sdk:.1%} (budget: at most 10%: "
          f"{'within' if extra / sdk <= 0.10 else 'OVER'})")
    print(f"extra for a one-task @daily DAG:      {one_task * 1000:8.1f} ms = {one_task / sdk:.1%}; ours over it: "
          f"{(extra - one_task) * 1000:.1f} ms")
    print(f"modules the DAG file adds: {len(added)} ({', '.join(top)})")
    heavy = {"sklearn", "mlflow", "kfp", "kserve", "pandas"} & set(top)
    print(f"heavy modules imported: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
