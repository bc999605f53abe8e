"""Per-feature data drift against a training reference.

The test is chosen by sample size: with up to `ks_max_rows` rows on the smaller
side, the two-sample Kolmogorov-Smirnov test (numeric features) or the chi-square
test of the category frequencies (categorical features) with a Bonferroni-corrected
alpha; above that, those tests flag shifts too small to matter, so the Population
Stability Index (reference-quantile bins; categories as bins) against
`psi_threshold` decides. Both statistics are always reported, with each side's
share of missing values and the categories the reference never had.

The label's own distribution is compared too (`label`): a class mix by chi-square, a numeric target by the
same KS/PSI rule as a numeric feature (one test: alpha uncorrected). It is evidence for the report, not a
reason to retrain by itself: whether the model still fits is the fresh score's question.
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


def _numeric_drift(ref: np.ndarray, cur: np.ndarray, method: str, alpha: float, settings: dict) -> dict:
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]  # missing values: the missing share is reported apart
    if not ref.size or not cur.size:
        return {"ks_statistic": None, "ks_pvalue": None, "psi": 0.0, "drifted": False}
    ks = stats.ks_2samp(ref, cur)
    score = psi(ref, cur, settings["psi_bins"])
    drifted = ks.pvalue < alpha if method == "ks" else score > settings["psi_threshold"]
    return {"ks_statistic": round(float(ks.statistic), 6), "ks_pvalue": float(ks.pvalue), "psi": round(score, 6),
            "drifted": bool(drifted)}


MAX_NEW_CATEGORIES = 20  # new categories listed per feature (the count is always exact)


def category_drift(ref_counts: pd.Series, cur_counts: pd.Series, method: str, alpha: float, settings: dict) -> dict:
    """Two samples' counts per category (category -> count, missing values left out; counts need not be
    whole, as Prometheus's increase() gives them): chi-square (method "ks", the small-sample rule) or PSI
    on the shares; the categories the reference never had are listed, and count in both statistics."""
    ref_counts, cur_counts = ref_counts[ref_counts > 0], cur_counts[cur_counts > 0]  # a zero is no category
    categories = sorted(set(ref_counts.index) | set(cur_counts.index))
    new = sorted(set(cur_counts.index) - set(ref_counts.index))
    new_rows = float(cur_counts.reindex(new).sum())
    new_rows = int(new_rows) if new_rows.is_integer() else round(new_rows, 1)
    r = ref_counts.reindex(categories, fill_value=0).to_numpy(float)
    c = cur_counts.reindex(categories, fill_value=0).to_numpy(float)
    if not r.sum() or not c.sum():
        return {"chi2": None, "chi2_pvalue": None, "psi": 0.0, "new_categories": new[:MAX_NEW_CATEGORIES],
                "new_category_rows": new_rows, "drifted": False}
    score = psi_of_shares(r / r.sum(), c / c.sum())
    expected = (r + 0.5) / (r + 0.5).sum() * c.sum()  # +0.5: a category the reference lacks is not a zero division
    chi = stats.chisquare(c, expected)
    drifted = chi.pvalue < alpha if method == "ks" else score > settings["psi_threshold"]
    return {"chi2": round(float(chi.statistic), 6), "chi2_pvalue": float(chi.pvalue), "psi": round(score, 6),
            "new_categories": new[:MAX_NEW_CATEGORIES], "new_category_rows": new_rows, "drifted": bool(drifted)}


def _categorical_drift(ref: pd.Series, cur: pd.Series, method: str, alpha: float, settings: dict) -> dict:
    """Category frequencies of two samples' values (category_drift)."""
    return category_drift(ref.dropna().astype(str).value_counts(), cur.dropna().astype(str).value_counts(), method,
                          alpha, settings)


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, dataset, settings: dict) -> dict:
    """Per feature of `dataset` (mlpipeline.dataset.Dataset): numeric by KS/PSI, categorical by
    chi-square/PSI on category frequencies; each with the share of missing values on both sides."""
    n = min(len(reference), len(current))
    method = "ks" if n <= settings["ks_max_rows"] else "psi"
    alpha = settings["ks_alpha"] / len(dataset.features)
    result = {}
    for feature in dataset.features:
        ref, cur = reference[feature.name], current[feature.name]
        if feature.numeric:
            result[feature.name] = _numeric_drift(ref.to_numpy(float), cur.to_numpy(float), method, alpha, settings)
        else:
            result[feature.name] = _categorical_drift(ref, cur, method, alpha, settings)
        result[feature.name].update(type=feature.type, missing_reference=round(float(ref.isna().mean()), 6),
                                    missing_current=round(float(cur.isna().mean()), 6))
    return result


def label_drift(reference: pd.Series, current: pd.Series, classes: list[str]) -> dict:
    """Chi-square test of the current class mix against the reference's."""
    ref = reference.value_counts().reindex(classes, fill_value=0).to_numpy(float)
    cur = current.value_counts().reindex(classes, fill_value=0).to_numpy(float)
    expected = (ref + 0.5) / (ref + 0.5).sum() * cur.sum()
    chi = stats.chisquare(cur, expected)
    return {"chi2": round(float(chi.statistic), 6), "pvalue": float(chi.pvalue)}


def target_drift(reference: pd.Series, current: pd.Series, settings: dict) -> dict:
    """A numeric target's shift: KS (up to ks_max_rows rows on the smaller side) or PSI, as a numeric
    feature's, with both sides' mean."""
    ref, cur = reference.to_numpy(float), current.to_numpy(float)
    method = "ks" if min(ref.size, cur.size) <= settings["ks_max_rows"] else "psi"
    return {**_numeric_drift(ref, cur, method, settings["ks_alpha"], settings), "method": method,
            "mean_reference": round(float(np.nanmean(ref)), 6) if ref.size else None,
            "mean_current": round(float(np.nanmean(cur)), 6) if cur.size else None}


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, dataset, classes: list[str], settings: dict) -> dict:
    per_feature = feature_drift(reference, current, dataset, settings)
    flagged = [name for name, r in per_feature.items() if r["drifted"]]
    n = min(len(reference), len(current))
    count = len(dataset.features)
    return {
        "method": "ks" if n <= settings["ks_max_rows"] else "psi",
        "method_rule": (f"KS for numeric and chi-square for categorical features (alpha {settings['ks_alpha']} "
                        f"Bonferroni over {count} features) when the smaller sample has <= {settings['ks_max_rows']} "
                        f"rows, else PSI > {settings['psi_threshold']}"),
        "reference_rows": int(len(reference)),
        "current_rows": int(len(current)),
        "features": per_feature,
        "drifted_features": flagged,
        "new_categories": {name: r["new_categories"] for name, r in per_feature.items() if r.get("new_categories")},
        "share_drifted": len(flagged) / count,
        "max_psi": max(r["psi"] for r in per_feature.values()),
        "label": (None if dataset.label not in reference else
                  target_drift(reference[dataset.label], current[dataset.label], settings) if dataset.regression
                  else label_drift(reference[dataset.label], current[dataset.label], classes)),
    }
