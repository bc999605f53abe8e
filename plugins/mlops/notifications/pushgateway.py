"""FailureMetricNotifier: a task failure as a metric, for Prometheus to alert on (`PipelineRunFailed`
watches `mlops_last_failure_timestamp_seconds`): its time is added to the model's group on the
Pushgateway, which the next successful run's report replaces, clearing it. A failure to push is logged,
never raised."""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import BaseNotifier

from mlops.hooks.http import ServiceError
from mlops.hooks.pushgateway import PushgatewayHook

log = logging.getLogger(__name__)
LAST_FAILURE = "mlops_last_failure_timestamp_seconds"


class FailureMetricNotifier(BaseNotifier):
    """`model_name`: the model whose group the failure goes to (a DAG per dataset file gives its own); without
    it, the run's `model_name` Param, for a DAG that takes the model as a Param."""

    def __init__(self, *, model_name: str | None = None, pushgateway_conn_id: str = PushgatewayHook.default_conn_name,
                 context=None):
        super().__init__(context=context)
        self.model_name, self.pushgateway_conn_id = model_name, pushgateway_conn_id

    def notify(self, context) -> None:
        model = self.model_name or (context.get("params") or {}).get("model_name")
        if not model:
            return
        gauges = {LAST_FAILURE: ("When a pipeline task last failed (cleared by the next successful run's report)",
                                 dt.datetime.now(dt.UTC).timestamp())}
        try:
            PushgatewayHook(self.pushgateway_conn_id).push(model, gauges, replace=False)
        except ServiceError as exc:
            log.error("could not push the failure: %s", exc)
