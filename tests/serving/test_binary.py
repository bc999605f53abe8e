"""The binary tensor data extension of the Open Inference Protocol (KServe's and Triton's): requests
encoded by KServe's own client types (kserve.InferRequest.to_rest), answered by our fast path, or by
KServe's route when they ask for binary outputs (which KServe encodes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import MODEL
from .test_endpoints import EXPECTED, ROWS, matrix_request, per_feature_request, scrape


def encoded(inputs: dict[str, np.ndarray], binary_outputs: bool = False, request_id: str = "req-b"):
    """(body, headers) as KServe's REST client sends a request whose inputs are binary data."""
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    tensors = []
    for name, values in inputs.items():
        tensor = InferInput(name=name, shape=list(values.shape), datatype={np.float32: "FP32", np.float64: "FP64",
                                                                          np.float16: "FP16"}[values.dtype.type])
        tensor.set_data_from_numpy(values, binary_data=True)
        tensors.append(tensor)
    outputs = [RequestedOutput(name="predictions", parameters={"binary_data": True})] if binary_outputs else None
    body, json_length = InferRequest(model_name=MODEL, infer_inputs=tensors, request_id=request_id,
                                     request_outputs=outputs).to_rest()
    assert json_length is not None  # binary data, not JSON
    return body, {"inference-header-content-length": str(json_length), "content-type": "application/octet-stream"}


def infer(client, body: bytes, headers: dict):
    return client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_a_binary_matrix_gets_the_answer_its_json_form_gets(client, oip, dtype):
    response = infer(client, *encoded({"features": np.asarray(ROWS, dtype=dtype)}))
    assert response.status_code == 200, response.text
    doc = response.json()
    oip("inference_response", doc)
    as_json = client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).json()
    assert doc["outputs"] == as_json["outputs"] and doc["outputs"][0]["data"] == EXPECTED
    assert doc["id"] == "req-b" and doc["model_version"] == "1" and doc["parameters"]["run_id"] == "run-1"


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_binary_per_feature_tensors(client, dtype):
    columns = {i["name"]: np.asarray(i["data"], dtype=dtype) for i in per_feature_request()["inputs"]}
    response = infer(client, *encoded(columns))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == EXPECTED


def test_binary_per_feature_tensors_are_checked_like_json_ones(client):
    columns = {i["name"]: np.asarray(i["data"], dtype=np.float64) for i in per_feature_request()["inputs"]}
    first = next(iter(columns))
    with_nan = {**columns, first: np.where(np.arange(len(columns[first])) == 2, np.nan, columns[first])}
    refused = infer(client, *encoded(with_nan))
    assert refused.status_code == 400 and "NaN or infinite values in row(s) [2]" in refused.json()["error"]
    short = {**columns, first: columns[first][:-1]}
    refused = infer(client, *encoded(short))
    assert refused.status_code == 400 and "different lengths" in refused.json()["error"], refused.text


def test_binary_outputs_are_encoded_by_kserve(client):
    from kserve.protocol.infer_type import InferResponse

    response = infer(client, *encoded({"features": np.asarray(ROWS)}, binary_outputs=True))
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    header = response.content[:json_length].decode()
    assert '"binary_data_size"' in header and len(response.content) > json_length  # the labels follow, binary
    decoded = InferResponse.from_bytes(response.content, json_length)
    assert decoded.outputs[0].as_numpy().tolist() == EXPECTED and decoded.id == "req-b"


def test_binary_requests_are_counted_like_any_other(client):
    ok = f'mlserving_requests_total{{model="{MODEL}",outcome="ok",version="1"}}'
    before = scrape(client).get(ok, 0.0)
    infer(client, *encoded({"features": np.asarray(ROWS)}))
    infer(client, *encoded({"features": np.asarray(ROWS)}, binary_outputs=True))
    assert scrape(client)[ok] == before + 2


def _corrupt(how: str) -> tuple[bytes, dict]:
    body, headers = encoded({"features": np.asarray(ROWS)})
    json_length = int(headers["inference-header-content-length"])
    if how == "short data":
        return body[:-8], headers
    if how == "trailing bytes":
        return body + b"\0" * 8, headers
    if how == "header not a number":
        return body, {**headers, "inference-header-content-length": "lots"}
    if how == "header past the body":
        return body, {**headers, "inference-header-content-length": str(len(body) + 1)}
    if how == "header cuts the JSON":
        return body, {**headers, "inference-header-content-length": str(json_length - 3)}
    raise AssertionError(how)


@pytest.mark.parametrize(("how", "message"), [
    ("short data", "binary_data_size 96 is not a whole number of FP64 values within the 88 bytes left"),
    ("trailing bytes", "8 bytes follow the last binary input"),
    ("header not a number", "Inference-Header-Content-Length must be a number of bytes, got 'lots'"),
    ("header past the body", "but the body holds"),
    ("header cuts the JSON", "malformed JSON header"),
])
def test_a_malformed_binary_request_gets_400_with_the_reason(client, how, message):
    response = infer(client, *_corrupt(how))
    assert response.status_code == 400 and message in response.json()["error"], response.text
    assert client.post(f"/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 200  # still serving


def asgi_post(app, body: bytes, headers: dict, pieces: int = 1) -> tuple[int, bytes]:
    """One POST /v2/models/{MODEL}/infer through an ASGI app, as uvicorn calls it: the body in `pieces`
    messages (uvicorn hands a large body over as it arrives)."""
    import asyncio

    scope = {"type": "http", "method": "POST", "path": f"/v2/models/{MODEL}/infer", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    sent = []
    size = -(-len(body) // pieces)
    messages = [{"type": "http.request", "body": body[i * size:(i + 1) * size], "more_body": i < pieces - 1}
                for i in range(pieces)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_fast_path_answers_binary_requests_and_hands_binary_outputs_to_kserve(served):
    from mlserving.routes import in_front

    _, model = served
    reached = []

    async def kserve_route(scope, receive, send):  # stands in for KServe's app behind the fast path
        reached.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast_path = in_front(kserve_route, {MODEL: model})  # as routes.install
    status, answer = asgi_post(fast_path, *encoded({"features": np.asarray(ROWS)}))
    assert status == 200 and b'"setosa"' in answer and reached == []
    body, headers = encoded({"features": np.asarray(ROWS)}, binary_outputs=True)
    assert asgi_post(fast_path, body, headers)[0] == 299 and reached == [body]  # the same body, read again


@pytest.mark.parametrize("binary_outputs", [False, True])
def test_a_body_in_several_messages_is_read_whole(served, binary_outputs):
    from mlserving.routes import in_front

    _, model = served
    reached = []

    async def kserve_route(scope, receive, send):
        reached.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast_path = in_front(kserve_route, {MODEL: model})
    body, headers = encoded({"features": np.asarray(ROWS)}, binary_outputs=binary_outputs)
    status, answer = asgi_post(fast_path, body, headers, pieces=3)
    if binary_outputs:
        assert status == 299 and reached == [body]
    else:
        assert status == 200 and json.loads(answer)["outputs"][0]["data"] == EXPECTED


def test_non_finite_binary_values_are_refused(client):
    rows = np.asarray(ROWS)
    rows[1, 2] = np.nan
    refused = infer(client, *encoded({"features": rows}))
    assert refused.status_code == 400 and "NaN or infinite values in row(s) [1]" in refused.json()["error"]


def test_huge_finite_values_pass_the_finiteness_check():
    """The check sums the batch first; a sum that overflows is checked value by value. (Not sent to the
    shared server: its feature-sum metrics would stay infinite for the tests after.)"""
    from mlserving.validation import Tensor, rows_from_v2

    huge = Tensor("features", [2, 4], "FP64", np.full((2, 4), 1e308))
    with np.errstate(over="ignore"):
        assert rows_from_v2([huge], ("a", "b", "c", "d"), 10).tolist() == [[1e308] * 4] * 2
