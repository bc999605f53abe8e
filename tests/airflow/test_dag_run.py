"""dag.test() runs of the whole loop on the local target: a real MLflow server, real kfp.local trainings,
a real mlserving process, a real Alertmanager and Pushgateway."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from mlops.hooks.stage import StageHook
from tests import support

from .conftest import REPO
from .dag_test import dataset_file, dataset_text
from .test_dag import parse_dag

MODEL = "iris-dagtest"
pytestmark = pytest.mark.slow


@pytest.fixture
def env(stack, local_target, monkeypatch):
    from .conftest import connect

    serving = support.serving_url()
    connect(monkeypatch, mlflow_default=stack["mlflow"], mlserving_default=serving,
            alertmanager_default=stack["alertmanager"], pushgateway_default=stack["pushgateway"])
    yield local_target, serving
    support.stop_local_serving(local_target)


@pytest.fixture
def dag(datasets):
    """The example's DAG, from a dataset file of the test's own model (its registry, landing area and
    served model apart from other tests')."""
    dataset_file(datasets, model_name=MODEL)
    return parse_dag()


def land(root, stack, day, drift="none", rows=900, seed=1, model=MODEL):
    StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]}).run(
        "simulate", {"data_root": root, "partition": day, "rows": rows, "drift": drift, "seed": seed,
                     "dataset_content": dataset_text(model_name=model), "dataset_name": "iris"},
        on_line=lambda _: None)


def pushed(stack, name: str, model: str = MODEL) -> float:
    """What the last run's report pushed for the model."""
    return next(float(line.split()[-1]) for line in httpx.get(f"{stack['pushgateway']}/metrics").text.splitlines()
                if line.startswith(f"{name}{{") and f'model="{model}"' in line)


def run(dag, day: str, **conf):
    dagrun = dag.test(logical_date=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC), run_conf=conf)
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def xcom(dagrun, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.scalars(XComModel.get_many(run_id=dagrun.run_id, task_ids=task_id, key=key,
                                                   dag_ids=dagrun.dag_id)).first()
        return XComModel.deserialize_value(found) if found else None


@pytest.mark.timeout(600)
def test_the_loop_trains_skips_retrains_and_alerts(dag, env, stack):
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
    (root / "landing" / MODEL / "2026-11-04").mkdir(parents=True)
    (root / "landing" / MODEL / "2026-11-04" / "broken.csv").write_bytes(b"sepal_length;sepal_width\n1;2\n")
    (root / "landing" / MODEL / "2026-11-04" / "_SUCCESS").touch()
    dagrun, states = run(dag, "2026-11-04")
    assert dagrun.state == "failed" and states["data.ingest"] == "failed"
    alerts = httpx.get(f"{stack['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="AirflowTaskFailed"', 'task_id="data.ingest"']}).json()
    assert alerts, "no alert reached Alertmanager"
    assert "yielded no usable data" in alerts[0]["annotations"]["error"]
    assert alerts[0]["labels"]["dag_id"] == "continuous_training_iris"
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


@pytest.mark.timeout(600)
def test_shifted_live_traffic_retrains_with_live_drift_as_the_reason(datasets, env, stack, monkeypatch, tmp_path):
    """A real Prometheus scrapes the model server the deploy started; the traffic it then answers is
    shifted on every feature while the next labelled batch is not: only live drift calls for training."""
    import random

    from .conftest import connect

    root, serving = env
    model = "iris-live-drift"
    dataset_file(datasets, model_name=model)
    dag = parse_dag()
    counted = f'sum(increase(mlserving_feature_value_count{{model="{model}",feature="petal_length"}}[2m]))'
    with support.prometheus(tmp_path, [], file_sd=support.model_server_targets(root)) as prometheus:
        connect(monkeypatch, prometheus_default=prometheus)
        land(root, stack, "2026-11-01", seed=11, model=model)
        dagrun, states = run(dag, "2026-11-01", live_drift_window="2m")
        assert dagrun.state == "success" and states["deploy"] == "success", states
        assert xcom(dagrun, "detect_degradation")["live_drift"] is None  # no champion to compare with yet
        # The series are scraped before the traffic (increase() counts growth, not a series' first value).
        assert support.wait_scraped(prometheus, f'mlserving_feature_value_count{{model="{model}"}}', bool)
        rng = random.Random(5)
        for _ in range(3):  # 300 rows, every feature 3 cm larger than the iris the champion was trained on
            rows = [max(0.2, rng.gauss(mean, sd)) + 3.0 for _ in range(100)
                    for mean, sd in ((5.8, 0.8), (3.0, 0.4), (3.8, 1.7), (1.2, 0.7))]
            answer = httpx.post(f"{serving}/v2/models/{model}/infer", json={"inputs": [
                {"name": "features", "shape": [100, 4], "datatype": "FP64", "data": rows}]})
            assert answer.status_code == 200, answer.text
        scraped = support.wait_scraped(prometheus, counted, lambda r: bool(r) and float(r[0]["value"][1]) >= 290)
        assert scraped and float(scraped[0]["value"][1]) >= 290, scraped

        land(root, stack, "2026-11-02", seed=12, model=model)  # the same iris as day 1: the labelled checks pass
        dagrun, states = run(dag, "2026-11-02", live_drift_window="2m")
    assert dagrun.state == "success" and states["training.train"] == "success", states
    live = xcom(dagrun, "detect_degradation")["live_drift"]
    assert live["status"] == "measured" and sorted(live["drifted_features"]) == [
        "petal_length", "petal_width", "sepal_length", "sepal_width"], live
    reasons = xcom(dagrun, "decide_retraining", "reasons")
    assert len(reasons) == 1 and reasons[0].startswith("live drift: drifted feature share 1.00"), reasons
    assert xcom(dagrun, "report")["retraining_reasons"] == reasons
    assert pushed(stack, "mlops_live_drift_share", model) == 1  # what the LiveTrafficDrift alert reads


@pytest.mark.timeout(600)
def test_a_dataset_with_categorical_features_and_missing_values_runs_the_whole_loop(datasets, env, stack, tmp_path):
    """Not iris: tests/datasets/cancer-mixed.yaml (numeric and categorical features, some missing, JSON lines
    batches, classes learned) as a DAG of its own, trained, served with BYTES inputs, retrained on drift."""
    import yaml

    from tests import datasets as test_datasets

    root, serving = env
    model = "cancer-mixed-dagtest"
    document = {**yaml.safe_load(test_datasets.dataset_path("cancer-mixed").read_text()), "model_name": model}
    (datasets / "cancer-mixed.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    dag = parse_dag("continuous_training_cancer-mixed")
    assert set(dag.tags) >= {"mlops", model}
    reference = tmp_path / "reference.parquet"  # built with pandas, in the pipeline's environment
    test_datasets.in_pipeline_environment("write-reference", "cancer-mixed", str(reference))
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]})
    given = {"data_root": root, "dataset": datasets / "cancer-mixed.yaml", "reference": reference, "rows": 900}

    stages.run("simulate", {**given, "partition": "2026-11-01", "seed": 1}, on_line=lambda _: None)
    dagrun, states = run(dag, "2026-11-01")
    assert dagrun.state == "success" and states["deploy"] == "success", states
    assert next((root / "landing" / model / "2026-11-01").glob("*.jsonl"))
    metadata = httpx.get(f"{serving}/v2/models/{model}").json()
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        f.name: "FP64" if f.numeric else "BYTES" for f in test_datasets.load("cancer-mixed").features}
    request = {"inputs": [
        {"name": "mean_radius", "shape": [2], "datatype": "FP64", "data": [14.1, None]},
        {"name": "mean_texture", "shape": [2], "datatype": "FP64", "data": [19.3, 21.0]},
        {"name": "worst_concave_points", "shape": [2], "datatype": "FP64", "data": [0.11, 0.2]},
        {"name": "area_band", "shape": [2], "datatype": "BYTES", "data": ["mid", "high"]},
        {"name": "smoothness_band", "shape": [2], "datatype": "BYTES", "data": [None, "low"]},
        {"name": "compactness_band", "shape": [2], "datatype": "BYTES", "data": ["low", "high"]},
        {"name": "concavity_grade", "shape": [2], "datatype": "BYTES", "data": ["moderate", "never-seen"]}]}
    answer = httpx.post(f"{serving}/v2/models/{model}/infer", json=request)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1" and set(answer.json()["outputs"][0]["data"]) <= {"malignant", "benign"}
    wrong = httpx.post(f"{serving}/v2/models/{model}/infer", json={"inputs": [
        {**i, "datatype": "FP64", "data": [1.0, 2.0]} if i["name"] == "area_band" else i for i in request["inputs"]]})
    assert wrong.status_code == 400 and "area_band" in wrong.text

    stages.run("simulate", {**given, "partition": "2026-11-02", "seed": 2, "drift": "concept", "severity": 0.5},
               on_line=lambda _: None)
    dagrun, states = run(dag, "2026-11-02")
    assert dagrun.state == "success" and states["training.register"] == "success", states
    assert xcom(dagrun, "detect_degradation")["metric"] == "accuracy"
    assert httpx.post(f"{serving}/v2/models/{model}/infer", json=request).json()["model_version"] == "2"


@pytest.mark.timeout(600)
def test_what_an_http_pull_fetched_is_recorded_on_the_training_run_and_the_version(datasets, env, stack, monkeypatch,
                                                                                   tmp_path):
    """A dataset file whose source is http: pull_batch fetches the run's partition from a real HTTP server, and
    what it fetched reaches, through split's manifest, the MLflow training run and the registered version."""
    import hashlib
    import http.server
    import threading

    from .conftest import connect

    model, day = "iris-http-dagtest", "2026-11-01"
    land(tmp_path / "scratch", stack, day, seed=21, model=model)  # the batch the server answers with
    [drawn] = (tmp_path / "scratch" / "landing" / model / day).glob("*.csv")
    body = drawn.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, answer = (200, body) if self.path == f"/batches/{day}.csv" else (404, b"no such batch")
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connect(monkeypatch, data_server=json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                     "port": server.server_port, "schema": "http"}))
        dataset_file(datasets, "served", model_name=model, source={
            "kind": "http", "conn_id": "data_server", "endpoint": "/batches/{partition}.csv", "format": "csv"})
        dagrun, states = run(parse_dag("continuous_training_served"), day)
    finally:
        server.shutdown()
    assert dagrun.state == "success" and states["pull_batch"] == "success", states
    assert states["training.register"] == "success", states

    pulled = xcom(dagrun, "pull_batch")
    expected = {"pull.kind": "http", "pull.conn_id": "data_server", "pull.endpoint": f"/batches/{day}.csv",
                "pull.file": f"pull-{hashlib.sha256(body).hexdigest()[:16]}.csv", "pull.bytes": str(len(body)),
                "pull.sha256": hashlib.sha256(body).hexdigest()}
    assert pulled["file"] == expected["pull.file"]
    registered = xcom(dagrun, "training.register")
    version = httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/model-versions/get",
                        params={"name": model, "version": registered["version"]}).json()["model_version"]
    training_run = httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/runs/get",
                             params={"run_id": version["run_id"]}).json()["run"]
    for tags in (version["tags"], training_run["data"]["tags"]):
        tags = {t["key"]: t["value"] for t in tags}
        assert {k: v for k, v in tags.items() if k.startswith("pull.")} == expected
        assert tags["airflow_run_id"] == dagrun.run_id and tags["partition"] == day
