"""dag.test() runs of the whole loop on the local target: a real MLflow server, real kfp.local trainings,
a real mlserving process, a real Alertmanager and Pushgateway."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal

import httpx
import pytest

from mlops.hooks.stage import StageHook
from tests import support

from .conftest import REPO
from .test_dag import dag  # noqa: F401  (fixture)

MODEL = "iris-dagtest"
pytestmark = pytest.mark.slow


@pytest.fixture
def env(stack, local_target, monkeypatch):
    from .conftest import connect

    serving = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, mlflow_default=stack["mlflow"], mlserving_default=serving,
            alertmanager_default=stack["alertmanager"], pushgateway_default=stack["pushgateway"])
    yield local_target, serving
    for pidfile in (local_target / "serving").glob("*/mlserving.pid"):
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)


def land(root, stack, day, drift="none", rows=900, seed=1):
    StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]}).run(
        "simulate", {"data_root": root, "partition": day, "rows": rows, "drift": drift, "seed": seed},
        on_line=lambda _: None)


def pushed(stack, name: str) -> float:
    """What the last run's report pushed for the test model."""
    return next(float(line.split()[-1]) for line in httpx.get(f"{stack['pushgateway']}/metrics").text.splitlines()
                if line.startswith(f"{name}{{") and f'model="{MODEL}"' in line)


def run(dag, day: str):  # noqa: F811
    dagrun = dag.test(logical_date=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC),
                      run_conf={"model_name": MODEL})
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


@pytest.mark.timeout(600)
def test_the_loop_trains_skips_retrains_and_alerts(dag, env, stack):  # noqa: F811
    root, serving = env

    land(root, stack, "2026-11-01", seed=1)
    dagrun, states = run(dag, "2026-11-01")
    assert dagrun.state == "success", states
    assert states["training.register"] == "success" and states["deploy"] == "success"
    assert states["no_retraining"] == "skipped" and states["roll_back_champion"] == "skipped"
    first = httpx.get(f"{serving}/v2/models/{MODEL}").json()
    assert first["parameters"]["registry_version"] == "1"
    assert pushed(stack, "mlops_promoted") == 1 and pushed(stack, "mlops_champion_version") == 1

    land(root, stack, "2026-11-02", seed=2)
    dagrun, states = run(dag, "2026-11-02")
    assert dagrun.state == "success" and states["no_retraining"] == "success" and states["training.train"] == "skipped"
    assert pushed(stack, "mlops_promoted") == 0 and pushed(stack, "mlops_champion_version") == 1

    land(root, stack, "2026-11-03", drift="concept", seed=3)
    dagrun, states = run(dag, "2026-11-03")
    assert dagrun.state == "success" and states["deploy"] == "success", states
    answer = httpx.post(f"{serving}/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}).json()
    assert answer["model_version"] == "2"
    assert pushed(stack, "mlops_promoted") == 1
    assert answer["outputs"][0]["data"] == ["versicolor"]  # concept drift rotated setosa -> versicolor
    documented = json.loads((REPO / "docs" / "iris-v2-request.json").read_text())  # the guide's sample request
    answer = httpx.post(f"{serving}/v2/models/{MODEL}/infer", json=documented).json()
    assert answer["id"] == "docs-example" and len(answer["outputs"][0]["data"]) == 2
    assert pushed(stack, "mlops_champion_version") == 2
    duration = pushed(stack, "mlops_run_duration_seconds")
    assert 1 < duration < 600  # from the sensor's start, not dag.test()'s logical-date start date

    # A corrupt batch fails ingest with the stage's message, alerts, and changes nothing stored.
    curated_before, registry_before = support.tree_snapshot(root / "curated"), httpx.get(
        f"{stack['mlflow']}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}).json()
    (root / "landing" / "2026-11-04").mkdir(parents=True)
    (root / "landing" / "2026-11-04" / "broken.csv").write_bytes(b"sepal_length;sepal_width\n1;2\n")
    (root / "landing" / "2026-11-04" / "_SUCCESS").touch()
    dagrun, states = run(dag, "2026-11-04")
    assert dagrun.state == "failed" and states["data.ingest"] == "failed"
    alerts = httpx.get(f"{stack['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="AirflowTaskFailed"', 'task_id="data.ingest"']}).json()
    assert alerts, "no alert reached Alertmanager"
    assert "yielded no usable data" in alerts[0]["annotations"]["error"]
    assert alerts[0]["labels"]["dag_id"] == "continuous_training"
    # The failed run alerts once for the DAG (the DAG's on_failure_callback), beside the task's alert.
    [run_alert] = httpx.get(f"{stack['alertmanager']}/api/v2/alerts",
                            params={"filter": ['alertname="AirflowDagRunFailed"']}).json()
    assert "task_id" not in run_alert["labels"] and run_alert["annotations"]["run_id"] == dagrun.run_id
    failures = httpx.get(f"{stack['pushgateway']}/metrics").text
    assert f'mlops_last_failure_timestamp_seconds{{instance="",job="continuous_training",model="{MODEL}"}}' in failures
    assert f'mlops_champion_version{{instance="",job="continuous_training",model="{MODEL}"}} 2' in failures  # kept
    assert support.tree_snapshot(root / "curated") == curated_before
    registry_after = httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/registered-models/get",
                               params={"name": MODEL}).json()
    assert registry_after["registered_model"]["aliases"] == registry_before["registered_model"]["aliases"]
