"""The dataset file: what it declares, its defaults, and a clear error for every mistake."""

from __future__ import annotations

import os

import pytest
import yaml

from mlpipeline import dataset
from mlpipeline.config import config_hash, run_config
from mlpipeline.dataset import DatasetFileError
from tests.support import REPO

PENGUINS = """
model_name: penguins-species
label: {column: species, task: classification}
features:
  - {name: island, type: categorical}
  - {name: bill_length_mm, type: numeric, min: 20, max: 80, nullable: true}
  - {name: sex, type: categorical, nullable: true, categories: [female, male]}
drop_columns: [penguin_id, observed_at]
source: {format: jsonl}
model: {estimator: hist_gradient_boosting, params: {max_iter: 200}}
metric: {name: balanced_accuracy, min: 0.8}
schedule: "@daily"
owners: [ml-team]
tags: [biology]
canary: {percent: 20, minutes: 5, inconclusive: rollback}
"""


def parse(text: str, name: str = "penguins"):
    return dataset.parse_text(text, f"datasets/{name}.yaml", name)


def test_the_issue_example_parses_with_what_it_declares_and_defaults_for_the_rest():
    penguins = parse(PENGUINS)
    assert penguins.model_name == "penguins-species" and penguins.label == "species"
    assert penguins.classes == ()  # learned from the data
    assert [(f.name, f.type, f.nullable) for f in penguins.features] == [
        ("island", "categorical", False), ("bill_length_mm", "numeric", True), ("sex", "categorical", True)]
    assert penguins.feature("sex").categories == ("female", "male")
    assert penguins.feature("bill_length_mm").min == 20 and penguins.feature("island").min is None
    assert penguins.drop_columns == ("penguin_id", "observed_at")
    assert (penguins.source.kind, penguins.source.format) == ("files", "jsonl")
    assert (penguins.estimator, penguins.params) == ("hist_gradient_boosting", {"max_iter": 200})
    assert (penguins.metric, penguins.metric_threshold, penguins.schedule) == ("balanced_accuracy", 0.8, "@daily")
    assert penguins.canary == {"percent": 20, "minutes": 5.0, "inconclusive": "rollback"}
    assert (penguins.window, penguins.test_size, penguins.seed) == ("last:1", 0.25, 42)


def test_the_recorded_form_reads_back_equal_and_the_fingerprint_follows_the_content():
    penguins = parse(PENGUINS)
    assert dataset.from_dict(penguins.as_dict()) == penguins
    assert parse(PENGUINS.replace("max_iter: 200", "max_iter: 201")).fingerprint() != penguins.fingerprint()
    assert parse(PENGUINS + "\n# a comment\n").fingerprint() == penguins.fingerprint()


def test_the_example_dataset_file_describes_iris():
    iris = dataset.load(REPO / "datasets" / "iris.yaml")
    assert iris.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert iris.label == "species" and iris.classes == ("setosa", "versicolor", "virginica")
    from sklearn.datasets import load_iris

    data = load_iris().data
    for i, feature in enumerate(iris.features):
        assert feature.min <= data[:, i].min() and data[:, i].max() <= feature.max


def test_a_regression_file_gets_its_task_s_defaults_and_keeps_its_bound_s_key():
    spec = parse(yaml.safe_dump({**BASE, "label": {"column": "y", "task": "regression"}}))
    assert (spec.estimator, spec.metric, spec.metric_threshold, spec.metric_direction) == ("ridge", "r2", 0.5, "higher")
    assert spec.classes == () and spec.numeric_target.numeric and spec.numeric_target.name == "y"
    mae = parse(yaml.safe_dump({**BASE, "label": {"column": "y", "task": "regression"},
                                "metric": {"name": "mae", "max": 12.5}}))
    assert (mae.metric_direction, mae.metric_bound, mae.metric_threshold) == ("lower", "max", 12.5)
    assert mae.as_dict()["metric"] == {"name": "mae", "max": 12.5} and dataset.from_dict(mae.as_dict()) == mae
    assert mae.metric_fails(12.6) and not mae.metric_fails(12.5)
    assert mae.fingerprint() != spec.fingerprint()
    no_intercept = parse(yaml.safe_dump({**BASE, "label": {"column": "y", "task": "regression"},
                                         "model": {"estimator": "ridge", "params": {"fit_intercept": False}}}))
    assert no_intercept.params == {"fit_intercept": False}


def test_pull_sources_parse_with_their_own_keys():
    sql = parse(PENGUINS.replace("source: {format: jsonl}", "source: {kind: sql, conn_id: warehouse, query: "
                                 "\"SELECT * FROM penguins WHERE day = %(partition)s\"}"))
    assert (sql.source.kind, sql.source.conn_id) == ("sql", "warehouse") and "%(partition)s" in sql.source.query
    http = parse(PENGUINS.replace("source: {format: jsonl}", "source: {kind: http, conn_id: data_server, "
                                  "endpoint: \"/batches/{partition}\", format: jsonl}"))
    assert http.source.endpoint == "/batches/{partition}" and dataset.from_dict(http.as_dict()) == http


BASE = {"model_name": "m", "label": {"column": "y"}, "features": [{"name": "x", "type": "numeric"}]}


def _regression(path: str, value):
    """_with on a regression dataset file."""
    return _with(path, value, {**BASE, "label": {"column": "y", "task": "regression"}})


def _with(path: str, value, base: dict = BASE):
    document = yaml.safe_load(yaml.safe_dump(base))
    keys = path.split(".")
    target = document
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    if value is _DELETE:
        target.pop(keys[-1])
    else:
        target[keys[-1]] = value
    return yaml.safe_dump(document)


_DELETE = object()

MISTAKES = {
    "no model name": (_with("model_name", _DELETE), "key 'model_name': is required"),
    "upper-case model name": (_with("model_name", "Iris"), "key 'model_name': 'Iris' is not a model name"),
    "model name too long": (_with("model_name", "a" * 46), "at most 45 characters"),
    "typo at the top": (_with("metrc", {"name": "accuracy"}), "key 'metrc': unknown key (did you mean 'metric'?)"),
    "unknown task": (_with("label.task", "ranking"), "key 'label.task': 'ranking' is not allowed; allowed: "
                                                     "classification, regression"),
    "one class": (_with("label.classes", ["a"]), "key 'label.classes': needs at least 2 classes"),
    "repeated class": (_with("label.classes", ["a", "a"]), "key 'label.classes': lists ['a'] more than once"),
    "no features": (_with("features", []), "key 'features': must be a non-empty list"),
    "unknown feature type": (_with("features", [{"name": "x", "type": "text"}]),
                             "key 'features[0].type': 'text' is not allowed; allowed: numeric, categorical"),
    "range inverted": (_with("features", [{"name": "x", "type": "numeric", "min": 2, "max": 1}]),
                       "key 'features[0].min': min 2.0 must be below max 1.0"),
    "range on a categorical": (_with("features", [{"name": "x", "type": "categorical", "min": 0}]),
                               "key 'features[0].min': applies to numeric features only"),
    "nullable not a boolean": (_with("features", [{"name": "x", "type": "numeric", "nullable": "yes"}]),
                               "key 'features[0].nullable': must be true or false"),
    "label is a feature": (_with("features", [{"name": "y", "type": "numeric"}]),
                           "column(s) ['y'] are declared more than once"),
    "dropped column is a feature": (_with("drop_columns", ["x"]), "column(s) ['x'] are declared more than once"),
    "unknown format": (_with("source", {"format": "xlsx"}),
                       "key 'source.format': 'xlsx' is not allowed; allowed: csv, jsonl, parquet"),
    "sql without a partition": (_with("source", {"kind": "sql", "conn_id": "w", "query": "SELECT 1"}),
                                "key 'source.query': must select one partition"),
    "http key on a file source": (_with("source", {"format": "csv", "endpoint": "/x/{partition}"}),
                                  "key 'source.endpoint': does not apply to source.kind files"),
    "unknown estimator": (_with("model", {"estimator": "xgboost"}),
                          "key 'model.estimator': 'xgboost' is not allowed for a classification label; allowed: "
                          "logistic_regression, random_forest, hist_gradient_boosting, linear_svm"),
    "param of another estimator": (_with("model", {"estimator": "random_forest", "params": {"C": 2}}),
                                   "key 'model.params.C': is not a parameter random_forest takes here"),
    "param of the wrong type": (_with("model", {"estimator": "random_forest", "params": {"n_estimators": "many"}}),
                                "key 'model.params.n_estimators': must be int"),
    "unknown metric": (_with("metric", {"name": "auc"}), "key 'metric.name': 'auc' is not allowed for a "
                                                         "classification label; allowed: accuracy, balanced_accuracy, "
                                                         "macro_f1"),
    "metric bound out of range": (_with("metric", {"name": "accuracy", "min": 1.5}),
                                  "key 'metric.min': 1.5 is out of range: must be <= 1"),
    "regression with classes": (_regression("label.classes", ["a", "b"]),
                                "key 'label.classes': applies to classification only"),
    "classifier for a regression label": (_regression("model", {"estimator": "logistic_regression"}),
                                          "'logistic_regression' is not allowed for a regression label "
                                          "('logistic_regression' is a classification estimator); allowed: ridge, "
                                          "random_forest, hist_gradient_boosting"),
    "class weight on a regressor": (_regression("model", {"estimator": "random_forest",
                                                          "params": {"class_weight": "balanced"}}),
                                    "key 'model.params.class_weight': is not a parameter random_forest takes here"),
    "classification metric for a regression label": (_regression("metric", {"name": "accuracy", "min": 0.9}),
                                                     "'accuracy' is a classification metric"),
    "estimator as a list": (_regression("model", {"estimator": ["ridge"]}),
                            "key 'model.estimator': ['ridge'] is not allowed for a regression label"),
    "metric as a list": (_with("metric", {"name": ["accuracy"]}),
                         "key 'metric.name': ['accuracy'] is not allowed for a classification label"),
    "rmse without its bound": (_regression("metric", {"name": "rmse"}),
                               "key 'metric.max': is required for rmse (its scale is the target's)"),
    "rmse with a minimum": (_regression("metric", {"name": "rmse", "min": 3}),
                            "key 'metric.min': rmse is better lower: its threshold is metric.max"),
    "negative rmse bound": (_regression("metric", {"name": "rmse", "max": -1}),
                            "key 'metric.max': -1 is out of range: must be > 0"),
    "r2 with a maximum": (_regression("metric", {"name": "r2", "max": 0.5}),
                          "key 'metric.max': r2 is better higher: its threshold is metric.min"),
    "r2 bound above 1": (_regression("metric", {"name": "r2", "min": 1.2}),
                         "key 'metric.min': 1.2 is out of range: must be < 1"),
    "accuracy with a maximum": (_with("metric", {"name": "accuracy", "max": 0.5}),
                                "key 'metric.max': accuracy is better higher: its threshold is metric.min"),
    "bad schedule": (_with("schedule", "every day"), "key 'schedule': 'every day' is neither a cron expression"),
    "bad window": (_with("window", "last:0"), "key 'window': 'last:0' is not allowed"),
    "test size of 1": (_with("split", {"test_size": 1}), "key 'split.test_size': 1 is out of range: must be < 1"),
    "canary share of 100": (_with("canary", {"percent": 100}), "key 'canary.percent': 100 is out of range"),
    "unknown inconclusive canary action": (_with("canary", {"inconclusive": "wait"}),
                                           "key 'canary.inconclusive': 'wait' is not allowed; allowed: promote, "
                                           "rollback"),
    "not a mapping": ("- a\n- b\n", "must be a mapping with keys"),
    "not YAML": ("model_name: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("text, message", MISTAKES.values(), ids=MISTAKES.keys())
def test_every_mistake_names_the_file_the_key_and_what_is_allowed(text, message):
    with pytest.raises(DatasetFileError) as raised:
        parse(text, "mine")
    assert str(raised.value).startswith("dataset file datasets/mine.yaml: ")
    assert message in str(raised.value)


def test_a_file_name_that_cannot_be_part_of_a_dag_id_is_refused(tmp_path):
    path = tmp_path / "My Model.yaml"
    path.write_text(PENGUINS)
    with pytest.raises(DatasetFileError, match="the file name 'My Model' must be lower-case"):
        dataset.load(path)


def test_a_link_a_missing_file_and_an_oversized_file_are_refused_without_being_read(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text(PENGUINS)
    link = tmp_path / "link.yaml"
    os.symlink(secret, link)
    with pytest.raises(DatasetFileError, match="cannot read dataset file .*link.yaml"):
        dataset.load(link)
    with pytest.raises(DatasetFileError, match="cannot read dataset file .*absent.yaml"):
        dataset.load(tmp_path / "absent.yaml")
    big = tmp_path / "big.yaml"
    big.write_text(PENGUINS + "#" * dataset.MAX_FILE_BYTES)
    with pytest.raises(DatasetFileError, match="the limit is"):
        dataset.load(big)


def test_the_folder_lists_yaml_files_in_name_order_without_hidden_ones(tmp_path):
    for name in ("b.yaml", "a.yml", ".hidden.yaml", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in dataset.dataset_files(tmp_path)] == ["a.yml", "b.yaml"]
    assert dataset.dataset_files(tmp_path / "absent") == []


def test_the_run_config_takes_the_window_from_the_file_unless_the_run_overrides_it():
    penguins = parse(PENGUINS.replace("schedule:", "window: last:3\nschedule:"))
    assert run_config(penguins)["window"] == "last:3"
    assert run_config(penguins, "all")["window"] == "all"
    assert config_hash(run_config(penguins)) != config_hash(run_config(penguins, "all"))
    with pytest.raises(Exception, match="training window must be"):
        run_config(penguins, "last:x")


def test_the_c_loader_reads_every_shipped_dataset_file_as_the_python_loader_does():
    from tests.datasets import DATASETS_DIR

    for path in [*dataset.dataset_files(REPO / "datasets"), *dataset.dataset_files(DATASETS_DIR)]:
        text = path.read_text()
        assert yaml.load(text, Loader=dataset._SAFE_LOADER) == yaml.safe_load(text), path
