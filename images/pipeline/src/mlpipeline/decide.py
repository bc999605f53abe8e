"""Promote or reject a challenger: paired comparison on the same test set.

Never "strictly greater on one split": the challenger must beat the champion's
accuracy by `min_improvement`, and McNemar's exact test on the paired
right/wrong outcomes must reject "no difference" at `alpha`. A bootstrap CI of
the accuracy difference is reported alongside.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def mcnemar_exact(challenger_right: np.ndarray, champion_right: np.ndarray) -> dict:
    only_challenger = int(np.sum(challenger_right & ~champion_right))
    only_champion = int(np.sum(~challenger_right & champion_right))
    discordant = only_challenger + only_champion
    pvalue = 1.0 if discordant == 0 else float(stats.binomtest(only_challenger, discordant, 0.5).pvalue)
    return {"only_challenger_right": only_challenger, "only_champion_right": only_champion, "pvalue": pvalue}


def bootstrap_ci(challenger_right: np.ndarray, champion_right: np.ndarray, rounds: int, seed: int,
                 level: float = 0.95) -> list[float]:
    diff = challenger_right.astype(np.int8) - champion_right.astype(np.int8)
    rng = np.random.default_rng(seed)
    # Resampling from the counts of -1/0/+1 is exact and O(rounds), whatever the test set size.
    counts = np.array([np.sum(diff == -1), np.sum(diff == 0), np.sum(diff == 1)])
    draws = rng.multinomial(diff.size, counts / diff.size, size=rounds)
    means = (draws[:, 2] - draws[:, 0]) / diff.size
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def decide(y_true, challenger_pred, champion_pred, settings: dict, seed: int = 0) -> dict:
    y_true = np.asarray(y_true)
    challenger_right = np.asarray(challenger_pred) == y_true
    challenger_acc = float(challenger_right.mean())
    if champion_pred is None:
        promote = challenger_acc >= settings["min_accuracy"]
        return {
            "decision": "promote" if promote else "reject",
            "reason": (f"no champion; challenger accuracy {challenger_acc:.4f} "
                       f"{'meets' if promote else 'is below'} the minimum {settings['min_accuracy']}"),
            "challenger_accuracy": challenger_acc,
            "champion_accuracy": None,
        }
    champion_right = np.asarray(champion_pred) == y_true
    champion_acc = float(champion_right.mean())
    improvement = challenger_acc - champion_acc
    test = mcnemar_exact(challenger_right, champion_right)
    ci = bootstrap_ci(challenger_right, champion_right, settings["bootstrap_rounds"], seed)
    better = test["only_challenger_right"] > test["only_champion_right"]
    enough = improvement >= settings["min_improvement"]
    significant = better and test["pvalue"] < settings["alpha"]
    promote = enough and significant
    if promote:
        reason = (f"challenger beats champion by {improvement:+.4f} accuracy (>= {settings['min_improvement']}), "
                  f"McNemar p={test['pvalue']:.3g} < {settings['alpha']}")
    elif not enough:
        reason = f"improvement {improvement:+.4f} is below the required margin {settings['min_improvement']}"
    else:
        reason = (f"improvement {improvement:+.4f} is not significant "
                  f"(McNemar p={test['pvalue']:.3g} >= {settings['alpha']})")
    return {
        "decision": "promote" if promote else "reject",
        "reason": reason,
        "challenger_accuracy": challenger_acc,
        "champion_accuracy": champion_acc,
        "improvement": improvement,
        "mcnemar": test,
        "bootstrap_ci95": ci,
    }
