"""What the real Alertmanager and Pushgateway of the tests (the `services` fixture) hold."""

from __future__ import annotations

import httpx


def alerts(monitoring: dict, *matchers: str, active: bool = False) -> list[dict]:
    params = {"filter": list(matchers), **({"active": "true"} if active else {})}
    return httpx.get(f"{monitoring['alertmanager']}/api/v2/alerts", params=params).json()


def gauges(pushgateway: str, model: str) -> dict[str, float]:
    """The group's gauges as the Pushgateway serves them to Prometheus."""
    values = {}
    for line in httpx.get(f"{pushgateway}/metrics").text.splitlines():
        if line.startswith("mlops_") and f'model="{model}"' in line:
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return values
