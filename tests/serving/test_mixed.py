"""Models with categorical features and missing values (make_models.py's `mixed*` folders: what the training
pipeline logs for a dataset with both kinds of feature): typed v2 inputs (FP for numeric features, BYTES for
categorical ones, JSON and binary), the answers the pipeline itself gives on the same DataFrame, the checks
and their messages, the metadata, the bounded category counters, and no server error whatever is sent."""

from __future__ import annotations

import json
import logging
import math
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserving.loader import load_model_dir
from mlserving.validation import MAX_STRING_BYTES, Tensor, batch_from_v2

from .conftest import MODEL
from .test_binary import asgi_post
from .test_endpoints import scrape
from .test_fuzz import FUZZ

INFER = f"/v2/models/{MODEL}/infer"
FEATURES = ["bill_length_mm", "body_mass_g", "island", "sex"]
CATEGORICAL = {"island", "sex"}
MIXED = ["mixed", "mixed-random_forest", "mixed-hist_gradient_boosting", "mixed-linear_svm"]


@pytest.fixture(scope="module")
def cases(model_dirs) -> dict:
    """make_models.MIXED_CASES and what the model MLflow loads predicts for them, per folder."""
    return json.loads((model_dirs / "mixed-cases.json").read_text())


@pytest.fixture
def mixed(served, model_dirs):
    """The session's server swapped to the mixed model (version m1), and back to good-v1 afterwards."""
    client, model = served
    model.swap(model_dirs / "mixed")
    yield client, model
    model.swap(model_dirs / "good-v1")


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as the pipeline gives them to a model (mlpipeline.model.model_inputs): numbers as float64
    with NaN, text as objects with None."""
    return pd.DataFrame({name: pd.Series([row[name] for row in rows], dtype=object if name in CATEGORICAL
                                         else np.float64) for name in FEATURES})


def v2(rows: list[dict], **overrides) -> dict:
    """One JSON tensor per feature: FP64 numbers (null where missing), BYTES strings (null where missing)."""
    tensors = [{"name": name, "shape": [len(rows)], "datatype": "BYTES" if name in CATEGORICAL else "FP64",
                "data": [row[name] for row in rows]} for name in FEATURES]
    for tensor in tensors:
        tensor.update(overrides.get(tensor["name"], {}))
    return {"inputs": tensors}


def binary(columns: dict[str, np.ndarray], binary_outputs: bool = False) -> tuple[bytes, dict]:
    """(body, headers) as KServe's own client encodes binary inputs: BYTES for object arrays of strings."""
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    tensors = []
    for name, values in columns.items():
        tensor = InferInput(name=name, shape=list(values.shape),
                            datatype="BYTES" if values.dtype == object else {np.float64: "FP64",
                                                                             np.float32: "FP32"}[values.dtype.type])
        tensor.set_data_from_numpy(values, binary_data=True)
        tensors.append(tensor)
    outputs = [RequestedOutput(name="predictions", parameters={"binary_data": True})] if binary_outputs else None
    body, json_length = InferRequest(model_name=MODEL, infer_inputs=tensors, request_id="req-m",
                                     request_outputs=outputs).to_rest()
    return body, {"inference-header-content-length": str(json_length), "content-type": "application/octet-stream"}


def binary_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Complete rows as binary columns (KServe's BYTES encoding has no null; a missing number is NaN)."""
    return {name: np.array([row[name] for row in rows], dtype=object) if name in CATEGORICAL
            else np.array([math.nan if row[name] is None else row[name] for row in rows], dtype=np.float64)
            for name in FEATURES}


def test_a_json_request_gets_what_the_pipeline_predicts_on_the_same_dataframe(mixed, cases, oip):
    client, model = mixed
    response = client.post(INFER, json=v2(cases["rows"]))
    assert response.status_code == 200, response.text
    doc = response.json()
    oip("inference_response", doc)
    assert doc["model_version"] == "m1"
    answered = doc["outputs"][0]["data"]
    assert answered == model.active.estimator.predict(frame(cases["rows"])).tolist()  # the pipeline itself
    assert answered == cases["predictions"]["mixed"]  # and as MLflow loads it, in the pipeline's environment


def test_missing_values_are_answered(mixed, cases):
    client, model = mixed
    rows = [{"bill_length_mm": None, "body_mass_g": 4000.0, "island": "Dream", "sex": "male"},
            {"bill_length_mm": 45.0, "body_mass_g": 4000.0, "island": None, "sex": "female"},
            {"bill_length_mm": None, "body_mass_g": None, "island": None, "sex": None}]
    response = client.post(INFER, json=v2(rows))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == model.active.estimator.predict(frame(rows)).tolist()


def test_a_binary_request_with_bytes_inputs_gets_the_json_answer(mixed, cases):
    client, model = mixed
    # KServe's BYTES encoding has no null: the categorical gaps filled, the numeric ones sent as NaN
    rows = [{**row, "island": row["island"] or "Dream", "sex": row["sex"] or "female"} for row in cases["rows"]]
    response = client.post(INFER, content=binary(binary_columns(rows))[0], headers=binary(binary_columns(rows))[1])
    assert response.status_code == 200, response.text
    answered = response.json()["outputs"][0]["data"]
    assert answered == model.active.estimator.predict(frame(rows)).tolist()
    assert answered == client.post(INFER, json=v2(rows)).json()["outputs"][0]["data"]
    assert any(row["bill_length_mm"] is None for row in rows)  # a NaN in binary FP64 data: a missing value


def test_binary_outputs_with_bytes_inputs_go_through_kserves_route(mixed, cases):
    from kserve.protocol.infer_type import InferResponse

    client, model = mixed
    rows = cases["rows"][:3]
    response = client.post(INFER, content=binary(binary_columns(rows), binary_outputs=True)[0],
                           headers=binary(binary_columns(rows), binary_outputs=True)[1])
    assert response.status_code == 200, response.text
    decoded = InferResponse.from_bytes(response.content, int(response.headers["inference-header-content-length"]))
    assert decoded.outputs[0].as_numpy().tolist() == model.active.estimator.predict(frame(rows)).tolist()


def test_v1_rows_as_objects_or_lists(mixed, cases):
    client, model = mixed
    expected = model.active.estimator.predict(frame(cases["rows"])).tolist()
    for instances in (cases["rows"], [[row[name] for name in FEATURES] for row in cases["rows"]]):
        response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected


def test_a_nested_bytes_tensor_of_shape_n_1(mixed, cases):
    client, _ = mixed
    rows = cases["rows"][:2]
    nested = v2(rows, island={"shape": [2, 1], "data": [[rows[0]["island"]], [rows[1]["island"]]]})
    assert client.post(INFER, json=nested).json()["outputs"] == client.post(INFER, json=v2(rows)).json()["outputs"]


ROWS = [{"bill_length_mm": 39.1, "body_mass_g": 3750.0, "island": "Torgersen", "sex": "male"},
        {"bill_length_mm": 46.5, "body_mass_g": 5200.0, "island": "Biscoe", "sex": "female"}]
BAD = {
    "numbers for a categorical": (v2(ROWS, island={"datatype": "FP64", "data": [1.0, 2.0]}),
                                  "input 'island' (categorical): datatype FP64 is not accepted; send BYTES"),
    "numbers in a BYTES tensor": (v2(ROWS, island={"data": [1, 2]}), "input 'island' (categorical): value 0 is "
                                                                     "int 1; a categorical feature takes strings"),
    "bytes for a numeric": (v2(ROWS, bill_length_mm={"datatype": "BYTES", "data": ["39.1", "46.5"]}),
                            "input 'bill_length_mm' (numeric): datatype BYTES is not accepted; send FP32 or FP64"),
    "strings in an FP64 tensor": (v2(ROWS, body_mass_g={"data": ["heavy", "light"]}),
                                  "input 'body_mass_g' (numeric): data must be numbers or null"),
    "an over-long string": (v2(ROWS, sex={"data": ["x" * (MAX_STRING_BYTES + 1), "male"]}),
                            f"input 'sex' (categorical): value 0 is {MAX_STRING_BYTES + 1} bytes long; the limit is "
                            f"{MAX_STRING_BYTES} bytes"),
    "an over-long string in bytes, not characters": (
        v2(ROWS, island={"data": ["Biscoe", "é" * (MAX_STRING_BYTES // 2 + 1)]}),
        f"input 'island' (categorical): value 1 is {MAX_STRING_BYTES + 2} bytes long"),
    "a missing input": ({"inputs": v2(ROWS)["inputs"][:3]}, "missing inputs ['sex']"),
    "an unknown input": ({"inputs": [*v2(ROWS)["inputs"], {"name": "colour", "shape": [2], "datatype": "BYTES",
                                                           "data": ["a", "b"]}]}, "unknown inputs ['colour']"),
    "ragged rows": (v2(ROWS, island={"shape": [1], "data": ["Dream"]}),
                    "feature inputs have different lengths: 'island' has 1"),
    "a shape its data does not fill": (v2(ROWS, sex={"shape": [3]}), "input 'sex' (categorical): shape [3] needs 3"),
    "one matrix for every feature": ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                                  "data": [1, 2, 3, 4]}]},
                                     "cannot hold both numbers and the categorical features ['island', 'sex']"),
    "too many rows": (v2([ROWS[0]] * 10_001), "the limit is 10000 per request"),
    "an object for a string": (v2(ROWS, sex={"data": [{"sex": "male"}, "male"]}),
                               "input 'sex' (categorical): value 0 is dict"),
    "a boolean for a number": (v2(ROWS, body_mass_g={"data": [True, None]}), "input 'body_mass_g' (numeric)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_request_gets_400_naming_the_feature(mixed, oip, name):
    client, _ = mixed
    body, message = BAD[name]
    response = client.post(INFER, json=body)
    assert response.status_code == 400, (response.status_code, response.text)
    assert message in response.json()["error"], response.json()["error"]
    oip("inference_error_response", response.json())
    assert client.post(INFER, json=v2(ROWS)).status_code == 200


def test_infinities_are_refused_naming_the_feature(mixed):
    client, _ = mixed
    columns = binary_columns(ROWS)
    columns["body_mass_g"] = np.array([math.inf, 4000.0])
    response = client.post(INFER, content=binary(columns)[0], headers=binary(columns)[1])
    assert response.status_code == 400
    assert "NaN or infinite values in row(s) [0] of feature(s) ['body_mass_g']" in response.json()["error"]


@pytest.mark.parametrize(("data", "message"), [
    (b"\x05\x00\x00\x00abc", "not a sequence of values each after its 4-byte little-endian length"),
    (b"\x02\x00\x00\x00\xff\xfe", "a BYTES value is not UTF-8 text"),
])
def test_malformed_binary_bytes_are_refused(mixed, data, message):
    client, _ = mixed
    body, headers = binary(binary_columns(ROWS))
    header = json.loads(body[:int(headers["inference-header-content-length"])])
    header["inputs"] = [{"name": "island", "shape": [1], "datatype": "BYTES",
                         "parameters": {"binary_data_size": len(data)}}]
    text = json.dumps(header).encode()
    response = client.post(INFER, content=text + data, headers={**headers,
                                                                 "inference-header-content-length": str(len(text))})
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_metadata_types_each_input(mixed, oip):
    client, _ = mixed
    meta = client.get(f"/v2/models/{MODEL}").json()
    oip("metadata_model_response", meta)
    assert meta["inputs"] == [{"name": "bill_length_mm", "datatype": "FP64", "shape": [-1]},
                              {"name": "body_mass_g", "datatype": "FP64", "shape": [-1]},
                              {"name": "island", "datatype": "BYTES", "shape": [-1]},
                              {"name": "sex", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["nullable_inputs"] == FEATURES  # the pipeline imputes every one
    assert "matrix_input" not in meta["parameters"]  # one matrix cannot carry text


def test_category_counters_have_bounded_labels(mixed, cases):
    client, _ = mixed

    def category(feature: str, value: str) -> str:
        return f'mlserving_feature_category_total{{category="{value}",feature="{feature}",model="{MODEL}"}}'

    before = scrape(client)
    rows = [{**ROWS[0], "island": island} for island in ("Torgersen", "Atlantis", "Lemuria", None, "Dream")]
    assert client.post(INFER, json=v2(rows)).status_code == 200
    after = scrape(client)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert [delta(category("island", c)) for c in ("Torgersen", "Dream", "Biscoe", "__other__", "__missing__")] \
        == [1, 1, 0, 2, 1]
    assert delta(category("sex", "male")) == 5
    labels = {key for key in after if key.startswith("mlserving_feature_category_total{")}
    # the model's categories, plus __other__ and __missing__: no series for Atlantis or Lemuria
    assert labels == {category("island", c) for c in ("Biscoe", "Dream", "Torgersen", "__other__", "__missing__")} \
        | {category("sex", c) for c in ("female", "male", "__other__", "__missing__")}
    # numeric features: a histogram of the values present, missing ones counted apart
    rows = [{**ROWS[0], "body_mass_g": None}, {**ROWS[1], "body_mass_g": 4000.0}]
    assert client.post(INFER, json=v2(rows)).status_code == 200
    final = scrape(client)
    mass = f'feature="body_mass_g",model="{MODEL}"'
    served = f'{mass},version="m1"'  # the histograms carry the served version; the missing counts do not
    assert final[f"mlserving_feature_value_count{{{served}}}"] - after[f"mlserving_feature_value_count{{{served}}}"] \
        == 1
    assert final[f"mlserving_feature_value_sum{{{served}}}"] - after[f"mlserving_feature_value_sum{{{served}}}"] \
        == 4000
    assert final[f"mlserving_feature_missing_total{{{mass}}}"] - after[f"mlserving_feature_missing_total{{{mass}}}"] \
        == 1
    assert not any(key.startswith("mlserving_feature_value_count{feature=\"island\"") for key in final)


def test_the_largest_request_the_limits_allow_fits_the_body_limit(mixed):
    """Every value at its longest: 1 KiB strings whose every byte JSON escapes to six characters, numbers of
    24 characters; in v2 and as v1 objects (each value beside its name)."""
    client, model = mixed
    saved, model.max_rows = model.max_rows, 40
    try:
        worst = "\x01" * MAX_STRING_BYTES
        rows = [{"bill_length_mm": -1.2345678901234567e-300, "body_mass_g": -1.2345678901234567e-300,
                 "island": worst, "sex": worst}] * model.max_rows
        v1 = f"/v1/models/{MODEL}:predict"
        for path, body in ((INFER, {"id": "x" * 200, **v2(rows)}), (v1, {"instances": rows})):
            content = json.dumps(body).encode()
            assert len(content) <= model.max_body_bytes
            answer = client.post(path, content=content, headers={"content-type": "application/json"})
            assert answer.status_code == 200, answer.text
    finally:
        model.max_rows = saved


@pytest.mark.parametrize("folder", MIXED)
def test_every_estimator_on_mixed_inputs_answers_as_the_pipeline(model_dirs, cases, folder, caplog):
    with caplog.at_level(logging.INFO):
        loaded = load_model_dir(model_dirs / folder)
    folds = [r.getMessage() for r in caplog.records if "linear fold" in r.getMessage()]
    assert folds == [f"{model_dirs / folder}: predicting with sklearn, no linear fold: its inputs include "
                     "categorical features ['island', 'sex']"]  # one line, at load
    tensors = [Tensor(name, [len(cases["rows"])], "BYTES" if name in CATEGORICAL else "FP64",
                      [row[name] for row in cases["rows"]]) for name in FEATURES]
    answered = loaded.predict(batch_from_v2(tensors, loaded.spec, 100)).tolist()
    assert answered == loaded.estimator.predict(frame(cases["rows"])).tolist() == cases["predictions"][folder]


def test_missing_values_are_accepted_where_the_model_imputes_not_where_the_signature_says(model_dirs):
    from mlpipeline.model_format import read_mlmodel

    meta = read_mlmodel(model_dirs / "mixed")
    assert meta.feature_types == ("double", "double", "string", "string")
    assert meta.feature_required == (True,) * 4  # the input example happened to miss nothing
    assert load_model_dir(model_dirs / "mixed").spec.nullable == (True,) * 4  # the pipeline imputes all four
    assert read_mlmodel(model_dirs / "mixed-random_forest").feature_required == (True, False, True, False)


def test_plain_numeric_models_still_refuse_missing_values(client):
    rows = [[5.1, 3.5, 1.4, None]]
    response = client.post(INFER, json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows}]})
    assert response.status_code == 400 and "data must be numbers" in response.json()["error"]
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"} and meta["parameters"]["nullable_inputs"] == []


texts = st.one_of(st.none(), st.sampled_from(["Biscoe", "Dream", "Torgersen", "male", "female", ""]),
                  st.text(max_size=8), st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=2)))
numbers = st.one_of(st.none(), st.floats(width=32), st.integers(-2**70, 2**70), st.text(max_size=3), st.booleans())


@st.composite
def mixed_requests(draw) -> dict:
    """Requests shaped like the mixed model's: its features with any datatype, shape and values."""
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.sampled_from([*FEATURES, "x"]), min_size=1, max_size=5, unique=True)) \
        if draw(st.booleans()) else FEATURES
    tensors = []
    for name in names:
        datatype = draw(st.sampled_from(["BYTES", "FP64", "FP32", "INT64"])) if draw(st.booleans()) else \
            ("BYTES" if name in CATEGORICAL else "FP64")
        values = texts if datatype == "BYTES" else numbers
        shape = draw(st.just([rows]) | st.lists(st.integers(-1, 5), max_size=3))
        tensors.append({"name": name, "datatype": datatype, "shape": shape,
                        "data": draw(st.lists(values, min_size=rows, max_size=rows) | st.lists(values, max_size=6))})
    return {"inputs": tensors}


@st.composite
def binary_mixed(draw) -> tuple[bytes, dict]:
    rows = draw(st.integers(1, 3))
    columns = {name: np.array([draw(st.text(string.printable, max_size=6)) for _ in range(rows)], dtype=object)
               if name in CATEGORICAL else np.array(draw(st.lists(st.floats(), min_size=rows, max_size=rows)))
               for name in FEATURES}
    body, headers = binary(columns, binary_outputs=draw(st.booleans()))
    cut = draw(st.integers(0, 12))
    return (body[:-cut] if cut else body), headers


def test_fuzzed_requests_never_fail_the_server(mixed):
    client, _ = mixed
    statuses = {}

    def send(**request):
        response = client.post(INFER, **request)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (request, response.status_code, response.text)

    @FUZZ
    @given(mixed_requests())
    def as_json(body):
        send(content=json.dumps(body), headers={"content-type": "application/json"})

    @FUZZ
    @given(binary_mixed())
    def as_binary(request):
        send(content=request[0], headers=request[1])

    as_json()
    as_binary()
    assert statuses.get(200) and statuses.get(400), statuses
    assert client.post(INFER, json=v2(ROWS)).status_code == 200


def test_the_fast_path_answers_bytes_inputs_itself(served, mixed):
    from mlserving.routes import in_front

    _, model = mixed
    reached = []

    async def kserve_route(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    status, answer = asgi_post(in_front(kserve_route, {MODEL: model}), *binary(binary_columns(ROWS)))
    assert status == 200 and reached == [] and json.loads(answer)["outputs"][0]["shape"] == [2]
