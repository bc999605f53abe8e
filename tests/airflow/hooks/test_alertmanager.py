"""AlertmanagerHook against a real Alertmanager."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from mlops.hooks.alertmanager import AlertmanagerHook
from mlops.hooks.http import ServiceError

from ..monitoring import alerts


def alert(name: str) -> dict:
    return {"labels": {"alertname": name, "severity": "info"}, "annotations": {"summary": "a test"},
            "startsAt": dt.datetime.now(dt.UTC).isoformat()}


def test_posted_alerts_are_active(monitoring):
    AlertmanagerHook().post_alerts([alert("HookTest")])
    asyncio.run(AlertmanagerHook().async_post_alerts([alert("HookTestAsync")]))
    assert [a["labels"]["alertname"] for a in alerts(monitoring, 'alertname=~"HookTest.*"', active=True)] == [
        "HookTest", "HookTestAsync"]


def test_an_alert_alertmanager_refuses_is_an_error_with_its_reason(monitoring):
    with pytest.raises(ServiceError, match="Alertmanager refused POST /api/v2/alerts: HTTP 400"):
        AlertmanagerHook().post_alerts([{"labels": {}}])  # an alert without labels


def test_the_connection_test_asks_alertmanager_s_api(monitoring):
    ok, message = AlertmanagerHook(alertmanager_conn_id="alertmanager_default").test_connection()
    assert ok and message == f"Alertmanager at {monitoring['alertmanager']} answered GET /api/v2/status"
