"""PrometheusHook: where the detect stage reads live traffic from, or "" (live drift off) when the
`prometheus_default` connection is not set."""

from __future__ import annotations

from mlops.hooks.prometheus import prometheus_url

from ..conftest import connect


def test_the_url_is_the_connections(monkeypatch):
    connect(monkeypatch, prometheus_default="http://prometheus-operated.monitoring:9090/")
    assert prometheus_url() == "http://prometheus-operated.monitoring:9090"


def test_without_the_connection_live_drift_is_off_and_the_log_says_why(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", raising=False)
    caplog.set_level("INFO", logger="mlops.hooks.prometheus")
    assert prometheus_url() == ""
    assert "live drift is off: Prometheus: Airflow connection 'prometheus_default' is not defined" in caplog.text


def test_the_connection_test_asks_prometheus_s_api(monkeypatch, tmp_path):
    """Against Debian's Prometheus: its HTTP API answers; once it is gone, the test says so."""
    from mlops.hooks.prometheus import PrometheusHook
    from tests import support

    with support.prometheus(tmp_path, []) as url:
        connect(monkeypatch, prometheus_default=url)
        assert PrometheusHook(prometheus_conn_id="prometheus_default").test_connection() == (
            True, f"Prometheus at {url} answered GET /api/v1/status/buildinfo")
    ok, message = PrometheusHook(prometheus_conn_id="prometheus_default").test_connection()
    assert not ok and f"Prometheus at {url} did not answer" in message
