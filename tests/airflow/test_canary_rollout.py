"""Canary rollouts on the local target, end to end under live traffic: dag.test() runs of the DAG deploy
each new champion beside the version it replaces, behind the real router (Debian's nginx); a real
Prometheus scrapes both model servers, and the deploy promotes or rolls back from its PromQL. A bounded
load generator (scripts/traffic.py) sends requests all along and counts every failure. Real MLflow,
kfp.local trainings, model servers, Alertmanager and Pushgateway, as in test_dag_run."""

from __future__ import annotations

import httpx
import pytest

from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import StageHook
from mlops.operators.deploy import ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO, LocalDeployOperator
from scripts.traffic import Traffic
from tests import support

from .conftest import connect
from .dag_test import dataset_file
from .registry_setup import train_and_register
from .test_dag import parse_dag
from .test_dag_run import land, run, xcom

MODEL = "iris-canary"
pytestmark = pytest.mark.slow


@pytest.fixture
def canary_env(stack, local_target, monkeypatch, tmp_path):
    serving = support.serving_url()
    with support.prometheus(tmp_path, [], file_sd=support.model_server_targets(local_target)) as prometheus:
        connect(monkeypatch, mlflow_default=stack["mlflow"], mlserving_default=serving, prometheus_default=prometheus,
                alertmanager_default=stack["alertmanager"], pushgateway_default=stack["pushgateway"])
        # judged on 60 canary requests, read every 2 s: a test-sized canary (the defaults are 100 and 15 s)
        for option, value in {"CANARY_MIN_REQUESTS": "60", "CANARY_POLL_SECONDS": "2",
                              "CANARY_DEADLINE_MINUTES": "3"}.items():
            monkeypatch.setenv(f"AIRFLOW__MLOPS__{option}", value)
        yield local_target, serving
        support.stop_local_serving(local_target)


@pytest.fixture
def dag(datasets):
    """The example's DAG as this test's own model."""
    dataset_file(datasets, model_name=MODEL)
    return parse_dag()


def test_the_trigger_form_says_what_an_inconclusive_canary_does_and_takes_only_promote_or_rollback(datasets,
                                                                                                    monkeypatch):
    """canary_inconclusive: the dataset file's `canary.inconclusive` is its default, else the option's; the
    form's description says when a canary is inconclusive (the options' minimum and deadline) and what each
    choice does; another value is refused when the run is made, naming the allowed ones."""
    from airflow.exceptions import ParamValidationError

    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_MIN_REQUESTS", "60")
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_DEADLINE_MINUTES", "3")
    dataset_file(datasets, model_name=MODEL, canary={"inconclusive": "rollback"})
    dataset_file(datasets, "wine", model_name="wine-canary")  # no canary block: the option's default
    param = parse_dag().params.get_param("canary_inconclusive")
    assert param.value == "rollback"
    assert "fewer than 60 requests by its deadline, the later of canary_minutes and 3 minutes after it started" \
        in param.description
    assert "'promote' keeps the offline verdict" in param.description and "CanaryInconclusive" in param.description
    with pytest.raises(ParamValidationError, match=r"'keep' is not one of \['promote', 'rollback'\]"):
        param.resolve("keep")
    assert parse_dag("continuous_training_wine").params.get_param("canary_inconclusive").value == "promote"


@pytest.mark.timeout(900)
def test_a_healthy_canary_is_promoted_and_a_diverging_one_rolled_back_with_no_request_failed(dag, canary_env, stack):
    root, serving = canary_env
    land(root, stack, "2026-11-01", seed=1, model=MODEL)
    dagrun, states = run(dag, "2026-11-01", canary_percent=30, canary_minutes=0.5)
    assert dagrun.state == "success", states
    assert xcom(dagrun, "deploy")["version"] == "1" and "canary" not in xcom(dagrun, "deploy")  # nothing to beside
    assert xcom(dagrun, "report")["canary"] == "straight swap"

    with Traffic(serving, MODEL, rate=40) as traffic:
        # Concept drift (every label rotated): v2 is trained and promoted. On traffic of all three
        # classes it predicts the same class mix as v1 (rotated), answers fast and without errors.
        land(root, stack, "2026-11-02", drift="concept", seed=2, model=MODEL)
        dagrun, states = run(dag, "2026-11-02", canary_percent=30, canary_minutes=0.5)
        assert dagrun.state == "success" and states["deploy"] == "success", states
        canary = xcom(dagrun, "deploy")["canary"]
        assert canary["verdict"] == "promote" and canary["percent"] == 30, canary
        assert canary["evidence"]["canary"]["requests"] >= 60 and canary["evidence"]["canary"]["error_ratio"] == 0
        assert "mlserving_requests_total" in canary["evidence"]["queries"]["canary"]["requests"]
        assert traffic.answered["1"] > 0 and traffic.answered["2"] > 0, traffic.summary()
        assert xcom(dagrun, "report")["canary"] == "promote"
        tags = MlflowHook().model_version_tags(MODEL, "2")
        assert tags["canary.verdict"] == "promote" and tags["canary.reason"] == canary["reason"]

        # Clean labels again: v2 fails them, v3 is trained and promoted. The traffic now is setosa
        # flowers, which v2 calls versicolor and v3 setosa: the canary's class mix diverges.
        traffic.mix = {"setosa": 1.0}
        land(root, stack, "2026-11-03", seed=3, model=MODEL)
        dagrun, states = run(dag, "2026-11-03", canary_percent=30, canary_minutes=0.5)
        answered_before = traffic.answered["2"]
        support.wait_until(lambda: traffic.answered["2"] > answered_before + 20, 30)
    # A verdict, not a failure: v2 kept serving, deploy succeeds, roll_back_champion moves the alias
    # back, the report says so and CanaryRolledBack fires.
    assert dagrun.state == "success", states
    assert states["deploy"] == states["roll_back_champion"] == states["report"] == "success", states
    deployed = xcom(dagrun, "deploy")
    assert deployed["rolled_back"] == "3" and deployed["version"] == "2" and not deployed["changed"], deployed
    canary = deployed["canary"]
    assert canary["verdict"] == "rollback" and "predicted-class mix differs" in canary["reason"], canary
    assert MlflowHook().model_version_tags(MODEL, "3")["canary.verdict"] == "rollback"
    report = xcom(dagrun, "report")
    assert report["decision"] == "rolled_back" and report["canary"] == "rollback", report
    assert report["champion_version"] == "2" and report["canary_reason"] == canary["reason"]
    assert traffic.answered["3"] > 0 and traffic.failures == [], traffic.summary()  # none, before or after
    served = httpx.get(f"{serving}/v2/models/{MODEL}").json()["parameters"]["registry_version"]
    assert served == "2" and not (root / "serving" / MODEL / "canary" / "mlserving.pid").exists()
    assert champion(stack, MODEL) == "2"  # roll_back_champion moved the alias back, recorded
    assert xcom(dagrun, "deploy", "rollback_reason").startswith("the canary of v3 was rolled back: ")
    [alert] = httpx.get(f"{stack['alertmanager']}/api/v2/alerts", params={"filter": [
        'alertname="CanaryRolledBack"', f'run_id="{dagrun.run_id}"']}).json() or [None]
    assert alert and "predicted-class mix differs" in alert["annotations"]["error"], alert
    assert alert["labels"]["severity"] == "warning"



class TaskInstance:
    """What deploy reads of its task instance outside a DAG run: its XCom pushes, its DAG and run."""

    dag_id, run_id = "canary_test", "slow-canary"

    def __init__(self):
        self.xcoms = {}

    def xcom_push(self, key, value):
        self.xcoms[key] = value


def champion(stack, model: str) -> str:
    return httpx.get(f"{stack['mlflow']}/api/2.0/mlflow/registered-models/alias",
                     params={"name": model, "alias": "champion"}).json()["model_version"]["version"]


@pytest.mark.timeout(900)
def test_a_slow_canary_is_rolled_back_by_its_p99_with_no_request_failed(canary_env, stack, monkeypatch, tmp_path):
    """The challenger answers right but slowly: a 300-tree random forest (~80 ms a prediction here, the
    logistic regression ~1 ms). On balanced traffic its class mix matches, so its p99 alone rolls it back
    while the stable version answers every request."""
    root, serving = canary_env
    model = "iris-slow-canary"
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_MAX_P99_MS", "40")
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]})
    deploy = LocalDeployOperator(task_id="deploy", model_name=model, canary_percent=30, canary_minutes=0.5,
                                 deferrable=False)
    train_and_register(stages, root, model, "2026-11-01", "none", 1)
    assert deploy.execute({"ti": TaskInstance()})["version"] == "1"
    forest = {"estimator": "random_forest", "params": {"n_estimators": 300}}
    assert train_and_register(stages, root, model, "2026-11-02", "concept", 2, estimator=forest)["champion_version"] \
        == "2"

    ti = TaskInstance()
    with Traffic(serving, model, rate=10) as traffic:
        deployed = deploy.execute({"ti": ti})
        answered_before = traffic.answered["1"]
        support.wait_until(lambda: traffic.answered["1"] > answered_before + 20, 30)  # and after the rollback
    assert deployed["rolled_back"] == "2" and deployed["version"] == "1" and not deployed["changed"], deployed
    canary = deployed["canary"]
    assert canary["verdict"] == "rollback" and "canary p99 predict latency" in canary["reason"], canary
    assert "predicted-class mix" not in canary["reason"] and canary["evidence"]["canary"]["error_ratio"] == 0
    assert canary["evidence"]["canary"]["p99_seconds"] > 0.04 > canary["evidence"]["stable"]["p99_seconds"]
    assert traffic.answered["2"] > 0 and traffic.failures == [], traffic.summary()  # slow, never failed
    served = httpx.get(f"{serving}/v2/models/{model}").json()["parameters"]["registry_version"]
    assert served == "1" and not (root / "serving" / model / "canary" / "mlserving.pid").exists()
    assert MlflowHook().model_version_tags(model, "2")["canary.verdict"] == "rollback"

    # The plan the DAG's roll_back_champion carries out, carried out by the same stage: the alias goes back.
    assert ti.xcoms[ROLLBACK_TO] == "1" and ti.xcoms[ROLLBACK_REASON].startswith("the canary of v2 was rolled back: ")
    stages.run("rollback", {"model_name": model, "to_version": ti.xcoms[ROLLBACK_TO],
                            "from_version": ti.xcoms[ROLLBACK_FROM], "reason": ti.xcoms[ROLLBACK_REASON]})
    assert champion(stack, model) == "1"
    [alert] = httpx.get(f"{stack['alertmanager']}/api/v2/alerts", params={"filter": [
        'alertname="CanaryRolledBack"', f'run_id="{TaskInstance.run_id}"']}).json() or [None]
    assert alert and "canary p99 predict latency" in alert["annotations"]["error"], alert


class RegressionTraffic(Traffic):
    """Traffic of diabetes rows (the reference sample's, drawn at random) as one 10-feature FP64 tensor."""

    def __init__(self, *args, rows: list[list[float]], **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = rows

    def row(self) -> list[float]:
        return self._random.choice(self.rows)


@pytest.mark.timeout(900)
def test_a_regression_canary_is_judged_by_its_prediction_distribution(canary_env, stack, monkeypatch):
    """A regression model's canary, between real model servers behind the router: a v2 trained on clean data
    (made champion by hand: a clean retrain is rightly not promoted) predicts as v1 does and is promoted; a
    v3 trained after a strongly changed coefficient predicts a much wider spread on the same traffic, and the
    KS distance of the two versions' prediction histograms, computed by Prometheus, rolls it back. No
    request fails, and nothing else breaches."""
    import csv

    from tests import datasets as test_datasets

    root, serving = canary_env
    model = "diabetes-canary"
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": stack["mlflow"]})
    deploy = LocalDeployOperator(task_id="deploy", model_name=model, canary_percent=30, canary_minutes=0.5,
                                 deferrable=False, regression=True)
    assert train_and_register(stages, root, model, "2026-11-01", "none", 1, dataset="diabetes")["outcome"] == \
        "promoted"
    assert deploy.execute({"ti": TaskInstance()})["version"] == "1"
    # the traffic: the reference sample's rows, features in the dataset file's order
    reference = test_datasets.in_pipeline_environment("write-reference", "diabetes", str(root / "reference.csv"))
    features = test_datasets.load("diabetes").feature_names
    with open(reference.strip()) as file:
        rows = [[float(r[f]) for f in features] for r in csv.DictReader(file)]

    registered = train_and_register(stages, root, model, "2026-11-02", "none", 2, dataset="diabetes")
    assert registered["outcome"] == "registered", registered  # not better: the champion stays v1
    httpx.post(f"{stack['mlflow']}/api/2.0/mlflow/registered-models/alias",
               json={"name": model, "alias": "champion", "version": registered["version"]}).raise_for_status()
    with RegressionTraffic(serving, model, rate=40, rows=rows) as traffic:
        healthy = deploy.execute({"ti": TaskInstance()})
        canary = healthy["canary"]
        assert canary["verdict"] == "promote" and traffic.failures == [], (canary, traffic.summary())
        assert canary["evidence"]["prediction_ks"] < 0.25 and "class_divergence" not in canary["evidence"]
        assert "mlserving_prediction_bucket" in canary["evidence"]["queries"]["prediction_ks"]

        shifted = train_and_register(stages, root, model, "2026-11-03", "coefficient", 3, dataset="diabetes",
                                     severity=2.0)
        assert shifted["outcome"] == "promoted", shifted
        ti = TaskInstance()
        deployed = deploy.execute({"ti": ti})
        answered_before = traffic.answered[registered["version"]]
        support.wait_until(lambda: traffic.answered[registered["version"]] > answered_before + 20, 30)
    assert deployed["rolled_back"] == shifted["version"] and deployed["version"] == registered["version"], deployed
    canary = deployed["canary"]
    assert canary["verdict"] == "rollback" and "prediction distribution differs" in canary["reason"], canary
    assert canary["evidence"]["prediction_ks"] > 0.25 and canary["evidence"]["canary"]["error_ratio"] == 0
    assert "latency" not in canary["reason"]
    assert traffic.answered[shifted["version"]] > 0 and traffic.failures == [], traffic.summary()
    assert ti.xcoms[ROLLBACK_TO] == registered["version"]
