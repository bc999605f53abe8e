"""The DAG's two branch points, as operators (lighter to parse than BranchPythonOperator + callables)."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.providers.standard.operators.branch import BaseBranchOperator

from mlops.branching import retraining_reasons


class RetrainingBranchOperator(BaseBranchOperator):
    """Follows `retrain` when detection's result calls for it (see `retraining_reasons`), else `keep`."""

    template_fields: Sequence[str] = ("detect_task_id",)

    def __init__(self, *, detect_task_id: str, retrain: str, keep: str, **kwargs):
        super().__init__(**kwargs)
        self.detect_task_id, self.retrain, self.keep = detect_task_id, retrain, keep

    def choose_branch(self, context) -> str:
        params = context["params"]
        detect = context["ti"].xcom_pull(task_ids=self.detect_task_id)
        reasons = retraining_reasons(detect, float(params["accuracy_threshold"]), float(params["drift_limit"]),
                                     bool(params["force_retrain"]))
        if reasons:
            self.log.info("retraining: %s", "; ".join(reasons))
            return self.retrain
        self.log.info("no retraining: %s", detect.get("reason"))
        return self.keep


class PromotionBranchOperator(BaseBranchOperator):
    """Follows `promote` when the training run decided to promote its challenger, else `keep`."""

    def __init__(self, *, train_task_id: str, promote: str, keep: str, **kwargs):
        super().__init__(**kwargs)
        self.train_task_id, self.promote, self.keep = train_task_id, promote, keep

    def choose_branch(self, context) -> str:
        decision = context["ti"].xcom_pull(task_ids=self.train_task_id)
        self.log.info("training decided %s: %s", decision["decision"], decision["reason"])
        return self.promote if decision["decision"] == "promote" else self.keep
