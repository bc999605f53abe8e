"""The server reads MLflow's model format without MLflow (mlpipeline/model_format.py, the one loading policy).

Contract tests: every model folder here was written by MLflow itself (make_models.py, in the pipeline
environment, with the pipeline's own logging settings), and mlflow-reading.json records what MLflow's
own `Model.load` and `mlflow.sklearn.load_model` make of each. The server must read the same fields and
load an estimator that predicts the same, for every model kind the pipeline trains."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from mlpipeline.model_format import ModelLoadError, read_mlmodel
from mlserving.loader import load_model_dir

from .conftest import MODEL
from .test_endpoints import matrix_request

SERVABLE = ["good-v1", "good-v2", "random_forest", "hist_gradient_boosting", "linear_svm", "mixed",
            "mixed-random_forest", "mixed-hist_gradient_boosting", "mixed-linear_svm", "regression-ridge",
            "regression-random_forest", "regression-hist_gradient_boosting"]


@pytest.fixture(scope="module")
def mlflow_reading(model_dirs) -> dict:
    return json.loads((model_dirs / "mlflow-reading.json").read_text())


@pytest.mark.parametrize("folder", SERVABLE + ["corrupt", "wrong-features"])
def test_the_fields_read_are_the_ones_mlflow_reads(model_dirs, mlflow_reading, folder):
    ours, theirs = read_mlmodel(model_dirs / folder), mlflow_reading[folder]
    assert theirs["serialization_format"] == "skops"
    assert list(ours.features) == theirs["features"]
    assert list(ours.feature_types) == theirs["feature_types"]
    assert list(ours.feature_required) == theirs["feature_required"]
    assert model_dirs / folder / ours.model_file == model_dirs / folder / theirs["model_file"]
    assert list(ours.trusted_types) == theirs["trusted_types"]
    assert (ours.run_id, ours.model_id) == (theirs["run_id"], theirs["model_id"])


def _agrees(predicted: np.ndarray, expected: list, regression: bool) -> bool:
    """The same labels; a regressor's numbers to rounding (the linear fold adds in another order, a random
    forest sums its trees in the order its threads finish)."""
    if regression:
        return predicted.dtype == np.float64 and np.allclose(predicted, expected, rtol=1e-12, atol=0)
    return predicted.tolist() == expected


@pytest.mark.parametrize("folder", SERVABLE)
def test_the_estimator_predicts_what_mlflows_load_predicts(model_dirs, mlflow_reading, folder):
    from mlserving.validation import batch_from_v1

    loaded, theirs = load_model_dir(model_dirs / folder), mlflow_reading[folder]
    assert loaded.regression == folder.startswith("regression-")
    if loaded.spec.plain:
        rows = np.asarray(theirs["example"], dtype=np.float64)
        assert _agrees(np.asarray(loaded.estimator.predict(rows)), theirs["predictions"], loaded.regression)
        # the linear fold too, where it applies
        assert _agrees(loaded.predict(rows), theirs["predictions"], loaded.regression)
        return
    # The example as a request would send it (null for NaN), and as the pipeline gives it to a model
    instances = [[None if isinstance(v, float) and np.isnan(v) else v for v in row] for row in theirs["example"]]
    frame = pd.DataFrame({name: pd.Series([row[i] for row in instances], dtype=object if categorical else float)
                          for i, (name, categorical) in enumerate(zip(loaded.features, loaded.spec.categorical,
                                                                      strict=True))})
    assert _agrees(np.asarray(loaded.estimator.predict(frame)), theirs["predictions"], loaded.regression)
    batch = batch_from_v1({"instances": instances}, loaded.spec, len(instances))
    assert _agrees(loaded.predict(batch), theirs["predictions"], loaded.regression)


def test_a_model_logged_in_a_run_names_it_without_a_registry_file(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs / "random_forest", tmp_path / "artifacts")
    (folder / "registry.json").unlink()
    loaded = load_model_dir(folder)
    assert (loaded.run_id, loaded.model_uri) == ("run-of-random_forest", "models:/m-random_forest")


def _edited(model_dirs, tmp_path, edit) -> str:
    """A copy of good-v1 with its MLmodel document changed by `edit`."""
    folder = shutil.copytree(model_dirs / "good-v1", tmp_path / "edited")
    document = yaml.safe_load((folder / "MLmodel").read_text())
    edit(document)
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    return folder


def _set(*keys_and_value):
    *keys, last, value = keys_and_value

    def edit(document):
        for key in keys:
            document = document[key]
        if value is DELETE:
            del document[last]
        else:
            document[last] = value
    return edit


DELETE = object()
TENSOR_INPUTS = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
REFUSED = {
    "no sklearn flavor": (_set("flavors", "sklearn", DELETE), "include no 'sklearn'"),
    "pickle format": (_set("flavors", "sklearn", "serialization_format", "pickle"), "saved as 'pickle'"),
    "no format named (MLflow's default is pickle)": (_set("flavors", "sklearn", "serialization_format", DELETE),
                                                      "saved as 'pickle'"),
    "code paths": (_set("flavors", "sklearn", "code", "code"), "logged with code paths"),
    "no signature": (_set("signature", DELETE), "has no input signature"),
    "signature not a mapping": (_set("signature", "sepal_length, sepal_width"), "has no input signature"),
    "unnamed columns": (_set("signature", "inputs", TENSOR_INPUTS), "must name its columns"),
    "signature not JSON": (_set("signature", "inputs", "[{"), "is not a JSON list"),
    "untyped columns": (_set("signature", "inputs", '[{"name": "sepal_length"}, {"name": "sepal_width"}, '
                                                    '{"name": "petal_length"}, {"name": "petal_width"}]'),
                        "gives no type for column(s) ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']"),
    "a column type the server does not take": (
        _set("signature", "inputs", '[{"name": "sepal_length", "type": "datetime"}, {"name": "sepal_width", '
                                    '"type": "double"}, {"name": "petal_length", "type": "double"}, '
                                    '{"name": "petal_width", "type": "double"}]'),
        "input column(s) ['sepal_length (datetime)'] have a type this server does not take"),
    "model file outside the folder": (_set("flavors", "sklearn", "pickled_model", "../good-v2/model.skops"),
                                      "outside the model directory"),
    "model file missing": (_set("flavors", "sklearn", "pickled_model", "gone.skops"), "does not exist"),
    "no model file named": (_set("flavors", "sklearn", "pickled_model", DELETE), "names no model file"),
    "trusts a dangerous type": (_set("flavors", "sklearn", "skops_trusted_types", ["builtins.eval"]),
                                "asks skops to trust ['builtins.eval'], which is not allowed"),
}


def _refused_swap(served, folder, reason: str) -> None:
    """The swap is refused with the reason, and version 1 goes on answering."""
    client, model = served
    with pytest.raises(ModelLoadError) as refused:
        model.swap(folder)
    assert "not loaded, still serving version 1" in str(refused.value)
    assert reason in str(refused.value)
    assert model.active.version == "1"
    answer = client.post(f"/v2/models/{MODEL}/infer", json=matrix_request())
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"


@pytest.mark.parametrize("case", REFUSED)
def test_a_model_the_server_cannot_trust_or_read_is_refused_with_the_reason(client, served, model_dirs, tmp_path,
                                                                            case):
    edit, reason = REFUSED[case]
    _refused_swap(served, _edited(model_dirs, tmp_path, edit), reason)


@pytest.mark.parametrize(("content", "reason"), [
    ("flavors: [unclosed", "is unreadable"), ("- a list\n", "a YAML mapping was expected, got list")])
def test_an_unreadable_mlmodel_is_refused(client, served, model_dirs, tmp_path, content, reason):
    folder = shutil.copytree(model_dirs / "good-v1", tmp_path / "unreadable")
    (folder / "MLmodel").write_text(content)
    _refused_swap(served, folder, reason)


def test_a_model_saved_by_mlflow_as_pickle_is_refused(client, served, model_dirs):
    _refused_swap(served, model_dirs / "pickle", "only 'skops' is loaded")


def test_a_skops_file_holding_types_its_mlmodel_does_not_trust_is_refused(client, served, model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs / "random_forest", tmp_path / "forest")
    document = yaml.safe_load((folder / "MLmodel").read_text())
    document["flavors"]["sklearn"]["skops_trusted_types"] = []
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    _refused_swap(served, folder, "UntrustedTypesFoundException")
