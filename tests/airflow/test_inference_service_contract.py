"""Contract tests for the InferenceService the kubernetes target deploys: validated against KServe's
published CRD schema (unknown fields rejected), and the readiness and patch rules it is driven by."""

from __future__ import annotations

import pytest
from jsonschema import Draft7Validator

from mlops.cluster import ClusterSettings
from mlops.inference_service import inference_service, merge_patch, readiness, served_version, storage_uri
from tests.reference import crd_schema


@pytest.fixture(scope="module")
def validator():
    return Draft7Validator(crd_schema("kserve-crd-inferenceservices.json", "v1beta1"))


def champion_service(cluster=ClusterSettings(), version="3"):
    return inference_service("iris-classifier", version, "run-1",
                             storage_uri("mlflow-artifacts:/1/models/m-abc/artifacts", cluster), cluster)


def test_the_inference_service_is_valid_against_the_crd(validator):
    isvc = champion_service()
    assert not sorted(validator.iter_errors(isvc), key=str), [e.message for e in validator.iter_errors(isvc)]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "mlops-mlserving" and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://mlflow/1/models/m-abc/artifacts"  # object storage, not the MLflow proxy
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert served_version(isvc) == "3"


def test_the_strict_schema_catches_a_misspelled_field(validator):
    isvc = champion_service()
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e.message for e in validator.iter_errors(isvc))


def test_storage_locations():
    cluster = ClusterSettings(artifact_store_root="s3://bucket/mlflow/")
    assert storage_uri("mlflow-artifacts:/5/models/m-1/artifacts", cluster) == "s3://bucket/mlflow/5/models/m-1/artifacts"
    assert storage_uri("gs://models/m-1", cluster) == "gs://models/m-1"


def ready(generation, observed, status="True", reason=None, message=None, url="http://iris.ns.svc"):
    condition = {"type": "Ready", "status": status, **({"reason": reason} if reason else {}),
                 **({"message": message} if message else {})}
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "conditions": [condition], "address": {"url": url}}}


def test_readiness_counts_only_for_the_new_generation():
    assert readiness(ready(2, 1), 2) == (None, "controller has seen generation 1, waiting for 2")
    assert readiness(ready(2, 2), 2) == (True, "http://iris.ns.svc")
    assert readiness(ready(2, 2, "False", "RevisionMissing", "revision not ready"), 2) == (None, "revision not ready")
    failed = ready(2, 2, "False", "RevisionFailed", "Container failed: model could not be loaded")
    assert readiness(failed, 2) == (False, "Container failed: model could not be loaded")


def test_merge_patch_turns_one_spec_into_another():
    old = {"predictor": {"model": {"storageUri": "s3://a", "runtime": "r"}, "minReplicas": 2}}
    new = {"predictor": {"model": {"storageUri": "s3://b", "runtime": "r"}}}
    assert merge_patch(old, new) == {"predictor": {"minReplicas": None, "model": {"storageUri": "s3://b"}}}
    assert merge_patch(new, new) == {}
