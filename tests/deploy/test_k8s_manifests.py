"""Contract tests for k8s-yaml/: every object valid against its schema (core kinds with kubernetes-validate,
strict; KServe, Prometheus Operator and Istio kinds against their CRDs with unknown fields rejected), the
kustomization complete, every workload hardened, no credentials in the repository."""

from __future__ import annotations

import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

from tests.reference import reference_file, strict_schema

from .conftest import K8S, REPO, manifest_files, objects

KUBERNETES_VERSION = "1.33.0"
CRDS = {
    ("serving.kserve.io", "ClusterServingRuntime"): "kserve-crd-clusterservingruntimes.json",
    ("serving.kserve.io", "InferenceService"): "kserve-crd-inferenceservices.json",
    ("monitoring.coreos.com", "ServiceMonitor"): "prometheus-operator-crd-servicemonitors.json",
    ("monitoring.coreos.com", "PodMonitor"): "prometheus-operator-crd-podmonitors.json",
    ("monitoring.coreos.com", "PrometheusRule"): "prometheus-operator-crd-prometheusrules.json",
    ("networking.istio.io", "Gateway"): "istio-crd-gateways.json",
    ("networking.istio.io", "VirtualService"): "istio-crd-virtualservices.json",
    ("security.istio.io", "AuthorizationPolicy"): "istio-crd-authorizationpolicies.json",
    ("security.istio.io", "RequestAuthentication"): "istio-crd-requestauthentications.json",
    ("operator.knative.dev", "KnativeServing"): "knative-operator-crd-knativeservings.json",
}
COMPONENTS = ("istio-auth", "knative/operator", "knative/configmap")  # optional: docs/deploy.md
ALL = [(path.relative_to(K8S).as_posix(), obj) for path in manifest_files() for obj in objects(path)]


def crd_validator(name: str, version: str) -> Draft7Validator:
    text = reference_file(name).read_text()
    # Go's inline (?i) in this one pattern is not a Python regex (see tests/schemas/SOURCES.md).
    text = text.replace('"pattern":"^(?i)(abort|warn)?$",', "")
    return Draft7Validator(strict_schema(json.loads(text)["versions"][version]))


@pytest.mark.parametrize("where, obj", ALL, ids=[f"{w}:{o['kind']}/{o['metadata']['name']}" for w, o in ALL])
def test_every_object_is_valid(where, obj):
    group, _, version = obj["apiVersion"].rpartition("/")
    if (group, obj["kind"]) in CRDS:
        errors = list(crd_validator(CRDS[group, obj["kind"]], version).iter_errors(obj))
        assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_misspelled_field_is_caught():
    deployment = objects(K8S / "mlflow" / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    gateway = objects(K8S / "istio" / "gateway.yaml")[0]
    gateway["spec"]["server"] = gateway["spec"].pop("servers")
    assert list(crd_validator(CRDS["networking.istio.io", "Gateway"], "v1").iter_errors(gateway))


def test_the_kustomization_lists_every_object_file_once():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = list(kustomization["resources"])
    for component in COMPONENTS:
        listed += [f"{component}/{r}" for r in yaml.safe_load((K8S / component / "kustomization.yaml").read_text())[
            "resources"]]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.relative_to(K8S).as_posix() for p in manifest_files())
    for generator in kustomization["secretGenerator"]:
        for env_file in generator["envs"]:
            assert (K8S / f"{env_file}.example").is_file(), f"{env_file} has no example to copy"


def pod_specs():
    for where, obj in ALL:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "ClusterServingRuntime":
            yield where, obj["spec"]


def test_every_workload_runs_as_non_root_without_capabilities():
    specs = list(pod_specs())
    assert len(specs) == 4  # MLflow, its pipeline-user Job, the Pushgateway, the serving runtime
    for where, spec in specs:
        for container in spec["containers"]:
            context = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
            assert context.get("runAsNonRoot") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert context.get("readOnlyRootFilesystem") is True, where


def test_the_data_volume_is_read_write_many():
    pvc = objects(K8S / "storage" / "data-pvc.yaml")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_no_credentials_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.startswith("k8s-yaml/secrets/") and f.endswith((".env", ".ini"))]
    patterns = [re.compile(p) for p in (r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
                                         r"(?i)(password|secret_access_key)\s*[:=]\s*['\"]?(?!CHANGE-ME)[A-Za-z0-9/+]{12,}")]
    for name in tracked:
        path = REPO / name
        if path.suffix in (".yaml", ".yml", ".env", ".example", ".md", ".json", ".py", ".txt", ".cfg", ".toml"):
            text = path.read_text(errors="replace")
            found = [p.pattern for p in patterns if p.search(text)]
            assert not found, f"{name} looks like it holds a credential ({found})"
    for where, obj in ALL:
        assert obj["kind"] != "Secret", f"{where}: Secrets are generated from git-ignored env files"


def test_the_rbac_is_namespaced():
    rbac = [obj for _, obj in ALL if obj["apiVersion"].startswith("rbac.authorization.k8s.io")]
    assert rbac and all(obj["kind"] in ("Role", "RoleBinding") for obj in rbac)
    assert {obj["metadata"]["namespace"] for obj in rbac} == {"mlops", "mlops-serving"}


def test_the_pushgateway_keeps_its_groups_on_a_volume_of_its_own():
    """Its groups (the last run's metrics, the last failure's time) drive alerts: an emptyDir would lose
    them on every restart, clearing or re-firing PipelineRunFailed and PipelineStale."""
    found = {(o["kind"], o["metadata"]["name"]): o for o in objects(K8S / "monitoring" / "pushgateway.yaml")}
    pod = found[("Deployment", "mlops-pushgateway")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    persistence = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--persistence.file="))
    mount = next(m for m in container["volumeMounts"] if persistence.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in found
    assert found[("Deployment", "mlops-pushgateway")]["spec"]["strategy"]["type"] == "Recreate"  # one writer


def test_no_secret_but_the_pipelines_where_airflow_may_create_pods():
    """A pod can mount any Secret of its namespace: where Airflow's task pods may create pods, the
    platform keeps only the Secret the stage pods are meant to read (the tracking server's own, with its
    databases' passwords, lives in a namespace of its own)."""
    rbac = list(yaml.safe_load_all((K8S / "rbac" / "airflow-roles.yaml").read_text()))
    creates_pods = {role["metadata"]["namespace"] for role in rbac if role["kind"] == "Role"
                    and any("pods" in rule["resources"] and "create" in rule["verbs"] for rule in role["rules"])}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    # the pipeline's Secret: the one the replacement renames to the stage pods' mlflow_secret setting
    [pipelines] = {t["select"]["name"] for r in kustomization["replacements"]
                   if r["source"]["fieldPath"] == "data.AIRFLOW__MLOPS_KUBERNETES__MLFLOW_SECRET"
                   for t in r["targets"] if t["select"]["kind"] == "Secret"}
    there = {s["name"] for s in kustomization["secretGenerator"] if s["namespace"] in creates_pods}
    assert creates_pods == {"mlops"} and there == {pipelines}
    mlflow = objects(K8S / "mlflow" / "deployment.yaml")[0]
    assert mlflow["metadata"]["namespace"] not in creates_pods


def test_no_ui_without_a_login_is_routed_unless_the_gateway_asks_for_a_jwt():
    """The base routes only MLflow's UI on the UI gateway (MLflow asks for its own login); the KFP UI,
    which has none, is routed by the istio-auth component alone, whose policy admits only requests with
    a JWT to its host."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    base = [o for r in kustomization["resources"] for o in objects(K8S / r)]
    ui_routes = {h for o in base if o["kind"] == "VirtualService" and "mlops-ui" in o["spec"]["gateways"]
                 for h in o["spec"]["hosts"]}
    mlflow = objects(K8S / "mlflow" / "deployment.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    assert ui_routes == {"mlflow.mlops.example.com"} and "--app-name=basic-auth" in mlflow["args"]
    component = yaml.safe_load((K8S / "istio-auth" / "kustomization.yaml").read_text())
    added = [o for r in component["resources"] for o in objects(K8S / "istio-auth" / r)]
    kfp_hosts = {h for o in added if o["kind"] == "VirtualService" for h in o["spec"]["hosts"]}
    [policy] = [o for o in added if o["kind"] == "AuthorizationPolicy"]
    assert policy["spec"]["action"] == "ALLOW"

    def hosts(rule):
        return {h for to in rule["to"] for h in to["operation"]["hosts"]}

    jwt = {h for r in policy["spec"]["rules"] if any(f["source"].get("requestPrincipals") for f in r.get("from", []))
           for h in hosts(r)}
    open_to_all = {h for r in policy["spec"]["rules"] if not r.get("from") for h in hosts(r)}
    assert kfp_hosts == {"kfp.mlops.example.com"} and kfp_hosts <= jwt
    # MLflow's own login is HTTP Basic in the Authorization header, where Istio reads a JWT: a JWT rule on
    # its host would leave no request that both pass; it is admitted as it is, and asks for its login
    assert ui_routes <= open_to_all and not ui_routes & jwt
