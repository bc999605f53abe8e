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

A numeric target (`decide_regression`, at the end) is decided on the per-row losses instead: a relative margin,
a one-sided Wilcoxon signed-rank test and a paired row bootstrap's 95 % CI, all three required.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .evaluate import (
    METRICS,
    REGRESSION_LOSSES,
    REGRESSION_METRICS,
    REGRESSION_SCORES,
    codes,
    confusion,
    r2_from,
    regression_arrays,
    row_losses,
)


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


# ---- regression ----------------------------------------------------------------------------------------------
#
# The rule (decide_regression), on the dataset's metric m (rmse, mae, mape: lower is better; r2: higher), with
# both models scored on the same test rows:
#
#   improvement           = champion's m - challenger's m (lower is better), challenger's m - champion's m (r2):
#                           positive when the challenger is better;
#   relative_improvement  = improvement / champion's m (rmse, mae, mape), improvement / (1 - champion's r2) (r2:
#                           the share of the champion's unexplained variance the challenger explains; on the same
#                           rows it equals the relative fall of the squared error, and it is defined near r2 = 0);
#   promote  iff  relative_improvement >= min_improvement (the dataset's promotion.min_improvement, a fraction:
#                 0.05 asks for 5 % better)
#            and  a one-sided Wilcoxon signed-rank test on the per-row loss differences (challenger - champion,
#                 alternative "less") gives p < alpha (all differences zero: p = 1, as McNemar with no
#                 discordant rows)
#            and  the paired row bootstrap's 95 % CI of the improvement has its lower bound above 0.
#
# A first model (no champion) is promoted when its m is at most max_metric (lower is better; the dataset file's
# metric.max) or at least min_metric (r2; metric.min).

# Row draws a bootstrap chunk makes at once (4 MiB of int32 indices, 8 MiB of float counts): the bootstrap's memory
# is O(rows + this) whatever the number of rounds.
BOOTSTRAP_CHUNK_ELEMENTS = 1 << 20


def _from_sums(metric: str, loss_sum: np.ndarray, rows: int, sst: np.ndarray | None) -> np.ndarray:
    """The metric of resamples from the sums of their per-row losses (and, for r2, their target's SST)."""
    if metric == "rmse":
        return np.sqrt(loss_sum / rows)
    if metric == "r2":
        return r2_from(loss_sum, sst)
    return loss_sum / rows


def regression_bootstrap(y_true, challenger_pred, champion_pred, metric: str, rounds: int, seed: int,
                         chunk_elements: int = BOOTSTRAP_CHUNK_ELEMENTS) -> np.ndarray:
    """The challenger's improvement on `metric` (in its better direction: positive is better) in `rounds` paired
    resamples of the test rows: each resample draws the rows with replacement and scores both models on them.
    Rounds are drawn in chunks of about `chunk_elements` row indices, so memory stays bounded at any size."""
    true, _ = regression_arrays(y_true, challenger_pred)
    columns = [row_losses(true, challenger_pred, metric), row_losses(true, champion_pred, metric)]
    if metric == "r2":
        centred = true - true.mean()  # SST does not move with the shift; centring keeps its sums accurate
        columns += [centred, centred ** 2]
    table = np.stack(columns, axis=1)
    rows = true.size
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_elements // rows)
    counts = np.empty((min(per_chunk, rounds), rows))
    improvements = np.empty(rounds)
    for start in range(0, rounds, per_chunk):
        count = min(per_chunk, rounds - start)
        # A resample as how often it draws each row: the column sums are then one matrix product (much faster
        # than gathering the drawn rows, which misses the cache at every draw).
        index = rng.integers(0, rows, size=(count, rows), dtype=np.int32 if rows < 2**31 else np.int64)
        for i in range(count):
            counts[i] = np.bincount(index[i], minlength=rows)
        sums = (counts[:count] @ table).T
        sst = np.maximum(sums[3] - sums[2] ** 2 / rows, 0.0) if metric == "r2" else None
        challenger, champion = (_from_sums(metric, s, rows, sst) for s in sums[:2])
        better = challenger - champion if REGRESSION_METRICS[metric] == "higher" else champion - challenger
        improvements[start:start + count] = better
    return improvements


def wilcoxon_losses(challenger_losses: np.ndarray, champion_losses: np.ndarray) -> dict:
    """One-sided Wilcoxon signed-rank test that the challenger's per-row losses are lower than the champion's.
    Rows where both lose the same are dropped (zero_method "wilcox"); when every row is such a tie there is
    nothing to test and p = 1 (scipy would return NaN). The statistic is scipy's for this alternative: the rank sum
    of the rows where the challenger loses more (small when it is better)."""
    differences = np.asarray(challenger_losses, dtype=np.float64) - np.asarray(champion_losses, dtype=np.float64)
    test = {"name": "wilcoxon", "alternative": "less",
            "challenger_lower_loss": int(np.sum(differences < 0)), "champion_lower_loss": int(np.sum(differences > 0))}
    if not np.any(differences != 0):
        return {**test, "statistic": 0.0, "pvalue": 1.0}
    result = stats.wilcoxon(differences, alternative="less")
    pvalue = float(result.pvalue)
    return {**test, "statistic": float(result.statistic), "pvalue": 1.0 if np.isnan(pvalue) else pvalue}


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def _gain_words(metric: str, relative: float) -> str:
    if metric == "r2":
        return (f"explains {_percent(relative)} of the champion's unexplained variance (1 - r2)" if relative >= 0
                else f"leaves {_percent(-relative)} more variance unexplained (1 - r2) than the champion")
    if relative >= 0:
        return f"improves {metric} by {_percent(relative)}"
    return f"is {_percent(-relative)} worse on {metric}"


def _ci_words(ci: list[float]) -> str:
    where = "excludes 0" if ci[0] > 0 else "lies below 0" if ci[1] < 0 else "includes 0"
    return f"bootstrap 95% CI of the difference [{ci[0]:.3g}, {ci[1]:.3g}] {where}"


def decide_regression(y_true, challenger_pred, champion_pred, settings: dict, seed: int = 0) -> dict:
    """Promote or reject a regression challenger (the rule is above). settings: metric (rmse | mae | r2 | mape),
    the first model's threshold (max_metric for rmse, mae, mape; min_metric for r2), min_improvement (relative,
    a fraction), alpha, bootstrap_rounds. MAPE on a target that is (almost) zero on some row raises
    MapeUndefinedError. The result's keys are TrainingDecision's (mlpipeline.contracts)."""
    metric = settings["metric"]
    if metric not in REGRESSION_METRICS:
        raise ValueError(f"{metric!r} is not a regression metric; allowed: {', '.join(REGRESSION_METRICS)}")
    direction = REGRESSION_METRICS[metric]
    threshold_key, other_key = ("max_metric", "min_metric") if direction == "lower" else ("min_metric", "max_metric")
    if settings.get(threshold_key) is None:
        raise ValueError(f"{metric} is better {direction}: a first model's threshold is {threshold_key} "
                         f"(metric.{threshold_key[:3]}), not {other_key}")
    true, challenger = regression_arrays(y_true, challenger_pred)
    score = REGRESSION_SCORES[metric]
    challenger_losses = row_losses(true, challenger, metric)  # raises for MAPE on a zero target
    challenger_score = float(score(true, challenger))
    result = {"metric": metric, "direction": direction, "challenger_score": challenger_score,
              "challenger_accuracy": None, "champion_score": None, "champion_accuracy": None}
    if champion_pred is None:
        threshold = float(settings[threshold_key])
        promote = challenger_score <= threshold if direction == "lower" else challenger_score >= threshold
        bound = "maximum" if direction == "lower" else "minimum"
        verdict = "meets" if promote else "is above" if direction == "lower" else "is below"
        reason = f"no champion; challenger {metric} {challenger_score:.4g} {verdict} the {bound} {threshold:g}"
        return {**result, "decision": "promote" if promote else "reject", "threshold": threshold, "reason": reason}
    _, champion = regression_arrays(true, champion_pred)
    champion_losses = row_losses(true, champion, metric)
    champion_score = float(score(true, champion))
    improvement = challenger_score - champion_score if direction == "higher" else champion_score - challenger_score
    reference = 1.0 - champion_score if metric == "r2" else champion_score
    relative = improvement / reference if reference > 0 else None  # None: the champion is perfect on these rows
    margin, alpha = float(settings["min_improvement"]), float(settings["alpha"])
    test = wilcoxon_losses(challenger_losses, champion_losses)
    ci = _ci(regression_bootstrap(true, challenger, champion, metric, settings["bootstrap_rounds"], seed))
    enough = relative is not None and relative >= margin
    significant = test["pvalue"] < alpha and ci[0] > 0
    promote = enough and significant
    scores = f"{metric} {challenger_score:.4g} vs {champion_score:.4g}"
    what = "of the champion's unexplained variance (1 - r2)" if metric == "r2" else metric
    p_words = f"Wilcoxon p={test['pvalue']:.3g} {'<' if test['pvalue'] < alpha else '>='} {alpha:g}"
    if relative is None:
        reason = f"the champion is perfect on the test set ({metric} {champion_score:.4g}): nothing to improve on"
    elif promote:
        reason = (f"challenger beats champion by {_percent(relative)} {what} (>= {100 * margin:g} %): {scores}, "
                  f"{p_words}, {_ci_words(ci)}")
    elif not enough:
        reason = f"challenger {_gain_words(metric, relative)}, below the required margin {100 * margin:g} % ({scores})"
    else:
        reason = (f"challenger {_gain_words(metric, relative)} (>= {100 * margin:g} %), but the difference is not "
                  f"significant: {p_words}, {_ci_words(ci)} ({scores})")
    return {**result, "decision": "promote" if promote else "reject", "reason": reason,
            "champion_score": champion_score, "improvement": float(improvement), "relative_improvement": relative,
            "min_improvement": margin, "paired_test": {**test, "loss": REGRESSION_LOSSES[metric]}, "mcnemar": None,
            "bootstrap_ci95": ci}
