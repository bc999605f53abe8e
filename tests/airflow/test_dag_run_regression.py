"""dag.test() runs of a regression model's whole loop on the local target (a real MLflow server, real
kfp.local trainings, a real mlserving process): tests/datasets/diabetes.yaml (ridge, held to an RMSE
maximum: lower is better) and tests/datasets/friedman.yaml (hist gradient boosting, held to an R²
minimum), each as a DAG of its own. The sequence is clean -> clean -> a changed coefficient: v1 is
promoted, the clean batch retrains nothing, the drifted batch retrains and promotes v2, and the served
model answers FP64 numbers throughout."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import yaml

from mlops.hooks.stage import StageHook
from tests import datasets as test_datasets
from tests import support

from .test_dag import parse_dag
from .test_dag_run import env, run, xcom  # noqa: F401 (env: a fixture)

pytestmark = pytest.mark.slow
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", test_datasets.REGRESSION)
def test_a_regression_dataset_file_runs_the_whole_loop(name, datasets, env, stack, tmp_path):  # noqa: F811
    root, serving = env
    model = f"{name}-dagtest"
    document = {**yaml.safe_load(test_datasets.dataset_path(name).read_text()), "model_name": model}
    (datasets / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    spec = test_datasets.load(name)
    dag = parse_dag(f"continuous_training_{name}")
    reference = tmp_path / "reference.parquet"  # built with pandas, in the pipeline's environment
    test_datasets.in_pipeline_environment("write-reference", name, str(reference))
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]})
    given = {"data_root": root, "dataset": datasets / f"{name}.yaml", "reference": reference, "rows": 900}
    request = json.loads(test_datasets.in_pipeline_environment("v2-request", name))

    def cycle(day: str, seed: int, **drift) -> tuple[dict, dict]:
        stages.run("simulate", {**given, "partition": day, "seed": seed, **drift}, on_line=lambda _: None)
        dagrun, states = run(dag, day)
        assert dagrun.state == "success", states
        return xcom(dagrun, "detect_degradation"), states

    trained = []  # per run: whether it trained
    first, states = cycle(DAYS[0], seed=1)
    trained.append(states.get("training.train") == "success")
    assert first["champion"] is None and states["training.register"] == "success", states
    trained1 = xcom_decision(stack, model, "1")
    answer = httpx.post(f"{serving}/v2/models/{model}/infer", json=request)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert answer.json()["model_version"] == "1" and output["datatype"] == "FP64"
    assert isinstance(output["data"][0], float) and math.isfinite(output["data"][0])

    clean, states = cycle(DAYS[1], seed=2)
    assert clean["champion"]["version"] == "1" and clean["direction"] == spec.metric_direction
    assert not spec.metric_fails(clean["fresh_score"]), clean["reason"]
    assert states.get("training.train") in ("skipped", None), states
    trained.append(states.get("training.train") == "success")

    drifted, states = cycle(DAYS[2], seed=3, drift="coefficient", severity=1.0)
    assert spec.metric_fails(drifted["fresh_score"]), drifted["reason"]
    assert states["training.register"] == "success", states
    trained.append(states.get("training.train") == "success")
    trained3 = xcom_decision(stack, model, "2")
    assert trained3["decision"] == "promote" and trained3["paired_test"]["name"] == "wilcoxon", trained3
    assert trained3["bootstrap_ci95"][0] > 0 and trained3["relative_improvement"] >= spec.min_improvement
    answer = httpx.post(f"{serving}/v2/models/{model}/infer", json=request).json()
    assert answer["model_version"] == "2" and answer["outputs"][0]["datatype"] == "FP64"
    print(json.dumps({"dataset": name, "metric": spec.metric, "threshold": spec.metric_threshold,
                      "v1_test": trained1["challenger_score"], "v1_on_clean_batch": clean["fresh_score"],
                      "v1_on_drifted_batch": drifted["fresh_score"], "v2_test": trained3["challenger_score"],
                      "trained_per_run": trained, "retrains_after_v1": sum(trained[1:])}))


def xcom_decision(stack, model: str, version: str) -> dict:
    """The training decision recorded on the source run of `model` v`version`."""
    found = httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/model-versions/get",
                      params={"name": model, "version": version}).json()["model_version"]
    tags = {t["key"]: t["value"] for t in httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/runs/get",
                                                     params={"run_id": found["run_id"]}).json()["run"]["data"]["tags"]}
    return json.loads(tags["decision_record"])
