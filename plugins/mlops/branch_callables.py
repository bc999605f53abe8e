"""The DAG's two decisions: plain functions of upstream results (the thresholds are DAG Params).

`choose_retraining` and `choose_promotion` are the `python_callable`s of the DAG's two
`BranchPythonOperator`s; they log why they chose a branch and return its task id.
"""

from __future__ import annotations

import logging

from mlops.log_lines import message

log = logging.getLogger(__name__)


def past_threshold(score: float, metric_threshold: float, direction: str = "higher") -> bool:
    """Whether a score is past the threshold on the wrong side: below it for a metric better `higher`
    (accuracy, r2), above it for one better `lower` (rmse, mae, mape). At the threshold is fine."""
    return score > metric_threshold if direction == "lower" else score < metric_threshold


def retraining_reasons(detect: dict, metric_threshold: float, drift_limit: float, force: bool,
                       metric: str = "accuracy", direction: str = "higher") -> list[str]:
    """Why the champion must be retrained; empty when it is fine. `metric` is the one the dataset file holds
    its model to, read from detection's `fresh_metrics`; `direction` where it is better (higher | lower),
    so the threshold is a minimum or a maximum."""
    reasons = []
    if force:
        reasons.append("force_retrain is set")
    if detect.get("champion") is None:
        reasons.append("there is no champion")
        return reasons
    score = (detect.get("fresh_metrics") or {}).get(metric)
    if score is not None and past_threshold(score, metric_threshold, direction):
        if direction == "lower":  # rmse, mae: in the label's unit, any scale: significant digits
            reasons.append(f"fresh {metric} {score:.4g} > threshold {metric_threshold:g}")
        else:
            reasons.append(f"fresh {metric} {score:.4f} < threshold {metric_threshold}")
    degradation = detect.get("degradation") or {}
    if degradation.get("degraded"):
        reasons.append(f"fresh {degradation['compared']} {degradation['fresh_score']:.4g} is significantly worse "
                       f"than the champion's earlier {degradation['reference_score']:.4g} "
                       f"(p={degradation['pvalue']:.2g} < {degradation['alpha']:g})")
    drift = (detect.get("drift") or {}).get("share_drifted")
    if drift is not None and drift > drift_limit:
        reasons.append(f"drifted feature share {drift:.2f} > limit {drift_limit}")
    live = detect.get("live_drift") or {}
    if live.get("status") == "measured" and live["share_drifted"] > drift_limit:
        reasons.append(f"live drift: drifted feature share {live['share_drifted']:.2f} of the traffic served in the "
                       f"last {live['window']} > limit {drift_limit} ({', '.join(live['drifted_features'])})")
    return reasons


def choose_retraining(detect: dict, params: dict, retrain: str, keep: str, ti=None, metric: str = "accuracy",
                      direction: str = "higher") -> str:
    """`retrain` when detection's result calls for it under the run's Params (`metric_threshold` applies to
    the dataset's `metric`, a minimum or a maximum by its `direction`), else `keep`; the reasons are also the
    task's XCom `reasons` (the report shows them)."""
    reasons = retraining_reasons(detect, float(params["metric_threshold"]), float(params["drift_limit"]),
                                 bool(params["force_retrain"]), metric, direction)
    if ti is not None:
        ti.xcom_push(key="reasons", value=reasons)
    bounds = (f"{metric} {'maximum' if direction == 'lower' else 'minimum'} {params['metric_threshold']}, "
              f"drift limit {params['drift_limit']}")
    if reasons:
        log.info("%s", message("retraining", reasons, details=[f"({bounds})"]))
        return retrain
    log.info("%s", message(f"no retraining ({bounds})", detect.get("reason") or ()))
    return keep


def choose_promotion(decision: dict, promote: str, keep: str) -> str:
    """`promote` when the training run decided to promote its challenger, else `keep`. `decision` is
    the training task's result, a TrainingDecision (mlpipeline.contracts) on both targets."""
    from mlpipeline.contracts import TrainingDecision

    training = TrainingDecision.from_dict(decision)
    log.info("%s", message(f"training decided {training.decision}", training.reason))
    return promote if training.promotes else keep
