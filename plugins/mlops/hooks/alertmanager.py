"""AlertmanagerHook: posts alerts to Alertmanager's API v2 (`POST /api/v2/alerts`).

Connection `alertmanager_default` (type http): host = Alertmanager, e.g. http://alertmanager:9093.
"""

from __future__ import annotations

from mlops.hooks.http import HttpServiceHook


class AlertmanagerHook(HttpServiceHook):
    conn_name_attr = "alertmanager_conn_id"
    default_conn_name = "alertmanager_default"
    hook_name = "Alertmanager"

    def post_alerts(self, alerts: list[dict]) -> None:
        self.json("POST", "/api/v2/alerts", body=alerts)

    async def async_post_alerts(self, alerts: list[dict]) -> None:
        await self.async_json("POST", "/api/v2/alerts", body=alerts)
