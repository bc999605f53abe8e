"""The DAG's two decisions, as plain functions of upstream results (the thresholds are DAG Params)."""

from __future__ import annotations


def retraining_reasons(detect: dict, accuracy_threshold: float, drift_limit: float, force: bool) -> list[str]:
    """Why the champion must be retrained; empty when it is fine."""
    reasons = []
    if force:
        reasons.append("force_retrain is set")
    if detect.get("champion") is None:
        reasons.append("there is no champion")
        return reasons
    accuracy = (detect.get("fresh_metrics") or {}).get("accuracy")
    if accuracy is not None and accuracy < accuracy_threshold:
        reasons.append(f"fresh accuracy {accuracy:.4f} < threshold {accuracy_threshold}")
    drift = (detect.get("drift") or {}).get("share_drifted")
    if drift is not None and drift > drift_limit:
        reasons.append(f"drifted feature share {drift:.2f} > limit {drift_limit}")
    return reasons
