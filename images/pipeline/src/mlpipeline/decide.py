"""Promote or reject a challenger: a paired comparison on the same test set, on the dataset's metric.

Never "strictly greater on one split": the challenger must beat the champion's score by
`min_improvement`, and a paired test must reject "no difference" at `alpha`:

- accuracy: McNemar's exact test on the rows one model got right and the other wrong;
- balanced accuracy, macro F1 (not sums over rows, so McNemar does not fit them): a one-sided paired
  bootstrap, resampling test rows with both models' predictions together; the p-value is the share of
  resamples in which the challenger is not better.

A bootstrap CI of the metric's difference is reported for every metric. The bootstrap draws the counts
of each (true class, challenger's prediction, champion's prediction) cell from one multinomial, which is
exact and costs the same whatever the test set's size.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .evaluate import METRICS, codes, confusion


def mcnemar_exact(challenger_right: np.ndarray, champion_right: np.ndarray) -> dict:
    only_challenger = int(np.sum(challenger_right & ~champion_right))
    only_champion = int(np.sum(~challenger_right & champion_right))
    discordant = only_challenger + only_champion
    pvalue = 1.0 if discordant == 0 else float(stats.binomtest(only_challenger, discordant, 0.5).pvalue)
    return {"only_challenger_right": only_challenger, "only_champion_right": only_champion, "pvalue": pvalue}


def paired_bootstrap(y_true, challenger_pred, champion_pred, classes: list[str], metric: str, rounds: int,
                     seed: int) -> np.ndarray:
    """The metric's difference (challenger minus champion) in `rounds` paired resamples of the test rows."""
    k = len(classes)
    true, challenger, champion = (codes(v, classes) for v in (y_true, challenger_pred, champion_pred))
    keep = true < k
    cells = np.bincount((true[keep] * (k + 1) + challenger[keep]) * (k + 1) + champion[keep],
                        minlength=k * (k + 1) * (k + 1))
    rows = int(cells.sum())
    draws = np.random.default_rng(seed).multinomial(rows, cells / rows, size=rounds).reshape(rounds, k, k + 1, k + 1)
    score = METRICS[metric]
    return score(draws.sum(axis=3)) - score(draws.sum(axis=2))


def _ci(differences: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2
    return [float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail))]


def decide(y_true, challenger_pred, champion_pred, classes: list[str], settings: dict, seed: int = 0) -> dict:
    """settings: metric, min_metric (a first model's floor), min_improvement, alpha, bootstrap_rounds."""
    metric = settings["metric"]
    score = METRICS[metric]
    y_true = np.asarray(y_true, dtype=object).astype(str)
    challenger_pred = np.asarray(challenger_pred, dtype=object).astype(str)
    challenger_score = float(score(confusion(y_true, challenger_pred, classes)))
    challenger_right = challenger_pred == y_true
    result = {"metric": metric, "challenger_score": challenger_score,
              "challenger_accuracy": float(challenger_right.mean()), "champion_score": None,
              "champion_accuracy": None}
    if champion_pred is None:
        promote = challenger_score >= settings["min_metric"]
        return {**result, "decision": "promote" if promote else "reject",
                "reason": (f"no champion; challenger {metric} {challenger_score:.4f} "
                           f"{'meets' if promote else 'is below'} the minimum {settings['min_metric']}")}
    champion_pred = np.asarray(champion_pred, dtype=object).astype(str)
    champion_right = champion_pred == y_true
    champion_score = float(score(confusion(y_true, champion_pred, classes)))
    improvement = challenger_score - champion_score
    differences = paired_bootstrap(y_true, challenger_pred, champion_pred, classes, metric,
                                   settings["bootstrap_rounds"], seed)
    if metric == "accuracy":
        mcnemar = mcnemar_exact(challenger_right, champion_right)
        test = {"name": "mcnemar_exact", "pvalue": mcnemar["pvalue"]}
        better = mcnemar["only_challenger_right"] > mcnemar["only_champion_right"]
    else:
        mcnemar = None
        # One-sided: how often a resample shows the challenger no better (+1 smoothing: never exactly 0).
        test = {"name": "paired_bootstrap", "pvalue": float((np.sum(differences <= 0) + 1) / (differences.size + 1))}
        better = improvement > 0
    enough = improvement >= settings["min_improvement"]
    significant = better and test["pvalue"] < settings["alpha"]
    promote = enough and significant
    label = "McNemar" if mcnemar else "paired bootstrap"
    if promote:
        reason = (f"challenger beats champion by {improvement:+.4f} {metric} (>= {settings['min_improvement']}), "
                  f"{label} p={test['pvalue']:.3g} < {settings['alpha']}")
    elif not enough:
        reason = f"{metric} improvement {improvement:+.4f} is below the required margin {settings['min_improvement']}"
    else:
        reason = f"{metric} improvement {improvement:+.4f} is not significant ({label} p={test['pvalue']:.3g} " \
                 f">= {settings['alpha']})"
    return {**result, "decision": "promote" if promote else "reject", "reason": reason,
            "champion_score": champion_score, "champion_accuracy": float(champion_right.mean()),
            "improvement": improvement, "paired_test": test, "mcnemar": mcnemar, "bootstrap_ci95": _ci(differences)}
