"""Contract tests for the InferenceService the kubernetes target deploys and the route to it: validated
against KServe's and Istio's published CRD schemas (unknown fields rejected), and the rollout and patch
rules they are driven by (statuses shaped as kserve v0.20.0 inference_service_status.go writes them)."""

from __future__ import annotations

import pytest
from jsonschema import Draft7Validator

from mlops.inference_service import (
    as_config,
    awaited_marker,
    changed_by_apply,
    inference_route,
    inference_service,
    readiness,
    rollout_marker,
    served_version,
    storage_uri,
    transient_load_failure,
    without_canary,
)
from tests.reference import crd_schema

from .conftest import cluster_settings


@pytest.fixture(scope="module")
def validator():
    return Draft7Validator(crd_schema("kserve-crd-inferenceservices.json", "v1beta1"))


def champion_service(cluster=cluster_settings(), version="3"):
    return inference_service("iris-classifier", version, "run-1",
                             storage_uri("mlflow-artifacts:/1/models/m-abc/artifacts", cluster), cluster)


def test_the_inference_service_is_valid_against_the_crd(validator):
    isvc = champion_service()
    assert not sorted(validator.iter_errors(isvc), key=str), [e.message for e in validator.iter_errors(isvc)]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "mlops-mlserving" and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://mlflow/1/models/m-abc/artifacts"  # object storage, not the MLflow proxy
    # v0.20's name for the mode (its webhook rewrites the deprecated Serverless on every write)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    raw = champion_service(cluster_settings(serving_deployment_mode="RawDeployment"))
    assert raw["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert served_version(isvc) == "3"
    env = {e["name"]: e["value"] for e in model["env"]}  # what the server reports: not guessed from files
    assert env == {"MLSERVING_REGISTRY_VERSION": "3", "MLSERVING_RUN_ID": "run-1",
                   "MLSERVING_MODEL_URI": "models:/iris-classifier/3"}


@pytest.mark.parametrize("percent", [30, 0])
def test_a_canary_sets_kserve_s_canary_traffic_percent_and_a_promotion_drops_it(validator, percent):
    cluster = cluster_settings()
    isvc = inference_service("iris-classifier", "4", "run-4", "s3://mlflow/4", cluster, canary_percent=percent)
    assert not [e.message for e in validator.iter_errors(isvc)]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == percent
    promoted = without_canary(isvc)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"] and not list(validator.iter_errors(promoted))
    assert promoted["spec"]["predictor"]["model"] == isvc["spec"]["predictor"]["model"]


def test_a_canary_is_ready_when_its_revision_serves_its_share():
    """The traffic targets KServe's ksvc_reconciler.go sets for a canary, as inference_service_status.go
    propagates them (latestRolledoutRevision stays on the revision that last had 100 %)."""
    def split(canary_share):
        return {"metadata": {"name": "iris"}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}], "address": {"url": "http://iris.ns"},
            "components": {"predictor": {
                "latestCreatedRevision": "iris-predictor-00002", "latestReadyRevision": "iris-predictor-00002",
                "latestRolledoutRevision": "iris-predictor-00001",
                "traffic": [{"revisionName": "iris-predictor-00002", "latestRevision": True, "percent": canary_share},
                            {"revisionName": "iris-predictor-00001", "latestRevision": False, "tag": "prev",
                             "percent": 100 - canary_share}]}}}}

    assert readiness(split(30), "iris-predictor-00001", "Serverless", canary_percent=30) == (True, "http://iris.ns")
    assert readiness(split(30), "iris-predictor-00001", "Serverless")[0] is None  # not rolled out: a canary
    waiting = split(30)
    waiting["status"]["components"]["predictor"]["latestReadyRevision"] = "iris-predictor-00001"
    assert readiness(waiting, "iris-predictor-00001", "Serverless", canary_percent=30)[0] is None


def test_a_change_of_the_canary_share_alone_starts_no_rollout():
    """A new generation that only sets or drops canaryTrafficPercent moves traffic, not the pod template:
    readiness must not wait for a revision that never comes."""
    cluster = cluster_settings()
    live = {**inference_service("iris", "4", "run-4", "s3://mlflow/4", cluster, canary_percent=10)}
    live["metadata"] = {**live["metadata"], "generation": 3}
    promoted = {**without_canary(live), "metadata": {**live["metadata"], "generation": 4}}
    assert not changed_by_apply(live, promoted)
    other = inference_service("iris", "5", "run-5", "s3://mlflow/5", cluster)
    assert changed_by_apply(live, {**other, "metadata": {**other["metadata"], "generation": 4}})


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_gateway_route_is_valid_against_the_crd(mode):
    route = inference_route("iris-classifier", cluster_settings(serving_deployment_mode=mode))
    validator = Draft7Validator(crd_schema("istio-crd-virtualservices.json", "v1"))
    assert not [e.message for e in validator.iter_errors(route)]
    destination = route["spec"]["http"][0]["route"][0]["destination"]["host"]
    assert destination == ("iris-classifier-predictor.mlops-serving.svc.cluster.local" if mode == "RawDeployment"
                           else "knative-local-gateway.istio-system.svc.cluster.local")


def test_a_raw_deployment_canary_is_a_second_inference_service_and_weighted_routes(validator):
    """RawDeployment mode: the canary InferenceService serves the same model name under its own name,
    and the VirtualService weighs the two predictors' Services."""
    cluster = cluster_settings(serving_deployment_mode="RawDeployment")
    canary = inference_service("iris-classifier", "4", "run-4", "s3://mlflow/4", cluster, name="iris-classifier-canary")
    assert not [e.message for e in validator.iter_errors(canary)]
    assert canary["metadata"]["name"] == "iris-classifier-canary"
    assert canary["spec"]["predictor"]["model"]["args"] == ["--model_name=iris-classifier"]  # after the runtime's
    route = inference_route("iris-classifier", cluster, canary_percent=30)
    assert not [e.message for e in Draft7Validator(crd_schema("istio-crd-virtualservices.json", "v1"))
                .iter_errors(route)]
    assert [(d["destination"]["host"].split(".")[0], d["weight"]) for d in route["spec"]["http"][0]["route"]] == [
        ("iris-classifier-predictor", 70), ("iris-classifier-canary-predictor", 30)]


def test_the_strict_schema_catches_a_misspelled_field(validator):
    isvc = champion_service()
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e.message for e in validator.iter_errors(isvc))


def test_storage_locations():
    cluster = cluster_settings(artifact_store_root="s3://bucket/mlflow/")
    assert storage_uri("mlflow-artifacts:/5/models/m-1/artifacts", cluster) == "s3://bucket/mlflow/5/models/m-1/artifacts"
    assert storage_uri("gs://models/m-1", cluster) == "gs://models/m-1"


def serverless(created, ready_revision=None, routed=None, ready="True", reason=None, message=None, observed=9):
    """An InferenceService's status in Serverless mode (observedGeneration: the Knative Service's)."""
    predictor = {"latestCreatedRevision": created}
    if ready_revision:
        predictor.update(latestReadyRevision=ready_revision, latestRolledoutRevision=routed or ready_revision,
                         traffic=[{"revisionName": routed or ready_revision, "percent": 100, "latestRevision": True}])
    condition = {"type": "Ready", "status": ready, **({"reason": reason} if reason else {}),
                 **({"message": message} if message else {})}
    return {"metadata": {"name": "iris", "generation": 2},
            "status": {"observedGeneration": observed, "components": {"predictor": predictor},
                       "conditions": [condition, {**condition, "type": "PredictorReady"}],
                       "address": {"url": "http://iris.ns.svc.cluster.local"}}}


def test_serverless_readiness_follows_the_revisions_not_the_copied_generation():
    old = serverless("iris-predictor-00001", "iris-predictor-00001")
    before = rollout_marker(old, None, "Serverless")
    assert before == "iris-predictor-00001"
    # observedGeneration is high and Ready is True: still the old revision's.
    assert readiness(old, before, "Serverless") == (None, "no new revision yet (latest created: iris-predictor-00001)")
    created = serverless("iris-predictor-00002", "iris-predictor-00001")
    assert readiness(created, before, "Serverless") == (None, "revision iris-predictor-00002 is not ready yet")
    assert readiness(serverless("iris-predictor-00002", "iris-predictor-00002"), before, "Serverless") == \
        (True, "http://iris.ns.svc.cluster.local")
    failed = serverless("iris-predictor-00002", "iris-predictor-00001", ready="False", reason="RevisionFailed",
                        message='Revision "iris-predictor-00002" failed with message: Container failed with: boom.')
    assert readiness(failed, before, "Serverless") == (False, 'Revision "iris-predictor-00002" failed with message: '
                                                              'Container failed with: boom.')


def test_an_apply_that_changes_nothing_waits_for_the_rollout_under_way():
    """A rollback restored v1's spec (revision 00004) while v2's revision 00003 was still coming up; the
    next deploy of v1 finds its version served but 00004 not ready yet, and applies the same spec: no
    new revision comes, so the wait is for 00004 itself (CI once waited 240 s for a newer one)."""
    restoring = serverless("iris-predictor-00004", "iris-predictor-00002")
    unchanged = {**restoring, "metadata": {**restoring["metadata"]}}
    assert awaited_marker(restoring, unchanged, None, "Serverless") is None
    assert readiness(restoring, None, "Serverless") == (None, "revision iris-predictor-00004 is not ready yet")
    rolled_out = serverless("iris-predictor-00004", "iris-predictor-00004")
    assert readiness(rolled_out, None, "Serverless") == (True, "http://iris.ns.svc.cluster.local")
    # A real change, to the spec (a new generation) or to what the pod copies (labels, annotations),
    # waits past the revision that was there before it.
    respec = {**restoring, "metadata": {**restoring["metadata"], "generation": 3},
              "spec": {"predictor": {"model": {"storageUri": "s3://mlflow/other"}}}}
    relabelled = {**restoring, "metadata": {**restoring["metadata"], "labels": {"team": "fraud"}}}
    for applied in (respec, relabelled):
        assert awaited_marker(restoring, applied, None, "Serverless") == "iris-predictor-00004"
    assert awaited_marker(None, restoring, None, "Serverless") is None  # created: any revision is new
    assert awaited_marker(restoring, respec, deployment(3, 3, 1, 1), "RawDeployment") == 3
    assert awaited_marker(restoring, unchanged, deployment(3, 3, 1, 1), "RawDeployment") is None


def deployment(generation, observed, updated, available, reason="NewReplicaSetAvailable", progressing="True"):
    return {"metadata": {"generation": generation}, "spec": {"replicas": 1},
            "status": {"observedGeneration": observed, "replicas": 1 + (updated < 1), "updatedReplicas": updated,
                       "availableReplicas": available,
                       "conditions": [{"type": "Progressing", "status": progressing, "reason": reason,
                                       "message": "ReplicaSet has timed out progressing."}]}}


def test_raw_readiness_follows_the_deployment_rollout():
    isvc = serverless("-", ready="True")  # Ready stays True while the old pod serves
    before = rollout_marker(isvc, deployment(3, 3, 1, 1), "RawDeployment")
    assert before == 3
    assert readiness(isvc, before, "RawDeployment", deployment(3, 3, 1, 1))[0] is None  # change not applied yet
    assert readiness(isvc, before, "RawDeployment", deployment(4, 3, 0, 1))[0] is None  # not observed
    assert readiness(isvc, before, "RawDeployment", deployment(4, 4, 0, 1, "ReplicaSetUpdated"))[0] is None
    assert readiness(isvc, before, "RawDeployment", deployment(4, 4, 1, 1)) == (True, "http://iris.ns.svc.cluster.local")
    stuck = deployment(4, 4, 0, 1, "ProgressDeadlineExceeded", "False")
    assert readiness(isvc, before, "RawDeployment", stuck) == (
        False, "ProgressDeadlineExceeded: ReplicaSet has timed out progressing.")


def failed_load(message: str, exit_code: int = 1, created="iris-predictor-00002", ready="Unknown") -> dict:
    """A rollout whose model failed to load, as KServe v0.20's PropagateModelStatus reports it (the
    revision itself not failed yet: Knative waits for its progress deadline)."""
    isvc = serverless(created, "iris-predictor-00001", ready=ready)
    isvc["status"]["modelStatus"] = {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message, "exitCode": exit_code}}
    return isvc


def test_a_model_that_failed_to_load_fails_the_rollout_naming_kserves_reason():
    before = "iris-predictor-00001"
    isvc = failed_load("Traceback (most recent call last):\n...\nRuntimeError: Failed to fetch model. "
                       "No model found in 5/models/m-1/artifacts.")
    assert readiness(isvc, before, "Serverless") == (
        False, "the model failed to load (ModelLoadFailed, exit code 1): RuntimeError: Failed to fetch model. "
               "No model found in 5/models/m-1/artifacts.")
    assert transient_load_failure(isvc) is None  # a wrong location stays wrong: no second try
    # Before KServe has a new revision, its modelStatus is the previous revision's: not this rollout's.
    assert readiness(failed_load("S3 error: boom", created=before), before, "Serverless")[0] is None


@pytest.mark.parametrize("message", ["RuntimeError: Failed to connect to S3 endpoint 'mlflow'.",
                                     "RuntimeError: Failed to download 1 files: model.skops: Read timed out.",
                                     "RuntimeError: S3 error [SlowDown]: Please reduce your request rate."])
def test_a_download_that_broke_off_is_worth_another_try(message):
    """kserve-storage's own wording for a store it could not reach or a download that broke off."""
    assert transient_load_failure(failed_load(message)) == \
        f"the model failed to load (ModelLoadFailed, exit code 1): {message}"


@pytest.mark.parametrize("message", ["RuntimeError: S3 authentication failed. Set AWS_ACCESS_KEY_ID",
                                     "RuntimeError: Access denied to S3 resource 'mlflow'. Verify permissions.",
                                     "RuntimeError: S3 bucket 'mlflow' does not exist."])
def test_a_wrong_location_or_login_is_not_tried_again(message):
    assert transient_load_failure(failed_load(message)) is None
    assert readiness(failed_load(message), "iris-predictor-00001", "Serverless")[0] is False


def test_ready_unknown_during_a_rollout_is_waiting():
    """Knative marks the Configuration (so KServe's Ready) Unknown while a new revision comes up."""
    rolling = serverless("iris-predictor-00002", "iris-predictor-00001", ready="Unknown")
    assert readiness(rolling, "iris-predictor-00001", "Serverless") == (
        None, "revision iris-predictor-00002 is not ready yet")


def test_what_is_applied_is_the_intent_not_the_servers_bookkeeping():
    live = champion_service()
    live["metadata"].update(uid="u", resourceVersion="7", generation=3,
                            managedFields=[{"manager": "mlops-ct", "operation": "Apply"}])
    live["status"] = {"conditions": []}
    config = as_config(live)
    assert set(config) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(config["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert config["spec"] == live["spec"]


@pytest.mark.parametrize("mode, internal", [("Knative", True), ("Serverless", True), ("Standard", False),
                                            ("RawDeployment", False)])
def test_a_knative_predictor_is_cluster_local_behind_the_inference_route(mode, internal):
    """In Knative mode the InferenceService asks KServe for no public Knative route (clients reach it through
    inference_host's VirtualService, and istio-auth refuses unauthenticated requests on the public gateway,
    net-istio's probes among them); a Standard one has no Knative route to hide."""
    from mlops.inference_service import VISIBILITY_LABEL

    labels = champion_service(cluster_settings(serving_deployment_mode=mode))["metadata"]["labels"]
    assert (labels.get(VISIBILITY_LABEL) == "cluster-local") is internal
