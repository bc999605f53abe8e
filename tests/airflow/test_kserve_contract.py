"""Contract tests for deploying to KServe, on the emulated cluster (tests/cluster): the operator, hook and
trigger against the emulated API and KServe controller, which run the real thing underneath. The
registry is the cluster's MLflow (k8s-yaml/mlflow/deployment.yaml) with versions trained and registered
by the pipeline image's own stages, run as pods; the artifacts live in S3; KServe's own storage code
copies them into the predictor, which is the serving image's mlserving."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from mlops.hooks.kserve import KServeHook
from mlops.inference_service import inference_service
from mlops.operators.deploy import ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO
from mlops.operators.kserve import KServeDeployOperator
from mlops.operators.stage_pod import StagePodOperator
from mlops.settings import KubernetesSettings
from tests.cluster.apiserver import DEPLOYMENTS, ISVC, PODS, kube_connection
from tests.cluster.cluster import MLFLOW_CONNECTION, PIPELINE_IMAGE
from tests.support import first_event

from .conftest import cluster_settings, connect
from .dag_test import dataset_text

NAMESPACE = "mlops-serving"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def task_context(pushed: dict | None = None) -> dict:
    """The parts of a task's context the operator and a stage pod read (pod labels, XCom pushes)."""
    pushed = {} if pushed is None else pushed
    ti = SimpleNamespace(dag_id="continuous_training", task_id="deploy", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value))
    run_id = "manual__2026-11-28T00:00:00+00:00"
    return {"ti": ti, "run_id": run_id, "dag": SimpleNamespace(dag_id="continuous_training"),
            "dag_run": SimpleNamespace(dag_id="continuous_training", run_id=run_id)}


def train_and_register(cluster, model: str, partition: str, drift: str, seed: int) -> dict:
    """One version of `model`, made by the pipeline image's stages as pods on the cluster."""
    name = f"{model}-{partition}"
    given = {"dataset_content": dataset_text(model_name=model), "dataset_name": "iris"}
    cluster.stage(f"{name}-simulate", "simulate", partition=partition, rows=600, drift=drift, seed=seed, **given)
    cluster.stage(f"{name}-ingest", "ingest", partition=partition, **given)
    run_key = cluster.stage(f"{name}-split", "split", partition=partition, **given)["run_key"]
    cluster.stage(f"{name}-train", "train-local", run_key=run_key, model_name=model)
    return cluster.stage(f"{name}-register", "register", run_key=run_key, model_name=model)


@pytest.fixture(scope="module")
def registry(cluster):
    """Two versions of each test model, v2 (concept-drifted labels) the champion."""
    for model in ("iris-kserve", "iris-raw"):
        assert train_and_register(cluster, model, "2026-10-11", "none", 1)["champion_version"] == "1"
        assert train_and_register(cluster, model, "2026-10-12", "concept", 2)["champion_version"] == "2"
    return cluster


@pytest.fixture
def settings(registry, monkeypatch) -> KubernetesSettings:
    connect(monkeypatch, mlflow_default=MLFLOW_CONNECTION)
    conn_id = kube_connection(monkeypatch, registry.kube.url, xcom_sidecar_container_image=PIPELINE_IMAGE)
    return cluster_settings(kubernetes_conn_id=conn_id, serving_ready_timeout_seconds=240,
                           serving_poll_interval_seconds=0.3, startup_timeout_seconds=120,
                           pod_poll_interval_seconds=0.3)


def deploy(settings: KubernetesSettings, model: str) -> tuple[dict | None, Exception | None]:
    """One deploy task: execute (submit + defer), the trigger in the triggerer, execute_complete; a failure
    is followed, as in the DAG, by roll_back_champion: the pipeline's rollback stage as a pod, with the
    plan the deploy recorded."""
    operator = KServeDeployOperator(task_id="deploy", model_name=model, cluster=settings, deferrable=True)
    plan: dict = {}
    try:
        try:
            return operator.execute(task_context(plan)), None
        except TaskDeferred as deferred:
            event = first_event(deferred.trigger)
            return operator.execute_complete(task_context(plan), event), None
    except (RuntimeError, AirflowFailException) as exc:
        if plan:
            StagePodOperator(task_id="roll_back_champion", stage="rollback", cluster=settings, deferrable=False,
                             options={"data_root": None, "model_name": model, "to_version": plan[ROLLBACK_TO],
                                      "from_version": plan[ROLLBACK_FROM], "reason": plan[ROLLBACK_REASON]}
                             ).execute(task_context())
        return None, exc


def champion(cluster, model: str, name: str) -> str:
    return cluster.stage(name, "champion-at", model_name=model)["champion_version"]


def writes(kube, model: str) -> list[str]:
    """The plugins' writes to `model`'s InferenceService, in order (server-side applies are PATCHes, the
    one that creates it too)."""
    return [r.method.value for r in kube.requests(ISVC) if r.method.value in ("POST", "PATCH", "DELETE")
            and (r.name or (r.data or {}).get("metadata", {}).get("name")) == model]


def infer(url: str, model: str) -> dict:
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}, timeout=10).json()


def test_serverless_deploy_update_rollback_and_a_failed_revision(registry, settings):
    kube, model = registry.kube, "iris-kserve"
    # First deploy: created, the storage initializer copies v2's artifacts from S3, the predictor's env
    # names the registry version, and the smoke test (through the InferenceService's own address) is
    # answered by v2.
    result, error = deploy(settings, model)
    assert error is None, error
    assert result["version"] == "2" and result["changed"] and result["smoke_test"]["model_version"] == "2"
    stored = kube.stored(ISVC, NAMESPACE, model)
    assert stored["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/")
    predictor = stored["status"]["components"]["predictor"]
    assert predictor["latestReadyRevision"] == predictor["latestCreatedRevision"] == f"{model}-predictor-00001"
    # Deploying the same champion again changes nothing.
    again, error = deploy(settings, model)
    assert error is None and again["changed"] is False
    assert writes(kube, model) == ["PATCH"]

    # v1 becomes champion again (a manual promotion): a patch, a new revision; the old one served
    # until the new one was ready, then the traffic moved.
    assert champion(registry, model, "champ-a") == "2"
    registry.stage("promote-v1", "rollback", model_name=model, to_version=1, from_version=2,
                   reason="test: v1 again")
    result, error = deploy(settings, model)
    assert error is None, error
    assert result["version"] == "1" and result["previous_version"] == "2"
    assert infer(result["endpoint"].rsplit("/v2/", 1)[0], model)["model_version"] == "1"
    assert writes(kube, model) == ["PATCH", "PATCH"]
    assert kube.stored(ISVC, NAMESPACE, model)["status"]["components"]["predictor"]["latestRolledoutRevision"] == \
        f"{model}-predictor-00002"

    # v2 again, but its revision cannot be ready within 1 s: the spec goes back to v1's (a patch,
    # never a delete), the task fails, and roll_back_champion moves the alias back to v1 (a pod).
    registry.stage("promote-v2", "rollback", model_name=model, to_version=2, from_version=1, reason="test: v2 again")
    result, error = deploy(dataclasses.replace(settings, **{"serving_ready_timeout_seconds": 1}), model)
    assert result is None and f"deploy of {model} v2 failed: not rolled out and ready by the deadline" in str(error)
    assert kube.stored(ISVC, NAMESPACE, model)["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    assert writes(kube, model) == ["PATCH", "PATCH", "PATCH", "PATCH"]
    assert champion(registry, model, "champ-b") == "1"
    rollbacks = [p for p in kube.list(PODS, "mlops") if p["metadata"]["name"].startswith("mlpipeline-rollback")]
    assert rollbacks == []  # succeeded rollback pods are deleted


def test_a_failed_revision_rolls_back_with_the_controllers_message(registry, settings):
    """The storage initializer finds no model at the location: KServe reports it at once in modelStatus
    (ModelLoadFailed, the initializer's own message), a wrong location is not tried again, traffic never
    left the old revision."""
    kube, model = registry.kube, "iris-kserve"
    result, error = deploy(settings, model)  # whatever the previous test left: ensure the champion is served
    assert error is None, error
    served = result["version"]
    broken = dataclasses.replace(settings, artifact_store_root="s3://mlflow/no-such-prefix")
    other = "2" if served == "1" else "1"
    registry.stage(f"promote-v{other}-again", "rollback", model_name=model, to_version=other, from_version=served,
                   reason="test: broken")
    result, error = deploy(broken, model)
    assert result is None
    assert "the model failed to load (ModelLoadFailed, exit code 1): " in str(error) and "No model found" in str(error)
    assert "mlops-ct/retry-of" not in kube.stored(ISVC, NAMESPACE, model)["metadata"]["annotations"]
    stored = kube.stored(ISVC, NAMESPACE, model)
    assert stored["metadata"]["annotations"]["mlops-ct/registry-version"] == served
    assert infer(stored["status"]["address"]["url"], model)["model_version"] == served
    assert champion(registry, model, "champ-c") == served


def test_raw_deployment_mode_waits_for_the_deployment_rollout(registry, settings):
    kube, model = registry.kube, "iris-raw"
    raw = dataclasses.replace(settings, **{"serving_deployment_mode": "RawDeployment"})
    result, error = deploy(raw, model)
    assert error is None, error
    assert result["smoke_test"]["model_version"] == "2"
    assert result["endpoint"].startswith(f"http://{model}-predictor.{NAMESPACE}.svc.cluster.local/v2/")
    deployment = kube.stored(DEPLOYMENTS, NAMESPACE, f"{model}-predictor")
    assert deployment["status"]["updatedReplicas"] == 1
    registry.stage("raw-promote-v1", "rollback", model_name=model, to_version=1, from_version=2,
                   reason="test: v1 again")
    result, error = deploy(raw, model)
    assert error is None, error
    assert result["smoke_test"]["model_version"] == "1"
    assert kube.stored(DEPLOYMENTS, NAMESPACE, f"{model}-predictor")["metadata"]["generation"] == 2


def test_an_apply_creates_or_converges_without_reading_first(registry, settings):
    """A server-side apply needs no read before it: the first creates (201), the next one changes the
    live object to the new intent, whoever created it in between; the webhook's fields stay."""
    kube, model = registry.kube, "iris-conflict"
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    first, created = hook.apply(inference_service(model, "1", None, "s3://mlflow/v1", settings))
    assert created and first["metadata"]["generation"] == 1
    applied, created = hook.apply(inference_service(model, "2", None, "s3://mlflow/v2", settings))
    assert created is False and applied["metadata"]["generation"] == 2
    assert applied["spec"]["predictor"]["model"]["storageUri"] == "s3://mlflow/v2"
    assert applied["metadata"]["annotations"]["modelFormat"] == settings.serving_model_format
    assert writes(kube, model) == ["PATCH", "PATCH"]


def test_readiness_is_not_fooled_by_the_copied_observed_generation(registry, settings):
    """kserve#6081: status.observedGeneration is the Knative Service's. After a change that moves the
    Knative Service but not the InferenceService's generation (labels, annotations), the old test,
    observedGeneration >= generation with Ready True, passed at once, before the new revision existed."""
    from mlops.inference_service import as_config, readiness, rollout_marker
    from mlops.triggers.kserve import InferenceServiceReadyTrigger

    kube, model = registry.kube, "iris-kserve"
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    current = hook.get(model)
    assert readiness(current, None, "Serverless")[0] is True  # served and rolled out
    before = rollout_marker(current, None, "Serverless")
    relabelled = {**current, "metadata": {**current["metadata"],
                                          "labels": {**current["metadata"]["labels"], "team": "fraud"}}}
    applied, _ = hook.apply(as_config(relabelled))
    assert applied["metadata"]["generation"] == current["metadata"]["generation"]  # metadata only
    status = applied["status"]
    assert status["observedGeneration"] >= applied["metadata"]["generation"]  # the old check: "ready"
    assert readiness(applied, before, "Serverless")[0] is None  # ours: the new revision is not even there
    started = time.monotonic()
    event = first_event(InferenceServiceReadyTrigger(model, NAMESPACE, before, "Serverless", time.time() + 240,
                                                     settings.kubernetes_conn_id, 0.3))
    assert event["status"] == "ready", event
    predictor = kube.stored(ISVC, NAMESPACE, model)["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] != before and time.monotonic() - started > 1
