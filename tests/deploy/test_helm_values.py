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


# The data volume in the Airflow pods. Chart 1.22.0 gives every Airflow pod the global `volumes` and
# `volumeMounts`, and each component its own extraVolumes/extraVolumeMounts: the KubernetesExecutor's task
# pods those of workers.kubernetes (files/pod-template-file.kubernetes-helm-yaml) and the deprecated
# workers.* ones, which the Celery workers take as well.
COMPONENTS = ("task pods", "triggerer", "scheduler", "apiServer", "dagProcessor", "migrateDatabaseJob")


def cluster_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in (REPO / "k8s-yaml" / "cluster.env").read_text().splitlines()
                if line and not line.startswith("#"))


def data_mounts(values: dict, component: str) -> list[dict]:
    """The mounts of the data claim (cluster.env DATA_PVC) in a component's pods, each with `writable`:
    neither the mount nor the claim's volume is read-only."""
    workers = values.get("workers") or {}
    sections = [workers.get("kubernetes") or {}, workers] if component == "task pods" else \
        [values.get(component) or {}]
    volumes = list(values.get("volumes") or []) + [v for s in sections for v in s.get("extraVolumes") or []]
    mounts = list(values.get("volumeMounts") or []) + [m for s in sections for m in s.get("extraVolumeMounts") or []]
    claim = cluster_env()["AIRFLOW__MLOPS_KUBERNETES__DATA_PVC"]
    data = {v["name"]: v["persistentVolumeClaim"] for v in volumes
            if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim}
    return [{**m, "writable": not (m.get("readOnly") or data[m["name"]].get("readOnly"))}
            for m in mounts if m["name"] in data]


def writers(values: dict) -> set[str]:
    return {c for c in COMPONENTS if any(m["writable"] for m in data_mounts(values, c))}


def test_the_data_volume_is_mounted_where_cluster_env_says_and_only_where_it_is_read():
    from mlops.landing import model_landing

    values, cluster = yaml.safe_load(VALUES.read_text()), cluster_env()
    mount = cluster["AIRFLOW__MLOPS_KUBERNETES__DATA_MOUNT"]
    landing = model_landing("any").parts[0]  # the landing area's folder, as the sensor and pull_batch name it
    # the connection mlops_data names the mount path: the sensor and pull_batch find the landing area below it
    env = {item["name"]: item["value"] for item in values["env"]}
    assert json.loads(env["AIRFLOW_CONN_MLOPS_DATA"])["extra"]["path"] == mount
    assert not values.get("volumes") and not values.get("volumeMounts")  # global: in every Airflow pod
    # the task pods (pull_batch, the sensor's first poke): the landing area, read-write, nothing else
    (task,) = data_mounts(values, "task pods")
    assert (task["mountPath"], task.get("subPath"), task["writable"]) == (f"{mount}/{landing}", landing, True)
    assert not {"extraVolumes", "extraVolumeMounts"} & set(values["workers"])  # deprecated, and Celery's too
    # the triggerer (the deferred sensor's FileTrigger): read-only
    (trigger,) = data_mounts(values, "triggerer")
    assert (trigger["mountPath"], trigger["writable"]) == (mount, False)
    # the scheduler, API server and DAG processor never open it
    for component in ("scheduler", "apiServer", "dagProcessor", "migrateDatabaseJob"):
        assert data_mounts(values, component) == [], component


def test_only_the_task_pods_can_write_the_data_volume():
    values = yaml.safe_load(VALUES.read_text())
    assert writers(values) == {"task pods"}
    # What this would catch: the workers' mount given to every pod, or a triggerer mount left writable.
    triggerer = values["triggerer"]
    everywhere = {**values, "volumes": values["workers"]["kubernetes"]["extraVolumes"],
                  "volumeMounts": values["workers"]["kubernetes"]["extraVolumeMounts"],
                  "triggerer": {k: v for k, v in triggerer.items() if not k.startswith("extraVolume")}}
    assert writers(everywhere) == set(COMPONENTS)
    writable = {**values, "triggerer": {**triggerer, "extraVolumeMounts": [
        {k: v for k, v in m.items() if k != "readOnly"} for m in triggerer["extraVolumeMounts"]]}}
    assert writers(writable) == {"task pods"}  # the claim's own readOnly still holds it
    writable["triggerer"]["extraVolumes"] = values["workers"]["kubernetes"]["extraVolumes"]
    assert writers(writable) == {"task pods", "triggerer"}


def test_task_pods_share_the_stage_pods_group_on_a_volume_many_can_write():
    values, cluster = yaml.safe_load(VALUES.read_text()), cluster_env()
    pod = values["workers"]["kubernetes"]["securityContexts"]["pod"]
    # the Airflow image's user (images/airflow/Dockerfile), with the stage pods' uid-and-gid as fsGroup: a
    # supplementary group, so landing/ (group-writable, setgid) takes the task pods' files and the stage
    # pods read them
    assert "USER 50000" in (REPO / "images" / "airflow" / "Dockerfile").read_text()
    assert (pod["runAsUser"], pod["runAsGroup"], pod["runAsNonRoot"]) == (50000, 0, True)
    assert pod["fsGroup"] == int(cluster["AIRFLOW__MLOPS_KUBERNETES__RUN_AS_USER"])
    # the stage pods, KFP's steps and the task pods write it at once, on any node
    (pvc,) = [o for o in yaml.safe_load_all((REPO / "k8s-yaml" / "storage" / "data-pvc.yaml").read_text()) if o]
    assert pvc["metadata"]["name"] == cluster["AIRFLOW__MLOPS_KUBERNETES__DATA_PVC"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
