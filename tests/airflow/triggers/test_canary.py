"""CanaryVerdictTrigger as the triggerer runs it: it reads a real Prometheus through the
`prometheus_default`-style connection it is given, and fires the verdict (tests/airflow/test_canary.py
has the verdict's own cases; test_canary_rollout.py the whole rollout)."""

from __future__ import annotations

import dataclasses
import time

from mlops.canary import CanaryPolicy
from mlops.triggers.canary import CanaryVerdictTrigger
from tests import support

from ..conftest import connect
from ..test_canary import POLICY, servers  # noqa: F401  (fixture)


def trigger(model: str, window_over: float, deadline: float, regression: bool = False) -> CanaryVerdictTrigger:
    return CanaryVerdictTrigger(model, "3", "4", time.time() - 60, window_over, deadline,
                                dataclasses.asdict(POLICY), "prometheus_test", poll_interval=0.5,
                                resume={"version": "4"}, regression=regression)


def test_the_trigger_promotes_a_healthy_canary_with_its_evidence(servers, monkeypatch):  # noqa: F811
    stable, canary, prometheus = servers
    connect(monkeypatch, prometheus_test=prometheus.base_url)
    for server in (stable, canary):
        server.traffic("iris-trigger")
    seen = 'count(mlserving_model_info{model="iris-trigger"})'
    assert support.wait_scraped(prometheus.base_url, seen, lambda r: bool(r) and r[0]["value"][1] == "2")
    stable.traffic("iris-trigger").answer(900)
    canary.traffic("iris-trigger").answer(200)
    event = support.first_event(trigger("iris-trigger", window_over=time.time(), deadline=time.time() + 60))
    assert event["status"] == "promote" and event["resume"] == {"version": "4"}, event
    assert event["evidence"]["canary"]["requests"] >= 100 and event["evidence"]["versions"]["canary"] == "4"


def test_a_regression_model_s_trigger_judges_its_prediction_distribution(servers, monkeypatch):  # noqa: F811
    """The deploy hands the trigger the dataset file's task; a regression canary is judged by the KS distance
    of its prediction histogram (it exports no predicted classes)."""
    stable, canary, prometheus = servers
    connect(monkeypatch, prometheus_test=prometheus.base_url)
    for server in (stable, canary):
        server.traffic("diabetes-trigger", regression=True)
    seen = 'count(mlserving_model_info{model="diabetes-trigger"})'
    assert support.wait_scraped(prometheus.base_url, seen, lambda r: bool(r) and r[0]["value"][1] == "2")
    stable.traffic("diabetes-trigger").answer(900)
    canary.traffic("diabetes-trigger").answer(200, predictions=(180.0, 330.0))
    event = support.first_event(trigger("diabetes-trigger", window_over=time.time() + 60,
                                        deadline=time.time() + 60, regression=True))
    assert event["status"] == "rollback" and "prediction distribution differs" in event["reason"], event
    assert event["evidence"]["prediction_ks"] > 0.5 and "class_divergence" not in event["evidence"]


def test_without_prometheus_the_canary_waits_then_is_rolled_back_never_promoted(monkeypatch):
    connect(monkeypatch, prometheus_test=f"http://127.0.0.1:{support.free_port()}")
    started = time.time()
    event = support.first_event(trigger("iris-blind", window_over=started, deadline=started + 2))
    assert event["status"] == "rollback" and event["evidence"] is None, event
    assert "Prometheus did not answer" in event["reason"] and "the deadline has passed" in event["reason"]
    assert time.time() - started >= 2  # it kept asking until the deadline


def test_the_policy_comes_from_the_mlops_options(monkeypatch):
    from mlops.settings import mlops_settings

    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_MAX_P99_MS", "250")
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_MIN_REQUESTS", "40")
    policy = CanaryPolicy.from_settings(mlops_settings())
    assert policy.max_p99_seconds == 0.25 and policy.min_requests == 40 and policy.max_error_ratio == 0.01
    assert policy.max_prediction_ks == 0.25  # the documented default
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_MAX_PREDICTION_KS", "0.4")
    assert CanaryPolicy.from_settings(mlops_settings()).max_prediction_ks == 0.4
