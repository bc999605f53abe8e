"""The DAG's two decisions: plain functions of upstream results (the thresholds are DAG Params).

`choose_retraining` and `choose_promotion` are the `python_callable`s of the DAG's two
`BranchPythonOperator`s; they log why they chose a branch and return its task id.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def retraining_reasons(detect: dict, metric_threshold: float, drift_limit: float, force: bool,
                       metric: str = "accuracy") -> list[str]:
    """Why the champion must be retrained; empty when it is fine. `metric` is the one the dataset file holds
    its model to (higher is better for each), read from detection's `fresh_metrics`."""
    reasons = []
    if force:
        reasons.append("force_retrain is set")
    if detect.get("champion") is None:
        reasons.append("there is no champion")
        return reasons
    score = (detect.get("fresh_metrics") or {}).get(metric)
    if score is not None and score < metric_threshold:
        reasons.append(f"fresh {metric} {score:.4f} < threshold {metric_threshold}")
    drift = (detect.get("drift") or {}).get("share_drifted")
    if drift is not None and drift > drift_limit:
        reasons.append(f"drifted feature share {drift:.2f} > limit {drift_limit}")
    live = detect.get("live_drift") or {}
    if live.get("status") == "measured" and live["share_drifted"] > drift_limit:
        reasons.append(f"live drift: drifted feature share {live['share_drifted']:.2f} of the traffic served in the "
                       f"last {live['window']} > limit {drift_limit} ({', '.join(live['drifted_features'])})")
    return reasons


def choose_retraining(detect: dict, params: dict, retrain: str, keep: str, ti=None, metric: str = "accuracy") -> str:
    """`retrain` when detection's result calls for it under the run's Params (`metric_threshold` applies to
    the dataset's `metric`), else `keep`; the reasons are also the task's XCom `reasons` (the report shows
    them)."""
    reasons = retraining_reasons(detect, float(params["metric_threshold"]), float(params["drift_limit"]),
                                 bool(params["force_retrain"]), metric)
    if ti is not None:
        ti.xcom_push(key="reasons", value=reasons)
    if reasons:
        log.info("retraining: %s", "; ".join(reasons))
        return retrain
    log.info("no retraining (%s threshold %s, drift limit %s): %s", metric, params["metric_threshold"],
             params["drift_limit"], detect.get("reason"))
    return keep


def choose_promotion(decision: dict, promote: str, keep: str) -> str:
    """`promote` when the training run decided to promote its challenger, else `keep`. `decision` is
    the training task's result, a TrainingDecision (mlpipeline.contracts) on both targets."""
    from mlpipeline.contracts import TrainingDecision

    training = TrainingDecision.from_dict(decision)
    log.info("training decided %s: %s", training.decision, training.reason)
    return promote if training.promotes else keep
