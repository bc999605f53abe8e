"""The training decision's contract (mlpipeline.contracts): one definition, its JSON and MLflow tags,
refusals by name; standard library only, since the Airflow environment imports it too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlpipeline.contracts import RECORD_TAG, ContractError, TrainingDecision

DECISION = TrainingDecision(run_key="rk-1", decision="promote", reason="beats the champion",
                            challenger_run_id="r1", challenger_model_uri="models:/m-1",
                            challenger_metrics={"accuracy": 0.97, "macro_f1": 0.96, "per_class_recall": {"a": 1.0}},
                            challenger_accuracy=0.97, champion_version="2", champion_accuracy=0.6,
                            improvement=0.37, mcnemar={"only_challenger_right": 40, "only_champion_right": 2,
                                                       "pvalue": 1e-9}, bootstrap_ci95=[0.3, 0.44], kfp_run_id="k-1")


def test_the_decision_round_trips_through_json_and_tags():
    assert TrainingDecision.from_dict(json.loads(json.dumps(DECISION.to_dict()))) == DECISION
    tags = DECISION.tags()
    assert tags["decision"] == "promote" and tags["compared_with_champion_version"] == "2"
    assert TrainingDecision.from_tags(tags) == DECISION and DECISION.promotes
    assert TrainingDecision.from_tags({"decision": "promote"}) is None  # trained, not decided by this contract


@pytest.mark.parametrize(("record", "message"), [
    ({**DECISION.to_dict(), "decision": "keep"}, "decision must be 'promote' or 'reject', got 'keep'"),
    ({k: v for k, v in DECISION.to_dict().items() if k != "reason"}, "training decision without reason"),
    ([1, 2], "a training decision is a JSON object, got list"),
])
def test_a_record_off_the_contract_is_refused_by_name(record, message):
    with pytest.raises(ContractError, match=message):
        TrainingDecision.from_dict(record)


def test_a_tag_that_is_not_json_is_refused():
    with pytest.raises(ContractError, match=f"the {RECORD_TAG} tag is not JSON"):
        TrainingDecision.from_tags({RECORD_TAG: "{nope"})


def test_the_contract_imports_the_standard_library_only():
    code = ("import sys; import mlpipeline.contracts; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pandas', 'sklearn', 'mlflow', 'kfp'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
