"""A backfill over three past partitions on a live `airflow standalone`, checked through Airflow's REST API.

The services are started by scripts/services.sh (as `make demo` does), on free ports and a
temporary run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from mlops.hooks.stage import StageHook
from scripts.airflow_cli import airflow_env, run_airflow
from tests import support

from .conftest import REPO

pytestmark = pytest.mark.slow
DAYS = [("2026-11-01", "none"), ("2026-11-02", "none"), ("2026-11-03", "concept")]


@pytest.fixture
def live(tmp_path):
    ports = {name: str(support.free_port()) for name in
             ("MLFLOW_PORT", "ALERTMANAGER_PORT", "PUSHGATEWAY_PORT", "AIRFLOW_PORT", "MLOPS_SERVING_PORT")}
    env = {**os.environ, **ports, "RUN_DIR": str(tmp_path / "run")}
    env.pop("AIRFLOW_HOME", None)
    services = str(REPO / "scripts" / "services.sh")
    try:
        subprocess.run(["bash", services, "start", "mlflow", "alertmanager", "pushgateway", "airflow"], env=env,
                       check=True, capture_output=True, timeout=400)
        yield env
    finally:
        subprocess.run(["bash", services, "stop"], env=env, capture_output=True, timeout=200)


def airflow_cli(env, *args) -> str:
    done = run_airflow(args, airflow_env(env["RUN_DIR"], env))
    assert done.returncode == 0, f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.timeout(900)
def test_backfill_replays_three_partitions(live):
    api = f"http://127.0.0.1:{live['AIRFLOW_PORT']}"
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline")
    for seed, (day, drift) in enumerate(DAYS, 1):
        stages.run("simulate", {"data_root": f"{live['RUN_DIR']}/data", "partition": day, "rows": 900,
                                "drift": drift, "seed": seed}, on_line=lambda _: None)
    password_file = f"{live['RUN_DIR']}/airflow/simple_auth_manager_passwords.json.generated"
    with open(password_file) as handle:
        passwords = json.load(handle)
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": passwords["admin"]}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    deadline = time.monotonic() + 180
    # The DAG must be parsed and serialized before a backfill can be created for it.
    while httpx.get(f"{api}/api/v2/dags/continuous_training", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "the DAG processor never serialized the DAG"
        time.sleep(3)
    airflow_cli(live, "dags", "unpause", "continuous_training")
    airflow_cli(live, "backfill", "create", "--dag-id", "continuous_training", "--from-date", DAYS[0][0],
                "--to-date", DAYS[-1][0], "--max-active-runs", "1")
    deadline = time.monotonic() + 600
    while True:
        runs = httpx.get(f"{api}/api/v2/dags/continuous_training/dagRuns", headers=headers,
                         params={"run_type": "backfill", "order_by": "logical_date"}).json()["dag_runs"]
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill did not finish: {[(r['dag_run_id'], r['state']) for r in runs]}"
        time.sleep(5)
    assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(d, "success") for d, _ in DAYS]

    def states(run):
        tis = httpx.get(f"{api}/api/v2/dags/continuous_training/dagRuns/{run['dag_run_id']}/taskInstances",
                        headers=headers).json()["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    first, second, third = (states(r) for r in runs)
    assert first["training.register"] == "success" and first["deploy"] == "success"
    assert second["skip"] == "success" and second["training.train"] == "skipped"
    assert third["training.register"] == "success" and third["deploy"] == "success"
    served = httpx.get(f"http://127.0.0.1:{live['MLOPS_SERVING_PORT']}/v2/models/iris-classifier").json()
    assert served["parameters"]["registry_version"] == "2"

    # The task links the UI shows, as its REST API serves them.
    def links(run, task_id):
        return httpx.get(f"{api}/api/v2/dags/continuous_training/dagRuns/{run['dag_run_id']}/taskInstances/"
                         f"{task_id}/links", headers=headers).json()["extra_links"]

    deploy_links = links(runs[2], "deploy")
    assert deploy_links["MLflow model version"] == \
        f"http://127.0.0.1:{live['MLFLOW_PORT']}/#/models/iris-classifier/versions/2"
    assert httpx.get(deploy_links["Serving endpoint"]).json()["parameters"]["registry_version"] == "2"
    run_link = links(runs[2], "training.train")["MLflow run"]
    assert httpx.get(run_link.split("#")[0]).status_code == 200 and "/#/runs/" in run_link
    assert links(runs[1], "training.train")["MLflow run"] is None  # skipped: nothing to link
