"""helm-values/airflow.yaml against the official Airflow chart's values.schema.json."""

from __future__ import annotations

import json

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.reference import reference_file

from .conftest import REPO

VALUES = REPO / "helm-values" / "airflow.yaml"


@pytest.fixture(scope="module")
def validator():
    return Draft7Validator(json.loads(reference_file("airflow-helm-chart-values.schema.json").read_text()))


def test_values_are_valid_for_the_chart(validator):
    errors = list(validator.iter_errors(yaml.safe_load(VALUES.read_text())))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_a_misspelled_key_is_caught(validator):
    values = yaml.safe_load(VALUES.read_text())
    values["triggerer"]["enabledd"] = values["triggerer"].pop("enabled")
    assert list(validator.iter_errors(values))


def test_values_run_the_project_as_designed():
    values = yaml.safe_load(VALUES.read_text())
    assert values["executor"] == "KubernetesExecutor" and values["triggerer"]["enabled"] is True
    assert values["config"]["operators"]["default_deferrable"] == "True"
    assert values["config"]["core"]["load_examples"] == "False"
    assert values["dags"]["gitSync"]["enabled"] is False  # DAGs come with the image
    # the target and the facts about the cluster: the mlops-cluster ConfigMap (k8s-yaml/cluster.env), as env
    sources = yaml.safe_load(values["extraEnvFrom"])
    assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} == {"mlops-cluster"}
    cluster = dict(line.split("=", 1) for line in (REPO / "k8s-yaml" / "cluster.env").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert cluster["AIRFLOW__MLOPS__TARGET"] == "kubernetes"
    assert "password" not in VALUES.read_text().lower()  # secrets come from Secrets
    # no admin/admin, and every key from a Secret the deploy guide creates (the chart would otherwise
    # generate them anew on each upgrade, or default them)
    assert values["createUserJob"]["enabled"] is False
    guide = (REPO / "docs" / "deploy.md").read_text()
    for key in ("fernetKeySecretName", "webserverSecretKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert f"create secret generic {values[key]} " in guide, key
    assert not {"fernetKey", "webserverSecretKey", "apiSecretKey", "jwtSecret", "webserver"} & set(values)
    # the service accounts the RBAC binds are the ones the chart gives the task pods and the triggerer
    roles = list(yaml.safe_load_all((REPO / "k8s-yaml" / "rbac" / "airflow-roles.yaml").read_text()))
    bound = {s["name"] for doc in roles if doc["kind"] == "RoleBinding" for s in doc["subjects"]}
    assert bound == {task_pod_service_account(values), values["triggerer"]["serviceAccount"]["name"]}


def task_pod_service_account(values: dict, release: str = "airflow") -> str:
    """The service account chart 1.22.0 gives KubernetesExecutor task pods: its pod-template-file
    (files/pod-template-file.kubernetes-helm-yaml L239-243) takes workers.kubernetes.serviceAccount
    when that one's `create` is a boolean, else the deprecated workers.serviceAccount; a created
    account without a name is named <release>-<suffix> (templates/_helpers.yaml _serviceAccountNameGen)."""
    workers = values.get("workers") or {}
    modern = (workers.get("kubernetes") or {}).get("serviceAccount") or {}
    account, suffix = (modern, "worker-kubernetes") if modern.get("create") in (True, False) else \
        (workers.get("serviceAccount") or {}, "worker")
    if account.get("create", True):
        return account.get("name") or f"{release}-{suffix}"
    return account.get("name") or "default"


def test_task_pods_get_their_service_account_from_the_current_key():
    values = yaml.safe_load(VALUES.read_text())
    assert values["workers"]["kubernetes"]["serviceAccount"]["create"] is True  # not the deprecated key
    assert "serviceAccount" not in values["workers"]
    # What the RoleBindings would have missed: enabling the current key without a name.
    assert task_pod_service_account({"workers": {"kubernetes": {"serviceAccount": {"create": True}}}}) == \
        "airflow-worker-kubernetes"


def test_the_schema_is_a_released_airflow_3_chart_and_the_docs_pin_it():
    chart = yaml.safe_load(reference_file("airflow-helm-chart-Chart.yaml").read_text())
    assert chart["name"] == "airflow" and "-" not in chart["version"]  # a release, not a -dev schema
    assert chart["appVersion"].startswith("3.")
    pinned = f"--version {chart['version']}"
    for path in ("docs/deploy.md", "helm-values/airflow.yaml"):
        assert pinned in (REPO / path).read_text(), f"{path} does not install chart {chart['version']}"
