"""The canary's verdict (mlops.canary): its PromQL, run by a real Prometheus on what two model servers
export, one serving the stable version and one the canary. The exporters speak the metric names and
labels the model server's own tests pin (tests/serving/test_endpoints.py: mlserving_requests_total,
mlserving_predicted_class_total, mlserving_model_info, KServe's request_predict_seconds); a regression
model's server exports the histogram mlserving_prediction_bucket{model, version, le} instead of the
predicted classes, with the same edges for every version."""

from __future__ import annotations

import bisect
import dataclasses
import re

import pytest

from mlops.canary import INCONCLUSIVE, PROMOTE, ROLLBACK, WAIT, CanaryPolicy, class_divergence, measure, verdict
from mlops.hooks.prometheus import PrometheusHook
from tests import support

LATENCY_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CLASSES = ("setosa", "versicolor", "virginica")
PREDICTION_EDGES = (50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0)  # a regression model's, as its versions share
POLICY = CanaryPolicy(max_error_ratio=0.01, max_p99_seconds=0.1, max_class_divergence=0.25, max_prediction_ks=0.25,
                      min_requests=100)


class Traffic:
    """One model's counters on one server: what it answered, how fast, what it predicted (a class, or for a
    regression model a number, counted in its histogram's buckets)."""

    def __init__(self, regression: bool = False):
        self.ok = self.errors = 0
        self.regression, self.predicted_sum = regression, 0.0
        self.latency = [0] * (len(LATENCY_EDGES) + 1)  # per bucket, the last above every edge
        self.classes = dict.fromkeys(CLASSES, 0)
        self.predicted = [0] * (len(PREDICTION_EDGES) + 1)  # per bucket, the last above every edge

    def answer(self, requests: int, errors: int = 0, seconds: float = 0.004, mix=(1, 1, 1),
               predictions: tuple[float, float] = (100.0, 250.0)):
        """`predictions`: a regression model's answers, spread evenly over this range."""
        answered = requests - errors
        self.ok += answered
        self.errors += errors
        slot = next((i for i, edge in enumerate(LATENCY_EDGES) if seconds <= edge), len(LATENCY_EDGES))
        self.latency[slot] += answered
        if self.regression:
            low, high = predictions
            for i in range(answered):
                value = low + (high - low) * (i + 0.5) / answered
                self.predicted[bisect.bisect_left(PREDICTION_EDGES, value)] += 1  # the first edge >= value (le)
                self.predicted_sum += value
            return
        for cls, share in zip(CLASSES, mix, strict=True):
            self.classes[cls] += round(answered * share / sum(mix))

    def cumulative_shares(self) -> list[float]:
        total, running, shares = sum(self.predicted), 0, []
        for count in self.predicted:
            running += count
            shares.append(running / total)
        return shares


class ModelServerMetrics:
    """A /metrics as a model server serving `version` of some models answers it."""

    def __init__(self, version: str):
        self.version, self.models = version, {}
        self.server = support.TextServer(self.exposition)
        self.target = self.server.address

    def traffic(self, model: str, regression: bool = False) -> Traffic:
        return self.models.setdefault(model, Traffic(regression))

    def exposition(self) -> str:
        lines = []
        for model, t in list(self.models.items()):
            served = f'model="{model}",version="{self.version}"'
            lines += [f'mlserving_requests_total{{{served},outcome="ok"}} {t.ok}',
                      f'mlserving_requests_total{{{served},outcome="server_error"}} {t.errors}',
                      f'mlserving_model_info{{{served},run_id="run-{self.version}"}} 1']
            if t.regression:  # a histogram of the predictions, no predicted classes
                running = 0
                for edge, count in zip([*map(str, PREDICTION_EDGES), "+Inf"], t.predicted, strict=True):
                    running += count
                    lines.append(f'mlserving_prediction_bucket{{{served},le="{edge}"}} {running}')
                lines += [f"mlserving_prediction_count{{{served}}} {running}",
                          f"mlserving_prediction_sum{{{served}}} {t.predicted_sum}"]
            else:
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


def judged(servers, model: str, stable_traffic: dict, canary_traffic: dict, window_over=True, deadline_passed=False,
           regression=False):
    """Both servers' series scraped at zero first (increase() counts growth), then the traffic, then
    the verdict once Prometheus has seen it all."""
    stable, canary, prometheus = servers
    stable.traffic(model, regression), canary.traffic(model, regression)
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
    evidence = measure(prometheus.query, model, "3", "4", "1m", regression)
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


def test_too_little_traffic_waits_then_is_inconclusive_at_the_deadline_as_the_policy_says(servers):
    """Before the deadline it waits whatever the policy; at the deadline `inconclusive = promote` keeps the
    offline verdict (a verdict of its own, never `promote`) and `rollback` rolls back."""
    evidence, (decision, why) = judged(servers, "iris-quiet", {"requests": 300}, {"requests": 20})
    assert decision == WAIT and "canary requests so far, 100 needed" in why
    keep, roll_back = (dataclasses.replace(POLICY, inconclusive=action) for action in ("promote", "rollback"))
    assert verdict(evidence, keep, window_over=True, deadline_passed=False)[0] == WAIT
    decision, why = verdict(evidence, keep, window_over=True, deadline_passed=True)
    requests = f"{evidence['canary']['requests']:.0f} requests in the last 1m < 100"
    assert decision == INCONCLUSIVE and why == (f"too little canary traffic to judge: {requests} by the deadline; "
                                                "the offline verdict is kept"), why
    decision, why = verdict(evidence, roll_back, window_over=True, deadline_passed=True)
    assert decision == ROLLBACK, why
    assert why == f"too little canary traffic to judge: {requests}, and the deadline has passed"


def test_a_short_canary_is_still_rolled_back_for_what_its_few_requests_show(servers):
    """Too few requests to call a canary healthy are not too few to see it fail: a server error among them,
    or no request at all while the stable version served plenty (the canary not reached, or not scraped),
    rolls it back at the deadline even where `inconclusive` keeps the offline verdict."""
    keep = dataclasses.replace(POLICY, inconclusive="promote")
    failing, _ = judged(servers, "iris-quiet-errors", {"requests": 300}, {"requests": 20, "errors": 10})
    decision, why = verdict(failing, keep, window_over=True, deadline_passed=True)
    assert decision == ROLLBACK and re.search(r"and the canary answered \d+% of them with a server error$", why), why
    unreached = {"window": "1m", "stable": {"requests": 900.0, "error_ratio": 0.0},
                 "canary": {"requests": 0.0, "error_ratio": None, "p99_seconds": None}}
    decision, why = verdict(unreached, keep, window_over=True, deadline_passed=True)
    assert decision == ROLLBACK and "none reached it while the stable version served 900" in why, why
    quiet = {**unreached, "stable": {"requests": 40.0, "error_ratio": 0.0}}  # no traffic to speak of: inconclusive
    assert verdict(quiet, keep, window_over=True, deadline_passed=True)[0] == INCONCLUSIVE


def test_a_canary_with_enough_traffic_is_judged_at_the_deadline_whatever_the_inconclusive_policy():
    """`inconclusive` is about too few requests only: a breach still rolls back, a healthy canary is promoted."""
    keep = dataclasses.replace(POLICY, inconclusive="promote")
    failing = {"window": "5m", "canary": {"requests": 500, "error_ratio": 0.2, "p99_seconds": 0.004},
               "class_divergence": 0.01}
    assert verdict(failing, keep, window_over=True, deadline_passed=True)[0] == ROLLBACK
    healthy = {**failing, "canary": {**failing["canary"], "error_ratio": 0.0}}
    assert verdict(healthy, keep, window_over=True, deadline_passed=True)[0] == PROMOTE


def test_the_inconclusive_policy_is_an_mlops_option_promote_by_default_and_refused_when_unknown(monkeypatch):
    from mlops.settings import SettingsError, mlops_settings

    monkeypatch.delenv("AIRFLOW__MLOPS__CANARY_INCONCLUSIVE", raising=False)
    assert CanaryPolicy.from_settings(mlops_settings()).inconclusive == "promote"  # a new installation's
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_INCONCLUSIVE", "rollback")
    assert CanaryPolicy.from_settings(mlops_settings()).inconclusive == "rollback"
    monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_INCONCLUSIVE", "wait")
    with pytest.raises(SettingsError, match=r"^\[mlops\] canary_inconclusive must be promote or rollback, got 'wait' "
                                            r"\(AIRFLOW__MLOPS__CANARY_INCONCLUSIVE\)$"):
        mlops_settings()
    with pytest.raises(ValueError, match="canary_inconclusive must be promote or rollback .*, got 'keep'"):
        CanaryPolicy(inconclusive="keep")


def test_a_healthy_canary_waits_for_its_window():
    evidence = {"window": "5m", "canary": {"requests": 500, "error_ratio": 0.0, "p99_seconds": 0.004},
                "class_divergence": 0.01}
    assert verdict(evidence, POLICY, window_over=False, deadline_passed=False)[0] == WAIT


def test_the_class_mix_divergence_is_the_total_variation_distance():
    assert class_divergence({"a": 50, "b": 50}, {"a": 5, "b": 5}) == 0
    assert class_divergence({"a": 10}, {"b": 3}) == 1
    assert class_divergence({"a": 75, "b": 25}, {"a": 25, "b": 75}) == pytest.approx(0.5)
    assert class_divergence({}, {"a": 1}) is None


# -- a regression model: the KS distance of the prediction histograms, computed by Prometheus -------------------
def python_ks(servers, model: str) -> float:
    """The same distance from the exporters' own counts: the largest gap between the cumulative shares."""
    stable, canary, _ = servers
    return max(abs(a - b) for a, b in zip(stable.traffic(model).cumulative_shares(),
                                          canary.traffic(model).cumulative_shares(), strict=True))


def test_a_regression_canary_predicting_like_the_stable_version_is_promoted(servers):
    evidence, (decision, why) = judged(servers, "diabetes-healthy", {"requests": 900}, {"requests": 200},
                                       regression=True)
    assert decision == PROMOTE and "prediction distribution KS 0.0" in why, why
    assert evidence["prediction_ks"] == pytest.approx(python_ks(servers, "diabetes-healthy"), abs=1e-6)
    assert evidence["prediction_ks"] < 0.05 and "class_divergence" not in evidence
    shares = evidence["canary"]["prediction_shares"]  # cumulative, per edge, as the evidence records them
    assert shares["+Inf"] == pytest.approx(1) and shares["50.0"] == 0 and "classes" not in evidence["canary"]
    assert "mlserving_prediction_bucket" in evidence["queries"]["prediction_ks"]


def test_a_regression_canary_whose_predictions_shift_is_rolled_back_by_the_ks_check(servers):
    """Answers fast and without errors, but predicts 80 higher across the range: only its distribution tells."""
    evidence, (decision, why) = judged(servers, "diabetes-shifted", {"requests": 900},
                                       {"requests": 200, "predictions": (180.0, 330.0)}, regression=True)
    expected = python_ks(servers, "diabetes-shifted")
    assert expected > 0.5 and evidence["prediction_ks"] == pytest.approx(expected, abs=1e-6)
    # the reason gives Prometheus's figure (equal to the exporters' to 1e-6, which may round the other way)
    assert decision == ROLLBACK and why == (f"prediction distribution differs from the stable version's by KS "
                                            f"{evidence['prediction_ks']:.2f} > 0.25"), why
    assert evidence["canary"]["error_ratio"] == 0 and evidence["canary"]["p99_seconds"] <= 0.005


def test_the_regression_verdict_names_the_ks_distance_and_the_policy_bounds_it():
    evidence = {"window": "5m", "canary": {"requests": 500, "error_ratio": 0.0, "p99_seconds": 0.004},
                "prediction_ks": 0.41}
    assert verdict(evidence, POLICY, window_over=True, deadline_passed=False) == (
        ROLLBACK, "prediction distribution differs from the stable version's by KS 0.41 > 0.25")
    at_bound = {**evidence, "prediction_ks": 0.25}
    decision, why = verdict(at_bound, POLICY, window_over=True, deadline_passed=False)
    assert decision == PROMOTE and why.endswith("prediction distribution KS 0.25") and "class" not in why
    unmeasured = verdict({**evidence, "prediction_ks": None}, POLICY, window_over=True, deadline_passed=False)
    assert unmeasured[1].endswith("prediction distribution not measured (no predictions counted in the window)")
    lenient = CanaryPolicy(**{**POLICY.__dict__, "max_prediction_ks": 0.5})
    assert verdict(evidence, lenient, window_over=True, deadline_passed=False)[0] == PROMOTE
    # the class-mix bound does not apply to a regression model, nor the KS bound to a classifier
    strict_mix = CanaryPolicy(**{**POLICY.__dict__, "max_class_divergence": 0.0})
    assert verdict({**evidence, "prediction_ks": 0.1}, strict_mix, True, False)[0] == PROMOTE


def test_two_versions_on_other_prediction_edges_are_not_compared_and_the_verdict_says_so():
    """Versions that count on other edges share only le="+Inf" (where both shares are 1), so the PromQL
    difference would read 0: a KS of 0 is not claimed then, and the reason says the distributions were not
    compared."""
    def query(promql: str) -> list[dict]:
        version = "3" if 'version="3"' in promql else "4"
        if promql.startswith("max(abs("):
            return [{"metric": {}, "value": [0, "0"]}]
        if "mlserving_prediction_bucket" in promql:
            edges = ("100", "200", "+Inf") if version == "3" else ("150", "+Inf")
            return [{"metric": {"le": le}, "value": [0, "0.5" if le != "+Inf" else "1"]} for le in edges]
        if "request_predict_seconds" in promql:
            return [{"metric": {}, "value": [0, "0.004"]}]
        return [{"metric": {}, "value": [0, "0" if "server_error" in promql else "300"]}]

    evidence = measure(query, "m", "3", "4", "1m", regression=True)
    assert evidence["prediction_edges_differ"] and evidence["prediction_ks"] is None
    decision, why = verdict(evidence, POLICY, window_over=True, deadline_passed=False)
    assert decision == PROMOTE and why.endswith("prediction distributions not compared (the two versions count "
                                                "their predictions on other edges)")
