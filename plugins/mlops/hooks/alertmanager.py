"""AlertmanagerHook: posts alerts to Alertmanager's API v2 (`POST /api/v2/alerts`) and reads the active
ones back (`GET /api/v2/alerts`).

Connection `alertmanager_default` (type http): host = Alertmanager, e.g. http://alertmanager:9093.
"""

from __future__ import annotations

from mlops.hooks.http import HttpServiceHook


class AlertmanagerHook(HttpServiceHook):
    conn_name_attr = "alertmanager_conn_id"
    default_conn_name = "alertmanager_default"
    conn_type = "alertmanager"
    hook_name = "Alertmanager"
    test_path = "/api/v2/status"  # Alertmanager's API v2 (api/v2/openapi.yaml): its cluster and config status
    host_placeholder = "http://alertmanager:9093"

    def post_alerts(self, alerts: list[dict]) -> None:
        self.json("POST", "/api/v2/alerts", body=alerts)

    async def async_post_alerts(self, alerts: list[dict]) -> None:
        await self.async_json("POST", "/api/v2/alerts", body=alerts)

    def active_alerts(self, *matchers: str) -> list[dict]:
        """The active alerts whose labels match every matcher (`name="value"`, Alertmanager's filter)."""
        return self.json("GET", "/api/v2/alerts", params={"filter": list(matchers), "active": "true"})
