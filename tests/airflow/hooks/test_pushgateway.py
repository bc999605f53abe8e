"""PushgatewayHook against a real Pushgateway: a report replaces the model's group, a failure adds to it."""

from __future__ import annotations

from mlops.hooks.pushgateway import PushgatewayHook

from ..monitoring import gauges


def test_replace_makes_the_group_exactly_these_gauges_and_add_keeps_the_rest(monitoring):
    hook, model = PushgatewayHook(), "iris-pgw"
    hook.push(model, {"mlops_a": ("a", 1.0), "mlops_b": ("b", 2.0), "mlops_none": ("left out", None)}, replace=True)
    assert gauges(monitoring["pushgateway"], model) == {"mlops_a": 1.0, "mlops_b": 2.0}
    hook.push(model, {"mlops_c": ("c", 3.0)}, replace=False)
    assert gauges(monitoring["pushgateway"], model) == {"mlops_a": 1.0, "mlops_b": 2.0, "mlops_c": 3.0}
    hook.push(model, {"mlops_a": ("a", 5.0)}, replace=True)
    assert gauges(monitoring["pushgateway"], model) == {"mlops_a": 5.0}


def test_the_connection_test_asks_the_pushgateway_s_api(monitoring):
    ok, message = PushgatewayHook(pushgateway_conn_id="pushgateway_default").test_connection()
    assert ok and message == f"Pushgateway at {monitoring['pushgateway']} answered GET /api/v1/status"
