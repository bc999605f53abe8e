"""PrometheusHook: the Prometheus that scrapes the model server, whose feature histograms the detect
stage reads for live drift (it queries the HTTP API itself: the hook names where).

Connection `prometheus_default` (type http): host = Prometheus, e.g. http://prometheus:9090. Without
it, live drift is not measured and the run says so.
"""

from __future__ import annotations

import logging

from mlops.hooks.http import HttpServiceHook, ServiceError

log = logging.getLogger(__name__)


class PrometheusHook(HttpServiceHook):
    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    hook_name = "Prometheus"


def prometheus_url(conn_id: str = PrometheusHook.default_conn_name) -> str:
    """The DAG's template macro: Prometheus's URL, or "" (live drift off) when the connection is not set."""
    try:
        return PrometheusHook(conn_id).base_url
    except ServiceError as exc:
        log.info("live drift is off: %s", exc)
        return ""
