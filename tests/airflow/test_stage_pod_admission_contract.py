"""Contract test of k8s-yaml/admission/: as Airflow's task pods' service account, on the emulated
cluster (which applies ValidatingAdmissionPolicies as the API server does, tests/cluster/admission.py),
every stage pod the DAG makes is admitted, and no pod that could reach another workload's Secret,
claim, service account or node is; Airflow's own pods cannot be changed, deleted or exec'd into.

That the stage pods' whole life passes (create, the XCom sidecar exec, the patch, the delete) is
proven by the RBAC contract and the DAG's kubernetes contract tests, which run as the same user."""

from __future__ import annotations

import copy
import json
import re

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import WebSocketBadStatusException

from mlops.manifests import cluster_env, stage_pods
from tests.cluster.apiserver import ISVC, PODS, KubeEmulator
from tests.cluster.cluster import PIPELINE_IMAGE, airflow_identity

from .conftest import REPO, kubernetes_target

# "ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>" (each
# policy of k8s-yaml/admission/ has a binding of the same name)
DENIED = re.compile(r"ValidatingAdmissionPolicy '(mlops-ct-airflow-[a-z-]+)' with binding '\1' denied request: (.*)",
                    re.DOTALL)
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
        return stage_pods(bag.dags["continuous_training_iris"])


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
    found = DENIED.fullmatch(message)
    assert found, message
    return found[2]


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
    "a node of its choosing": (lambda s: s.update(nodeName="control-plane"), "may not pick their node"),
    "root": (lambda s: s.setdefault("securityContext", {}).update(runAsUser=0), "or run as root"),
    "an unconfined seccomp profile": (
        lambda s: s["containers"][0].setdefault("securityContext", {}).update(
            seccompProfile={"type": "Unconfined"}), "run unconfined"),
    "a privileged container": (
        lambda s: s["containers"][0].setdefault("securityContext", {}).update(privileged=True), "nor run privileged"),
}


def test_a_label_of_another_workload_is_refused(cluster, dag_pods):
    """With the chart's labels of Airflow's API server, a pod would join its Service and take its traffic."""
    pod = altered(dag_pods["data.ingest"], lambda s: None)
    pod["metadata"]["labels"].update(tier="airflow", component="api-server", release="airflow")
    assert "only KubernetesPodOperator's labels" in refused(api(cluster).create_namespaced_pod, "mlops", pod)
    assert cluster.kube.stored(PODS, "mlops", "probe-admission") is None


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
    # Nothing of it changed. Its status may: the kubelet writes what it sees of the pod's containers whenever
    # it gets to it (a write of its own, not the refused caller's), so the resourceVersion is no evidence.
    after = cluster.kube.stored(PODS, "mlops", "airflow-api-server-0")
    assert after["spec"] == before["spec"] and without_version(after["metadata"]) == without_version(before["metadata"])


def without_version(metadata: dict) -> dict:
    return {key: value for key, value in metadata.items() if key != "resourceVersion"}


def test_the_policy_binds_only_airflow_identities(cluster, dag_pods):
    """Someone else (here an unauthenticated request, which RBAC would stop) is not this policy's
    business; the triggerer is held to it as well."""
    pod = altered(dag_pods["data.ingest"], lambda s: s.update(serviceAccountName="airflow-worker"))
    anonymous = client.CoreV1Api(client.ApiClient(client.Configuration(host=cluster.kube.url)))
    assert anonymous.create_namespaced_pod("mlops", pod, dry_run="All").spec.service_account_name == "airflow-worker"
    assert "run as the service account" in refused(api(cluster, "triggerer").create_namespaced_pod, "mlops", pod)


def deployed_inference_services() -> list[dict]:
    """What the deploy task applies, in both KServe modes, with a canary (Serverless's traffic split,
    RawDeployment's second InferenceService)."""
    from mlops.inference_service import canary_name, inference_service
    from mlops.manifests import cluster_settings

    found = []
    for mode in ("Serverless", "RawDeployment"):
        settings = cluster_settings(serving_deployment_mode=mode)
        found.append(inference_service("iris-admission", "3", "r1", "s3://mlflow/1/m", settings, canary_percent=10))
        found.append(inference_service("iris-admission", "3", "r1", "s3://mlflow/1/m", settings,
                                       name=canary_name("iris-admission")))
    return found


def test_the_deploy_tasks_inference_services_are_admitted(cluster):
    custom = client.CustomObjectsApi(api(cluster).api_client)
    for isvc in deployed_inference_services():
        custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", "mlops-serving", "inferenceservices",
                                               isvc, dry_run="All")


PREDICTOR_ESCAPES = {
    "a container of its own": (lambda p: p.update(containers=[{"name": "x", "image": "attacker/image"}]),
                               "a predictor with a model only"),
    "a volume": (lambda p: p.update(volumes=[{"name": "node", "hostPath": {"path": "/"}}]),
                 "a predictor with a model only"),
    "the node's network": (lambda p: p.update(hostNetwork=True), "a predictor with a model only"),
    "another service account": (lambda p: p.update(serviceAccountName="airflow-worker"), "run as the service account"),
    "another runtime": (lambda p: p["model"].update(runtime="someone-elses"), "on the runtime"),
    "a Secret as env": (lambda p: p["model"]["env"].append(
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "mlops-serving-s3", "key": "AWS_SECRET_ACCESS_KEY"}}}),
        "plain env values"),
    "a command": (lambda p: p["model"].update(command=["sh", "-c", "id"]), "a predictor with a model only"),
}


@pytest.mark.parametrize("escape", sorted(PREDICTOR_ESCAPES))
def test_an_inference_service_beyond_the_deploy_tasks_shape_is_refused(cluster, escape):
    change, reason = PREDICTOR_ESCAPES[escape]
    isvc = copy.deepcopy(deployed_inference_services()[0])
    isvc["metadata"]["name"] = "probe-admission"
    change(isvc["spec"]["predictor"])
    custom = client.CustomObjectsApi(api(cluster).api_client)
    assert reason in refused(custom.create_namespaced_custom_object, "serving.kserve.io", "v1beta1",
                             "mlops-serving", "inferenceservices", isvc)
    assert cluster.kube.stored(ISVC, "mlops-serving", "probe-admission") is None


def test_a_missing_parameter_refuses_only_in_the_policys_namespace():
    """Kubernetes reads a binding's parameter before its conditions: without the mlops-cluster ConfigMap,
    every pod write in the policy's namespace is refused, and nothing elsewhere."""
    import yaml

    with KubeEmulator() as kube:
        for name in ("mlops", "kube-system"):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for obj in yaml.safe_load_all((REPO / "k8s-yaml" / "admission" / "airflow-stage-pods.yaml").read_text()):
            kube.create(obj)
        core = client.CoreV1Api(client.ApiClient(client.Configuration(host=kube.url)))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "example:1"}]}}
        core.create_namespaced_pod("kube-system", pod, dry_run="All")
        assert "failed to configure binding: no params found" in refused(core.create_namespaced_pod, "mlops", pod)


def test_kserves_defaulting_webhook_runs_before_the_policy_and_its_fields_are_admitted(monkeypatch):
    """Mutating admission runs before validation: the policy sees the InferenceService as KServe's webhook
    left it. With KServe's security config turning token mounting off, the webhook adds
    `automountServiceAccountToken: false` to every predictor, which the deploy task's own applies are
    admitted with; a predictor that asks to mount the token is refused, and nothing is stored."""
    import yaml

    from mlops.hooks.kserve import KServeError, KServeHook
    from tests.cluster.apiserver import kube_connection
    from tests.cluster.cluster import generated_config_maps
    from tests.cluster.kserve import KServeController

    with KubeEmulator() as kube:
        for name in ("mlops", "mlops-serving"):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for obj in [*generated_config_maps(),
                    *yaml.safe_load_all((REPO / "k8s-yaml" / "admission" / "airflow-stage-pods.yaml").read_text())]:
            kube.create(obj)
        KServeController(kube, "storage-initializer:test", auto_mount_service_account_token=False)  # its webhook
        conn_id = kube_connection(monkeypatch, kube.url, token=kube.token(airflow_identity("worker")))
        hook = KServeHook(conn_id, "mlops-serving")
        for isvc in deployed_inference_services():  # both modes (the same names), with their canaries
            stored, _ = hook.apply(isvc)
            assert stored["spec"]["predictor"]["automountServiceAccountToken"] is False
        mounting = copy.deepcopy(deployed_inference_services()[0])
        mounting["metadata"]["name"] = "probe-token"
        mounting["spec"]["predictor"]["automountServiceAccountToken"] = True
        with pytest.raises(KServeError, match="do not mount the service account's token"):
            hook.apply(mounting)
        assert kube.stored(ISVC, "mlops-serving", "probe-token") is None
