"""Regression models (make_models.py's `regression-*` folders: what the training pipeline logs for a dataset whose
label is a number): the loader takes them, the answers are FP64 numbers (v2 JSON and binary, v1) equal to what
MLflow's own loaders predict, a Ridge takes the linear fold, a prediction that is no finite number is a server
error, and the predictions are counted in a histogram on the edges the model carries
(extra_files/prediction_buckets.json), which a missing or refused file leaves out. A classifier's answers and
metrics stay as they were."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.model_format import FEATURE_BUCKETS_FILE, PREDICTION_BUCKETS_FILE, ModelLoadError
from mlserving.loader import is_regression, load_model_dir
from mlserving.metrics import le_label
from mlserving.validation import Tensor, batch_from_v2

from .conftest import MODEL
from .test_binary import encoded
from .test_endpoints import EXPECTED, matrix_request, scrape
from .test_feature_buckets import REFUSED, expected_buckets
from .test_mixed import binary, binary_columns

INFER = f"/v2/models/{MODEL}/infer"
REGRESSION = ["regression-ridge", "regression-random_forest", "regression-hist_gradient_boosting"]
# each folder's categorical features (the diabetes data's `sex` is a number)
CATEGORICAL = {"regression-ridge": (), "regression-random_forest": ("island", "sex"),
               "regression-hist_gradient_boosting": ("island", "sex")}


@pytest.fixture(scope="module")
def cases(model_dirs) -> dict:
    """Rows for each regression model and what MLflow's pyfunc and sklearn loaders predict for them."""
    return json.loads((model_dirs / "regression-cases.json").read_text())


@pytest.fixture(params=REGRESSION)
def regressor(request, served, model_dirs):
    """The session's server swapped to a regression model, and back to good-v1 afterwards."""
    client, model = served
    model.swap(model_dirs / request.param)
    yield client, model, request.param
    model.swap(model_dirs / "good-v1")


def same_numbers(answered, expected) -> bool:
    """The same predictions to rounding: a Ridge folded adds its products in another order, and a random forest
    (n_jobs=-1) sums its trees' predictions in the order its threads finish (MLflow's two loaders already
    differ in the last bits)."""
    return len(answered) == len(expected) and np.allclose(answered, expected, rtol=1e-12, atol=0)


def v2(rows: list[dict], categorical=()) -> dict:
    """One JSON tensor per feature: FP64 numbers (null where missing), BYTES strings for the `categorical` ones
    (null where missing)."""
    return {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "BYTES" if name in categorical else "FP64",
                        "data": [row[name] for row in rows]} for name in rows[0]]}


def predictions_output(doc: dict, rows: int) -> list[float]:
    """The answer's one output, checked to be the FP64 tensor of one prediction per row; its numbers."""
    (output,) = doc["outputs"]
    assert {k: v for k, v in output.items() if k != "data"} == {"name": "predictions", "shape": [rows],
                                                                   "datatype": "FP64",
                                                                   "parameters": {"content_type": "np"}}, output
    assert all(type(v) is float for v in output["data"]), output["data"]
    return output["data"]


@pytest.mark.parametrize("folder", REGRESSION)
def test_a_regression_model_loads_with_its_edges(model_dirs, folder, caplog):
    caplog.set_level(logging.WARNING)
    loaded = load_model_dir(model_dirs / folder)
    assert loaded.regression and loaded.classes == () and loaded.class_values.size == 0
    edges = json.loads((model_dirs / folder / PREDICTION_BUCKETS_FILE).read_text())["prediction"]
    assert loaded.prediction_buckets == tuple(edges) and len(edges) > 10
    assert loaded.feature_buckets == {name: tuple(values) for name, values in
                                      json.loads((model_dirs / folder / FEATURE_BUCKETS_FILE).read_text()).items()}
    assert caplog.records == []


def test_the_ridge_model_takes_the_linear_fold_and_it_equals_predict(model_dirs, caplog):
    with caplog.at_level(logging.INFO):
        loaded = load_model_dir(model_dirs / "regression-ridge")
    assert [r.getMessage() for r in caplog.records if "linear fold" in r.getMessage()] == [
        f"{model_dirs / 'regression-ridge'}: predicting with the linear fold (StandardScalers and a Ridge)"]
    assert loaded.spec.plain and loaded.predictor.__qualname__.startswith("fold_linear")
    # the diabetes features are standardised (within +-0.2): rows on ten times that spread, and far beyond
    rows = np.random.default_rng(0).normal(0, 0.5, (20_000, len(loaded.features)))
    rows[:100] *= 1e4
    assert np.allclose(loaded.predict(rows), loaded.estimator.predict(rows), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("folder", ["regression-random_forest", "regression-hist_gradient_boosting"])
def test_other_regressors_take_sklearns_predict(model_dirs, cases, folder):
    loaded = load_model_dir(model_dirs / folder)
    rows = cases["rows"][folder]
    tensors = [Tensor(name, [len(rows)], "BYTES" if name in CATEGORICAL[folder] else "FP64",
                      [r[name] for r in rows]) for name in loaded.features]
    assert same_numbers(loaded.predict(batch_from_v2(tensors, loaded.spec, 100)), cases["sklearn"][folder])


def test_a_json_request_gets_fp64_predictions_as_mlflow_predicts_them(regressor, cases, oip):
    client, _, folder = regressor
    rows = cases["rows"][folder]
    response = client.post(INFER, json={"id": "req-r", **v2(rows, CATEGORICAL[folder])})
    assert response.status_code == 200, response.text
    doc = response.json()
    oip("inference_response", doc)
    assert doc["model_version"] == f"r-{folder.removeprefix('regression-')}" and doc["id"] == "req-r"
    answered = predictions_output(doc, len(rows))
    assert same_numbers(answered, cases["pyfunc"][folder]) and same_numbers(answered, cases["sklearn"][folder])


def _binary_rows(cases, folder: str) -> tuple[list[dict], list[float]]:
    """The rows a binary request can carry (KServe's BYTES encoding has no null: a row missing a category is
    left out; a missing number is NaN) and what MLflow predicts for them."""
    keep = [i for i, row in enumerate(cases["rows"][folder]) if all(row[c] is not None for c in CATEGORICAL[folder])]
    return [cases["rows"][folder][i] for i in keep], [cases["pyfunc"][folder][i] for i in keep]


def test_a_binary_request_gets_fp64_predictions_as_mlflow_predicts_them(regressor, cases):
    client, _, folder = regressor
    rows, expected = _binary_rows(cases, folder)
    if folder == "regression-ridge":
        body, headers = encoded({"features": np.array([list(row.values()) for row in rows])})
    else:
        body, headers = binary(binary_columns(rows))
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert same_numbers(predictions_output(response.json(), len(rows)), expected)


def test_binary_outputs_are_fp64_encoded_by_kserve(regressor, cases):
    from kserve.protocol.infer_type import InferResponse

    client, _, folder = regressor
    rows, expected = _binary_rows(cases, folder)
    if folder == "regression-ridge":
        body, headers = encoded({"features": np.array([list(row.values()) for row in rows])}, binary_outputs=True)
    else:
        body, headers = binary(binary_columns(rows), binary_outputs=True)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:json_length])
    assert header["outputs"] == [{"name": "predictions", "shape": [len(rows)], "datatype": "FP64",
                                  "parameters": {"content_type": "np", "binary_data_size": 8 * len(rows)}}]
    assert len(response.content) == json_length + 8 * len(rows)
    decoded = InferResponse.from_bytes(response.content, json_length).outputs[0].as_numpy()
    assert decoded.dtype == np.float64 and same_numbers(decoded, expected)


def test_v1_predict_answers_the_numbers(regressor, cases):
    client, _, folder = regressor
    response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": cases["rows"][folder]})
    assert response.status_code == 200, response.text
    answered = response.json()["predictions"]
    assert all(type(v) is float for v in answered) and same_numbers(answered, cases["pyfunc"][folder])


def test_metadata_names_the_task_and_the_fp64_output(regressor, oip):
    client, _, _ = regressor
    meta = client.get(f"/v2/models/{MODEL}").json()
    oip("metadata_model_response", meta)
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    assert meta["parameters"]["task"] == "regression" and "classes" not in meta["parameters"]


@pytest.fixture
def ridge(served, model_dirs):
    client, model = served
    model.swap(model_dirs / "regression-ridge")
    yield client, model
    model.swap(model_dirs / "good-v1")


def overflowing_row(estimator, nan: bool) -> list[float]:
    """Finite inputs far past the training range on which the Ridge's sum overflows: every term of one sign
    (infinity), or the two largest terms infinite with opposite signs (NaN)."""
    scaler, ridge = estimator[0], estimator[-1]
    weights = ridge.coef_ / scaler.scale_  # what each input is multiplied by
    if not nan:
        return (np.sign(weights) * 1e306).tolist()
    first, second = np.argsort(-np.abs(weights))[:2]
    row = np.zeros(len(weights))
    row[first], row[second] = np.sign(weights[first]) * 1e308, -np.sign(weights[second]) * 1e308
    return row.tolist()


@pytest.mark.parametrize("nan", [False, True], ids=["infinity", "nan"])
def test_a_prediction_that_is_no_finite_number_is_a_server_error_never_null(ridge, nan):
    client, model = ridge
    server_errors = f'mlserving_requests_total{{model="{MODEL}",outcome="server_error",version="r-ridge"}}'
    before = scrape(client)
    rows = [[0.01] * 10, overflowing_row(model.active.estimator, nan)]
    predicted = model.active.predict(np.array(rows))  # what the model, folded, predicts
    assert np.isfinite(predicted[0]) and (np.isnan(predicted[1]) if nan else np.isposinf(predicted[1]))
    if not nan:  # sklearn's own predict agrees (on the NaN case it refuses its own scaled values: infinite)
        assert np.isposinf(model.active.estimator.predict(np.array(rows))[1])
    answers = [client.post(INFER, json={"inputs": [{"name": "x", "shape": [2, 10], "datatype": "FP64",
                                                    "data": rows}]}),
               client.post(INFER, content=encoded({"x": np.array(rows)})[0], headers=encoded({"x": np.array(rows)})[1]),
               client.post(INFER, content=encoded({"x": np.array(rows)}, binary_outputs=True)[0],
                           headers=encoded({"x": np.array(rows)}, binary_outputs=True)[1]),
               client.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})]
    for answer in answers:
        assert answer.status_code == 500, answer.text
        assert "predicted a value that is not a finite number (NaN or infinity) for row(s) [1]" in \
            answer.json()["error"], answer.text
        assert list(answer.json()) == ["error"] and "null" not in answer.text  # no answer, not a null one
    after = scrape(client)
    assert after[server_errors] - before.get(server_errors, 0.0) == 4
    # not counted in the traffic metrics: the rows were not answered
    count = f'mlserving_prediction_count{{model="{MODEL}",version="r-ridge"}}'
    assert after.get(count, 0.0) == before.get(count, 0.0)
    assert client.post(INFER, json=v2([dict.fromkeys(model.active.features, 0.01)])).status_code == 200


def prediction_histogram(text: str) -> dict[str, dict[str, float]]:
    """{version: {le: cumulative count, "count": .., "sum": ..}} of mlserving_prediction in a /metrics text."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mlserving_prediction":
            for sample in family.samples:
                key = sample.labels.get("le") or sample.name.rsplit("_", 1)[1]
                out.setdefault(sample.labels["version"], {})[key] = sample.value
    return out


def test_the_prediction_histogram_counts_the_answers_on_the_models_edges(regressor, model_dirs, cases):
    client, model, folder = regressor
    version = model.active.version
    rows = cases["rows"][folder]
    before = prediction_histogram(client.get("/metrics").text)
    assert before[version]["count"] == 0  # a new version's histogram starts from zero
    answered = []
    for start in range(0, len(rows), 3):  # several requests, a batch of them
        response = client.post(INFER, json=v2(rows[start:start + 3], CATEGORICAL[folder]))
        answered += response.json()["outputs"][0]["data"]
    text = client.get("/metrics").text
    edges = json.loads((model_dirs / folder / PREDICTION_BUCKETS_FILE).read_text())["prediction"]
    histogram = prediction_histogram(text)[version]
    assert list(histogram)[:-2] == [le_label(e) for e in edges] + ["+Inf"]
    assert [histogram[le] for le in list(histogram)[:-2]] == expected_buckets(edges, np.array(answered))
    assert histogram["count"] == len(rows) and histogram["sum"] == pytest.approx(sum(answered))
    assert "mlserving_predicted_class" not in {f.name for f in text_string_to_metric_families(text)}
    features = {s.labels["feature"] for f in text_string_to_metric_families(text) if f.name == "mlserving_feature_value"
                for s in f.samples if s.labels["version"] == version}
    assert features == set(model.active.spec.numeric_names)  # the feature histograms, as for a classifier


def test_a_classifiers_answers_and_metrics_are_unchanged_beside_a_regressor(served, model_dirs):
    client, model = served
    model.swap(model_dirs / "regression-ridge")
    model.swap(model_dirs / "good-v1")
    before = scrape(client)
    doc = client.post(INFER, json=matrix_request()).json()
    assert doc["outputs"] == [{"name": "predictions", "shape": [3], "datatype": "BYTES",
                               "parameters": {"content_type": "str"}, "data": EXPECTED}]
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["outputs"] == [{"name": "predictions", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["classes"] == EXPECTED and "task" not in meta["parameters"]
    text = client.get("/metrics").text
    after = scrape(client)
    setosa = f'mlserving_predicted_class_total{{model="{MODEL}",predicted_class="setosa",version="1"}}'
    assert after[setosa] - before.get(setosa, 0.0) == 1
    assert "mlserving_prediction" not in {f.name for f in text_string_to_metric_families(text)}


def _without_file(path):
    path.unlink()


PREDICTION_REFUSED = {
    "not JSON": REFUSED["not JSON"],
    "a linked file": REFUSED["a linked file"],
    "a linked folder": REFUSED["a linked folder"],
    "a fifo": REFUSED["a fifo"],
    "not increasing": (lambda p: p.write_text(json.dumps({"prediction": [200.0, 100.0]})),
                       "the edges of 'prediction' must be strictly increasing"),
    "another key": (lambda p: p.write_text(json.dumps({"flipper_length_mm": [1.0, 2.0]})),
                    "it must name exactly the key 'prediction' (missing: ['prediction']"),
    "NaN": (lambda p: p.write_text('{"prediction": [1.0, NaN]}'), "NaN is not a number JSON allows"),
}


@pytest.mark.parametrize("case", PREDICTION_REFUSED)
def test_a_refused_prediction_buckets_file_leaves_the_histogram_out_not_the_model(model_dirs, tmp_path, caplog, case):
    folder = shutil.copytree(model_dirs / "regression-ridge", tmp_path / "models" / "ridge", symlinks=True)
    change, message = PREDICTION_REFUSED[case]
    change(folder / PREDICTION_BUCKETS_FILE)
    caplog.set_level(logging.WARNING, logger="mlserving.loader")
    loaded = load_model_dir(folder)
    assert loaded.regression and loaded.prediction_buckets is None and loaded.predict(np.zeros((3, 10))).shape == (3,)
    # the feature edges are read as ever (refused too when the link is their folder's)
    assert (loaded.feature_buckets is None) == (case == "a linked folder")
    warnings = [r.getMessage() for r in caplog.records if PREDICTION_BUCKETS_FILE in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"{folder.resolve()}: {PREDICTION_BUCKETS_FILE} is refused: ")
    assert message in warnings[0] and warnings[0].endswith("not counted in a histogram (no mlserving_prediction)")


def test_a_regression_model_without_prediction_buckets_serves_without_the_histogram(served, model_dirs, tmp_path,
                                                                                   caplog):
    client, model = served
    folder = shutil.copytree(model_dirs / "regression-ridge", tmp_path / "ridge")
    (folder / PREDICTION_BUCKETS_FILE).unlink()
    caplog.set_level(logging.WARNING, logger="mlserving.loader")
    try:
        model.swap(folder)
        assert [r.getMessage() for r in caplog.records] == [
            f"{folder}: no {PREDICTION_BUCKETS_FILE}: its predictions are not counted in a histogram "
            "(no mlserving_prediction)"]
        response = client.post(INFER, json=v2([dict.fromkeys(model.active.features, 0.01)] * 2))
        assert response.status_code == 200 and len(predictions_output(response.json(), 2)) == 2
        families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert "mlserving_prediction" not in families and "mlserving_predicted_class" not in families
        assert "mlserving_feature_value" in families
    finally:
        model.swap(model_dirs / "good-v1")


def test_a_model_neither_classifier_nor_regressor_is_refused():
    from sklearn.cluster import KMeans

    clusters = KMeans(n_clusters=2, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(ModelLoadError, match="m: the model is not a fitted classifier or regressor \\(its final "
                                             "step is a KMeans\\)"):
        is_regression(clusters, "m")

