"""docs/deploy.md and its sample request agree with what the repository ships."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.reference import reference_file

from .conftest import K8S, REPO, objects

GUIDE = (REPO / "docs" / "deploy.md").read_text()
PAYLOAD = json.loads((REPO / "docs" / "iris-v2-request.json").read_text())


def test_the_sample_request_is_a_v2_request_for_the_model():
    spec = yaml.safe_load(reference_file("open-inference-protocol-rest-v2.yaml").read_text())
    schema = {**spec["components"]["schemas"]["inference_request"], "components": spec["components"]}
    assert not list(Draft7Validator(schema).iter_errors(PAYLOAD))
    example = REPO / "datasets" / "iris.yaml"
    features = yaml.safe_load(example.read_text())["features"]
    assert [i["name"] for i in PAYLOAD["inputs"]] == [f["name"] for f in features]  # all four, named, in order
    rows = {i["shape"][0] for i in PAYLOAD["inputs"]}
    assert len(rows) == 1 and all(len(i["data"]) == i["shape"][0] for i in PAYLOAD["inputs"])


def test_the_curl_goes_where_the_gateway_routes():
    """The guide's request reaches the model through the route the deploy task makes on the gateway
    the manifests declare."""
    from mlops.inference_service import inference_route
    from mlops.manifests import cluster_settings

    urls = re.findall(r"https://([\w.-]+)(/v2/models/([\w.-]+)/infer)", GUIDE)
    assert urls and "-d @docs/iris-v2-request.json" in GUIDE
    gateway = objects(K8S / "istio" / "gateway.yaml")[0]
    for host, path, model in urls:
        route = inference_route(model, cluster_settings())
        assert route["spec"]["hosts"] == [host] and route["spec"]["gateways"] == [gateway["metadata"]["name"]]
        assert route["metadata"]["namespace"] == gateway["metadata"]["namespace"]
        assert any(host in server["hosts"] for server in gateway["spec"]["servers"])
        matches = [m["uri"] for rule in route["spec"]["http"] for m in rule["match"]]
        assert any(path.startswith(m.get("prefix", "\0")) or path == m.get("exact") for m in matches)


def test_every_path_the_guide_names_exists():
    named = set(re.findall(r"`((?:k8s-yaml|helm-values|images|docs|monitoring)/[\w./-]*)`", GUIDE))
    named |= set(re.findall(r"-f ((?:images|helm-values)/[\w./-]+)", GUIDE))
    assert named
    for path in named:
        assert (REPO / path.rstrip("/")).exists() or path.endswith(".env"), f"docs/deploy.md names {path}"


def ui_links() -> dict[str, str]:
    """The UIs the Airflow task links open in a cluster: MLflow's (helm-values) and KFP's (the
    connection the guide creates)."""
    values = yaml.safe_load((REPO / "helm-values" / "airflow.yaml").read_text())
    kfp = json.loads(re.search(r"AIRFLOW_CONN_KFP_DEFAULT='([^']+)'", GUIDE)[1])
    return {"mlflow": values["config"]["mlops"]["mlflow_ui_url"], "kfp": kfp["extra"]["ui_url"]}


@pytest.mark.parametrize("ui", ["mlflow", "kfp"])
def test_every_linked_ui_is_exposed_on_the_gateway(ui):
    host = re.match(r"https://([^/]+)", ui_links()[ui])[1]
    # the KFP UI, which has no login of its own, is routed by the istio-auth component (a JWT on the host)
    objs = [o for folder in ("istio", "istio-auth") for path in (K8S / folder).glob("*.yaml") for o in objects(path)]
    gateways = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Gateway"}
    routes = [o for o in objs if o["kind"] == "VirtualService" and host in o["spec"]["hosts"]]
    assert routes, f"nothing routes {host}"
    for route in routes:
        namespace = route["metadata"]["namespace"]
        for name in route["spec"]["gateways"]:
            gateway = gateways[(namespace, name)]
            assert any(host in server["hosts"] and server["port"]["protocol"] == "HTTPS"
                       for server in gateway["spec"]["servers"]), f"gateway {name} does not serve {host}"
        destination = route["spec"]["http"][0]["route"][0]["destination"]
        if ui == "mlflow":  # the project's own Service, with the port it declares
            service = next(o for p in (K8S / "mlflow").glob("*.yaml") for o in objects(p) if o["kind"] == "Service")
            assert destination["host"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}" \
                                          ".svc.cluster.local"
            assert destination["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
    if ui == "mlflow":
        deployment = objects(K8S / "mlflow" / "deployment.yaml")[0]
        allowed = next(a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                       if a.startswith("--allowed-hosts="))
        assert host in allowed.split("=", 1)[1].split(",")  # else the tracking server answers the UI 403


def test_the_alertmanager_the_workers_post_to_is_where_the_guide_installs_it():
    values = yaml.safe_load((REPO / "helm-values" / "airflow.yaml").read_text())
    url = {item["name"]: item["value"] for item in values["env"]}["AIRFLOW_CONN_ALERTMANAGER_DEFAULT"]
    service, namespace = re.match(r"http://([\w-]+)\.([\w-]+)\.svc\.cluster\.local:9093$", url).groups()
    assert service == "alertmanager-operated"  # the Service the Prometheus Operator makes for an Alertmanager
    installs = re.findall(r"helm upgrade --install kube-prometheus-stack \S+ .*?-n (\S+)", GUIDE)
    assert installs == [namespace], f"the guide installs kube-prometheus-stack into {installs}, the workers " \
                                    f"post to {namespace}"
