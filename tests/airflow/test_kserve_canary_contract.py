"""Contract test: a canary rollout on the kubernetes target (KServe Serverless mode), on the emulated
cluster (tests/cluster). The operator sets `canaryTrafficPercent` (the published CRD's field; the spec
is checked against its schema in test_inference_service_contract.py); the emulated KServe controller
splits the route as ksvc_reconciler.go does; the predictor pods are the serving image's mlserving; a
real Prometheus scrapes the pods the shipped PodMonitor selects (the target list regenerated as pods
come and go, as the Prometheus Operator does); a bounded load generator sends requests through the
InferenceService's address all along. A healthy canary is promoted (the field dropped, all traffic
on its revision); a canary whose predicted-class mix diverges is rolled back (`canaryTrafficPercent:
0` with the previous spec, and the alias moved back by the rollback stage's pod), with no request
failed."""

from __future__ import annotations

import dataclasses
import json
import threading

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from mlops.operators.deploy import ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO
from mlops.operators.kserve import KServeDeployOperator
from mlops.operators.stage_pod import StagePodOperator
from scripts.traffic import Traffic
from tests import support
from tests.cluster.apiserver import ISVC, PODS, VIRTUAL_SERVICES
from tests.cluster.gateway import IngressGateway
from tests.cluster.network import pod_ready

from .conftest import connect
from .test_kserve_contract import NAMESPACE, champion, task_context, train_and_register
from .test_kserve_contract import settings as cluster_deploy_settings  # noqa: F401  (fixture)
from .test_monitoring_contract import PODMONITOR, scrape_targets

MODEL, RAW = "iris-canary-k8s", "iris-canary-raw"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def registry(cluster):
    """Per model, v1 (clean labels) and v2 (concept drift: every label rotated), v2 the champion."""
    for model, days in ((MODEL, ("2026-10-21", "2026-10-22")), (RAW, ("2026-10-23", "2026-10-24"))):
        assert train_and_register(cluster, model, days[0], "none", 1)["champion_version"] == "1"
        assert train_and_register(cluster, model, days[1], "concept", 2)["champion_version"] == "2"
    return cluster


@pytest.fixture
def prometheus(registry, monkeypatch, tmp_path):
    targets, stop = tmp_path / "targets.json", threading.Event()
    targets.write_text("[]")

    def discover():
        while not stop.is_set():
            pods = [p for p in registry.kube.list(PODS, NAMESPACE) if pod_ready(p)]
            found = sorted(f"{p['status']['podIP']}:{port}" for p in pods
                           for _, port, _ in scrape_targets(PODMONITOR, [p]))
            staged = targets.with_suffix(".new")
            staged.write_text(json.dumps([{"targets": found}]))
            staged.replace(targets)
            stop.wait(0.5)

    thread = threading.Thread(target=discover, daemon=True)
    thread.start()
    with support.prometheus(tmp_path, [], file_sd=targets) as url:
        connect(monkeypatch, prometheus_default=url)
        for option, value in {"CANARY_MIN_REQUESTS": "60", "CANARY_POLL_SECONDS": "2",
                              "CANARY_DEADLINE_MINUTES": "4"}.items():
            monkeypatch.setenv(f"AIRFLOW__MLOPS__{option}", value)
        yield url
    stop.set()
    thread.join(5)


def deploy(settings, percent: int, model: str = MODEL):
    """The deploy task through every deferral (the triggers run as the triggerer runs them); then, as in
    the DAG, roll_back_champion's pod when deploy recorded a rollback plan (a failure or a rolled-back
    canary)."""
    operator = KServeDeployOperator(task_id="deploy", model_name=model, cluster=settings, deferrable=True,
                                    canary_percent=percent, canary_minutes=0.3)
    pushed: dict = {}
    method, args = operator.execute, ()
    result = error = None
    try:
        while result is None:
            try:
                result = method(task_context(pushed), *args)
            except TaskDeferred as deferred:
                method, args = getattr(operator, deferred.method_name), (support.first_event(deferred.trigger),)
    except (RuntimeError, AirflowFailException) as exc:
        error = exc
    if pushed.get(ROLLBACK_REASON):
        StagePodOperator(task_id="roll_back_champion", stage="rollback", cluster=settings, deferrable=False,
                         options={"data_root": None, "model_name": model, "to_version": pushed[ROLLBACK_TO],
                                  "from_version": pushed[ROLLBACK_FROM], "reason": pushed[ROLLBACK_REASON]}
                         ).execute(task_context())
    return result, pushed, error


def test_a_kserve_canary_is_promoted_or_rolled_back_from_prometheus(registry, cluster_deploy_settings, prometheus):  # noqa: F811
    kube, settings = registry.kube, cluster_deploy_settings
    result, _, error = deploy(settings, 30)  # nothing served yet: created whole, no canary
    assert error is None and "canary" not in result and result["version"] == "2", error
    address = kube.stored(ISVC, NAMESPACE, MODEL)["status"]["address"]["url"]

    with Traffic(address, MODEL, rate=30) as traffic:
        # v1 becomes champion: it gets 30 % beside v2. On all three classes both predict the same mix.
        registry.stage("canary-promote-v1", "rollback", model_name=MODEL, to_version=1, from_version=2,
                       reason="test: v1 again")
        result, pushed, error = deploy(settings, 30)
        assert error is None, error
        assert result["canary"]["verdict"] == "promote" and result["version"] == "1", result["canary"]
        writes = [r.data for r in kube.requests(ISVC) if r.method.value == "PATCH" and r.name == MODEL]
        # server-side applies: the canary's with the share, the promotion's without it, which removes it
        start = next(n for n, w in enumerate(writes) if "canaryTrafficPercent" in json.dumps(w))
        assert writes[start]["spec"]["predictor"]["canaryTrafficPercent"] == 30
        assert "canaryTrafficPercent" not in writes[start + 1]["spec"]["predictor"]
        isvc = kube.stored(ISVC, NAMESPACE, MODEL)
        predictor = isvc["status"]["components"]["predictor"]
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
        assert predictor["latestRolledoutRevision"] == f"{MODEL}-predictor-00002"
        assert predictor["traffic"] == [{"revisionName": f"{MODEL}-predictor-00002", "latestRevision": True,
                                         "percent": 100}]
        assert traffic.answered["2"] > 0 and traffic.answered["1"] > 0 and traffic.failures == [], traffic.summary()
        evidence = result["canary"]["evidence"]
        assert evidence["canary"]["requests"] >= 60 and evidence["canary"]["error_ratio"] == 0

        # v2 again, on setosa flowers only: v2 calls them versicolor, v1 setosa. Rolled back: all the
        # traffic back on v1's revision at once, v1's spec restored, the alias back on v1.
        traffic.mix = {"setosa": 1.0}
        registry.stage("canary-promote-v2", "rollback", model_name=MODEL, to_version=2, from_version=1,
                       reason="test: v2 again")
        result, pushed, error = deploy(settings, 30)
        assert error is None and result["rolled_back"] == "2" and result["version"] == "1", (error, result)
        assert result["canary"]["verdict"] == "rollback" and not result["changed"]
        assert "predicted-class mix differs" in pushed["canary"]["reason"]
        assert pushed[ROLLBACK_REASON].startswith("the canary of v2 was rolled back: ") and pushed[ROLLBACK_TO] == "1"
        answered = sum(traffic.answered.values())
        assert support.wait_until(lambda: sum(traffic.answered.values()) > answered + 30, 30)
    isvc = kube.stored(ISVC, NAMESPACE, MODEL)
    assert isvc["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    shares = {t["revisionName"]: t["percent"] for t in isvc["status"]["components"]["predictor"]["traffic"]}
    assert shares[f"{MODEL}-predictor-00002"] == 100, shares
    assert champion(registry, MODEL, "canary-champ") == "1"
    assert traffic.answered["2"] > 0 and traffic.failures == [], traffic.summary()
    assert httpx.get(f"{address}/v2/models/{MODEL}").json()["parameters"]["registry_version"] == "1"

    # The next deploy of v1 takes the restored revision out of its canary state: no new revision.
    result, _, error = deploy(settings, 0)
    assert error is None and result["version"] == "1", error
    predictor = kube.stored(ISVC, NAMESPACE, MODEL)["status"]["components"]["predictor"]
    assert predictor["traffic"][0]["percent"] == 100
    assert predictor["latestRolledoutRevision"] == predictor["latestCreatedRevision"]


def test_a_raw_deployment_canary_is_a_second_inference_service_behind_the_route(registry, cluster_deploy_settings,  # noqa: F811
                                                                             prometheus):
    """RawDeployment mode has no Knative revisions: the canary is the InferenceService `<model>-canary`
    and the VirtualService's weighted destinations share the traffic (played by the emulated Istio
    gateway, tests/cluster/gateway.py); promotion rolls the model's own InferenceService to the new
    version and removes the canary, a rollback only removes it."""
    kube = registry.kube
    settings = dataclasses.replace(cluster_deploy_settings, serving_deployment_mode="RawDeployment")
    result, _, error = deploy(settings, 30, RAW)
    assert error is None and "canary" not in result and result["version"] == "2", error

    def route() -> list[dict]:
        return kube.stored(VIRTUAL_SERVICES, NAMESPACE, RAW)["spec"]["http"][0]["route"]

    host = settings.inference_host
    with IngressGateway(kube, registry.services, host), Traffic(f"http://{host}", RAW, rate=30) as traffic:
        registry.stage("canary-raw-v1", "rollback", model_name=RAW, to_version=1, from_version=2,
                       reason="test: v1 again")
        result, _, error = deploy(settings, 30, RAW)
        assert error is None and result["canary"]["verdict"] == "promote", (error, result)
        shared = [r.data for r in kube.requests(VIRTUAL_SERVICES) if r.method.value == "PATCH" and r.name == RAW]
        assert any(len((p.get("spec") or {}).get("http", [{}])[0].get("route", [])) == 2 for p in shared), shared
        assert kube.stored(ISVC, NAMESPACE, f"{RAW}-canary") is None and len(route()) == 1
        assert kube.stored(ISVC, NAMESPACE, RAW)["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
        assert traffic.answered["1"] > 0 and traffic.answered["2"] > 0 and traffic.failures == [], traffic.summary()

        traffic.mix = {"setosa": 1.0}
        registry.stage("canary-raw-v2", "rollback", model_name=RAW, to_version=2, from_version=1,
                       reason="test: v2 again")
        result, pushed, error = deploy(settings, 30, RAW)
        assert error is None and result["rolled_back"] == "2", (error, result)
        assert "predicted-class mix differs" in result["canary"]["reason"]
        answered = sum(traffic.answered.values())
        assert support.wait_until(lambda: sum(traffic.answered.values()) > answered + 30, 30)
    assert kube.stored(ISVC, NAMESPACE, f"{RAW}-canary") is None and len(route()) == 1
    assert kube.stored(ISVC, NAMESPACE, RAW)["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    assert champion(registry, RAW, "canary-raw-champ") == "1"
    assert traffic.answered["2"] > 0 and traffic.failures == [], traffic.summary()
