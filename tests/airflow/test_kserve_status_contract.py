"""Contract tests of what KServe v0.20, Knative Serving and the API server do with an InferenceService the
deploy task writes, and of how the KServe backend decides from it, on the emulated API server and KServe
controller (tests/cluster) without containers: this test plays the kubelet, setting each predictor pod's
status as a kubelet reports it (a Ready pod, or a storage initializer that ended in Error).

- KServe's defaulting webhook (inference_service_defaults.go) runs on every write: the deployment mode's
  deprecated names rewritten, the `modelFormat` annotation and, with the security config's
  autoMountServiceAccountToken false, `automountServiceAccountToken: false`;
- the hook server-side applies (field manager mlops-ct): the webhook's fields survive every deploy, the
  fields we stop sending go, another manager's change is a conflict unless forced;
- a rollout is Ready Unknown until its revision is ready; a storage initializer that failed is KServe's
  modelStatus at once (BlockedByFailedLoad, ModelLoadFailed) and Knative's RevisionFailed only after the
  revision's progress deadline;
- the backend: a download that broke off gets one new revision before a rollback; a wrong location fails
  at once naming KServe's reason and restores what was served."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from kubernetes import client

from mlops.hooks.kserve import KServeHook
from mlops.inference_service import inference_service, readiness, rollout_marker
from mlops.operators.deploy import ROLLBACK_REASON, ROLLBACK_TO
from mlops.operators.kserve import KServeDeployOperator, KServeServingBackend
from mlops.triggers.kserve import InferenceServiceReadyTrigger
from tests.cluster.apiserver import ISVC, PODS, KubeEmulator, kube_connection
from tests.cluster.kserve import KServeController
from tests.support import first_event

from .conftest import REPO, cluster_settings
from .test_kserve_contract import task_context

NAMESPACE = "mlops-serving"
MODEL = "iris-status"
NOT_FOUND = "RuntimeError: Failed to fetch model. No model found in 1/models/m-2/artifacts."
UNREACHABLE = "RuntimeError: Failed to connect to S3 endpoint 'mlflow'."


@pytest.fixture
def kube():
    with KubeEmulator() as emulated:
        emulated.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        emulated.create(yaml.safe_load((REPO / "k8s-yaml" / "kserve" / "cluster-serving-runtime.yaml").read_text()))
        yield emulated


@pytest.fixture
def kserve(kube):
    # a hardened install's inferenceservice-config (security.autoMountServiceAccountToken: false) and a
    # progress deadline of 2 s in place of Knative's 600 s
    with KServeController(kube, "storage-initializer:test", auto_mount_service_account_token=False,
                          progress_deadline_seconds=2) as controller:
        yield controller


@pytest.fixture
def settings(kube, monkeypatch):
    conn_id = kube_connection(monkeypatch, kube.url)
    return cluster_settings(kubernetes_conn_id=conn_id, serving_poll_interval_seconds=0.1,
                            serving_ready_timeout_seconds=20)


def version(settings, number: str, canary_percent: int | None = None) -> dict:
    return inference_service(MODEL, number, f"run-{number}", f"s3://mlflow/1/models/m-{number}/artifacts", settings,
                             canary_percent)


def wait_for(found, timeout: float = 10, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)
    return result


def revision_pod(kube, revision: str) -> dict:
    return wait_for(lambda: next((p for p in kube.list(PODS, NAMESPACE)
                                  if p["metadata"]["labels"].get("serving.knative.dev/revision") == revision), None),
                    what=f"a pod of {revision}")


def conditions(kube) -> dict[str, dict]:
    return {c["type"]: c for c in (kube.stored(ISVC, NAMESPACE, MODEL).get("status") or {}).get("conditions") or []}


def run_pod(kube, pod: dict) -> None:
    """As the kubelet reports a pod whose storage initializer completed and whose server is Ready."""
    name = pod["metadata"]["name"]
    kube.patch(PODS, NAMESPACE, name, {"status": {
        "phase": "Running", "podIP": "10.213.0.9",
        "conditions": [{"type": c, "status": "True"} for c in ("PodScheduled", "Initialized", "ContainersReady",
                                                               "Ready")],
        "initContainerStatuses": [{"name": "storage-initializer", "ready": True, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "kserve-container", "ready": True, "restartCount": 0, "started": True,
                               "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]}})


def fail_storage_initializer(kube, pod: dict, message: str) -> None:
    """As the kubelet reports it: the init container in Error with its log's tail as the termination
    message (terminationMessagePolicy FallbackToLogsOnError), the server waiting behind it."""
    kube.patch(PODS, NAMESPACE, pod["metadata"]["name"], {"status": {
        "phase": "Pending", "podIP": "10.213.0.10",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "False"},
                       {"type": "ContainersReady", "status": "False"}, {"type": "Ready", "status": "False"}],
        "initContainerStatuses": [{"name": "storage-initializer", "ready": False, "restartCount": 0, "state": {
            "terminated": {"exitCode": 1, "reason": "Error", "message": f"Traceback ...\n{message}\n"}}}],
        "containerStatuses": [{"name": "kserve-container", "ready": False, "restartCount": 0,
                               "state": {"waiting": {"reason": "PodInitializing"}}}]}})


def serving_v1(kube, settings) -> dict:
    """v1 created and rolled out: what is served before each test's change."""
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(version(settings, "1"))
    run_pod(kube, revision_pod(kube, f"{MODEL}-predictor-00001"))
    wait_for(lambda: conditions(kube).get("Ready", {}).get("status") == "True", what="v1 Ready")
    return kube.stored(ISVC, NAMESPACE, MODEL)


# -- the webhook and server-side apply ------------------------------------------------------------------
def test_the_defaulting_webhook_rewrites_the_old_mode_names_and_adds_kserves_fields(kube, kserve, settings):
    custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=kube.url)))
    old_names = version(settings, "1")
    old_names["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"  # before v0.20
    created = custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices",
                                                     old_names)
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert created["metadata"]["annotations"]["modelFormat"] == "mlflow-sklearn"
    assert created["spec"]["predictor"]["automountServiceAccountToken"] is False
    raw = version(dataclasses.replace(settings, serving_deployment_mode="RawDeployment"), "1")
    raw["metadata"].update(name="iris-raw-webhook")
    raw["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    stored = custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", raw)
    assert stored["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    # KServe does not copy the modelFormat annotation onto the pod (ServiceAnnotationDisallowedList)
    pod = revision_pod(kube, f"{MODEL}-predictor-00001")
    assert "modelFormat" not in pod["metadata"]["annotations"]
    assert pod["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"


def test_an_apply_keeps_the_webhooks_fields_and_drops_the_ones_we_no_longer_send(kube, kserve, settings):
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    first, created = hook.apply(version(settings, "1", canary_percent=20))
    assert created and first["spec"]["predictor"]["canaryTrafficPercent"] == 20
    second, created = hook.apply(version(settings, "2"))
    assert not created
    predictor = second["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # ours before, not sent now: gone
    assert predictor["automountServiceAccountToken"] is False  # the webhook's: kept
    assert second["metadata"]["annotations"]["modelFormat"] == "mlflow-sklearn"
    assert second["metadata"]["annotations"]["mlops-ct/registry-version"] == "2"
    assert second["metadata"]["generation"] == 2
    managers = {(e["manager"], e["operation"]) for e in second["metadata"]["managedFields"]}
    assert managers == {("mlops-ct", "Apply")}
    # what went over the wire: the intent alone, the mode by its current name, nothing nulled
    sent = [r for r in kube.requests(ISVC) if r.method.value == "PATCH" and r.name == MODEL][-1]
    assert sent.headers["Content-Type"] == "application/apply-patch+yaml"
    assert sent.params["fieldManager"] == "mlops-ct" and sent.params["force"].lower() == "true"
    assert sent.data["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert "modelFormat" not in sent.data["metadata"]["annotations"] and None not in sent.data["metadata"][
        "annotations"].values()
    # Applying the same intent again changes nothing: no new generation, no new revision.
    third, _ = hook.apply(version(settings, "2"))
    assert third["metadata"]["generation"] == 2
    assert third["metadata"]["annotations"] == second["metadata"]["annotations"]


def test_an_apply_conflicts_with_another_managers_change_unless_forced(kube, kserve, settings):
    hook = KServeHook(settings.kubernetes_conn_id, NAMESPACE)
    hook.apply(version(settings, "1"))
    api = client.ApiClient(client.Configuration(host=kube.url))
    custom = client.CustomObjectsApi(api)
    # someone scales it by hand (kubectl edit's field manager)
    custom.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL,
                                          {"spec": {"predictor": {"minReplicas": 3}}}, field_manager="kubectl-edit")
    with pytest.raises(client.ApiException) as conflict:
        custom.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL,
                                              version(settings, "2"), field_manager="mlops-ct",
                                              _content_type="application/apply-patch+yaml")
    assert conflict.value.status == 409
    status = json.loads(conflict.value.body)
    assert status["reason"] == "Conflict" and status["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using serving.kserve.io/v1beta1: '
        ".spec.predictor.minReplicas")
    assert [c["field"] for c in status["details"]["causes"]] == [".spec.predictor.minReplicas"]
    assert kube.stored(ISVC, NAMESPACE, MODEL)["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    applied, _ = hook.apply(version(settings, "2"))  # the deploy forces: the model's spec is the deploy's
    assert applied["spec"]["predictor"]["minReplicas"] == settings.serving_min_replicas
    owners = {e["manager"]: e["fieldsV1"] for e in applied["metadata"]["managedFields"]}
    assert "f:minReplicas" in owners["mlops-ct"]["f:spec"]["f:predictor"] and "kubectl-edit" not in owners


def test_an_apply_without_a_field_manager_is_refused_and_changes_nothing(kube, kserve, settings):
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(version(settings, "1"))
    before = kube.stored(ISVC, NAMESPACE, MODEL)
    custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=kube.url)))
    with pytest.raises(client.ApiException) as refused:
        custom.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL,
                                              version(settings, "2"), _content_type="application/apply-patch+yaml")
    assert refused.value.status == 422 and "fieldManager: Required value" in json.loads(refused.value.body)["message"]
    assert kube.stored(ISVC, NAMESPACE, MODEL) == before


# -- the rollout's statuses --------------------------------------------------------------------------------
def test_a_rollout_is_ready_unknown_until_its_revision_is_ready(kube, kserve, settings):
    before = rollout_marker(serving_v1(kube, settings), None, "Serverless")
    assert kube.stored(ISVC, NAMESPACE, MODEL)["status"]["modelStatus"]["transitionStatus"] == "UpToDate"
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(version(settings, "2"))
    pod = revision_pod(kube, f"{MODEL}-predictor-00002")
    wait_for(lambda: conditions(kube).get("Ready", {}).get("status") == "Unknown", what="Ready Unknown")
    assert conditions(kube)["PredictorReady"]["status"] == "Unknown"
    isvc = kube.stored(ISVC, NAMESPACE, MODEL)
    assert isvc["status"]["modelStatus"]["transitionStatus"] == "InProgress"
    assert readiness(isvc, before, "Serverless") == (None, f"revision {MODEL}-predictor-00002 is not ready yet")
    run_pod(kube, pod)
    wait_for(lambda: readiness(kube.stored(ISVC, NAMESPACE, MODEL), before, "Serverless")[0], what="v2 rolled out")


def test_a_storage_initializer_failure_is_kserves_at_once_and_knatives_after_the_progress_deadline(
        kube, kserve, settings):
    serving_v1(kube, settings)
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(version(settings, "2"))
    started = time.monotonic()
    fail_storage_initializer(kube, revision_pod(kube, f"{MODEL}-predictor-00002"), UNREACHABLE)
    model = wait_for(lambda: (kube.stored(ISVC, NAMESPACE, MODEL)["status"].get("modelStatus") or {})
                     .get("transitionStatus") == "BlockedByFailedLoad" and
                     kube.stored(ISVC, NAMESPACE, MODEL)["status"]["modelStatus"], what="BlockedByFailedLoad")
    assert model["states"]["targetModelState"] == "FailedToLoad"
    assert model["lastFailureInfo"]["reason"] == "ModelLoadFailed" and model["lastFailureInfo"]["exitCode"] == 1
    assert UNREACHABLE in model["lastFailureInfo"]["message"]
    if time.monotonic() - started < 1.5:  # within the deadline: Knative has not given up on the revision
        assert conditions(kube)["PredictorReady"]["status"] == "Unknown"
    failed = wait_for(lambda: conditions(kube).get("PredictorReady", {}).get("status") == "False" and
                      conditions(kube)["PredictorReady"], what="RevisionFailed")
    assert time.monotonic() - started >= 2
    assert failed["reason"] == "RevisionFailed"
    assert failed["message"].startswith(f'Revision "{MODEL}-predictor-00002" failed with message:')
    predictor = kube.stored(ISVC, NAMESPACE, MODEL)["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == f"{MODEL}-predictor-00001"  # v1 still serves


# -- the backend's decisions ------------------------------------------------------------------------------
def deploy_v2(kube, settings, message: str):
    """v1 served; v2 applied and its storage initializer failing with `message`; the trigger's event."""
    backend = KServeServingBackend(MODEL, settings, None)
    serving_v1(kube, settings)
    previous = backend.current()
    before = rollout_marker(kube.stored(ISVC, NAMESPACE, MODEL), None, "Serverless")
    KServeHook(settings.kubernetes_conn_id, NAMESPACE).apply(version(settings, "2"))
    fail_storage_initializer(kube, revision_pod(kube, f"{MODEL}-predictor-00002"), message)
    trigger = InferenceServiceReadyTrigger(MODEL, NAMESPACE, before, "Serverless", time.time() + 20,
                                           settings.kubernetes_conn_id, 0.1)
    event = first_event(trigger)
    return {**event, "resume": {"version": "2", "previous": previous}}


def operator(settings) -> KServeDeployOperator:
    return KServeDeployOperator(task_id="deploy", model_name=MODEL, cluster=settings, deferrable=True)


def test_a_model_that_is_not_there_fails_at_once_naming_kserves_reason_and_restores(kube, kserve, settings):
    event = deploy_v2(kube, settings, NOT_FOUND)
    assert event["status"] == "failed"
    plan: dict = {}
    with pytest.raises(AirflowFailException, match=r"the model failed to load \(ModelLoadFailed, exit code 1\): "
                                                   + NOT_FOUND.replace(".", r"\.")):
        operator(settings).execute_complete(task_context(plan), event)
    stored = kube.stored(ISVC, NAMESPACE, MODEL)
    assert stored["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"  # v1's spec back
    assert "mlops-ct/retry-of" not in stored["metadata"]["annotations"]  # never tried again
    assert plan[ROLLBACK_TO] == "1" and "ModelLoadFailed" in plan[ROLLBACK_REASON]


def test_a_download_that_broke_off_gets_one_new_revision(kube, kserve, settings):
    event = deploy_v2(kube, settings, UNREACHABLE)
    plan: dict = {}
    with pytest.raises(TaskDeferred) as deferred:
        operator(settings).execute_complete(task_context(plan), event)
    assert plan == {}  # nothing restored, no rollback planned
    stored = kube.stored(ISVC, NAMESPACE, MODEL)
    assert stored["metadata"]["annotations"]["mlops-ct/registry-version"] == "2"
    assert stored["metadata"]["annotations"]["mlops-ct/retry-of"] == f"{MODEL}-predictor-00002"
    run_pod(kube, revision_pod(kube, f"{MODEL}-predictor-00003"))  # the download passes this time
    retried = first_event(deferred.value.trigger)
    assert retried["status"] == "ready" and retried["resume"]["retried"] is True
    predictor = kube.stored(ISVC, NAMESPACE, MODEL)["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == f"{MODEL}-predictor-00003"


def test_a_download_that_breaks_off_twice_is_rolled_back(kube, kserve, settings):
    event = deploy_v2(kube, settings, UNREACHABLE)
    plan: dict = {}
    with pytest.raises(TaskDeferred) as deferred:
        operator(settings).execute_complete(task_context(plan), event)
    fail_storage_initializer(kube, revision_pod(kube, f"{MODEL}-predictor-00003"), UNREACHABLE)
    again = first_event(deferred.value.trigger)
    assert again["status"] == "failed" and again["resume"]["retried"] is True
    with pytest.raises(AirflowFailException, match="Failed to connect to S3 endpoint"):
        operator(settings).execute_complete(task_context(plan), again)
    assert kube.stored(ISVC, NAMESPACE, MODEL)["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    assert plan[ROLLBACK_TO] == "1"
