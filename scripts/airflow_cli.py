"""Airflow of the local stack that scripts/services.sh starts, as scripts and tests reach it: the `airflow`
CLI (same home, folders and metadata database), retried when SQLite refuses a lock upgrade because another
Airflow process writes; and the REST API, as the admin user Airflow's simple auth manager made."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def metadata_db(run_dir: str | Path) -> dict:
    """How the stack's Airflow reaches its metadata database: the PostgreSQL database services.sh made
    (its credentials in the run folder), else SQLite with a lock wait."""
    postgres = Path(run_dir) / "postgres"
    if (postgres / "credentials").exists():
        password = dict(line.split("=", 1) for line in (postgres / "credentials").read_text().split())["airflow"]
        port = (postgres / "port").read_text().strip()
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow"}
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlops.local_db.CONNECT_ARGS"}


def airflow_env(run_dir: str | Path, base: dict | None = None) -> dict:
    return {**(base if base is not None else os.environ), "AIRFLOW_HOME": f"{run_dir}/airflow",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), **metadata_db(run_dir)}


def run_airflow(args, env: dict, attempts: int = 3) -> subprocess.CompletedProcess:
    for attempt in range(attempts):
        done = subprocess.run([str(REPO / ".venv/airflow/bin/airflow"), *map(str, args)], env=env,
                              capture_output=True, text=True)
        if done.returncode == 0 or "database is locked" not in done.stderr:
            break
        time.sleep(2 * (attempt + 1))
    return done


def admin_password(run_dir: str | Path) -> str | None:
    """The admin password Airflow's simple auth manager generated into the run folder (at the API
    server's first start); None until it has."""
    generated = Path(run_dir) / "airflow" / "simple_auth_manager_passwords.json.generated"
    return json.loads(generated.read_text()).get("admin") if generated.exists() else None


def mlflow_login(run_dir: str | Path, user: str = "admin") -> tuple[str, str] | None:
    """A login that scripts/services.sh made at MLflow's first start (its basic-auth app checks every
    call): the admin's (`admin`, for people) or the pipeline's (`pipeline`, not an admin, what Airflow
    and the stages use); None until it has."""
    values = {}
    for name in ("credentials", "pipeline-credentials"):
        credentials = Path(run_dir) / "mlflow" / name
        if credentials.exists():
            values.update(line.split("=", 1) for line in credentials.read_text().splitlines() if "=" in line)
    return (user, values[user]) if user in values else None


def api_headers(url: str, run_dir: str | Path) -> dict[str, str]:
    """An admin's bearer token for the REST API at `url`, as a request header."""
    import httpx

    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": admin_password(run_dir)},
                       timeout=30)
    return {"Authorization": f"Bearer {token.raise_for_status().json()['access_token']}"}
