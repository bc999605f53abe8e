"""The DAG's two decisions: the pure functions, the BranchPythonOperators that call them (run for real
under dag.test(), with the DAG's own callables, templates and Params), on both targets."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from airflow.providers.standard.operators.python import BranchPythonOperator

from mlops.branch_callables import choose_promotion, choose_retraining, retraining_reasons

from .test_dag import parse_dag

HEALTHY = {"champion": {"version": "3"}, "fresh_metrics": {"accuracy": 0.97},
           "drift": {"share_drifted": 0.25}, "reason": "champion v3: fresh accuracy 0.9700, 1 of 4 features drifted"}
PARAMS = {"metric_threshold": 0.85, "drift_limit": 0.5, "force_retrain": False}


def reasons(detect=HEALTHY, metric_threshold=0.85, drift_limit=0.5, force=False, metric="accuracy",
            direction="higher"):
    return retraining_reasons(detect, metric_threshold, drift_limit, force, metric, direction)


def test_a_healthy_champion_is_kept():
    assert reasons() == []


def test_no_champion_means_retraining():
    assert reasons({"champion": None, "degraded_by_definition": True}) == ["there is no champion"]


def test_accuracy_below_the_threshold_means_retraining_and_at_it_does_not():
    low = {**HEALTHY, "fresh_metrics": {"accuracy": 0.61}}
    assert reasons(low) == ["fresh accuracy 0.6100 < threshold 0.85"]
    assert reasons(low, metric_threshold=0.61) == []
    assert reasons(HEALTHY, metric_threshold=0.98) == ["fresh accuracy 0.9700 < threshold 0.98"]


def test_the_threshold_applies_to_the_dataset_file_s_metric():
    scored = {**HEALTHY, "fresh_metrics": {"accuracy": 0.97, "macro_f1": 0.72}}
    assert reasons(scored, metric_threshold=0.8, metric="macro_f1") == ["fresh macro_f1 0.7200 < threshold 0.8"]
    assert reasons(scored, metric_threshold=0.7, metric="macro_f1") == []


def regression(**fresh_metrics) -> dict:
    return {**HEALTHY, "metric": next(iter(fresh_metrics)), "direction": "lower",
            "fresh_metrics": {"rows": 200, **fresh_metrics}}


def test_a_metric_better_lower_retrains_above_its_threshold_and_not_at_or_below_it():
    """rmse, mae, mape: the threshold is the file's metric.max; a higher error is the worse one."""
    def rmse(score, threshold=55.0):
        return reasons(regression(rmse=score), metric_threshold=threshold, metric="rmse", direction="lower")

    assert rmse(61.2) == ["fresh rmse 61.2 > threshold 55"]
    assert rmse(55.0) == [] and rmse(12.5) == []  # at or under the maximum: fine (a minimum would retrain)
    assert rmse(0.0123456, threshold=0.01) == ["fresh rmse 0.01235 > threshold 0.01"]  # any scale, 4 digits
    mape = reasons(regression(mape=0.1234), metric_threshold=0.1, metric="mape", direction="lower")
    assert mape == ["fresh mape 0.1234 > threshold 0.1"]  # a fraction, with no upper bound


def test_r2_is_better_higher_and_retrains_below_its_threshold_even_when_negative():
    scored = {**HEALTHY, "fresh_metrics": {"rmse": 80.0, "r2": 0.42}}
    assert reasons(scored, metric_threshold=0.5, metric="r2", direction="higher") == [
        "fresh r2 0.4200 < threshold 0.5"]
    assert reasons(scored, metric_threshold=0.4, metric="r2", direction="higher") == []
    negative = {**HEALTHY, "fresh_metrics": {"r2": -0.3}}
    assert reasons(negative, metric_threshold=-0.5, metric="r2") == []
    assert reasons(negative, metric_threshold=0.0, metric="r2") == ["fresh r2 -0.3000 < threshold 0.0"]


def test_choose_retraining_reads_the_threshold_in_the_metric_s_direction(caplog):
    caplog.set_level(logging.INFO, logger="mlops.branch_callables")
    params = {**PARAMS, "metric_threshold": 55}
    assert choose_retraining(regression(rmse=61.2), params, "retrain", "keep", metric="rmse",
                             direction="lower") == "retrain"
    assert "retraining: fresh rmse 61.2 > threshold 55" in caplog.text
    caplog.clear()
    assert choose_retraining(regression(rmse=40.0), params, "retrain", "keep", metric="rmse",
                             direction="lower") == "keep"
    assert "no retraining (rmse maximum 55" in caplog.text
    # the same scores read as a minimum (the wrong direction) would decide the other way round
    assert choose_retraining(regression(rmse=40.0), params, "retrain", "keep", metric="rmse") == "retrain"


def test_drift_above_the_limit_means_retraining_and_at_it_does_not():
    drifted = {**HEALTHY, "drift": {"share_drifted": 0.75}}
    assert reasons(drifted) == ["drifted feature share 0.75 > limit 0.5"]
    assert reasons(drifted, drift_limit=0.75) == []
    assert reasons(HEALTHY, drift_limit=0.0) == ["drifted feature share 0.25 > limit 0.0"]


def test_force_retrain_retrains_a_healthy_champion():
    assert reasons(force=True) == ["force_retrain is set"]
    assert reasons({"champion": None}, force=True) == ["force_retrain is set", "there is no champion"]


def test_every_reason_is_named_when_all_hold():
    bad = {**HEALTHY, "fresh_metrics": {"accuracy": 0.5}, "drift": {"share_drifted": 1.0}}
    assert reasons(bad, force=True) == ["force_retrain is set", "fresh accuracy 0.5000 < threshold 0.85",
                                        "drifted feature share 1.00 > limit 0.5"]


def live(share: float, status: str = "measured") -> dict:
    drifted = ["petal_length", "petal_width", "sepal_length"][:int(share * 4)]
    return {**HEALTHY, "live_drift": {"status": status, "window": "1h", "share_drifted": share,
                                      "drifted_features": drifted}}


def test_live_drift_above_the_limit_means_retraining_and_at_it_does_not():
    assert reasons(live(0.75)) == ["live drift: drifted feature share 0.75 of the traffic served in the last 1h > "
                                   "limit 0.5 (petal_length, petal_width, sepal_length)"]
    assert reasons(live(0.5)) == []
    assert reasons(live(0.75), drift_limit=0.75) == []


@pytest.mark.parametrize("status", ["insufficient traffic", "unavailable"])
def test_live_drift_that_was_not_measured_is_not_a_reason(status):
    assert reasons(live(1.0, status)) == []


def test_missing_measurements_are_not_reasons():
    # detect reports no accuracy on an empty fresh set and no drift without a reference sample.
    assert reasons({"champion": {"version": "1"}, "fresh_metrics": {}, "drift": None}) == []


def test_choose_retraining_logs_why(caplog):
    caplog.set_level(logging.INFO, logger="mlops.branch_callables")
    drifted = {**HEALTHY, "drift": {"share_drifted": 0.75}}
    assert choose_retraining(drifted, {**PARAMS, "force_retrain": True}, "retrain", "keep") == "retrain"
    assert "retraining: force_retrain is set; drifted feature share 0.75 > limit 0.5" in caplog.text
    caplog.clear()
    assert choose_retraining(HEALTHY, PARAMS, "retrain", "keep") == "keep"
    assert "no retraining" in caplog.text and HEALTHY["reason"] in caplog.text


def training(decision: str, reason: str = "evidence") -> dict:
    """A training task's result: the TrainingDecision both targets return (mlpipeline.contracts)."""
    return {"run_key": "rk-1", "decision": decision, "reason": reason, "challenger_run_id": "r1",
            "challenger_model_uri": "models:/m-1", "challenger_metrics": {"accuracy": 0.97},
            "challenger_accuracy": 0.97, "engine": "kfp.local"}


def test_choose_promotion_follows_the_runs_decision(caplog):
    caplog.set_level(logging.INFO, logger="mlops.branch_callables")
    promote = training("promote", "challenger 0.97 beats champion 0.61 (McNemar p=0.0001)")
    assert choose_promotion(promote, "register", "keep") == "register"
    assert "training decided promote: challenger 0.97 beats champion 0.61" in caplog.text
    assert choose_promotion(training("reject", "no gain"), "register", "keep") == "keep"


def test_a_decision_off_the_contract_is_refused_by_name():
    from mlpipeline.contracts import ContractError

    with pytest.raises(ContractError, match="decision must be 'promote' or 'reject', got 'keep'"):
        choose_promotion(training("keep"), "register", "keep")
    missing = "challenger_accuracy, challenger_metrics, challenger_model_uri, challenger_run_id$"
    with pytest.raises(ContractError, match=f"training decision without {missing}"):
        choose_promotion({"run_key": "rk-1", "decision": "promote", "reason": "x"}, "register", "keep")


@pytest.mark.parametrize("target", ["local", "kubernetes"])
def test_the_branch_points_are_branch_python_operators(target, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", target)
    if target == "kubernetes":
        from .conftest import kubernetes_target

        kubernetes_target(monkeypatch)
    dag = parse_dag()
    retrain, promote = dag.get_task("decide_retraining"), dag.get_task("training.check_decision")
    assert isinstance(retrain, BranchPythonOperator) and retrain.python_callable is choose_retraining
    assert isinstance(promote, BranchPythonOperator) and promote.python_callable is choose_promotion
    assert retrain.downstream_task_ids == {retrain.op_kwargs["retrain"], retrain.op_kwargs["keep"]}
    assert promote.downstream_task_ids == {promote.op_kwargs["promote"], promote.op_kwargs["keep"]}


# dag.test() runs only DAGs it finds in a DAG bundle, so the stand-in DAG is written to a bundle of its own.
BRANCH_DAG = """
import datetime as dt
import json

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, Param, TaskGroup

from mlops.branch_callables import {callable}

SPEC = json.loads({spec!r})


def upstream_result(dag_run):
    return dag_run.conf["upstream_result"]


def in_group(task_id, groups):
    group, _, name = task_id.rpartition(".")
    if group and group not in groups:
        groups[group] = TaskGroup(group)
    return {{"task_id": name, **({{"task_group": groups[group]}} if group else {{}})}}


PARAMS = {{name: Param(p["value"], description=p["description"], **p["schema"]) for name, p in SPEC["params"].items()}}

with DAG(SPEC["dag_id"], schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), params=PARAMS):
    groups = {{}}
    upstream = PythonOperator(python_callable=upstream_result, **in_group(SPEC["upstream"], groups))
    # What the real DAG passes as its upstream's result (an XComArg), the stand-in's result here.
    op_kwargs = {{**SPEC["op_kwargs"], **{{key: upstream.output for key in SPEC["upstream_kwargs"]}}}}
    branch = BranchPythonOperator(python_callable={callable}, op_kwargs=op_kwargs, **in_group(SPEC["branch"], groups))
    upstream >> branch >> [EmptyOperator(**in_group(task_id, groups)) for task_id in SPEC["downstream"]]
"""


def run_branch(tmp_path, monkeypatch, branch_id: str, upstream_id: str, upstream_result: dict,
               conf: dict, dag_id: str | None = None) -> dict[str, str]:
    """The real DAG's branch task (its callable, templated op_kwargs and Params) between a stand-in for its
    upstream task, which returns `upstream_result` as XCom, and empty downstream tasks; run with dag.test().
    `dag_id`: another dataset file's DAG than the example's."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    real = parse_dag(dag_id) if dag_id else parse_dag()
    branch = real.get_task(branch_id)
    dag_id = f"branch_{branch_id.replace('.', '_')}"
    from_upstream = {k for k, v in branch.op_kwargs.items() if isinstance(v, PlainXComArg)}
    assert {branch.op_kwargs[k].operator.task_id for k in from_upstream} == {upstream_id}
    spec = {"dag_id": dag_id, "upstream": upstream_id, "branch": branch_id,
            "downstream": sorted(branch.downstream_task_ids), "upstream_kwargs": sorted(from_upstream),
            "op_kwargs": {k: v for k, v in branch.op_kwargs.items() if k not in from_upstream},
            "params": {k: real.params.get_param(k).dump() for k in real.params}}
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / f"{dag_id}.py").write_text(BRANCH_DAG.format(callable=branch.python_callable.__name__,
                                                           spec=json.dumps(spec)))
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": f"test-{dag_id}", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(bundle)}}]))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(bundle))
    assert bag.import_errors == {}
    dagrun = bag.dags[dag_id].test(logical_date=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
                                   run_conf={**conf, "upstream_result": upstream_result})
    assert dagrun.state == "success"
    return {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


@pytest.mark.parametrize(("detect", "conf", "taken", "skipped"), [
    (HEALTHY, {}, "no_retraining", "training.train"),
    ({"champion": None}, {}, "training.train", "no_retraining"),
    ({**HEALTHY, "fresh_metrics": {"accuracy": 0.6}}, {}, "training.train", "no_retraining"),
    (HEALTHY, {"metric_threshold": 0.99}, "training.train", "no_retraining"),
    (HEALTHY, {"drift_limit": 0.1}, "training.train", "no_retraining"),
    (HEALTHY, {"force_retrain": True}, "training.train", "no_retraining"),
], ids=["healthy", "no-champion", "low-accuracy", "stricter-threshold", "drift-limit", "forced"])
def test_decide_retraining_runs_the_branch_the_params_call_for(airflow_db, tmp_path, monkeypatch, detect, conf, taken,
                                                               skipped):
    states = run_branch(tmp_path, monkeypatch, "decide_retraining", "detect_degradation", detect, conf)
    assert states[taken] == "success" and states[skipped] == "skipped"


@pytest.mark.parametrize(("rmse", "conf", "taken", "skipped"), [
    (50.0, {}, "no_retraining", "training.train"),
    (70.0, {}, "training.train", "no_retraining"),
    (50.0, {"metric_threshold": 45}, "training.train", "no_retraining"),
], ids=["under-max", "above-max", "stricter-max"])
def test_a_regression_dag_retrains_above_its_maximum(airflow_db, tmp_path, monkeypatch, rmse, conf, taken, skipped):
    """tests/datasets/diabetes.yaml: rmse, metric.max 65; the DAG passes the direction to its branch."""
    import shutil

    from .conftest import REPO

    folder = tmp_path / "datasets"
    folder.mkdir()
    shutil.copy(REPO / "tests" / "datasets" / "diabetes.yaml", folder / "diabetes.yaml")
    monkeypatch.setenv("AIRFLOW__MLOPS__DATASETS_FOLDER", str(folder))
    detect = {"champion": {"version": "1"}, "metric": "rmse", "direction": "lower", "fresh_score": rmse,
              "fresh_metrics": {"rows": 100, "rmse": rmse, "mae": 0.8 * rmse, "r2": 0.4, "mape": 0.3}}
    states = run_branch(tmp_path, monkeypatch, "decide_retraining", "detect_degradation", detect, conf,
                        dag_id="continuous_training_diabetes")
    assert states[taken] == "success" and states[skipped] == "skipped"


@pytest.mark.parametrize(("decision", "taken", "skipped"), [
    ("promote", "training.approve_promotion", "training.keep_champion"),
    ("reject", "training.keep_champion", "training.approve_promotion"),
])
def test_check_decision_runs_the_branch_training_decided(airflow_db, tmp_path, monkeypatch, decision, taken, skipped):
    states = run_branch(tmp_path, monkeypatch, "training.check_decision", "training.train", training(decision), {})
    assert states[taken] == "success" and states[skipped] == "skipped"


def test_a_champion_significantly_worse_than_on_its_test_set_is_retrained_though_above_the_floor():
    degraded = {"champion": {"version": "3"}, "fresh_metrics": {"accuracy": 0.88},
                "degradation": {"status": "measured", "degraded": True, "compared": "accuracy", "fresh_score": 0.88,
                                "reference_score": 0.95, "pvalue": 1e-5, "alpha": 0.001}}
    assert reasons(degraded, metric_threshold=0.85) == [
        "fresh accuracy 0.88 is significantly worse than the champion's earlier 0.95 (p=1e-05 < 0.001)"]
    steady = {**degraded, "degradation": {**degraded["degradation"], "degraded": False, "pvalue": 0.2}}
    assert reasons(steady, metric_threshold=0.85) == []
