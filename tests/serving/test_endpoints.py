"""Every v2/v1 endpoint in-process, checked against the Open Inference Protocol spec."""

from __future__ import annotations

import json
import uuid

import pytest

from .conftest import MODEL

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]
EXPECTED = ["setosa", "versicolor", "virginica"]


def matrix_request(rows=ROWS, **extra):
    return {"inputs": [{"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}], **extra}


def per_feature_request(rows=ROWS):
    return {"inputs": [{"name": f, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
                       for i, f in enumerate(FEATURES)]}


def test_server_health_and_metadata(client, oip):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    oip("metadata_server_response", server)
    assert server["name"] and server["version"]


def test_model_metadata_reports_version_run_and_signature(client, oip):
    meta = client.get(f"/v2/models/{MODEL}").json()
    oip("metadata_model_response", meta)
    assert meta["versions"] == ["1"]
    assert meta["parameters"]["registry_version"] == "1" and meta["parameters"]["run_id"] == "run-1"
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize("body", [matrix_request(), per_feature_request(), matrix_request(id="req-7")],
                         ids=["matrix", "per-feature", "with-id"])
def test_v2_infer(client, oip, body):
    response = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    oip("inference_response", doc)
    assert doc["model_name"] == MODEL and doc["model_version"] == "1"
    assert doc["outputs"][0]["data"] == EXPECTED and doc["outputs"][0]["shape"] == [3]
    assert doc["id"] == body.get("id", doc["id"]) and doc["id"]


def test_a_request_without_an_id_gets_a_fresh_random_uuid(client):
    ids = [client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).json()["id"] for _ in range(50)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_v2_request_is_valid_per_spec(oip):
    oip("inference_request", matrix_request())
    oip("inference_request", per_feature_request())


@pytest.mark.parametrize("body", [{"instances": ROWS},
                                  {"instances": [dict(zip(FEATURES, r, strict=True)) for r in ROWS]}],
                         ids=["lists", "objects"])
def test_v1_predict(client, body):
    response = client.post(f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == EXPECTED


def test_v1_model_listing_and_readiness(client):
    assert client.get("/v1/models").json() == {"models": [MODEL]}
    assert client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}


BAD = {
    "no inputs": ({"inputs": []}, "no inputs"),
    "wrong shape": (matrix_request([[5.1, 3.5, 1.4]]), "shape [1, 4] needs 4 values, got 3"),
    "wrong width": ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
                    "expected [N, 4]"),
    "strings": (matrix_request([[5.1, "wide", 1.4, 0.2]]), "data must be numbers"),
    "nan literal string": (matrix_request([[5.1, "NaN", 1.4, 0.2]]), "data must be numbers"),
    "wrong datatype": ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [5, 3, 1, 0]}]},
                       "datatype INT64 is not accepted"),
    "bytes datatype": ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]},
                       "datatype BYTES"),
    "missing feature": ({"inputs": per_feature_request()["inputs"][:3]}, "missing inputs ['petal_width']"),
    "unknown feature": ({"inputs": [*per_feature_request()["inputs"],
                                    {"name": "colour", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]},
                        "unknown inputs ['colour']"),
    "ragged features": ({"inputs": [*per_feature_request()["inputs"][:3],
                                    {"name": "petal_width", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
                        "different lengths"),
    "empty batch": (matrix_request([]) | {"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP32", "data": []}]},
                    "no rows"),
    "huge batch": ({"inputs": [{"name": "x", "shape": [10_001, 4], "datatype": "FP32",
                                "data": [1.0] * 40_004}]}, "the limit is 10000"),
    "negative shape": ({"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
                       "must be integers from 0 to"),
    "boolean shape": ({"inputs": [{"name": "x", "shape": [True, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
                      "must be integers from 0 to"),
    "boolean feature shape": ({"inputs": [{**i, "shape": [True], "data": i["data"][:1]}
                                          for i in per_feature_request()["inputs"]]}, "must be integers from 0 to"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_v2_payloads_get_400_with_the_reason(client, oip, name):
    body, message = BAD[name]
    response = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400, (response.status_code, response.text)
    assert message in response.json()["error"]
    oip("inference_error_response", response.json())
    assert client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 200


@pytest.mark.parametrize("path, kwargs, status, message", [
    (f"/v2/models/{MODEL}/infer", {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
     400, "malformed JSON"),
    (f"/v2/models/{MODEL}/infer", {"content": b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
                                              b'"data": [5.1, 1e400, 1.0, 1.0]}]}',
                                   "headers": {"content-type": "application/json"}}, 400, "infinity"),
    (f"/v2/models/{MODEL}/infer", {"content": b"sepal_length=5", "headers": {"content-type": "text/plain"}}, 400, ""),
    (f"/v2/models/{MODEL}/infer", {"json": {"inputs": "five"}}, 400, "list (Open Inference Protocol v2)"),
    (f"/v2/models/{MODEL}/infer", {"json": {"inputs": [{"name": "x", "data": [1]}]}}, 400, "needs name, shape"),
    (f"/v2/models/{MODEL}/infer", {"json": [1, 2]}, 400, "JSON object"),
    ("/v2/models/tulip/infer", {"json": matrix_request()}, 404, "tulip"),
    (f"/v1/models/{MODEL}:predict", {"json": {"rows": ROWS}}, 400, "a v1 request is"),
    (f"/v1/models/{MODEL}:predict", {"json": {"instances": [[1, 2, 3]]}}, 400, "expected [N, 4]"),
    (f"/v1/models/{MODEL}:predict", {"json": {"instances": [{"sepal_length": 1}]}}, 400, "missing"),
    (f"/v1/models/{MODEL}:predict", {"json": {"instances": [[1, 2, 3, None]]}}, 400, "data must be numbers"),
    ("/v1/models/tulip:predict", {"json": {"instances": ROWS}}, 404, "tulip"),
])
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(client, path, kwargs, status, message):
    response = client.post(path, **kwargs)
    assert 400 <= response.status_code < 500 and response.status_code == status, (response.status_code, response.text)
    assert message in response.text
    assert client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 200


def scrape(client) -> dict[str, float]:
    values = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def test_metrics_move_with_requests(client):
    before = scrape(client)
    client.post(f"/v2/models/{MODEL}/infer", json=matrix_request())
    client.post(f"/v2/models/{MODEL}/infer", json=BAD["strings"][0])
    after = scrape(client)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta(f'mlserving_requests_total{{model="{MODEL}",outcome="ok",version="1"}}') == 1
    assert delta(f'mlserving_requests_total{{model="{MODEL}",outcome="client_error",version="1"}}') == 1
    for cls in EXPECTED:
        assert delta(f'mlserving_predicted_class_total{{model="{MODEL}",predicted_class="{cls}",version="1"}}') == 1
    served = f'model="{MODEL}",version="1"'  # the histograms carry the served version
    assert delta(f'mlserving_feature_value_count{{feature="petal_length",{served}}}') == 3
    assert delta(f'mlserving_feature_value_bucket{{feature="petal_length",le="1.5",{served}}}') == 1
    assert delta(f'mlserving_feature_value_sum{{feature="sepal_length",{served}}}') == pytest.approx(17.8)
    assert delta(f'request_predict_seconds_count{{model_name="{MODEL}"}}') >= 1
    assert after[f'mlserving_model_info{{model="{MODEL}",run_id="run-1",version="1"}}'] == 1


def test_every_answer_is_counted_even_one_no_check_foresaw(client, served, monkeypatch):
    """A failure outside the request checks is a 500 with a message, and counted as a server error (an
    uncounted crash would be invisible to the canary's error ratio and to the alerts). The error leaves our
    middleware before any answer began: OutcomeCounter counts it as the 500 Starlette then sends."""
    model = served[1]

    def broken(*args):
        raise KeyError("an internal slip")

    monkeypatch.setattr(model, "infer_v2", broken)
    before = scrape(client)
    response = client.post(f"/v2/models/{MODEL}/infer", json=matrix_request())
    # KServe's generic_exception_handler words it, through Starlette's ServerErrorMiddleware, as on its route
    assert response.status_code == 500 and response.json() == {"error": "KeyError : 'an internal slip'"}
    key = f'mlserving_requests_total{{model="{MODEL}",outcome="server_error",version="1"}}'
    assert scrape(client).get(key, 0) - before.get(key, 0) == 1


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}/infer", f"/v1/models/{MODEL}:predict", "/v2/models/tulip/infer"])
def test_a_body_beyond_what_the_row_limit_allows_is_refused_413_and_counted(client, served, path):
    limit = served[1].max_body_bytes
    before = scrape(client)
    # Streamed in pieces without a Content-Length: the limit holds while the body arrives, too.
    too_big = client.post(path, content=iter([b" " * (limit // 2)] * 3), headers={"content-type": "application/json"})
    declared = client.post(path, content=b"{}", headers={"content-length": str(limit + 1)})
    for answer in (too_big, declared):
        assert answer.status_code == 413 and f"({limit} bytes" in answer.json()["error"], answer.text
    name = "tulip" if "tulip" in path else MODEL
    key = (f'mlserving_requests_total{{model="{name}",outcome="client_error",version="1"}}' if name == MODEL
           else 'mlserving_requests_total{model="unknown",outcome="client_error",version="unknown"}')
    assert scrape(client).get(key, 0) - before.get(key, 0) == 2
    assert client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 200


def test_the_largest_request_the_row_limit_allows_fits_the_body_limit(client, served):
    model = served[1]
    rows = [[-1.2345678901234567e-300] * 4] * model.max_rows
    v2 = {"id": "x" * 200, "inputs": [{"name": "x", "shape": [model.max_rows, 4], "datatype": "FP64",
                                       "data": [v for row in rows for v in row]}]}
    v1 = {"instances": [dict(zip(FEATURES, row, strict=True)) for row in rows]}
    for path, body in ((f"/v2/models/{MODEL}/infer", v2), (f"/v1/models/{MODEL}:predict", v1)):
        content = json.dumps(body).encode()
        assert len(content) <= model.max_body_bytes
        assert client.post(path, content=content, headers={"content-type": "application/json"}).status_code == 200


def test_readiness_is_503_while_the_model_cannot_answer(client, served):
    """What a readiness probe reads is the status: KServe's own route answers 200 whatever the models are."""
    model = served[1]
    assert client.get("/v2/health/ready").status_code == 200
    model.ready = False
    try:
        answer = client.get("/v2/health/ready")
        assert answer.status_code == 503 and answer.json() == {"ready": False}
        assert client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 503
    finally:
        model.ready = True
    assert client.get("/v2/health/ready").json() == {"ready": True}
