"""Drift of live traffic, without labels.

The model server counts every numeric feature value it serves into le-buckets (the histogram
`mlserving_feature_value`), on the edges of the version it serves (each version carries its own, from its
training data) and labelled with that version. Over a window, Prometheus's `increase()` of the champion
version's buckets is the live distribution on its edges; the champion's training reference, binned on the
same edges, is what it is compared with. Only the champion version's series are read: one version's edges
at a time. A window that spans a swap (a retrain deployed), or a canary serving beside the stable version,
holds the series of two versions on two sets of edges, and summed they would make no distribution (the
union of both sets of `le`, a shared `le` adding both versions' counts). The statistics are those of the labelled batch
(drift.py), computed on bins: PSI on the bin shares, and the Kolmogorov-Smirnov distance between
the two cumulative shares at the edges (a lower bound of the unbinned one, so its p-value errs
towards "no drift"). The same rule picks the test: KS up to `ks_max_rows` observations, else PSI.

It counts every categorical feature value by category (the counter `mlserving_feature_category`):
the categories its model knows, `__other__` for any other value, `__missing__` for a missing one.
Their `increase()` over the window is compared with the reference's category counts as the batch
compares categories (drift.py's category_drift: chi-square up to `ks_max_rows`, else PSI), missing
values left out on both sides. The reference's values the server would count as `__other__` are
counted so; live `__other__` values the reference has no counterpart for are a new category, named
`__other__` (the server does not keep the names of values its model does not know).

A regression model's server also counts its predictions into le-buckets (the histogram `mlserving_prediction`),
on edges every version of the model shares; the champion version's live predictions are compared with the
champion's predictions on its training reference, binned alike (`prediction`, the same binned KS/PSI with
its own uncorrected alpha): a change in what the model answers, seen before any label arrives.

One alpha, Bonferroni-corrected over every feature measured (numeric and categorical). Too little
traffic in the window (fewer than `live_min_rows` values of a feature, missing ones not counted)
measures nothing, and a Prometheus that cannot be asked is reported as such: neither stops the
labelled detection.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pandas as pd
from scipy import stats

from .drift import category_drift, psi_of_shares
from .errors import PipelineError

log = logging.getLogger(__name__)

WINDOW = re.compile(r"^[1-9][0-9]*[smhdw]$")
METRIC = "mlserving_feature_value_bucket"
CATEGORY_METRIC = "mlserving_feature_category_total"
PREDICTION_METRIC = "mlserving_prediction_bucket"
# The server's category labels beyond its model's categories (mlserving.metrics OTHER_CATEGORY and
# MISSING_CATEGORY; the model server's package is not installed beside this one).
OTHER_CATEGORY, MISSING_CATEGORY = "__other__", "__missing__"


def check_window(window: str) -> str:
    if not WINDOW.match(window):
        raise PipelineError(f"--live-window {window!r} is not a Prometheus duration such as 30m, 1h or 1d")
    return window


def query(model: str, window: str, numeric: bool = True, categorical: bool = False, *, version: str) -> str:
    """PromQL: the values served in the window, over all replicas: per numeric feature and bucket, of
    `version` alone (each version counts on its own edges: the histograms of two cannot be summed), and
    (`categorical`) per categorical feature and category, over all versions (categories are labels, not
    edges: their counts add up across versions), in one query (`or` of the two)."""
    buckets = f'sum by (feature, le) (increase({METRIC}{{model="{model}",version="{version}"}}[{window}]))'
    categories = f'sum by (feature, category) (increase({CATEGORY_METRIC}{{model="{model}"}}[{window}]))'
    if not categorical:
        return buckets
    return f"{buckets} or {categories}" if numeric else categories


def fetch_buckets(prometheus_url: str, promql: str, timeout: float = 10) -> list[dict]:
    """The instant query's result vector ({"metric": {"feature", "le" or "category"}, "value": [t, "n"]} each)."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise PipelineError(f"Prometheus at {prometheus_url} refused the query: HTTP {exc.code} {detail}") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"Prometheus at {prometheus_url} did not answer: {exc}") from None
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
        raise PipelineError(f"Prometheus at {prometheus_url} answered {str(body)[:300]}")
    return body["data"]["result"]


def prediction_query(model: str, window: str, *, version: str) -> str:
    """PromQL: the predictions `version` served in the window, per bucket, over all replicas."""
    return f'sum by (le) (increase({PREDICTION_METRIC}{{model="{model}",version="{version}"}}[{window}]))'


def bins_from_buckets(result: list[dict], key: str = "feature") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per feature (per value of the label `key`; a series without it counts under ""): (finite edges
    ascending, counts per bin: one per edge, then the one above the last).
    increase() extrapolates to the window's ends, so counts are not whole and a bucket can come out a
    hair below the one under it: differences are clipped at zero."""
    by_feature: dict[str, dict[float, float]] = {}
    for series in result:
        labels = series["metric"]
        if "le" in labels:  # not a category count
            by_feature.setdefault(labels.get(key, ""), {})[float(labels["le"])] = float(series["value"][1])
    out = {}
    for feature, cumulative in by_feature.items():
        les = sorted(cumulative)
        if les[-1] != math.inf:
            raise PipelineError(f"the histogram series of {feature or 'the prediction'} have no le=\"+Inf\" bucket")
        running = np.maximum.accumulate(np.array([cumulative[le] for le in les]))
        out[feature] = (np.array(les[:-1]), np.diff(running, prepend=0.0))
    return out


def reference_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of values per le-bucket: a value equal to an edge falls in that edge's bucket, as Prometheus
    client libraries (and the model server) count. Missing values are not counted (the server counts only
    the values it was sent)."""
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1).astype(float)


def binned_drift(reference: np.ndarray, live: np.ndarray, settings: dict, alpha: float) -> dict:
    n, m = reference.sum(), live.sum()
    ref_share, live_share = reference / n, live / m
    distance = float(np.max(np.abs(np.cumsum(ref_share) - np.cumsum(live_share))))
    pvalue = float(stats.kstwobign.sf(distance * math.sqrt(n * m / (n + m))))
    score = psi_of_shares(ref_share, live_share)
    method = "ks" if min(n, m) <= settings["ks_max_rows"] else "psi"
    drifted = pvalue < alpha if method == "ks" else score > settings["psi_threshold"]
    return {"ks_statistic": round(distance, 6), "ks_pvalue": pvalue, "psi": round(score, 6),
            "observed": round(float(m), 1), "drifted": bool(drifted)}


def category_counts(result: list[dict]) -> dict[str, pd.Series]:
    """Per categorical feature: the live count of each category label (__other__ and __missing__ included;
    a label counted nothing in the window is there at 0, as the server exports every label from its start)."""
    by_feature: dict[str, dict[str, float]] = {}
    for series in result:
        labels = series["metric"]
        if "category" in labels:
            by_feature.setdefault(labels["feature"], {})[labels["category"]] = float(series["value"][1])
    return {feature: pd.Series(counts, dtype=float) for feature, counts in by_feature.items()}


def categorical_drift(reference: pd.Series, live: pd.Series, settings: dict, alpha: float) -> dict:
    """The reference's values against the live counts per category label, missing values left out on both
    sides (their shares are reported). The server counts a value its model does not know as __other__ (so
    does any category past its cap on labels a feature): a reference value none of the live labels names is
    counted as __other__ too, so both sides are binned alike. When the reference has no such value, live
    __other__ values are values it never had: a new category, named __other__."""
    values = reference.dropna().astype(str)
    values = values[values != MISSING_CATEGORY]  # the server counts the pipeline's fill value as missing
    known = set(live.index) - {OTHER_CATEGORY, MISSING_CATEGORY}
    # __other__ is the server's overflow label, not a category: the reference's values it would fold there
    # are folded alike, so that __other__ is new only when the reference had no value the server lacks a label for
    ref_counts = values.where(values.isin(known), OTHER_CATEGORY).value_counts()
    cur_counts = live.drop(MISSING_CATEGORY, errors="ignore")
    n, m = float(ref_counts.sum()), float(cur_counts.sum())
    method = "ks" if min(n, m) <= settings["ks_max_rows"] else "psi"
    missing = float(live.get(MISSING_CATEGORY, 0.0))
    return {**category_drift(ref_counts, cur_counts, method, alpha, settings), "observed": round(m, 1),
            "missing_reference": round(float(1 - len(values) / len(reference)), 6) if len(reference) else 0.0,
            "missing_live": round(missing / (m + missing), 6) if m + missing else 0.0}


def live_drift(prometheus_url: str, model: str, window: str, reference: pd.DataFrame, features: list[str],
               settings: dict, categorical: list[str] = (), *, version: str) -> dict:
    """The live-traffic drift report on the numeric `features` (the traffic `version` served: the version
    `reference` is the training sample of) and the `categorical` ones: status `measured` (with the
    statistics), `insufficient traffic` or `unavailable` (Prometheus could not be asked; the error is in
    `error`)."""
    numeric, categorical = list(features), list(categorical)
    promql = query(model, window, numeric=bool(numeric), categorical=bool(categorical), version=version)
    out = {"window": window, "source": prometheus_url, "query": promql}
    if not numeric and not categorical:
        return {**out, "status": "insufficient traffic", "observed": 0.0,
                "reason": "the model has no features"}
    try:
        result = fetch_buckets(prometheus_url, promql)
        bins, counts = bins_from_buckets(result), category_counts(result)
    except PipelineError as exc:
        log.warning("live drift not measured: %s", exc)
        return {**out, "status": "unavailable", "error": str(exc)}
    # values per feature: missing ones are not values (the histograms leave them out, __missing__ is apart)
    observed_by = {**{f: float(bins[f][1].sum()) for f in numeric if f in bins},
                   **{f: float(counts[f].drop(MISSING_CATEGORY, errors="ignore").sum())
                      for f in categorical if f in counts}}
    observed = min(observed_by.values(), default=0.0)
    missing = [f for f in numeric + categorical if f not in observed_by]
    few = [f for f, n in observed_by.items() if n < settings["live_min_rows"]]
    if missing or few:
        log.info("live drift not measured: %s", why := (
            f"no live values of {missing}" if missing else
            f"fewer than {settings['live_min_rows']} live values of {few} in the last {window} (the fewest: "
            f"{observed:.0f})"))
        return {**out, "status": "insufficient traffic", "observed": round(observed, 1), "reason": why}
    alpha = settings["ks_alpha"] / (len(numeric) + len(categorical))
    per_feature = {f: {**binned_drift(reference_bins(reference[f].to_numpy(float), bins[f][0]), bins[f][1],
                                      settings, alpha), "type": "numeric"} for f in numeric}
    per_feature.update({f: {**categorical_drift(reference[f], counts[f], settings, alpha), "type": "categorical"}
                        for f in categorical})
    flagged = [f for f, r in per_feature.items() if r["drifted"]]
    method = "ks" if min(len(reference), observed) <= settings["ks_max_rows"] else "psi"
    result = {**out, "status": "measured", "method": method, "observed": round(observed, 1),
              "reference_rows": int(len(reference)), "features": per_feature, "drifted_features": flagged,
              "new_categories": {f: r["new_categories"] for f, r in per_feature.items() if r.get("new_categories")},
              "share_drifted": len(flagged) / len(per_feature), "max_psi": max(r["psi"] for r in per_feature.values())}
    log.info("live drift over the last %s (at least %.0f values per feature): %d/%d feature(s) drifted %s", window,
             observed, len(flagged), len(per_feature), flagged)
    return result


def live_prediction_drift(prometheus_url: str, model: str, window: str, reference_predictions: np.ndarray,
                          settings: dict, *, version: str) -> dict:
    """A regression champion's live predictions against its predictions on its training reference: status
    `measured` (binned KS/PSI, `drifted`), `insufficient traffic` (fewer than live_min_rows predictions) or
    `unavailable` (Prometheus could not be asked, or the server exports no prediction histogram)."""
    promql = prediction_query(model, window, version=version)
    out = {"window": window, "query": promql}
    try:
        bins = bins_from_buckets(fetch_buckets(prometheus_url, promql)).get("")
    except PipelineError as exc:
        log.warning("live prediction drift not measured: %s", exc)
        return {**out, "status": "unavailable", "error": str(exc)}
    if bins is None:
        return {**out, "status": "unavailable", "error": f"no {PREDICTION_METRIC} series of {model} v{version}"}
    edges, live = bins
    if live.sum() < settings["live_min_rows"]:
        return {**out, "status": "insufficient traffic", "observed": round(float(live.sum()), 1),
                "reason": f"fewer than {settings['live_min_rows']} predictions in the last {window}"}
    reference = reference_bins(np.asarray(reference_predictions, dtype=float), edges)
    result = {**out, "status": "measured", **binned_drift(reference, live, settings, settings["ks_alpha"])}
    log.info("live predictions over the last %s: KS %.3f, PSI %.3f (%s)", window, result["ks_statistic"],
             result["psi"], "drifted" if result["drifted"] else "no drift")
    return result
