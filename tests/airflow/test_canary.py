"""The canary's verdict (mlops.canary): its PromQL, run by a real Prometheus on what two model servers
export, one serving the stable version and one the canary. The exporters speak the metric names and
labels the model server's own tests pin (tests/serving/test_endpoints.py: mlserving_requests_total,
mlserving_predicted_class_total, mlserving_model_info, KServe's request_predict_seconds)."""

from __future__ import annotations

import pytest

from mlops.canary import PROMOTE, ROLLBACK, WAIT, CanaryPolicy, class_divergence, measure, verdict
from mlops.hooks.prometheus import PrometheusHook
from tests import support

LATENCY_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CLASSES = ("setosa", "versicolor", "virginica")
POLICY = CanaryPolicy(max_error_ratio=0.01, max_p99_seconds=0.1, max_class_divergence=0.25, min_requests=100)


class Traffic:
    """One model's counters on one server: what it answered, how fast, what it predicted."""

    def __init__(self):
        self.ok = self.errors = 0
        self.latency = [0] * (len(LATENCY_EDGES) + 1)  # per bucket, the last above every edge
        self.classes = dict.fromkeys(CLASSES, 0)

    def answer(self, requests: int, errors: int = 0, seconds: float = 0.004, mix=(1, 1, 1)):
        self.ok += requests - errors
        self.errors += errors
        slot = next((i for i, edge in enumerate(LATENCY_EDGES) if seconds <= edge), len(LATENCY_EDGES))
        self.latency[slot] += requests - errors
        for cls, share in zip(CLASSES, mix, strict=True):
            self.classes[cls] += round((requests - errors) * share / sum(mix))


class ModelServerMetrics:
    """A /metrics as a model server serving `version` of some models answers it."""

    def __init__(self, version: str):
        self.version, self.models = version, {}
        self.server = support.TextServer(self.exposition)
        self.target = self.server.address

    def traffic(self, model: str) -> Traffic:
        return self.models.setdefault(model, Traffic())

    def exposition(self) -> str:
        lines = []
        for model, t in list(self.models.items()):
            served = f'model="{model}",version="{self.version}"'
            lines += [f'mlserving_requests_total{{{served},outcome="ok"}} {t.ok}',
                      f'mlserving_requests_total{{{served},outcome="server_error"}} {t.errors}',
                      f'mlserving_model_info{{{served},run_id="run-{self.version}"}} 1']
            lines += [f'mlserving_predicted_class_total{{{served},predicted_class="{c}"}} {n}'
                      for c, n in t.classes.items()]
            running = 0
            for edge, count in zip([*map(str, LATENCY_EDGES), "+Inf"], t.latency, strict=True):
                running += count
                lines.append(f'request_predict_seconds_bucket{{model_name="{model}",le="{edge}"}} {running}')
            lines += [f'request_predict_seconds_count{{model_name="{model}"}} {running}',
                      f'request_predict_seconds_sum{{model_name="{model}"}} 0']
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    stable, canary = ModelServerMetrics("3"), ModelServerMetrics("4")
    with support.prometheus(tmp_path_factory.mktemp("prometheus"), [stable.target, canary.target]) as url:
        yield stable, canary, PrometheusHook(base_url=url)
    stable.server.shutdown()
    canary.server.shutdown()


def judged(servers, model: str, stable_traffic: dict, canary_traffic: dict, window_over=True, deadline_passed=False):
    """Both servers' series scraped at zero first (increase() counts growth), then the traffic, then
    the verdict once Prometheus has seen it all."""
    stable, canary, prometheus = servers
    stable.traffic(model), canary.traffic(model)
    seen = f'count(mlserving_model_info{{model="{model}"}})'
    assert support.wait_scraped(prometheus.base_url, seen, lambda r: bool(r) and r[0]["value"][1] == "2")
    stable.traffic(model).answer(**stable_traffic)
    canary.traffic(model).answer(**canary_traffic)
    # each server is scraped on its own schedule: wait until both versions' traffic is seen (a sum
    # over both could be reached by one server's extrapolated increase() alone)
    for version, traffic in (("3", stable_traffic), ("4", canary_traffic)):
        counted = f'sum(increase(mlserving_requests_total{{model="{model}",version="{version}"}}[1m]))'
        scraped = support.wait_scraped(prometheus.base_url, counted,
                                       lambda r, n=traffic["requests"]: bool(r) and float(r[0]["value"][1]) >= 0.9 * n)
        assert scraped and float(scraped[0]["value"][1]) >= 0.9 * traffic["requests"], (version, scraped)
    evidence = measure(prometheus.query, model, "3", "4", "1m")
    return evidence, verdict(evidence, POLICY, window_over, deadline_passed)


def test_a_healthy_canary_is_promoted_when_its_window_is_over(servers):
    evidence, (decision, why) = judged(servers, "iris-healthy", {"requests": 900}, {"requests": 200})
    # increase() extrapolates to the window's ends: counts read a little high, ratios are exact
    assert decision == PROMOTE and why.startswith("healthy over "), why
    canary = evidence["canary"]
    assert canary["requests"] >= 200 and canary["error_ratio"] == 0 and canary["p99_seconds"] <= 0.005
    assert evidence["class_divergence"] < 0.05 and evidence["stable"]["requests"] > 800
    assert "mlserving_model_info" in evidence["queries"]["canary"]["p99_seconds"]  # the evidence names its PromQL


def test_a_canary_that_fails_requests_is_rolled_back(servers):
    _, (decision, why) = judged(servers, "iris-errors", {"requests": 900}, {"requests": 200, "errors": 20})
    assert decision == ROLLBACK and "canary error ratio 10" in why, why


def test_a_slow_canary_is_rolled_back_though_the_stable_version_is_fast(servers):
    evidence, (decision, why) = judged(servers, "iris-slow", {"requests": 900}, {"requests": 200, "seconds": 0.3})
    assert decision == ROLLBACK and "canary p99 predict latency" in why and "> 100.0 ms" in why, why
    assert evidence["stable"]["p99_seconds"] <= 0.005  # the join gives each server's latency to its version


def test_a_canary_predicting_another_class_mix_is_rolled_back(servers):
    _, (decision, why) = judged(servers, "iris-mix", {"requests": 900}, {"requests": 200, "mix": (0, 0, 1)})
    assert decision == ROLLBACK and "predicted-class mix differs" in why, why


def test_too_little_traffic_waits_then_rolls_back_at_the_deadline(servers):
    evidence, (decision, why) = judged(servers, "iris-quiet", {"requests": 300}, {"requests": 20, "errors": 10})
    assert decision == WAIT and "canary requests so far, 100 needed" in why  # 50% errors, yet not judged
    decision, why = verdict(evidence, POLICY, window_over=True, deadline_passed=True)
    assert decision == ROLLBACK and "too little canary traffic to judge" in why


def test_a_healthy_canary_waits_for_its_window():
    evidence = {"window": "5m", "canary": {"requests": 500, "error_ratio": 0.0, "p99_seconds": 0.004},
                "class_divergence": 0.01}
    assert verdict(evidence, POLICY, window_over=False, deadline_passed=False)[0] == WAIT


def test_the_class_mix_divergence_is_the_total_variation_distance():
    assert class_divergence({"a": 50, "b": 50}, {"a": 5, "b": 5}) == 0
    assert class_divergence({"a": 10}, {"b": 3}) == 1
    assert class_divergence({"a": 75, "b": 25}, {"a": 25, "b": 75}) == pytest.approx(0.5)
    assert class_divergence({}, {"a": 1}) is None
