"""The `airflow` CLI against the local stack that scripts/services.sh starts (same home, folders and
SQLite settings), retried when SQLite refuses a lock upgrade because another Airflow process writes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def airflow_env(run_dir: str | Path, base: dict | None = None) -> dict:
    return {**(base if base is not None else os.environ), "AIRFLOW_HOME": f"{run_dir}/airflow",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlops.local_db.CONNECT_ARGS"}


def run_airflow(args, env: dict, attempts: int = 3) -> subprocess.CompletedProcess:
    for attempt in range(attempts):
        done = subprocess.run([str(REPO / ".venv/airflow/bin/airflow"), *map(str, args)], env=env,
                              capture_output=True, text=True)
        if done.returncode == 0 or "database is locked" not in done.stderr:
            break
        time.sleep(2 * (attempt + 1))
    return done
