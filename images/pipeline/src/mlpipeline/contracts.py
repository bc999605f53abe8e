"""The training decision, defined once.

The KFP pipeline's decide step writes it (the run's `decision.json`, and tags on the MLflow training
run); `train-local` returns it on the local target; the Airflow side reads it back from the MLflow
run on the kubernetes target (a KFP run carries no outputs over REST), so both targets hand the DAG
the same full result. Standard library only: the Airflow environment imports this module too (it
installs this package without its dependencies).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

PROMOTE, REJECT = "promote", "reject"
# MLflow tags of the training run: the searchable outcome, and the whole record as JSON.
DECISION_TAG = "decision"
REASON_TAG = "decision_reason"
COMPARED_WITH_TAG = "compared_with_champion_version"
RECORD_TAG = "decision_record"
MAX_TAG_LENGTH = 8000  # MLflow's limit for a tag value
# The pod label that lets a pod through the tracking server's NetworkPolicy (k8s-yaml/network/mlflow.yaml):
# the stage pods that talk to the registry and the KFP training step carry it.
MLFLOW_CLIENT_LABEL = ("mlops-ct/mlflow-client", "true")
# Fields a regression decision adds (mlpipeline.decide.decide_regression); a record leaves them out while they
# are None, so a classification record reads and writes exactly as before they existed.
REGRESSION_FIELDS = ("direction", "relative_improvement", "min_improvement", "threshold")


class ContractError(ValueError):
    """A decision record is malformed: the message names what is wrong."""


@dataclass(frozen=True)
class TrainingDecision:
    run_key: str
    decision: str  # promote | reject
    reason: str
    challenger_run_id: str
    challenger_model_uri: str
    challenger_metrics: dict  # accuracy, balanced_accuracy, macro_f1, per_class_recall on the held-out test set
    challenger_accuracy: float | None  # None for a regression model (the key is still required)
    metric: str = "accuracy"  # the dataset's metric, which the decision is made on
    challenger_score: float | None = None  # the challenger's metric
    champion_version: str | None = None  # the champion it was compared with (None: there was none)
    champion_metrics: dict | None = None
    champion_accuracy: float | None = None
    champion_score: float | None = None
    improvement: float | None = None  # the challenger's gain on the metric, positive when better (classification:
    #                                    challenger minus champion; regression: in the metric's better direction)
    paired_test: dict | None = None  # name (mcnemar_exact | paired_bootstrap | wilcoxon), pvalue; wilcoxon also
    #                                  statistic, alternative, loss, challenger_lower_loss, champion_lower_loss
    mcnemar: dict | None = None  # accuracy: only_challenger_right, only_champion_right, pvalue
    bootstrap_ci95: list | None = None  # of the improvement
    kfp_run_id: str | None = None
    # Regression only (REGRESSION_FIELDS):
    direction: str | None = None  # where the metric is better: lower (rmse, mae, mape) | higher (r2)
    relative_improvement: float | None = None  # improvement / the champion's metric (r2: / its 1 - r2)
    min_improvement: float | None = None  # the margin relative_improvement had to reach
    threshold: float | None = None  # no champion: the maximum (lower is better) or minimum a first model had to meet

    def __post_init__(self):
        if self.decision not in (PROMOTE, REJECT):
            raise ContractError(f"decision must be {PROMOTE!r} or {REJECT!r}, got {self.decision!r}")

    @property
    def promotes(self) -> bool:
        return self.decision == PROMOTE

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        return {k: v for k, v in record.items() if not (k in REGRESSION_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, record: dict) -> TrainingDecision:
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(record, dict):
            raise ContractError(f"a training decision is a JSON object, got {type(record).__name__}")
        if missing := sorted(required - set(record)):
            raise ContractError(f"training decision without {', '.join(missing)}")
        return cls(**{k: v for k, v in record.items() if k in names})

    def tags(self) -> dict[str, str]:
        """The MLflow tags the decide step sets on the training run."""
        record = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        if len(record) > MAX_TAG_LENGTH:
            raise ContractError(f"the decision record is {len(record)} characters, over MLflow's {MAX_TAG_LENGTH}")
        return {DECISION_TAG: self.decision, REASON_TAG: self.reason[:4000],
                COMPARED_WITH_TAG: self.champion_version or "", RECORD_TAG: record}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> TrainingDecision | None:
        """The decision recorded on a training run, or None if the run has not decided yet."""
        if RECORD_TAG not in tags:
            return None
        try:
            return cls.from_dict(json.loads(tags[RECORD_TAG]))
        except json.JSONDecodeError as exc:
            raise ContractError(f"the {RECORD_TAG} tag is not JSON: {exc}") from None
