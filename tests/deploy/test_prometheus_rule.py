"""The cluster's PrometheusRule: the same rule groups as the local Prometheus (one source), checked and
unit-tested with Debian's promtool."""

from __future__ import annotations

import importlib.util
import subprocess

import yaml

from .conftest import K8S, REPO

RULE = K8S / "monitoring" / "prometheusrule.yaml"


def generator():
    spec = importlib.util.spec_from_file_location("prometheus_rule", REPO / "scripts" / "prometheus_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_is_generated_from_the_local_rules():
    local = yaml.safe_load((REPO / "monitoring" / "alerts.yml").read_text())["groups"]
    assert yaml.safe_load(RULE.read_text())["spec"]["groups"] == local
    assert RULE.read_text() == generator().render(), "k8s-yaml/monitoring/prometheusrule.yaml is stale: make k8s-rules"


def test_the_rules_pass_promtool(tmp_path):
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "alerts_test.yml").write_text((REPO / "monitoring" / "alerts_test.yml").read_text())
    checked = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked.stdout + checked.stderr
    # each alert fires on a series that should fire it and stays silent on one that should not
    tested = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {rule["alert"] for group in groups for rule in group["rules"]}
    assert names == {"FreshScorePastThreshold", "FeatureDriftHigh", "LiveTrafficDrift", "PipelineRunFailed",
                     "PipelineNotRunForADay",
                     "ServingErrorRatioHigh", "ServingLatencyP99High"}
    cases = yaml.safe_load((REPO / "monitoring" / "alerts_test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    fires = {check["alertname"] for check in checks if check["exp_alerts"]}
    silent = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert names == fires == silent, f"alerts not unit-tested both ways: {names - (fires & silent)}"
