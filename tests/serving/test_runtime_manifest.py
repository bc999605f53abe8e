"""Contract test: the ClusterServingRuntime against KServe's published CRD schema (no cluster here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.reference import crd_schema

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "k8s-yaml/kserve/cluster-serving-runtime.yaml"


@pytest.fixture(scope="module")
def validator():
    return Draft7Validator(crd_schema("kserve-crd-clusterservingruntimes.json", "v1alpha1"))


def test_runtime_is_valid_against_the_crd(validator):
    runtime = yaml.safe_load(RUNTIME.read_text())
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ClusterServingRuntime"
    errors = sorted(validator.iter_errors(runtime), key=str)
    assert not errors, [e.message for e in errors]


def test_strict_schema_catches_a_misspelled_field(validator):
    runtime = yaml.safe_load(RUNTIME.read_text())
    runtime["spec"]["containers"][0]["securityContex"] = runtime["spec"]["containers"][0].pop("securityContext")
    assert any("securityContex" in e.message for e in validator.iter_errors(runtime))


def test_runtime_serves_our_image_safely():
    spec = yaml.safe_load(RUNTIME.read_text())["spec"]
    assert set(spec["protocolVersions"]) == {"v1", "v2"}
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["capabilities"]["drop"] == ["ALL"]
    assert not security["allowPrivilegeEscalation"] and security["readOnlyRootFilesystem"]
    assert "--model_dir=/mnt/models" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # The flags must be ones mlserving accepts.
    from kserve.model_server import parser as kserve_parser

    from mlserving.server import build_parser

    args = build_parser(kserve_parser).parse_args([a.replace("{{.Name}}", "iris") for a in container["args"]])
    assert args.model_name == "iris" and args.model_dir == "/mnt/models" and args.http_port == 8080
