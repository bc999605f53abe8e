"""PrometheusHook: the Prometheus that scrapes the model servers: the detect stage reads their feature
histograms from it for live drift (it queries the HTTP API itself: the hook names where), and the
canary's verdict is PromQL over their request, latency and class counters (`query`).

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
    conn_type = "prometheus"
    hook_name = "Prometheus"
    test_path = "/api/v1/status/buildinfo"  # Prometheus's HTTP API (docs/querying/api.md), as `query` reads it
    host_placeholder = "http://prometheus:9090"

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector ({"metric": {...}, "value": [t, "v"]} each)."""
        body = self.json("GET", "/api/v1/query", params={"query": promql})
        if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
            raise self.error_class(f"Prometheus at {self.base_url} answered {str(body)[:300]} to {promql}")
        return body["data"]["result"]


def prometheus_url(conn_id: str = PrometheusHook.default_conn_name) -> str:
    """The DAG's template macro: Prometheus's URL, or "" (live drift off) when the connection is not set."""
    try:
        return PrometheusHook(conn_id).base_url
    except ServiceError as exc:
        log.info("live drift is off: %s", exc)
        return ""
