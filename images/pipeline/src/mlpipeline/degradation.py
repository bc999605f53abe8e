"""Has the champion got worse than it was? Its score on the fresh batch against its earlier score.

A fixed floor (the dataset file's `metric.min` / `metric.max`) catches a model that has become bad; it misses a
model that scored 0.95 and now scores 0.88, and on data where no model reaches the floor it calls for a retrain
every time. This test is relative to the model itself: the champion is scored on the rows it was scored on before
(the test set it was chosen on, held out of its training window, and the batches it served since without being
found degraded: detect.py reads both from the data volume) and on the fresh batch, and a one-sided test asks
whether the fresh score is lower than chance explains.

The standard error is the difference's under the null hypothesis that both sets are draws of one distribution
(pooled, as a two-proportion z-test pools): a test set the champion happened to score 0.99 on, 7 errors in
750 rows, would otherwise claim a spread far below the 0.975 model's, and call its next batch degraded.

- classification (any metric): both sides are drawn from the pooled confusion matrix (a multinomial draw of its
  cells for each side's row count, as decide.paired_bootstrap draws its paired cells), and the metric's
  difference over the resamples gives the standard error;
- regression: the pooled standard error of the mean per-row loss the metric is made of (squared error for
  rmse; absolute error for mae; absolute percentage error for mape; for r2 the squared error over each side's
  target variance, whose mean is 1 - r2).

z = (fresh - reference) / standard error, in the metric's better direction, so a worse fresh score is negative;
p = Phi(z); degraded when p < alpha (engine setting `degradation.alpha`). The test needs no threshold tuned to
the data: a batch of the same distribution as the test set is degraded with probability alpha.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .evaluate import METRICS, REGRESSION_METRICS, MapeUndefinedError, confusion, row_losses


def _classification(ref_true, ref_pred, fresh_true, fresh_pred, classes: list[str], metric: str, rounds: int,
                    seed: int) -> tuple[float, float, float]:
    """Reference score, fresh score and the bootstrap standard error of their difference."""
    score = METRICS[metric]
    rng = np.random.default_rng(seed)
    matrices = [confusion(true, pred, classes) for true, pred in ((ref_true, ref_pred), (fresh_true, fresh_pred))]
    pooled = (matrices[0] + matrices[1]).ravel()
    shares = pooled / pooled.sum()
    ref_draws, fresh_draws = (score(rng.multinomial(int(m.sum()), shares, size=rounds).reshape(rounds, *m.shape))
                              for m in matrices)
    return float(score(matrices[0])), float(score(matrices[1])), float(np.std(fresh_draws - ref_draws, ddof=1))


def _loss(true, pred, metric: str, groups=None) -> np.ndarray:
    """Per-row losses; for r2 each row's squared error over its own set's target variance (1 - r2 is their
    mean), each group of `groups` (the test set, each served batch) a set of its own: the spread between
    batches is no error of the model's. A group whose target is constant has no R² and is left out."""
    losses = row_losses(true, pred, metric)
    if metric != "r2":
        return losses
    true = np.asarray(true, dtype=np.float64)
    groups = np.zeros(true.size, dtype=np.int64) if groups is None else np.asarray(groups)
    out = []
    for group in np.unique(groups):
        rows = groups == group
        variance = float(np.var(true[rows]))
        if variance > 0:
            out.append(losses[rows] / variance)
    return np.concatenate(out) if out else np.empty(0)


def _regression(ref_true, ref_pred, fresh_true, fresh_pred, metric: str, ref_groups) -> tuple[float, float, float]:
    """Reference and fresh mean loss (lower is better) and the pooled standard error of their difference."""
    ref, fresh = _loss(ref_true, ref_pred, metric, ref_groups), _loss(fresh_true, fresh_pred, metric)
    if min(ref.size, fresh.size) < 2:
        raise _Unavailable("a target that is constant within its set has no R²")
    se = float(np.sqrt(np.var(np.concatenate([ref, fresh]), ddof=1) * (1 / ref.size + 1 / fresh.size)))
    return float(ref.mean()), float(fresh.mean()), se


class _Unavailable(ValueError):
    """The test cannot be made on these rows."""


def degradation(ref_true, ref_pred, fresh_true, fresh_pred, *, metric: str, classes: list[str], alpha: float,
                rounds: int, seed: int = 0, ref_groups=None) -> dict:
    """The test above; `classes` empty for a regression target; `ref_groups` labels the reference's rows by the
    set they came from (r2 normalises each set by its own target variance). Scores are the metric's
    (regression: the mean per-row loss it is made of, lower is better, which for rmse is the mean squared
    error). The normal approximation is loose on small batches (tens of rows): there the rate of false alarms
    is a few times alpha."""
    ref_rows, fresh_rows = int(np.asarray(ref_true).size), int(np.asarray(fresh_true).size)
    if min(ref_rows, fresh_rows) < 2:
        return {"status": "unavailable", "degraded": False,
                "reason": f"too few rows to compare ({ref_rows} earlier, {fresh_rows} fresh)"}
    if metric in REGRESSION_METRICS:
        try:
            reference, fresh, se = _regression(ref_true, ref_pred, fresh_true, fresh_pred, metric, ref_groups)
        except (MapeUndefinedError, _Unavailable) as exc:
            return {"status": "unavailable", "reason": str(exc), "degraded": False}
        difference, compared = reference - fresh, f"mean {_LOSS_NAMES[metric]}"  # positive: fresh is better
    else:
        reference, fresh, se = _classification(ref_true, ref_pred, fresh_true, fresh_pred, classes, metric, rounds,
                                               seed)
        difference, compared = fresh - reference, metric
    if se > 0:
        z = difference / se
    else:  # no spread on either side (a perfect model, or one class): only a real difference counts
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    pvalue = float(stats.norm.cdf(z))
    return {"status": "measured", "compared": compared, "reference_score": reference, "fresh_score": fresh,
            "reference_rows": ref_rows, "fresh_rows": fresh_rows, "difference": float(difference),
            "standard_error": se, "z": float(z), "pvalue": pvalue, "alpha": alpha, "degraded": bool(pvalue < alpha)}


_LOSS_NAMES = {"rmse": "squared error", "mae": "absolute error", "mape": "absolute percentage error",
               "r2": "squared error over the target's variance (1 - r2)"}


def words(result: dict) -> str:
    """One line for a log or a report."""
    if result["status"] != "measured":
        return f"degradation test unavailable: {result['reason']}"
    verdict = "significantly worse than" if result["degraded"] else "not significantly worse than"
    return (f"fresh {result['compared']} {result['fresh_score']:.4g} is {verdict} the champion's earlier "
            f"{result['reference_score']:.4g} (z {result['z']:.2f}, p={result['pvalue']:.2g}, "
            f"alpha {result['alpha']:g})")

