"""Contract tests for deploying to KServe: the hook, trigger and operator against an emulated Kubernetes
API (kmock plus apiserver behaviour) with a scripted KServe controller and kubelet. The registry is a
real MLflow server with versions trained by the real pipeline, the predictor a real mlserving process."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from mlops.cluster import ClusterSettings
from mlops.hooks.kserve import KServeHook
from mlops.hooks.stage import StageHook
from mlops.inference_service import inference_service
from mlops.operators.kserve import KServeDeployOperator
from tests import support
from tests.support import first_event

from .cluster_actors import ScriptedKServe, ScriptedKubelet, install_mlflow_config
from .kube_emulator import ISVC, KubeEmulator, kube_connection
from .registry_setup import train_and_register

MODEL = "iris-kserve"
NAMESPACE = "mlops-serving"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # the module fixture starts MLflow and a cluster


def task_context() -> dict:
    """The parts of a task's context the operator and its rollback pod read (pod labels, XCom of the pod name)."""
    ti = SimpleNamespace(dag_id="continuous_training", task_id="deploy", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: None)
    run_id = "manual__2026-11-28T00:00:00+00:00"
    return {"ti": ti, "run_id": run_id, "dag": SimpleNamespace(dag_id="continuous_training"),
            "dag_run": SimpleNamespace(dag_id="continuous_training", run_id=run_id)}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two registry versions of MODEL (v2 the champion), in a real MLflow server."""
    root = tmp_path_factory.mktemp("registry")
    with support.mlflow_server(root) as uri:
        stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": uri})
        assert train_and_register(stages, root / "volume", MODEL, "2026-11-01", "none", 1)["champion_version"] == "1"
        assert train_and_register(stages, root / "volume", MODEL, "2026-11-02", "concept", 2)["champion_version"] \
            == "2"
        yield {"uri": uri, "stages": stages, "root": root}


@pytest.fixture
def cluster(registry, monkeypatch, tmp_path):
    """The emulated API with what the platform installs once (the MLflow ConfigMap the stage pods read),
    a scripted kubelet and a scripted KServe controller (its script set per test step)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    with KubeEmulator() as kube:
        conn_id = kube_connection(monkeypatch, kube.url)
        install_mlflow_config(kube, registry["uri"])
        settings = ClusterSettings(kubernetes_conn_id=conn_id, serving_ready_timeout_seconds=20,
                                   serving_poll_interval_seconds=0.2, startup_timeout_seconds=60,
                                   pod_poll_interval_seconds=0.2)
        with ScriptedKubelet(kube, registry["root"] / "volume", tmp_path / "kubelet") as kubelet, \
                ScriptedKServe(kube, lambda generation: "serve", registry["uri"], tmp_path / "kserve") as kserve:
            yield SimpleNamespace(kube=kube, settings=settings, kubelet=kubelet, kserve=kserve)


def deploy(settings) -> tuple[dict | None, Exception | None]:
    """One deploy task: execute (submit + defer), the trigger in the triggerer, execute_complete."""
    operator = KServeDeployOperator(task_id="deploy", model_name=MODEL, cluster=settings)
    try:
        try:
            return operator.execute(task_context()), None
        except TaskDeferred as deferred:
            event = first_event(deferred.trigger)
            return operator.execute_complete(task_context(), event), None
    except RuntimeError as exc:
        return None, exc


def champion(registry) -> str:
    return registry["stages"].run("champion-at", {"model_name": MODEL}, on_line=lambda _: None)["champion_version"]


def test_first_deploy_update_and_no_op(cluster):
    kube = cluster.kube
    # First deploy: created (201), Ready for generation 1, the smoke test answered by v2.
    result, error = deploy(cluster.settings)
    assert error is None, error
    assert result["version"] == "2" and result["changed"] and result["smoke_test"]["model_version"] == "2"
    stored = kube.stored(ISVC, NAMESPACE, MODEL)
    assert stored["metadata"]["generation"] == 1
    assert stored["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/")
    assert [r.method.value for r in kube.requests(ISVC) if r.method.value in ("POST", "PATCH", "DELETE")] == ["POST"]
    # Deploying the same champion again changes nothing.
    again, error = deploy(cluster.settings)
    assert error is None and again["changed"] is False
    assert kube.stored(ISVC, NAMESPACE, MODEL)["metadata"]["generation"] == 1


def test_update_waits_for_the_new_generation_then_never_ready_rolls_back(cluster, registry):
    kube, settings = cluster.kube, cluster.settings
    # v1 is served first (deployed yesterday).
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(
        inference_service(MODEL, "1", None, "s3://mlflow/v1", settings))
    deadline = time.monotonic() + 60
    while cluster.kserve.served != [("1", 1)]:
        assert time.monotonic() < deadline, "the controller never rolled out v1"
        time.sleep(0.2)
    # The champion is v2: a patch (never delete and re-create), generation 2; the controller takes
    # 2 s, so the trigger must wait for observedGeneration 2 rather than take generation 1's Ready.
    cluster.kserve.script = lambda generation: ("serve", 2.0)
    result, error = deploy(settings)
    assert error is None, error
    assert result["version"] == "2" and result["previous_version"] == "1" and result["generation"] == 2
    writes = [r.method.value for r in kube.requests(ISVC) if r.method.value in ("POST", "PATCH", "DELETE")]
    assert writes == ["POST", "PATCH"]  # v1 created; v2 a patch of it (status is the controller's)
    assert cluster.kserve.served == [("1", 1), ("2", 2)]

    # v1 becomes champion again (a manual promotion) but its revision never gets Ready: after the
    # timeout the spec goes back to v2's, the alias moves back to v2 (a rollback pod), the task fails.
    registry["stages"].run("rollback", {"model_name": MODEL, "to_version": "1", "reason": "test: v1 again"},
                           on_line=lambda _: None)
    cluster.kserve.script = lambda generation: "never"
    result, error = deploy(ClusterSettings(**{**settings.__dict__, "serving_ready_timeout_seconds": 2}))
    assert result is None and "deploy of iris-kserve v1 failed: not Ready for generation 3 within 2 s" in str(error)
    stored = kube.stored(ISVC, NAMESPACE, MODEL)
    assert stored["metadata"]["annotations"]["mlops-ct/registry-version"] == "2"
    assert stored["metadata"]["generation"] == 4  # v2's spec back by a patch, not a delete
    assert champion(registry) == "2"
    rollbacks = [run for run in cluster.kubelet.runs.values() if run["argv"][1] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["returncode"] == 0


def test_a_failed_revision_rolls_back_with_the_controllers_message(cluster, registry):
    result, error = deploy(cluster.settings)
    assert error is None, error
    registry["stages"].run("rollback", {"model_name": MODEL, "to_version": "1", "reason": "test: v1 again"},
                           on_line=lambda _: None)
    cluster.kserve.script = lambda generation: "fail"
    result, error = deploy(cluster.settings)
    assert 'Revision "iris-kserve-predictor-00002" failed with message: model could not be loaded' in str(error)
    assert cluster.kube.stored(ISVC, NAMESPACE, MODEL)["metadata"]["annotations"]["mlops-ct/registry-version"] == "2"
    assert champion(registry) == "2"


def test_a_create_conflict_converges_by_patching(cluster, monkeypatch):
    kube, settings = cluster.kube, cluster.settings
    cluster.kserve.script = lambda generation: "never"
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    hook.apply(inference_service(MODEL, "1", None, "s3://mlflow/v1", settings))
    # Someone else created it between our read and our create: the 409 is answered by a patch.
    real_get, calls = hook.get, []
    monkeypatch.setattr(hook, "get", lambda name: calls.append(name) or (None if len(calls) == 1 else real_get(name)))
    applied, created = hook.apply(inference_service(MODEL, "2", None, "s3://mlflow/v2", settings))
    assert created is False and applied["metadata"]["generation"] == 2
    assert applied["spec"]["predictor"]["model"]["storageUri"] == "s3://mlflow/v2"
    assert [r.method.value for r in kube.requests(ISVC) if r.method.value in ("POST", "PATCH", "DELETE")] == [
        "POST", "POST", "PATCH"]  # create; the second create answered 409; then the patch


def test_the_trigger_ignores_an_old_generations_ready(cluster):
    kube, settings = cluster.kube, cluster.settings
    cluster.kserve.script = lambda generation: "never"
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    hook.apply(inference_service(MODEL, "1", None, "s3://mlflow/v1", settings))
    kube.patch(ISVC, NAMESPACE, MODEL, {"status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True"}]}})
    applied, _ = hook.apply(inference_service(MODEL, "2", None, "s3://mlflow/v2", settings))
    from mlops.triggers.kserve import InferenceServiceReadyTrigger

    event = first_event(InferenceServiceReadyTrigger(MODEL, NAMESPACE, applied["metadata"]["generation"],
                                                     time.time() + 1, settings.kubernetes_conn_id, 0.1))
    assert event == {"status": "timeout", "message": "controller has seen generation 1, waiting for 2", "resume": {}}
