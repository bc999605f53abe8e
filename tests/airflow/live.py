"""The live stack for the user-path tests: what `make demo` starts (scripts/services.sh: PostgreSQL,
MLflow, Alertmanager, Pushgateway and Airflow's components) on free ports and a run folder of the test's,
with a client that talks to Airflow the way its users do (REST API, CLI)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mlops.hooks.stage import StageHook
from mlpipeline.dataset import load
from scripts.airflow_cli import admin_password, airflow_env, api_headers, mlflow_login, run_airflow
from tests import support

REPO = support.REPO
DAG_ID = "continuous_training_iris"  # datasets/iris.yaml's DAG
MODEL = load(support.EXAMPLE_DATASET).model_name  # its batches: landing/<MODEL>/, curated/<MODEL>/
SERVICES = ("postgres", "mlflow", "alertmanager", "pushgateway", "airflow")


class LiveStack:
    def __init__(self, run_dir: Path, env_overrides: dict[str, str] | None = None):
        # PROMETHEUS_PORT: prometheus_default's, where no Prometheus answers unless a test starts one there
        ports = {name: str(support.free_port()) for name in ("POSTGRES_PORT", "MLFLOW_PORT", "ALERTMANAGER_PORT",
                                                              "PUSHGATEWAY_PORT", "AIRFLOW_PORT", "PROMETHEUS_PORT")}
        # the router, and the ports its plan gives two models (the example and a test's second one)
        ports["MLOPS_SERVING_PORT"] = support.serving_url(models=2).rsplit(":", 1)[1]
        # Retries as the demo has them (the other Airflow tests turn them off for dag.test()).
        # The stack's own dataset folder (the repository's files, copied): a test may add a model to it.
        self.datasets = run_dir / "datasets"
        self.env = {**os.environ, "AIRFLOW__MLOPS__TASK_RETRIES": "2",
                    "AIRFLOW__MLOPS__DATASETS_FOLDER": str(self.datasets),
                    # no traffic here: a canary would only ever be inconclusive (a test asks for one)
                    "AIRFLOW__MLOPS__CANARY_PERCENT": "0",
                    **ports, **(env_overrides or {}),
                    "RUN_DIR": str(run_dir)}
        self.env.pop("AIRFLOW_HOME", None)
        self.run_dir = run_dir
        self.api = f"http://127.0.0.1:{ports['AIRFLOW_PORT']}"
        self.mlflow = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
        self.alertmanager = f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}"
        self.pushgateway = f"127.0.0.1:{ports['PUSHGATEWAY_PORT']}"
        self.serving = f"http://127.0.0.1:{ports['MLOPS_SERVING_PORT']}"
        self.data = run_dir / "data"
        self._headers: dict[str, str] | None = None
        self.landed: dict[str, str] = {}  # partition -> the drift it was landed with

    # -- services ----------------------------------------------------------------------------------------
    def services(self, action: str, *names: str) -> None:
        done = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), action, *names], env=self.env,
                              capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"services.sh {action} {names}: {done.stdout[-1500:]}{done.stderr[-1500:]}"

    def __enter__(self) -> LiveStack:
        try:
            shutil.copytree(REPO / "datasets", self.datasets)
            self.services("start", *SERVICES)
            deadline = time.monotonic() + 240
            # The DAG must be parsed and serialized before runs can be made.
            while self.get(f"/api/v2/dags/{DAG_ID}").status_code != 200:
                assert time.monotonic() < deadline, "the DAG processor never serialized the DAG"
                time.sleep(2)
        except BaseException:  # a failed or interrupted start leaves nothing running (`with` never entered)
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "stop"], env=self.env, capture_output=True,
                       timeout=200)

    def pid(self, service: str) -> int:
        return int((self.run_dir / f"{service}.pid").read_text())

    # -- Airflow, as its users reach it --------------------------------------------------------------------
    @property
    def mlflow_auth(self) -> tuple[str, str]:
        """MLflow's admin login, which every call to the stack's MLflow needs."""
        login = mlflow_login(self.run_dir)
        assert login, f"MLflow made no credentials in {self.run_dir}/mlflow"
        return login

    @property
    def admin_password(self) -> str:
        return admin_password(self.run_dir)

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = api_headers(self.api, self.run_dir)
        return self._headers

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", headers=self.headers if self._headers or "auth" not in path else {},
                         timeout=30, **kwargs)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.api}{path}", headers=self.headers, timeout=30, **kwargs)

    def cli(self, *args) -> str:
        done = run_airflow(args, airflow_env(self.run_dir, self.env))
        assert done.returncode == 0, f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}"
        return done.stdout

    def trigger(self, conf: dict, logical_date: str | None = None, dag_id: str = DAG_ID) -> str:
        answer = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                              json={"logical_date": logical_date or _now(), "conf": conf})
        assert answer.status_code == 200, answer.text
        return answer.json()["dag_run_id"]

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()

    def wait_run(self, run_id: str, timeout: float = 420, dag_id: str = DAG_ID) -> dict:
        deadline = time.monotonic() + timeout
        while (run := self.run(run_id, dag_id))["state"] not in ("success", "failed"):
            assert time.monotonic() < deadline, f"run {run_id} still {run['state']}: {self.tries(run_id, dag_id)}"
            time.sleep(2)
        return run

    def states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str]:
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def tries(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str]:
        """Each task's state and try: a task that failed and was retried shows it."""
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        return {t["task_id"]: f"{t['state']} (try {t['try_number']})" for t in tis}

    def task(self, run_id: str, task_id: str) -> dict:
        return self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}").json()

    def xcom(self, run_id: str, task_id: str, dag_id: str = DAG_ID):
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                          params={"deserialize": "true"})
        return answer.json().get("value") if answer.status_code == 200 else None

    def wait_task(self, run_id: str, task_id: str, states=("running",), timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while (ti := self.task(run_id, task_id)).get("state") not in states:
            assert time.monotonic() < deadline, f"{task_id} of {run_id} never reached {states}: {ti.get('state')}"
            time.sleep(0.5)
        return ti

    def wait_parked(self, run_id: str, task_id: str, try_number: int = 1, timeout: float = 120) -> None:
        """Until the scheduler has read the executor's event for a task's parked run (awaiting_input):
        answered before that, Airflow 3.3.2 fails the resumed task (mlops.operators.approval says why).
        The scheduler says so in its log only."""
        event = (f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{DAG_ID}', "
                 f"task_id='{task_id}', run_id='{run_id}', try_number={try_number},")
        deadline = time.monotonic() + timeout
        while event not in (self.run_dir / "airflow.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, f"the scheduler never read the end of {task_id}'s parked run"
            time.sleep(0.5)

    # -- the data volume, the registry, the model server, the alerts -----------------------------------------
    def land(self, partition: str, drift: str = "none", seed: int = 1, rows: int = 900, dataset: Path | None = None,
             reference: str | None = None, severity: float | None = None) -> None:
        """A batch of the example (or of `dataset`, drawn from `reference`) in its model's landing area;
        `severity`: the drift's (the simulator's default when None)."""
        StageHook(support.PIPELINE_BIN / "mlpipeline").run(
            "simulate", {"data_root": self.data, "partition": partition, "rows": rows, "drift": drift, "seed": seed,
                         "dataset": dataset or support.EXAMPLE_DATASET, "reference": reference,
                         **({"severity": severity} if severity is not None else {})},
            on_line=lambda _: None)
        if dataset is None:
            self.landed[partition] = drift

    def promoting_drift(self, model: str = "iris-classifier") -> str:
        """The drift a new batch needs for the champion to fail on it and a challenger to win: labels the
        other way round from those the champion was trained on."""
        answer = httpx.get(f"{self.mlflow}/api/2.0/mlflow/registered-models/alias", auth=self.mlflow_auth,
                           params={"name": model, "alias": "champion"}).json()["model_version"]
        trained_on = {t["key"]: t["value"] for t in answer.get("tags", [])}["partition"]
        return "none" if self.landed[trained_on] == "concept" else "concept"

    def champion(self, model: str = "iris-classifier") -> str | None:
        answer = httpx.get(f"{self.mlflow}/api/2.0/mlflow/registered-models/alias", auth=self.mlflow_auth,
                           params={"name": model, "alias": "champion"})
        return answer.json()["model_version"]["version"] if answer.status_code == 200 else None

    def versions(self, model: str = "iris-classifier") -> list[str]:
        answer = httpx.get(f"{self.mlflow}/api/2.0/mlflow/model-versions/search", auth=self.mlflow_auth,
                           params={"filter": f"name='{model}'"})
        assert answer.status_code == 200, answer.text[:500]
        found = answer.json().get("model_versions", [])
        return sorted(v["version"] for v in found)

    def promotion_history(self, model: str = "iris-classifier") -> list[dict]:
        """The champion moves the registry recorded (experiment `<model>.promotions`), oldest first."""
        experiment = httpx.get(f"{self.mlflow}/api/2.0/mlflow/experiments/get-by-name", auth=self.mlflow_auth,
                               params={"experiment_name": f"{model}.promotions"}).json()["experiment"]
        runs = httpx.post(f"{self.mlflow}/api/2.0/mlflow/runs/search", auth=self.mlflow_auth, json={
            "experiment_ids": [experiment["experiment_id"]], "order_by": ["attributes.start_time ASC"]}).json()["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in runs]
        return [{"event": t["event"], "version": t["version"]} for t in tags]

    def served_version(self, model: str = "iris-classifier") -> str | None:
        try:
            return httpx.get(f"{self.serving}/v2/models/{model}", timeout=5).json()["parameters"]["registry_version"]
        except httpx.HTTPError:
            return None

    def alerts(self, *matchers: str, active_only: bool = True) -> list[dict]:
        params = {"filter": list(matchers), **({"active": "true"} if active_only else {})}
        return httpx.get(f"{self.alertmanager}/api/v2/alerts", params=params).json()

    def pushed(self, model: str = "iris-classifier") -> dict[str, float]:
        values = {}
        for line in httpx.get(f"http://{self.pushgateway}/metrics").text.splitlines():
            if line.startswith("mlops_") and f'model="{model}"' in line:
                values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
        return values

    def kill_group(self, pid: int) -> None:
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
