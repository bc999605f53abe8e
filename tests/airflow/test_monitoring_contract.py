"""Contract test: the PodMonitor finds the model server in the predictor pods KServe makes, in both
deployment modes (pods made by the emulated KServe controller, tests/cluster/kserve.py)."""

from __future__ import annotations

import time

import pytest
import yaml

from mlops.inference_service import inference_service
from tests.cluster.apiserver import PODS, labels_match

from .conftest import REPO, cluster_settings

PODMONITOR = yaml.safe_load((REPO / "k8s-yaml" / "monitoring" / "podmonitor-model-server.yaml").read_text())


def scrape_targets(monitor: dict, pods: list[dict]) -> list[tuple[str, int, str]]:
    """What Prometheus scrapes for a PodMonitor, as the Prometheus Operator generates the scrape config
    (prometheus-operator pkg/prometheus/promcfg.go generatePodMonitorConfig): pods in the monitor's
    namespace whose labels match the selector, each declared container port that matches the
    endpoint's `port` (name) or else `portNumber`."""
    spec, targets = monitor["spec"], []
    for pod in pods:
        if pod["metadata"]["namespace"] != monitor["metadata"]["namespace"]:
            continue
        labels = pod["metadata"].get("labels") or {}
        selector = spec["selector"]
        if not labels_match(pod, selector.get("matchLabels") or {}):
            continue
        if not all((e["key"] in labels) == (e["operator"] == "Exists") for e in selector.get("matchExpressions", [])):
            continue
        for endpoint in spec["podMetricsEndpoints"]:
            for container in pod["spec"]["containers"]:
                for port in container.get("ports") or []:
                    if ("port" in endpoint and port.get("name") == endpoint["port"]) or \
                            ("port" not in endpoint and port["containerPort"] == endpoint.get("portNumber")):
                        targets.append((pod["metadata"]["name"], port["containerPort"],
                                        endpoint.get("path", "/metrics")))
    return targets


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_podmonitor_scrapes_the_model_server_in_either_mode(cluster, mode):
    settings = cluster_settings(serving_deployment_mode=mode)
    name = f"monitored-{mode.lower()}"
    cluster.kube.create(inference_service(name, "1", None, "s3://mlflow/none", settings))
    deadline = time.monotonic() + 30
    while not (pods := [p for p in cluster.kube.list(PODS, settings.serving_namespace)
                        if p["metadata"]["labels"].get("serving.kserve.io/inferenceservice") == name]):
        assert time.monotonic() < deadline, "KServe made no predictor pod"
        time.sleep(0.3)
    assert [(port, path) for _, port, path in scrape_targets(PODMONITOR, pods)] == [(8080, "/metrics")]
    if mode == "Serverless":  # what the PodMonitor's old `port: http1` would have found
        assert scrape_targets({**PODMONITOR, "spec": {**PODMONITOR["spec"], "podMetricsEndpoints": [
            {"port": "http1", "path": "/metrics"}]}}, pods) == []
