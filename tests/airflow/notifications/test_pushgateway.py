"""FailureMetricNotifier against a real Pushgateway: a task failure's time in the model's group (what the
PipelineRunFailed rule watches), never a failure of its own."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from mlops.notifications.pushgateway import FailureMetricNotifier
from tests import support

from ..conftest import connect
from ..monitoring import gauges


def context(model: str | None) -> dict:
    return {"ti": SimpleNamespace(dag_id="continuous_training", task_id="data.ingest"),
            "params": {"model_name": model} if model else {}}


def test_a_failure_s_time_is_added_to_the_model_s_group(monitoring):
    FailureMetricNotifier().notify(context("iris-failures"))
    assert gauges(monitoring["pushgateway"], "iris-failures")["mlops_last_failure_timestamp_seconds"] > time.time() - 60


def test_without_a_model_there_is_no_group_to_add_to(monitoring):
    FailureMetricNotifier().notify(context(None))
    assert "mlops_last_failure_timestamp_seconds" not in (gauges(monitoring["pushgateway"], "") or {})


def test_a_pushgateway_that_is_down_is_logged_not_raised(monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="mlops.notifications.pushgateway")
    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, pushgateway_default=down)
    FailureMetricNotifier().notify(context("iris-failures"))
    assert f"could not push the failure: Pushgateway at {down} did not answer" in caplog.text
