"""PushgatewayHook: pipeline metrics on the Prometheus Pushgateway, one group per model under the job
`continuous_training` (Pushgateway's API: PUT replaces a group, POST adds to it).

Connection `pushgateway_default` (type http): host = the Pushgateway, e.g. http://pushgateway:9091.
"""

from __future__ import annotations

from mlops.hooks.http import HttpServiceHook

JOB = "continuous_training"


class PushgatewayHook(HttpServiceHook):
    conn_name_attr = "pushgateway_conn_id"
    default_conn_name = "pushgateway_default"
    conn_type = "pushgateway"
    hook_name = "Pushgateway"
    test_path = "/api/v1/status"  # the Pushgateway's API v1 (its README: "API")
    host_placeholder = "http://pushgateway:9091"

    def push(self, model: str, gauges: dict[str, tuple[str, float | None]], *, replace: bool) -> None:
        """gauges: name -> (help, value), None values left out. replace: the group becomes exactly these
        (a run's report, which clears an earlier failure); else they are added to it (a failure's time)."""
        from prometheus_client import CollectorRegistry, Gauge, generate_latest  # not at parse

        registry = CollectorRegistry()
        for name, (doc, value) in gauges.items():
            if value is not None:
                Gauge(name, doc, ["model"], registry=registry).labels(model=model).set(float(value))
        self.json("PUT" if replace else "POST", f"/metrics/job/{JOB}/model/{model}", ok=(200, 202),
                  content=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"})
