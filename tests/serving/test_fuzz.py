"""The v2 inference endpoint fuzzed: requests drawn from the Open Inference Protocol's own schema
(`inference_request` of tests/schemas/open-inference-protocol-rest-v2.yaml, turned into a hypothesis strategy),
requests shaped like the model's (its features, random shapes, datatypes and values), bodies that are not
JSON, and binary-extension bodies with random headers. For every one: no server error, the answer counted
in mlserving_requests_total, and the server still answering a good request."""

from __future__ import annotations

import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference import reference_file

from .conftest import MODEL
from .test_endpoints import FEATURES, matrix_request, scrape

INFER = f"/v2/models/{MODEL}/infer"
EXAMPLES = 300  # per strategy; four strategies


def from_schema(schema: dict, schemas: dict, depth: int = 0) -> st.SearchStrategy:
    """Documents valid against a JSON schema of the subset the OIP spec uses (type, properties, required,
    items, anyOf, $ref), the optional properties present or not. `tensor_data` refers to itself (nested
    arrays): past three levels it is numbers."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        depth += name == "tensor_data"
        return st.floats(allow_nan=False) if depth > 3 else from_schema(schemas[name], schemas, depth)
    if "anyOf" in schema:
        return st.one_of(*(from_schema(option, schemas, depth) for option in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not properties:
            return st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=3)
        return st.fixed_dictionaries(
            {k: from_schema(v, schemas, depth) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, schemas, depth) for k, v in properties.items() if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), schemas, depth), max_size=6)
    return {"string": st.text(max_size=12), "integer": st.integers(-5, 2**64), "boolean": st.booleans(),
            "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers()}.get(kind, st.none())


def oip_requests() -> st.SearchStrategy:
    spec = yaml.safe_load(reference_file("open-inference-protocol-rest-v2.yaml").read_text())
    schemas = spec["components"]["schemas"]
    return from_schema(schemas["inference_request"], schemas)


numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**70, 2**70), st.booleans(),
                    st.none(), st.text(max_size=5))
shapes = st.lists(st.one_of(st.integers(-3, 12), st.booleans(), st.floats(0, 4), st.just(2**63)), max_size=3)
datatypes = st.sampled_from(["FP32", "FP64", "FP16", "fp64", "INT64", "BYTES", "BOOL", "", "FP128"])


@st.composite
def model_shaped(draw) -> dict:
    """Requests close to what the model takes, so the checks past the structure are reached: half of them
    well formed but for the values (finite or not, any size), the others with any part off."""
    rows = draw(st.integers(0, 6))
    if draw(st.booleans()):
        values = st.floats(width=32) | st.integers(-2**53, 2**53)
        if draw(st.booleans()):
            return {"inputs": [{"name": "x", "datatype": draw(st.sampled_from(["FP32", "FP64"])), "shape": [rows, 4],
                                "data": draw(st.lists(st.lists(values, min_size=4, max_size=4), min_size=rows,
                                                      max_size=rows))}]}
        return {"inputs": [{"name": name, "datatype": "FP64", "shape": [rows],
                            "data": draw(st.lists(values, min_size=rows, max_size=rows))} for name in FEATURES]}
    if draw(st.booleans()):  # one [N, F] tensor
        data = draw(st.lists(st.lists(numbers, min_size=3, max_size=5), min_size=rows, max_size=rows) |
                    st.lists(numbers, max_size=24))
        tensors = [{"name": draw(st.sampled_from(["x", "features", FEATURES[0]])), "datatype": draw(datatypes),
                    "shape": draw(shapes | st.just([rows, 4])), "data": data}]
    else:  # one tensor per feature
        names = draw(st.lists(st.sampled_from([*FEATURES, "colour"]), min_size=1, max_size=5))
        tensors = [{"name": name, "datatype": draw(datatypes), "shape": draw(shapes | st.just([rows])),
                    "data": draw(st.lists(numbers, max_size=8) | st.lists(st.lists(numbers, max_size=2), max_size=4))}
                   for name in names]
    body = {"inputs": tensors}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8) | st.integers())
    if draw(st.booleans()):
        body["parameters"] = draw(st.dictionaries(st.text(max_size=4), numbers, max_size=2) | numbers)
    return body


@st.composite
def binary_bodies(draw) -> tuple[bytes, dict]:
    header = draw(model_shaped())
    for tensor in header["inputs"]:
        if draw(st.booleans()):
            tensor["parameters"] = {"binary_data_size": draw(st.integers(-8, 64) | numbers)}
            tensor.pop("data", None)
    if draw(st.booleans()):
        header["parameters"] = {"binary_data_output": draw(st.booleans())}
    text = json.dumps(header).encode()
    payload = draw(st.binary(max_size=96))
    length = draw(st.integers(-2, len(text) + len(payload) + 2).map(str) | st.just(str(len(text)))
                  | st.text(string.printable.strip(), max_size=4))
    return text + payload, {"inference-header-content-length": length, "content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def fuzzed(served):
    """The requests sent and the answers they got, shared by the checks below."""
    return {"sent": 0, "statuses": {}}


def _send(client, fuzzed, **request) -> None:
    response = client.post(INFER, **request)
    fuzzed["sent"] += 1
    fuzzed["statuses"][response.status_code] = fuzzed["statuses"].get(response.status_code, 0) + 1
    assert response.status_code < 500, (request, response.status_code, response.text)
    # an answer in the binary tensor data extension (a request may ask for binary_data_output) is its JSON
    # header, then the tensors' bytes
    header = response.headers.get("inference-header-content-length")
    body = json.loads(response.content[:int(header)]) if header else response.json()
    assert "error" in body if response.status_code >= 400 else "outputs" in body


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def test_the_v2_endpoint_never_fails_and_counts_every_answer(client, fuzzed):
    before = scrape(client)

    @FUZZ
    @given(oip_requests())
    def schema_requests(body):
        _send(client, fuzzed, content=json.dumps(body), headers={"content-type": "application/json"})

    @FUZZ
    @given(model_shaped())
    def model_requests(body):
        _send(client, fuzzed, content=json.dumps(body), headers={"content-type": "application/json"})

    @FUZZ
    @given(st.binary(max_size=200) | st.text(max_size=60).map(str.encode))
    def not_json(content):
        _send(client, fuzzed, content=content, headers={"content-type": "application/json"})

    @FUZZ
    @given(binary_bodies())
    def binary(request):
        content, headers = request
        _send(client, fuzzed, content=content, headers=headers)

    for run in (schema_requests, model_requests, not_json, binary):
        run()
    after = scrape(client)
    counted = sum(value - before.get(key, 0) for key, value in after.items()
                  if key.startswith("mlserving_requests_total{"))
    assert counted == fuzzed["sent"], (counted, fuzzed)
    assert client.post(INFER, json=matrix_request()).status_code == 200
    print(f"fuzzed the v2 endpoint with {fuzzed['sent']} requests: statuses {sorted(fuzzed['statuses'].items())}")
