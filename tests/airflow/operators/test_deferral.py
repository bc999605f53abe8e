"""Waiting as Airflow is configured to wait: deferred to the triggerer, or the same trigger run in the
worker (mlops.operators.deferral)."""

from __future__ import annotations

import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops.operators.deferral import wait_for


class Ready(BaseTrigger):
    def serialize(self):
        return ("tests.airflow.operators.test_deferral.Ready", {})

    async def run(self):
        yield TriggerEvent({"status": "ready", "url": "http://served"})


class Waits(BaseOperator):
    def __init__(self, deferrable: bool, **kwargs):
        super().__init__(**kwargs)
        self.deferrable = deferrable

    def execute(self, context):
        return wait_for(self, context, Ready())

    def execute_complete(self, context, event):
        return {"resumed with": event}


def test_deferrable_hands_the_wait_to_the_triggerer():
    with pytest.raises(TaskDeferred) as deferred:
        Waits(task_id="w", deferrable=True).execute({})
    assert isinstance(deferred.value.trigger, Ready) and deferred.value.method_name == "execute_complete"


def test_otherwise_the_same_trigger_runs_here_and_the_task_resumes_at_once():
    assert Waits(task_id="w", deferrable=False).execute({}) == {"resumed with": {"status": "ready",
                                                                                 "url": "http://served"}}
