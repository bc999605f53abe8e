"""Per-feature data drift against a training reference.

The test is chosen by sample size: with up to `ks_max_rows` rows on the smaller
side, the two-sample Kolmogorov-Smirnov test with a Bonferroni-corrected alpha;
above that, KS flags shifts too small to matter, so the Population Stability
Index (reference-quantile bins) against `psi_threshold` decides. Both
statistics are always reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

_EPS = 1e-6


def psi_of_shares(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """PSI of two distributions over the same bins (an empty bin counts as a tiny share)."""
    ref_share, cur_share = np.clip(ref_share, _EPS, None), np.clip(cur_share, _EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1) / reference.size
    cur_share = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1) / current.size
    return psi_of_shares(ref_share, cur_share)


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], settings: dict) -> dict:
    n = min(len(reference), len(current))
    method = "ks" if n <= settings["ks_max_rows"] else "psi"
    alpha = settings["ks_alpha"] / len(features)
    result = {}
    for name in features:
        ref, cur = reference[name].to_numpy(float), current[name].to_numpy(float)
        ks = stats.ks_2samp(ref, cur)
        score = psi(ref, cur, settings["psi_bins"])
        drifted = ks.pvalue < alpha if method == "ks" else score > settings["psi_threshold"]
        result[name] = {"ks_statistic": round(float(ks.statistic), 6), "ks_pvalue": float(ks.pvalue),
                        "psi": round(score, 6), "drifted": bool(drifted)}
    return result


def label_drift(reference: pd.Series, current: pd.Series, classes: list[str]) -> dict:
    """Chi-square test of the current class mix against the reference's."""
    ref = reference.value_counts().reindex(classes, fill_value=0).to_numpy(float)
    cur = current.value_counts().reindex(classes, fill_value=0).to_numpy(float)
    expected = (ref + 0.5) / (ref + 0.5).sum() * cur.sum()
    chi = stats.chisquare(cur, expected)
    return {"chi2": round(float(chi.statistic), 6), "pvalue": float(chi.pvalue)}


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], label: str,
                 classes: list[str], settings: dict) -> dict:
    per_feature = feature_drift(reference, current, features, settings)
    flagged = [name for name, r in per_feature.items() if r["drifted"]]
    n = min(len(reference), len(current))
    return {
        "method": "ks" if n <= settings["ks_max_rows"] else "psi",
        "method_rule": (f"KS (alpha {settings['ks_alpha']} Bonferroni over {len(features)} features) when the smaller "
                        f"sample has <= {settings['ks_max_rows']} rows, else PSI > {settings['psi_threshold']}"),
        "reference_rows": int(len(reference)),
        "current_rows": int(len(current)),
        "features": per_feature,
        "drifted_features": flagged,
        "share_drifted": len(flagged) / len(features),
        "max_psi": max(r["psi"] for r in per_feature.values()),
        "label": label_drift(reference[label], current[label], classes) if label in reference else None,
    }
