"""docs/deploy.md and its sample request agree with what the repository ships."""

from __future__ import annotations

import json
import re

import yaml
from jsonschema import Draft7Validator

from tests.reference import reference_file

from .conftest import K8S, REPO, objects

GUIDE = (REPO / "docs" / "deploy.md").read_text()
PAYLOAD = json.loads((REPO / "docs" / "iris-v2-request.json").read_text())


def test_the_sample_request_is_a_v2_request_for_the_model():
    spec = yaml.safe_load(reference_file("open-inference-protocol-rest-v2.yaml").read_text())
    schema = {**spec["components"]["schemas"]["inference_request"], "components": spec["components"]}
    assert not list(Draft7Validator(schema).iter_errors(PAYLOAD))
    features = yaml.safe_load((REPO / "images/pipeline/src/mlpipeline/resources/iris.yaml").read_text())["features"]
    assert [i["name"] for i in PAYLOAD["inputs"]] == [f["name"] for f in features]  # all four, named, in order
    rows = {i["shape"][0] for i in PAYLOAD["inputs"]}
    assert len(rows) == 1 and all(len(i["data"]) == i["shape"][0] for i in PAYLOAD["inputs"])


def test_the_curl_goes_where_the_gateway_routes():
    service = objects(K8S / "istio" / "virtualservice.yaml")[0]
    host = service["spec"]["hosts"][0]
    prefixes = [m["uri"]["prefix"] for rule in service["spec"]["http"] for m in rule["match"]]
    urls = re.findall(r"https://([\w.-]+)(/v2/models/[\w.-]+/infer)", GUIDE)
    assert urls and all(u_host == host and any(path.startswith(p) for p in prefixes) for u_host, path in urls)
    assert "-d @docs/iris-v2-request.json" in GUIDE


def test_every_path_the_guide_names_exists():
    named = set(re.findall(r"`((?:k8s-yaml|helm-values|images|docs|monitoring)/[\w./-]*)`", GUIDE))
    named |= set(re.findall(r"-f ((?:images|helm-values)/[\w./-]+)", GUIDE))
    assert named
    for path in named:
        assert (REPO / path.rstrip("/")).exists() or path.endswith(".env"), f"docs/deploy.md names {path}"
