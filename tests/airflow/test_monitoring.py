"""The local Prometheus setup: alert rules checked and unit-tested with Debian's promtool."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import REPO

MONITORING = REPO / "monitoring"


def promtool(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True, text=True)


def test_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_only_then():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_is_caught(tmp_path):
    broken = (MONITORING / "alerts_test.yml").read_text().replace("0.95 0.95 0.40", "0.95 0.95 0.95")
    (tmp_path / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
    (tmp_path / "alerts_test.yml").write_text(broken)
    result = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode != 0 and "FreshScorePastThreshold" in result.stdout + result.stderr


def test_the_rule_file_is_rendered_from_its_template_and_the_settings():
    from scripts.alert_rules import render

    assert (MONITORING / "alerts.yml").read_text() == render(), "monitoring/alerts.yml is stale: make k8s-rules"
    with pytest.raises(ValueError, match="placeholders .* but thresholds"):  # a threshold the template lacks
        render({"drift_limit": 0.5})


def _drift_fires(tmp_path, thresholds: dict, share: float) -> bool:
    """Whether FeatureDriftHigh fires on a batch with this drifted share, under rules rendered with these
    thresholds (promtool evaluates the rules)."""
    import yaml

    from scripts.alert_rules import render

    (tmp_path / "alerts.yml").write_text(render(thresholds))
    case = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": 'mlops_drift_share{model="m"}', "values": f"{share}x3"}],
        "alert_rule_test": [{"eval_time": "2m", "alertname": "FeatureDriftHigh", "exp_alerts": [{
            "exp_labels": {"model": "m", "severity": "warning"},
            "exp_annotations": {"summary": f"{share * 100:g}% of features drifted for m"}}]}]}]}
    (tmp_path / "case.yml").write_text(yaml.safe_dump(case))
    result = subprocess.run(["promtool", "test", "rules", "case.yml"], cwd=tmp_path, capture_output=True, text=True)
    return result.returncode == 0


def test_an_alert_fires_where_the_dag_retrains_and_moves_with_the_setting(tmp_path):
    """The drift alerts draw the line the DAG's default drift_limit draws: a share past it fires, one below it
    does not; the threshold in settings moved, the rule moves with it."""
    from mlops.settings import alert_thresholds

    from .test_dag import parse_dag

    thresholds = alert_thresholds()
    limit = parse_dag().params.get_param("drift_limit").value
    assert thresholds["drift_limit"] == limit, "the DAG's drift_limit default is not the alerts' (settings.DRIFT_LIMIT)"
    assert _drift_fires(tmp_path, thresholds, limit + 0.1) and not _drift_fires(tmp_path, thresholds, limit - 0.1)
    assert _drift_fires(tmp_path, {**thresholds, "drift_limit": limit - 0.2}, limit - 0.1)


def test_prometheus_config_is_valid(tmp_path):
    config = (MONITORING / "prometheus.yml").read_text()
    for name, value in {"ALERTMANAGER_PORT": "9093", "MLOPS_SERVING_TARGETS": str(tmp_path / "targets.json"),
                        "PUSHGATEWAY_PORT": "9091"}.items():
        config = config.replace("${" + name + "}", value)
    assert "${" not in config, config  # every placeholder is one scripts/services.sh fills
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
    result = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_demo_prints_a_prometheus_page_that_opens_and_the_alerts_on_airflows_page(tmp_path):
    """Debian's Prometheus 2.42 answers /alerts with 404 (its pages are under /classic/), and Debian's
    Alertmanager has no web UI: its alerts are on the Airflow UI's page (read in test_alerts_page.py and,
    on a running stack, test_make_up.py)."""
    import httpx

    from scripts.ui_links import demo_links
    from tests import support

    ports = {"airflow": "8080", "mlflow": "1"}
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    with support.alertmanager(tmp_path) as am:
        assert "does not include a web" in httpx.get(f"{am}/").text  # what the link opened before
        port = support.free_port()
        argv = ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
        with support.daemon(argv, f"http://127.0.0.1:{port}/-/ready", tmp_path / "prometheus.log"):
            ports["prometheus"] = str(port)
            links = demo_links(ports, "iris-classifier")
            assert httpx.get(links["Prometheus"]).status_code == 200, links["Prometheus"]
            assert httpx.get(f"http://127.0.0.1:{port}/alerts").status_code == 404  # the link it printed before
    from mlops_plugin import MlopsPlugin

    [view] = MlopsPlugin.external_views  # the UI's entry for the page, at /plugin/<its url_route>
    assert links["Alerts"] == f"http://127.0.0.1:8080/plugin/{view['url_route']}"
