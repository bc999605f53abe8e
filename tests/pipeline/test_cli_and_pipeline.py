"""The CLI's output contract and the committed KFP pipeline."""

from __future__ import annotations

import json

import pytest
import yaml

from mlpipeline.kfp_pipeline import TRAINING_YAML, compile_pipeline
from tests.support import EXAMPLE_DATASET

from .helpers import run_cli


def test_result_is_also_written_for_the_kpo_xcom_sidecar(volume, tmp_path):
    xcom = tmp_path / "xcom"
    xcom.mkdir()
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-01", "--rows", 30,
                     "--dataset", EXAMPLE_DATASET, env={"MLPIPELINE_XCOM_DIR": str(xcom)})
    assert json.loads((xcom / "return.json").read_text()) == result.json


def test_progress_goes_to_stderr_and_stdout_holds_only_json(volume):
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-01", "--rows", 30,
                     "--dataset", EXAMPLE_DATASET)
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
    (["simulate", "--data-root", "/tmp/x", "--dataset", "d.yaml"], "the following arguments are required: --partition"),
    (["ingest", "--data-root", "/tmp/x", "--partition", "2026-11-01"], "one of the arguments --dataset "),
    (["simulate", "--data-root", "/tmp/x", "--partition", "2026-11-01", "--rows", "many"], "invalid int value"),
    (["explode"], "invalid choice: 'explode'"),
])
def test_usage_errors_are_one_line(args, message):
    result = run_cli(*args, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
