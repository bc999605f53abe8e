"""Contract test: the PodMonitor finds the model server in the predictor pods KServe makes, in both
deployment modes (pods made by the emulated KServe controller, tests/cluster/kserve.py). With Istio's
sidecar and STRICT mutual TLS: test_cluster_gaps_contract.py."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from mlops.inference_service import inference_service
from tests.cluster.apiserver import PODS, labels_match

from .conftest import REPO, cluster_settings

PODMONITOR = yaml.safe_load((REPO / "k8s-yaml" / "monitoring" / "podmonitor-model-server.yaml").read_text())


def _sanitized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered(pod: dict) -> list[dict[str, str]]:
    """The targets Prometheus's Kubernetes service discovery (role: pod) makes of a pod, with the labels
    its relabelings can read (prometheus discovery/kubernetes/pod.go): one per declared port of each
    container and init container, `__address__` the pod's IP and that port."""
    meta, ip = pod["metadata"], (pod.get("status") or {}).get("podIP") or "10.0.0.1"
    common = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"]}
    for kind, values in (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {})):
        for key, value in values.items():
            common[f"__meta_kubernetes_pod_{kind}_{_sanitized(key)}"] = value
            common[f"__meta_kubernetes_pod_{kind}present_{_sanitized(key)}"] = "true"
    targets = []
    for init, containers in ((False, pod["spec"]["containers"]), (True, pod["spec"].get("initContainers") or [])):
        for container in containers:
            for port in container.get("ports") or []:
                targets.append({**common, "__address__": f"{ip}:{port['containerPort']}",
                                "__meta_kubernetes_pod_container_name": container["name"],
                                "__meta_kubernetes_pod_container_init": str(init).lower(),
                                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])})
    return targets


def relabel(labels: dict[str, str], config: dict) -> dict[str, str] | None:
    """One relabel_config, as Prometheus applies it (model/relabel/relabel.go): the source labels joined by
    `;`, the regex anchored at both ends; keep, drop, replace (the default; `$1` in the replacement),
    labeldrop. None: the target is dropped."""
    action = config.get("action", "replace").lower()
    regex = re.compile(f"^(?:{config.get('regex', '(.*)')})$")
    value = config.get("separator", ";").join(labels.get(name, "") for name in config.get("sourceLabels") or [])
    if action == "keep":
        return labels if regex.match(value) else None
    if action == "drop":
        return None if regex.match(value) else labels
    if action == "labeldrop":
        return {k: v for k, v in labels.items() if not regex.match(k)}
    if action == "replace":
        found = regex.match(value)
        if found:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", config.get("replacement", "$1"))
            labels = {**labels, config["targetLabel"]: found.expand(replacement)}
        return labels
    raise NotImplementedError(f"relabel action {action}")


def scrape_targets(monitor: dict, pods: list[dict]) -> list[tuple[str, int, str]]:
    """What Prometheus scrapes for a PodMonitor: (pod, port, path). The Prometheus Operator generates the
    scrape config (prometheus-operator pkg/prometheus/promcfg.go generatePodMonitorConfig): pods in the
    monitor's namespace whose labels match the selector, the discovered targets whose port matches the
    endpoint's `port` (name) or else `portNumber`, then the endpoint's own `relabelings`."""
    spec, targets = monitor["spec"], []
    selector = spec["selector"]
    for pod in pods:
        if pod["metadata"]["namespace"] != monitor["metadata"]["namespace"]:
            continue
        labels = pod["metadata"].get("labels") or {}
        if not labels_match(pod, selector.get("matchLabels") or {}):
            continue
        if not all((e["key"] in labels) == (e["operator"] == "Exists") for e in selector.get("matchExpressions", [])):
            continue
        for endpoint in spec["podMetricsEndpoints"]:
            for target in discovered(pod):
                if "port" in endpoint:
                    if target["__meta_kubernetes_pod_container_port_name"] != endpoint["port"]:
                        continue
                elif target["__meta_kubernetes_pod_container_port_number"] != str(endpoint.get("portNumber")):
                    continue
                for config in endpoint.get("relabelings") or []:
                    if (target := relabel(target, config)) is None:
                        break
                else:
                    targets.append((pod["metadata"]["name"], int(target["__address__"].rsplit(":", 1)[1]),
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
