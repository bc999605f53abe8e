"""Pipeline metrics on the Prometheus Pushgateway: one group per model under the job
`continuous_training`. The run's report replaces the group (so a success clears an earlier failure);
a task failure adds its timestamp to it."""

from __future__ import annotations

import os

JOB = "continuous_training"


def pushgateway_url() -> str:
    return os.environ.get("MLOPS_PUSHGATEWAY_URL", "127.0.0.1:9091")


def push(model: str, gauges: dict[str, tuple[str, float | None]], *, replace: bool, url: str | None = None) -> None:
    """gauges: name -> (help, value); None values are left out. Raises OSError when the gateway is down."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway  # not at parse

    registry, labels = CollectorRegistry(), {"model": model}
    for name, (doc, value) in gauges.items():
        if value is not None:
            Gauge(name, doc, list(labels), registry=registry).labels(**labels).set(float(value))
    (push_to_gateway if replace else pushadd_to_gateway)(url or pushgateway_url(), job=JOB, registry=registry,
                                                         grouping_key=labels)
