"""Drift of live traffic, without labels.

The model server counts every feature value it serves into le-buckets (the histogram
`mlserving_feature_value`). Over a window, Prometheus's `increase()` of those buckets is the
live distribution on the server's bucket edges; the champion's training reference, binned on
the same edges, is what it is compared with. The statistics are those of the labelled batch
(drift.py), computed on bins: PSI on the bin shares, and the Kolmogorov-Smirnov distance between
the two cumulative shares at the edges (a lower bound of the unbinned one, so its p-value errs
towards "no drift"). The same rule picks the test: KS up to `ks_max_rows` observations, else PSI.

Too little traffic in the window (fewer than `live_min_rows` values per feature) measures nothing,
and a Prometheus that cannot be asked is reported as such: neither stops the labelled detection.
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

from .drift import psi_of_shares
from .errors import PipelineError

log = logging.getLogger(__name__)

WINDOW = re.compile(r"^[1-9][0-9]*[smhdw]$")
METRIC = "mlserving_feature_value_bucket"


def check_window(window: str) -> str:
    if not WINDOW.match(window):
        raise PipelineError(f"--live-window {window!r} is not a Prometheus duration such as 30m, 1h or 1d")
    return window


def query(model: str, window: str) -> str:
    """PromQL: per feature and bucket, the values served in the window, over all replicas and versions."""
    return f'sum by (feature, le) (increase({METRIC}{{model="{model}"}}[{window}]))'


def fetch_buckets(prometheus_url: str, model: str, window: str, timeout: float = 10) -> list[dict]:
    """The instant query's result vector ({"metric": {"feature", "le"}, "value": [t, "n"]} each)."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query(model, window)})
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


def bins_from_buckets(result: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per feature: (finite edges ascending, counts per bin: one per edge, then the one above the last).
    increase() extrapolates to the window's ends, so counts are not whole and a bucket can come out a
    hair below the one under it: differences are clipped at zero."""
    by_feature: dict[str, dict[float, float]] = {}
    for series in result:
        labels = series["metric"]
        by_feature.setdefault(labels["feature"], {})[float(labels["le"])] = float(series["value"][1])
    out = {}
    for feature, cumulative in by_feature.items():
        les = sorted(cumulative)
        if les[-1] != math.inf:
            raise PipelineError(f"the {METRIC} series of {feature} have no le=\"+Inf\" bucket")
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


def live_drift(prometheus_url: str, model: str, window: str, reference: pd.DataFrame, features: list[str],
               settings: dict) -> dict:
    """The live-traffic drift report: status `measured` (with the statistics), `insufficient traffic`
    or `unavailable` (Prometheus could not be asked; the error is in `error`)."""
    out = {"window": window, "source": prometheus_url, "query": query(model, window)}
    if not features:
        return {**out, "status": "insufficient traffic", "observed": 0.0,
                "reason": "the model has no numeric features, whose served values the server counts"}
    try:
        bins = bins_from_buckets(fetch_buckets(prometheus_url, model, window))
    except PipelineError as exc:
        log.warning("live drift not measured: %s", exc)
        return {**out, "status": "unavailable", "error": str(exc)}
    observed = min((float(bins[f][1].sum()) for f in features if f in bins), default=0.0)
    missing = [f for f in features if f not in bins]
    if missing or observed < settings["live_min_rows"]:
        log.info("live drift not measured: %s", why := (
            f"no live values of {missing}" if missing else
            f"{observed:.0f} live values per feature in the last {window}, fewer than {settings['live_min_rows']}"))
        return {**out, "status": "insufficient traffic", "observed": round(observed, 1), "reason": why}
    alpha = settings["ks_alpha"] / len(features)
    per_feature = {f: binned_drift(reference_bins(reference[f].to_numpy(float), bins[f][0]), bins[f][1], settings,
                                   alpha) for f in features}
    flagged = [f for f, r in per_feature.items() if r["drifted"]]
    method = "ks" if min(len(reference), observed) <= settings["ks_max_rows"] else "psi"
    result = {**out, "status": "measured", "method": method, "observed": round(observed, 1),
              "reference_rows": int(len(reference)), "features": per_feature, "drifted_features": flagged,
              "share_drifted": len(flagged) / len(features), "max_psi": max(r["psi"] for r in per_feature.values())}
    log.info("live drift over the last %s (%.0f values per feature): %d/%d feature(s) drifted %s", window, observed,
             len(flagged), len(features), flagged)
    return result
