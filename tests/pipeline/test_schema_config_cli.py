"""Schema and config loading, the CLI's output contract, and the committed KFP pipeline."""

from __future__ import annotations

import json

import pytest
import yaml

from mlpipeline.config import config_hash, load_config
from mlpipeline.errors import PipelineError
from mlpipeline.kfp_pipeline import TRAINING_YAML, compile_pipeline
from mlpipeline.schema import load_schema

from .helpers import run_cli


def test_default_schema_describes_iris(schema):
    assert schema.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert schema.label == "species" and schema.classes == ("setosa", "versicolor", "virginica")
    from sklearn.datasets import load_iris

    data = load_iris().data
    for i, feature in enumerate(schema.features):
        assert feature.min <= data[:, i].min() and data[:, i].max() <= feature.max


@pytest.mark.parametrize("loader, content, message", [
    (load_schema, "name: x\nfeatures: []\nlabel: {column: y, classes: [a, b]}\n", "needs features"),
    (load_schema, "name: x\nfeatures: [{name: a, min: 1, max: 0}]\nlabel: {column: y, classes: [a, b]}\n", "min < max"),
    (load_schema, "name: x\nfeatures: [{name: a, min: 0, max: 1}]\n", "missing or bad field"),
    (load_schema, "name: x\nfeatures: [{name: y, min: 0, max: 1}]\nlabel: {column: y, classes: [a, b]}\n",
     "duplicate column"),
    (load_config, "split: {test_size: 1.5}\n", "test_size must be between 0 and 1"),
    (load_config, "window: last:x\n", "training window must be"),
    (load_config, "- a\n- b\n", "must be a YAML mapping"),
    (load_config, "model: {kind: svm}\n", "unknown model kind 'svm'"),
    (load_config, "model: {kind: random_forest, params: {C: 2}}\n", "bad params for model kind 'random_forest'"),
], ids=lambda v: getattr(v, "__name__", None))
def test_bad_schema_and_config_files_are_explained(tmp_path, loader, content, message):
    path = tmp_path / "file.yaml"
    path.write_text(content)
    with pytest.raises(PipelineError, match=message):
        loader(path)


def test_config_overrides_merge_and_change_the_hash(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("decision: {min_improvement: 0.05}\n")
    config = load_config(path)
    assert config["decision"]["min_improvement"] == 0.05 and config["decision"]["alpha"] == 0.05
    assert config_hash(config) != config_hash(load_config())
    assert load_config(window="all")["window"] == "all"


def test_a_model_of_another_kind_takes_only_its_own_params(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: {kind: random_forest, params: {n_estimators: 30}}\n")
    assert load_config(path)["model"] == {"kind": "random_forest", "params": {"n_estimators": 30}}
    path.write_text("model: {kind: hist_gradient_boosting}\n")
    assert load_config(path)["model"] == {"kind": "hist_gradient_boosting", "params": {}}
    path.write_text("model: {params: {C: 0.5}}\n")  # the same kind: params still merge
    assert load_config(path)["model"] == {"kind": "logistic_regression", "params": {"C": 0.5, "max_iter": 500}}


def test_result_is_also_written_for_the_kpo_xcom_sidecar(volume, tmp_path):
    xcom = tmp_path / "xcom"
    xcom.mkdir()
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-01", "--rows", 30,
                     env={"MLPIPELINE_XCOM_DIR": str(xcom)})
    assert json.loads((xcom / "return.json").read_text()) == result.json


def test_progress_goes_to_stderr_and_stdout_holds_only_json(volume):
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-01", "--rows", 30)
    assert "simulating 30 rows" in result.stderr
    assert result.json["rows"] == 30


def test_committed_pipeline_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "training.yaml")
    assert fresh.read_text() == TRAINING_YAML.read_text(), "run `make compile-pipeline` and commit the result"


def test_compiled_pipeline_mounts_the_data_volume_and_installs_nothing():
    documents = list(yaml.safe_load_all(TRAINING_YAML.read_text()))
    pipeline, platform = documents[0], documents[1]
    executors = pipeline["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-train-evaluate-decide"}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"].startswith("ghcr.io/mlops-ct/pipeline:")
        assert "pip install" not in " ".join(container["command"])
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in k8s.values():
        assert executor["pvcMount"][0]["mountPath"] == "/data"
        assert executor["securityContext"]["runAsNonRoot"] is True
    params = pipeline["root"]["inputDefinitions"]["parameters"]
    assert {"run_key", "data_root", "model_name", "mlflow_tracking_uri", "dag_id", "dag_run_id",
            "data_pvc"} <= set(params)


@pytest.mark.parametrize("args, message", [
    (["simulate", "--data-root", "/tmp/x"], "the following arguments are required: --partition"),
    (["simulate", "--data-root", "/tmp/x", "--partition", "2026-11-01", "--rows", "many"], "invalid int value"),
    (["explode"], "invalid choice: 'explode'"),
])
def test_usage_errors_are_one_line(args, message):
    result = run_cli(*args, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
