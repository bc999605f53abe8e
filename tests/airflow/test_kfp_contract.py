"""Contract tests for training over the KFP v2beta1 REST API: the hook, trigger and operator against a
local server that checks every request against the published swagger (no KFP backend runs here)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest
from airflow.sdk.exceptions import TaskDeferred

from mlops.hooks.kfp import KfpError, KfpHook, load_pipeline_package
from mlops.operators.kfp_cluster import KfpClusterRunOperator
from mlops.triggers.kfp import KfpRunTrigger
from tests import support
from tests.cluster.kfp import FakeKfp
from tests.support import first_event

from .conftest import cluster_settings, connect

PIPELINE = support.REPO / "images" / "pipeline" / "pipelines" / "training.yaml"


def submit(hook: KfpHook) -> str:
    experiment = hook.get_or_create_experiment("iris")
    return hook.create_run(experiment, "iris rk-1", load_pipeline_package(PIPELINE), {"run_key": "rk-1"})["run_id"]


def test_the_hook_speaks_the_swagger_with_bearer_auth(tmp_path):
    with FakeKfp(token="s3cret") as kfp:
        assert KfpHook(host=kfp.url, token="s3cret").healthz() == {"multi_user": False}
        with pytest.raises(KfpError, match="KFP API refused GET /apis/v2beta1/healthz: HTTP 401 Unauthenticated"):
            KfpHook(host=kfp.url, token="wrong").healthz()
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")  # a projected service-account token, re-read per request
        hook = KfpHook(host=kfp.url, token_path=str(token_file), retries=1)
        first, again = hook.get_or_create_experiment("iris"), hook.get_or_create_experiment("iris")
        assert first == again and kfp.calls.count(("POST", "/apis/v2beta1/experiments")) == 1
        run_id = submit(hook)
        submitted = kfp.runs[run_id]
        # The committed pipeline goes with its platform spec (the PVC mount and the MLflow secret).
        assert set(submitted["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
        assert "pvcMount" in str(submitted["pipeline_spec"]["platform_spec"])
        assert submitted["runtime_config"] == {"parameters": {"run_key": "rk-1"}}
        assert hook.run_url(run_id).endswith(f"/#/runs/details/{run_id}")
        assert kfp.violations == []


def test_a_request_off_the_swagger_is_refused():
    with FakeKfp() as kfp:
        hook = KfpHook(host=kfp.url)
        with pytest.raises(KfpError, match="body does not match the swagger"):
            hook.request_json("POST", "/experiments", body={"display_name": "x", "colour": "red"})
        with pytest.raises(KfpError, match="no operation GET /apis/v2beta1/pipelines"):
            hook.request_json("GET", "/pipelines")
        assert len(kfp.violations) == 2


def test_a_bad_pipeline_package_is_a_clear_error(tmp_path):
    (tmp_path / "p.yaml").write_text("kind: Deployment\n")
    with pytest.raises(KfpError, match="is not a compiled KFP pipeline"):
        load_pipeline_package(tmp_path / "p.yaml")
    with pytest.raises(KfpError, match="cannot read the compiled pipeline"):
        load_pipeline_package(tmp_path / "missing.yaml")


@pytest.mark.parametrize("script, state, error", [
    (["PENDING", "RUNNING", "SUCCEEDED"], "SUCCEEDED", None),
    (["RUNNING", "FAILED"], "FAILED", "train-evaluate-decide: exit code 1: ValueError: no rows"),
    (["RUNNING", "CANCELED"], "CANCELED", "run ended CANCELED"),
    (["SKIPPED"], "SKIPPED", "run ended SKIPPED"),
])
def test_the_trigger_reports_how_the_run_ended(script, state, error):
    with FakeKfp(script=script) as kfp:
        run_id = submit(KfpHook(host=kfp.url))
        event = first_event(KfpRunTrigger(run_id, time.time() + 60, host=kfp.url, poll_interval=0.01))
    assert event == {"status": "done", "run_id": run_id, "state": state, "error": error}


def test_the_trigger_gives_up_on_a_stuck_run_at_its_deadline():
    with FakeKfp(script=["RUNNING"]) as kfp:
        run_id = submit(KfpHook(host=kfp.url))
        event = first_event(KfpRunTrigger(run_id, time.time() + 0.3, host=kfp.url, poll_interval=0.05))
    assert event == {"status": "timeout", "run_id": run_id, "state": "RUNNING"}


def test_an_executor_that_raises_fails_the_run_at_once():
    """The fake backend's own failure must end the run, not leave it RUNNING until the task's timeout."""
    def broken(run):
        raise KeyError("pipeline_spec")

    with FakeKfp(executor=broken) as kfp:
        run_id = submit(KfpHook(host=kfp.url))
        event = first_event(KfpRunTrigger(run_id, time.time() + 30, host=kfp.url, poll_interval=0.05))
    assert event["state"] == "FAILED" and "executor raised KeyError: 'pipeline_spec'" in event["error"]


def test_a_server_that_is_down_is_retried_then_named():
    down = f"http://127.0.0.1:{support.free_port()}"
    hook = KfpHook(host=down, retries=3, backoff_seconds=0.01)
    started = time.monotonic()
    with pytest.raises(KfpError, match=f"KFP API at {down} did not answer after 3 attempt\\(s\\)"):
        hook.healthz()
    assert time.monotonic() - started < 5
    event = first_event(KfpRunTrigger("r-1", time.time() + 60, host=down, poll_interval=0.01))
    assert event["status"] == "error" and "did not answer" in event["message"]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def record_decision(mlflow_uri: str, model: str, run_key: str, decision: str) -> str:
    """What the pipeline's step leaves on its MLflow training run (the contract's
    tags, mlpipeline.contracts), written through MLflow's REST API."""
    from mlpipeline.contracts import TrainingDecision

    api = f"{mlflow_uri}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": model}).json()["experiment_id"]
    run = httpx.post(f"{api}/runs/create", json={"experiment_id": experiment, "tags": [
        {"key": "run_key", "value": run_key}, {"key": "stage", "value": "train"}]}).json()["run"]["info"]["run_id"]
    recorded = TrainingDecision(run_key=run_key, decision=decision, reason="challenger is better",
                                challenger_run_id=run, challenger_model_uri="models:/m-1",
                                challenger_metrics={"accuracy": 0.97}, challenger_accuracy=0.97,
                                champion_version="3", champion_accuracy=0.61, improvement=0.36,
                                mcnemar={"pvalue": 1e-4}, bootstrap_ci95=[0.3, 0.42], kfp_run_id="from-kfp")
    for key, value in recorded.tags().items():
        httpx.post(f"{api}/runs/set-tag", json={"run_id": run, "key": key, "value": value}).raise_for_status()
    return run


def kfp_operator(monkeypatch, kfp, mlflow_uri, model="iris-kfp"):
    connect(monkeypatch, kfp_test=f'{{"conn_type": "http", "host": "{kfp.url}"}}', mlflow_default=mlflow_uri)
    cluster = cluster_settings(kfp_conn_id="kfp_test", kfp_poll_interval_seconds=0.01, kfp_run_timeout_seconds=30)
    return KfpClusterRunOperator(task_id="train", run_key="rk-7", model_name=model, cluster=cluster, deferrable=True)


def test_the_operator_submits_defers_and_returns_the_recorded_decision(monkeypatch, mlflow_uri):
    with FakeKfp() as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        run_id = deferred.value.trigger.run_id
        submitted = kfp.runs[run_id]["runtime_config"]["parameters"]
        # The steps read the tracking URI from the cluster's ConfigMap (the Airflow side's may differ).
        assert submitted["run_key"] == "rk-7" and submitted["mlflow_tracking_uri"] == ""
        assert submitted["data_pvc"] == "mlops-data" and submitted["mlflow_config_map"] == "mlops-mlflow"
        event = first_event(deferred.value.trigger)
        challenger = record_decision(mlflow_uri, "iris-kfp", "rk-7", "promote")
        result = operator.execute_complete({}, event)
    # The whole decision, as the local target's kfp.local run returns it (the contract), with this run's id.
    assert result["decision"] == "promote" and result["kfp_run_id"] == run_id and result["engine"] == "kfp"
    assert result["challenger_run_id"] == challenger and result["challenger_metrics"] == {"accuracy": 0.97}
    assert result["mcnemar"] == {"pvalue": 1e-4} and result["bootstrap_ci95"] == [0.3, 0.42]
    assert result["champion_version"] == "3" and result["improvement"] == 0.36
    assert operator.link_urls["KFP run"] == f"{kfp.url}/#/runs/details/{run_id}"
    runs_table = operator.link_urls["MLflow runs"]  # the decision's run, in its experiment's runs table
    assert runs_table.startswith(f"{mlflow_uri}/#/experiments/")
    assert runs_table.endswith("/runs?workflowType=machine_learning")
    assert operator.link_urls["MLflow run"] == runs_table.replace("/runs?", f"/runs/{challenger}?")
    assert kfp.violations == []


def test_the_operator_fails_with_the_runs_own_error_and_terminates_a_stuck_run(monkeypatch, mlflow_uri):
    with FakeKfp(script=["RUNNING", "FAILED"], run_error="train-evaluate-decide: OOMKilled") as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        event = first_event(deferred.value.trigger)
        with pytest.raises(RuntimeError, match="FAILED: train-evaluate-decide: OOMKilled"):
            operator.execute_complete({}, event)
    with FakeKfp(script=["RUNNING"]) as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        run_id = deferred.value.trigger.run_id
        with pytest.raises(RuntimeError, match="still RUNNING after 30 s; terminated it"):
            operator.execute_complete({}, {"status": "timeout", "run_id": run_id, "state": "RUNNING"})
        assert ("POST", f"/apis/v2beta1/runs/{run_id}:terminate") in kfp.calls
        assert kfp.runs[run_id]["state"] == "CANCELING"


def test_a_succeeded_run_without_a_recorded_decision_fails_clearly(monkeypatch, mlflow_uri):
    with FakeKfp(script=["SUCCEEDED"]) as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri, model="iris-nodecision")
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        with pytest.raises(RuntimeError, match="MLflow has no training decision for iris-nodecision run key rk-7"):
            operator.execute_complete({}, first_event(deferred.value.trigger))


def test_killing_the_task_terminates_the_run(monkeypatch, mlflow_uri):
    with FakeKfp(script=["RUNNING"]) as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        with pytest.raises(TaskDeferred):
            operator.execute({})
        operator.on_kill()
        assert kfp.runs[operator.kfp_run_id]["state"] == "CANCELING"


def test_killing_the_deferred_task_terminates_the_run_from_the_triggerer():
    with FakeKfp(script=["RUNNING"]) as kfp:
        run_id = submit(KfpHook(host=kfp.url))
        asyncio.run(KfpRunTrigger(run_id, time.time() + 60, host=kfp.url).on_kill())
        assert kfp.runs[run_id]["state"] == "CANCELING"
        assert ("POST", f"/apis/v2beta1/runs/{run_id}:terminate") in kfp.calls and kfp.violations == []


def test_the_submitted_pipeline_takes_the_clusters_settings(monkeypatch, mlflow_uri):
    """The image, data volume, user and names the stage pods get from [mlops_kubernetes] reach the KFP
    steps too: the compiled YAML's defaults are replaced in what is submitted."""
    custom = {"pipeline_image": "registry.local/pipeline:9", "data_pvc": "lake", "data_mount": "/lake",
              "run_as_user": 2000, "mlflow_secret": "s3-keys", "mlflow_config_map": "tracking",
              "image_pull_policy": "Always", "node_selector": {"pool": "training"}}
    with FakeKfp() as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        operator.cluster = dataclasses.replace(operator.cluster, **{**custom})
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        run = kfp.runs[deferred.value.trigger.run_id]
    parameters = run["runtime_config"]["parameters"]
    assert (parameters["data_pvc"], parameters["data_root"], parameters["mlflow_secret"],
            parameters["mlflow_config_map"]) == ("lake", "/lake", "s3-keys", "tracking")
    spec, platform = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.local/pipeline:9"}
    steps = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    for step in steps:
        assert [m["mountPath"] for m in step["pvcMount"]] == ["/lake"]
        assert step["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "data_pvc"}
        assert step["secretAsEnv"][0]["secretNameParameter"] == {"componentInputParameter": "mlflow_secret"}
        assert step["configMapAsEnv"][0]["configMapNameParameter"] == {"componentInputParameter": "mlflow_config_map"}
        assert step["securityContext"] == {"runAsUser": "2000", "runAsGroup": "2000", "runAsNonRoot": True}
        assert step["imagePullPolicy"] == "Always" and step["nodeSelector"] == {"labels": {"pool": "training"}}
    assert kfp.violations == []


def test_runs_that_land_in_another_namespace_never_start(cluster, monkeypatch, mlflow_uri, tmp_path):
    """KFP creates a run's pods in its own namespace (single-user: where KFP is installed). The data
    claim exists only in `mlops`, and a dynamically provisioned volume binds one claim only, so a
    same-named claim elsewhere cannot share its data: the step's pod is never scheduled, the run stays
    RUNNING, and the task terminates it at its timeout. Hence docs/deploy.md runs KFP's pipelines in
    `mlops`; the whole-DAG test runs them there."""
    from tests.cluster.kfp import ContainerBackend

    with FakeKfp(executor=ContainerBackend(cluster, "kubeflow", tmp_path)) as kfp:
        operator = kfp_operator(monkeypatch, kfp, mlflow_uri)
        operator.cluster = dataclasses.replace(operator.cluster, **{"kfp_run_timeout_seconds": 2})
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
        event = first_event(deferred.value.trigger)
        assert event["status"] == "timeout" and event["state"] == "RUNNING"
        with pytest.raises(RuntimeError, match="still RUNNING after 2 s; terminated it"):
            operator.execute_complete({}, event)
        deadline = time.monotonic() + 10
        while kfp.runs[event["run_id"]]["state"] != "CANCELED":
            assert time.monotonic() < deadline, kfp.runs[event["run_id"]]["state"]
            time.sleep(0.1)
