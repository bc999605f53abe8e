"""Contract test of k8s-yaml/admission/: as Airflow's task pods' service account, on the emulated
cluster (which applies ValidatingAdmissionPolicies as the API server does, tests/cluster/admission.py),
every stage pod the DAG makes is admitted, and no pod that could reach another workload's Secret,
claim, service account or node is; Airflow's own pods cannot be changed, deleted or exec'd into.

That the stage pods' whole life passes (create, the XCom sidecar exec, the patch, the delete) is
proven by the RBAC contract and the DAG's kubernetes contract tests, which run as the same user."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import WebSocketBadStatusException

from mlops.manifests import cluster_env, stage_pods
from tests.cluster.apiserver import PODS
from tests.cluster.cluster import PIPELINE_IMAGE, airflow_identity

from .conftest import REPO, kubernetes_target

POLICY = "mlops-ct-airflow-stage-pods"  # the policy and its binding
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "
FACTS = cluster_env()
SECRET, CLAIM = FACTS["AIRFLOW__MLOPS_KUBERNETES__MLFLOW_SECRET"], FACTS["AIRFLOW__MLOPS_KUBERNETES__DATA_PVC"]
ACCOUNT = FACTS["AIRFLOW__MLOPS_KUBERNETES__SERVICE_ACCOUNT"]


def api(cluster, component: str = "worker") -> client.CoreV1Api:
    config = client.Configuration(host=cluster.kube.url)
    # as the kubeconfig loader sets it
    config.api_key = {"authorization": f"Bearer {cluster.kube.token(airflow_identity(component))}"}
    return client.CoreV1Api(client.ApiClient(config))


@pytest.fixture(scope="module")
def dag_pods():
    with pytest.MonkeyPatch.context() as monkeypatch:
        from airflow.dag_processing.dagbag import DagBag

        kubernetes_target(monkeypatch)
        bag = DagBag(dag_folder=str(REPO / "dags"))
        return stage_pods(bag.dags["continuous_training"])


@pytest.fixture(scope="module")
def airflow_pod(cluster):
    """One of Airflow's own pods in mlops, with its secrets, as the chart runs them."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "airflow-api-server-0", "namespace": "mlops", "labels": {"component": "api-server"}},
           "spec": {"serviceAccountName": "airflow-api-server", "restartPolicy": "Never",
                    "containers": [{"name": "api-server", "image": PIPELINE_IMAGE, "command": ["sleep", "600"],
                                    "envFrom": [{"secretRef": {"name": "airflow-jwt-secret"}}]}]}}
    if cluster.kube.stored(PODS, "mlops", "airflow-api-server-0") is None:
        cluster.kube.create(pod)
    return pod


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(ApiException) as raised:
        call(*args, **kwargs)
    assert raised.value.status == 403, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert message.startswith(DENIED), message
    return message.removeprefix(DENIED)


def test_every_stage_pod_of_the_dag_is_admitted(cluster, dag_pods):
    core = api(cluster)
    assert set(dag_pods) >= {"data.ingest", "detect_degradation", "training.register"}
    for task_id, pod in dag_pods.items():
        answered = core.create_namespaced_pod("mlops", pod, dry_run="All")
        assert answered.spec.service_account_name == ACCOUNT, task_id


def altered(pod: dict, change) -> dict:
    pod = copy.deepcopy(pod)
    pod["metadata"]["name"] = "probe-admission"
    change(pod["spec"])
    return pod


ESCAPES = {
    "another Secret as a volume": (
        lambda s: s.setdefault("volumes", []).append({"name": "s", "secret": {"secretName": "airflow-jwt-secret"}}),
        "may mount only the claim"),
    "another Secret in a projected volume": (
        lambda s: s.setdefault("volumes", []).append(
            {"name": "s", "projected": {"sources": [{"secret": {"name": "airflow-api-secret-key"}}]}}),
        "may mount only the claim"),
    "another claim": (
        lambda s: s.setdefault("volumes", []).append(
            {"name": "db", "persistentVolumeClaim": {"claimName": "data-airflow-postgresql-0"}}),
        "may mount only the claim"),
    "the node's files": (
        lambda s: s.setdefault("volumes", []).append({"name": "node", "hostPath": {"path": "/var/lib/kubelet"}}),
        "may mount only the claim"),
    "another Secret as environment": (
        lambda s: s["containers"][0].setdefault("envFrom", []).append({"secretRef": {"name": "airflow-fernet-key"}}),
        "may read no Secret but"),
    "one key of another Secret": (
        lambda s: s["containers"][0].setdefault("env", []).append(
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "airflow-metadata", "key": "connection"}}}),
        "may read no Secret but"),
    "Airflow's service account": (
        lambda s: s.update(serviceAccountName="airflow-worker"), "run as the service account"),
    "the node's network": (lambda s: s.update(hostNetwork=True), "may not use the node's network"),
    "a port of the node": (
        lambda s: s["containers"][0].setdefault("ports", []).append({"containerPort": 80, "hostPort": 80}),
        "may not use the node's network, ports"),
    "an added capability": (
        lambda s: s["containers"][0].setdefault("securityContext", {}).update(capabilities={"add": ["SYS_ADMIN"]}),
        "add capabilities"),
    "a privileged container": (
        lambda s: s["containers"][0].setdefault("securityContext", {}).update(privileged=True), "nor run privileged"),
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_a_pod_that_reaches_beyond_the_stage_pods_is_refused_and_not_stored(cluster, dag_pods, escape):
    change, reason = ESCAPES[escape]
    pod = altered(dag_pods["data.ingest"], change)
    message = refused(api(cluster).create_namespaced_pod, "mlops", pod)
    assert reason in message
    assert cluster.kube.stored(PODS, "mlops", "probe-admission") is None
    # The message names what is allowed, as the cluster is configured.
    assert {"claim": CLAIM in message and SECRET in message, "Secret": SECRET in message,
            "service account": ACCOUNT in message}.get(next((k for k in ("claim", "Secret", "service account")
                                                             if k in reason), ""), True)


def test_airflow_own_pods_cannot_be_changed_deleted_or_entered(cluster, airflow_pod):
    core = api(cluster)
    before = cluster.kube.stored(PODS, "mlops", "airflow-api-server-0")
    patch = {"spec": {"containers": [{"name": "api-server", "image": "attacker/image"}]}}
    assert ACCOUNT in refused(core.patch_namespaced_pod, "airflow-api-server-0", "mlops", patch)
    assert ACCOUNT in refused(core.delete_namespaced_pod, "airflow-api-server-0", "mlops")
    with pytest.raises(Exception) as raised:
        stream(core.connect_get_namespaced_pod_exec, "airflow-api-server-0", "mlops", container="api-server",
               command=["cat", "/proc/1/environ"], stdout=True, stderr=True, stdin=False, tty=False)
    # The client (kubernetes 36) fails on its own error path; the refused handshake is in the chain.
    chain = [raised.value]
    while chain[-1].__context__ is not None:
        chain.append(chain[-1].__context__)
    refusal = next(e for e in chain if isinstance(e, WebSocketBadStatusException))
    assert refusal.status_code == 403 and "XCom sidecar" in refusal.resp_body.decode()
    after = cluster.kube.stored(PODS, "mlops", "airflow-api-server-0")
    assert after["spec"] == before["spec"] and after["metadata"]["resourceVersion"] == before["metadata"][
        "resourceVersion"]


def test_the_policy_binds_only_airflow_identities(cluster, dag_pods):
    """Someone else (here an unauthenticated request, which RBAC would stop) is not this policy's
    business; the triggerer is held to it as well."""
    pod = altered(dag_pods["data.ingest"], lambda s: s.update(serviceAccountName="airflow-worker"))
    anonymous = client.CoreV1Api(client.ApiClient(client.Configuration(host=cluster.kube.url)))
    assert anonymous.create_namespaced_pod("mlops", pod, dry_run="All").spec.service_account_name == "airflow-worker"
    assert "run as the service account" in refused(api(cluster, "triggerer").create_namespaced_pod, "mlops", pod)
