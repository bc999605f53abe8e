"""The canary's verdict: promote, roll back or keep waiting, from PromQL over the serving metrics of
the stable and the canary version, as the model servers export them:

- requests and errors: `mlserving_requests_total{model, version, outcome}` (outcome `server_error` is
  the server's fault; a client's bad request says nothing about the model);
- latency: KServe's `request_predict_seconds` histogram, which has no version label: each server's
  buckets are given the version that server serves now by joining on `instance` with
  `mlserving_model_info{version} == 1`;
- a classification model's predicted-class mix: `mlserving_predicted_class_total{model, version,
  predicted_class}`, compared as the total variation distance between the two versions' class shares (0: the
  same mix, 1: disjoint);
- a regression model's prediction distribution: the histogram `mlserving_prediction_bucket{model, version, le}`
  (the same edges for every version of a model), compared in PromQL as the Kolmogorov-Smirnov distance between
  the two versions' binned distributions: the largest gap between their cumulative bucket shares over the
  window (0: the same distribution, 1: disjoint). The deploy knows the task from the dataset file.

Too little canary traffic decides nothing: the verdict is `wait` until the deadline. A canary still short of
requests then is inconclusive, and the policy's `inconclusive` (`[mlops] canary_inconclusive`, the DAG's Param)
says what that does: `promote` gives the verdict `inconclusive` (the offline verdict stands: the new version is
promoted, and deploy alerts `CanaryInconclusive`), `rollback` the verdict `rollback`. A fresh installation has no
traffic, so `promote` is the default: with `rollback` it could never promote a new champion. What the few
requests do show still counts: a canary that answered any of them with a server error, or that got none while
the stable version served enough to judge (not reached, or not scraped), is rolled back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mlpipeline.dataset import CANARY_INCONCLUSIVE

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"
INCONCLUSIVE = "inconclusive"  # too few requests by the deadline, promoted on the offline verdict
INCONCLUSIVE_ACTIONS = CANARY_INCONCLUSIVE  # what an inconclusive canary may do: promote or rollback, as the
#                                            dataset file's canary.inconclusive allows


@dataclasses.dataclass(frozen=True)
class CanaryPolicy:
    max_error_ratio: float = 0.01  # canary requests answered with a server error
    max_p99_seconds: float = 0.1  # canary predict latency, 99th percentile
    max_class_divergence: float = 0.25  # total variation distance of the predicted-class mixes
    max_prediction_ks: float = 0.25  # regression: KS distance of the prediction histograms
    min_requests: int = 100  # canary requests in the window before anything is decided
    inconclusive: str = PROMOTE  # too few requests by the deadline: promote (the offline verdict stands) or rollback

    def __post_init__(self):
        check_inconclusive(self.inconclusive)

    @classmethod
    def from_settings(cls, settings) -> CanaryPolicy:
        """The thresholds of `[mlops]` (mlops.settings.MlopsSettings)."""
        return cls(max_error_ratio=settings.canary_max_error_ratio, max_p99_seconds=settings.canary_max_p99_ms / 1000,
                   max_class_divergence=settings.canary_max_class_divergence,
                   max_prediction_ks=settings.canary_max_prediction_ks, min_requests=settings.canary_min_requests,
                   inconclusive=settings.canary_inconclusive)


def check_inconclusive(value) -> str:
    """`value` if it is what an inconclusive canary may do; ValueError saying what is allowed otherwise."""
    if value not in INCONCLUSIVE_ACTIONS:
        raise ValueError(f"canary_inconclusive must be {' or '.join(INCONCLUSIVE_ACTIONS)} (what a canary still "
                         f"short of requests at its deadline does), got {value!r}")
    return value


def window_since(started: float, now: float) -> str:
    """A PromQL range covering everything since the canary started (at least 30 s: two local scrapes)."""
    return f"{max(30, int(now - started) + 1)}s"


def queries(model: str, version: str, window: str, regression: bool = False) -> dict[str, str]:
    """The PromQL for one version over the window: a classification model's class counts, or a regression
    model's cumulative prediction shares per bucket edge (`le`)."""
    served = f'model="{model}",version="{version}"'
    promql = {
        "requests": f"sum(increase(mlserving_requests_total{{{served}}}[{window}]))",
        "server_errors": f'sum(increase(mlserving_requests_total{{{served},outcome="server_error"}}[{window}]))',
        "p99_seconds": (f"histogram_quantile(0.99, sum by (le) (increase(request_predict_seconds_bucket"
                        f'{{model_name="{model}"}}[{window}]) * on (instance) group_left () '
                        f"(mlserving_model_info{{{served}}} == 1)))"),
    }
    if regression:
        promql["prediction_shares"] = (f"sum by (le) (increase(mlserving_prediction_bucket{{{served}}}[{window}])) / "
                                       f"scalar(sum(increase(mlserving_prediction_count{{{served}}}[{window}])))")
    else:
        promql["classes"] = (f"sum by (predicted_class) (increase(mlserving_predicted_class_total{{{served}}}"
                             f"[{window}]))")
    return promql


def prediction_ks_query(model: str, stable: str, canary: str, window: str) -> str:
    """The KS distance between two versions' prediction histograms, in PromQL: the largest absolute difference,
    over the bucket edges, of their cumulative shares (both versions have the same edges, so `le` matches)."""
    def shares(version: str) -> str:
        return queries(model, version, window, regression=True)["prediction_shares"]

    return f"max(abs(({shares(stable)}) - ({shares(canary)})))"


def class_divergence(stable: dict[str, float], canary: dict[str, float]) -> float | None:
    """Total variation distance between two class mixes (counts per class); None without counts."""
    stable_total, canary_total = sum(stable.values()), sum(canary.values())
    if stable_total <= 0 or canary_total <= 0:
        return None
    classes = set(stable) | set(canary)
    return 0.5 * sum(abs(stable.get(c, 0) / stable_total - canary.get(c, 0) / canary_total) for c in classes)


def measure(query: Callable[[str], list[dict]], model: str, stable: str, canary: str, window: str,
            regression: bool = False) -> dict:
    """The evidence: each version's figures and the PromQL that gave them. `query` runs an instant query
    and returns Prometheus's result vector. A regression model's evidence has `prediction_ks` (and each
    version's cumulative prediction shares) where a classification model's has `class_divergence`."""
    def scalar(promql: str) -> float | None:
        result = query(promql)
        value = float(result[0]["value"][1]) if result else None
        return None if value is None or value != value else value  # NaN: no data (e.g. no latency yet)

    evidence = {"window": window, "versions": {"stable": stable, "canary": canary}, "queries": {}}
    for role, version in (("stable", stable), ("canary", canary)):
        promql = queries(model, version, window, regression)
        requests, errors = scalar(promql["requests"]) or 0.0, scalar(promql["server_errors"]) or 0.0
        evidence[role] = {
            "requests": round(requests, 1),
            "error_ratio": errors / requests if requests else None,
            "p99_seconds": scalar(promql["p99_seconds"]),
        }
        if regression:
            evidence[role]["prediction_shares"] = {r["metric"].get("le", ""): float(r["value"][1])
                                                   for r in query(promql["prediction_shares"])}
        else:
            evidence[role]["classes"] = {r["metric"].get("predicted_class", ""): float(r["value"][1])
                                         for r in query(promql["classes"])}
        evidence["queries"][role] = promql
    if regression:
        evidence["queries"]["prediction_ks"] = prediction_ks_query(model, stable, canary, window)
        edges = [set(evidence[role]["prediction_shares"]) for role in ("stable", "canary")]
        # Two versions on other edges share only le="+Inf", where both shares are 1: the query would say 0.
        # Every version of a model copies its champion's edges, so this is a model trained apart from them.
        evidence["prediction_edges_differ"] = all(edges) and edges[0] != edges[1]
        evidence["prediction_ks"] = (None if evidence["prediction_edges_differ"] else
                                     scalar(evidence["queries"]["prediction_ks"]))
    else:
        evidence["class_divergence"] = class_divergence(evidence["stable"]["classes"], evidence["canary"]["classes"])
    return evidence


def _evidence_against(evidence: dict, policy: CanaryPolicy) -> str | None:
    """What the few requests of a canary short of `min_requests` say against it, if anything: a server error
    (a failure seen is evidence, however few requests), or no request at all while the stable version served
    enough to judge (traffic there was, but the canary was not reached or not scraped: not "no traffic")."""
    canary, stable = evidence["canary"], evidence.get("stable") or {}
    if canary.get("error_ratio"):
        return f"the canary answered {canary['error_ratio']:.0%} of them with a server error"
    if not canary["requests"] and (stable.get("requests") or 0) >= policy.min_requests:
        return (f"none reached it while the stable version served {stable['requests']:.0f}: the canary was not "
                "reached or not scraped")
    return None


def verdict(evidence: dict, policy: CanaryPolicy, window_over: bool, deadline_passed: bool) -> tuple[str, str]:
    """(promote | rollback | inconclusive | wait, why). Nothing is judged on fewer than `min_requests` canary
    requests: until then it waits, and at the deadline it is inconclusive, which the policy turns into
    `inconclusive` (promoted on the offline verdict) or `rollback`. With enough, a breach rolls back at once; a
    promotion needs the whole window. The third check is the class mix's, or for a regression model's
    evidence (it has `prediction_ks`) the prediction distribution's."""
    canary, divergence, ks = evidence["canary"], evidence.get("class_divergence"), evidence.get("prediction_ks")
    if canary["requests"] < policy.min_requests:
        if deadline_passed:
            short = (f"too little canary traffic to judge: {canary['requests']:.0f} requests in the last "
                     f"{evidence['window']} < {policy.min_requests}")
            if policy.inconclusive == PROMOTE:
                against = _evidence_against(evidence, policy)
                if against:  # too few requests to judge health, not too few to see a failure
                    return ROLLBACK, f"{short}, and {against}"
                return INCONCLUSIVE, f"{short} by the deadline; the offline verdict is kept"
            return ROLLBACK, f"{short}, and the deadline has passed"
        return WAIT, f"{canary['requests']:.0f} canary requests so far, {policy.min_requests} needed"
    breaches = []
    if canary["error_ratio"] is not None and canary["error_ratio"] > policy.max_error_ratio:
        breaches.append(f"canary error ratio {canary['error_ratio']:.2%} > {policy.max_error_ratio:.2%}")
    if canary["p99_seconds"] is not None and canary["p99_seconds"] > policy.max_p99_seconds:
        breaches.append(f"canary p99 predict latency {canary['p99_seconds'] * 1000:.1f} ms > "
                        f"{policy.max_p99_seconds * 1000:.1f} ms")
    if divergence is not None and divergence > policy.max_class_divergence:
        breaches.append(f"predicted-class mix differs from the stable version's by {divergence:.2f} "
                        f"(total variation) > {policy.max_class_divergence}")
    if ks is not None and ks > policy.max_prediction_ks:
        breaches.append(f"prediction distribution differs from the stable version's by KS {ks:.2f} > "
                        f"{policy.max_prediction_ks}")
    if breaches:
        return ROLLBACK, "; ".join(breaches)
    if not window_over:
        return WAIT, "healthy so far; the canary window is not over"
    p99 = f"{canary['p99_seconds'] * 1000:.1f} ms" if canary["p99_seconds"] is not None else "n/a"
    mix = f", class-mix divergence {divergence:.2f}" if divergence is not None else ""
    if ks is not None:
        mix += f", prediction distribution KS {ks:.2f}"
    elif evidence.get("prediction_edges_differ"):
        mix += (", prediction distributions not compared (the two versions count their predictions on other "
                "edges)")
    elif "prediction_ks" in evidence:  # a regression model's servers counted no predictions: say so, never hide it
        mix += ", prediction distribution not measured (no predictions counted in the window)"
    return PROMOTE, (f"healthy over {canary['requests']:.0f} canary requests: error ratio "
                     f"{canary['error_ratio'] or 0:.2%}, p99 predict latency {p99}{mix}")
