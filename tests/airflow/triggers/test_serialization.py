"""Each trigger serializes to its importable path and back, as the triggerer rebuilds it (their runs
are exercised against the emulated cluster and the swagger-checked KFP server in the contract tests)."""

from __future__ import annotations

import importlib

import pytest

from mlops.triggers.canary import CanaryVerdictTrigger
from mlops.triggers.kfp import KfpRunTrigger
from mlops.triggers.kserve import InferenceServiceReadyTrigger


@pytest.mark.parametrize("trigger", [
    KfpRunTrigger("run-1", 123.0, "kfp_test", host="http://kfp:8888", poll_interval=2.0),
    InferenceServiceReadyTrigger("iris", "mlops-serving", "iris-predictor-00003", "Serverless", 456.0,
                                 "kubernetes_test", 1.0, resume={"version": "4", "previous": {"version": "3"}}),
    CanaryVerdictTrigger("iris", "3", "4", 100.0, 700.0, 1900.0, {"min_requests": 100}, "prometheus_test", 15.0,
                         resume={"version": "4", "previous": {"version": "3"}, "percent": 10}),
    CanaryVerdictTrigger("diabetes", "3", "4", 100.0, 700.0, 1900.0, {"max_prediction_ks": 0.25}, "prometheus_test",
                         15.0, resume={"version": "4"}, regression=True),
], ids=["kfp", "kserve", "canary", "regression-canary"])
def test_a_trigger_round_trips_through_its_serialized_form(trigger):
    """The triggerer's rebuild (the class at the path, called with the kwargs) holds everything the trigger did:
    an attribute the kwargs leave out (the resume state, the regression flag) would be lost in the triggerer."""
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert type(rebuilt) is type(trigger)
    assert vars(rebuilt) == vars(trigger)


def test_the_kfp_trigger_never_stores_a_token():
    _, kwargs = KfpRunTrigger("run-1", 123.0, "kfp_test").serialize()
    assert set(kwargs) == {"run_id", "deadline", "kfp_conn_id", "host", "poll_interval"}
