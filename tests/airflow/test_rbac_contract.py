"""RBAC contract: the Roles in k8s-yaml/rbac/ grant each service account exactly the Kubernetes API calls
the plugins make with it: the task pods (airflow-worker) what operators do, the triggerer
(airflow-triggerer) what triggers do, which only reads.

The calls are derived by running the plugins' Kubernetes code paths for real against the emulated
cluster (a stage pod that succeeds, one that fails, one deferred; InferenceServices in both KServe
modes read, created and changed by server-side apply and waited for, and their gateway route; a
RawDeployment canary deleted) and
reading what the API served, split by whether a trigger made them; no list is written by hand."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from mlops.hooks.kserve import KServeHook
from mlops.inference_service import inference_route, inference_service
from mlops.operators.stage_pod import StagePodOperator
from mlops.triggers.kserve import InferenceServiceReadyTrigger
from tests.cluster.apiserver import api_calls, kube_connection, mark
from tests.cluster.cluster import PIPELINE_IMAGE, airflow_identity
from tests.support import EXAMPLE_DATASET, first_event

from .conftest import REPO, cluster_settings
from .test_kserve_contract import task_context

ROLES = REPO / "k8s-yaml" / "rbac" / "airflow-roles.yaml"


def granted(account: str | None = None) -> set[tuple[str, str, str, str]]:
    """(namespace, apiGroup, resource, verb) the Roles grant, to one service account or to any."""
    docs = list(yaml.safe_load_all(ROLES.read_text()))
    bound = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in docs if b["kind"] == "RoleBinding"
             and (account is None or any(s["name"] == account for s in b["subjects"]))}
    grants = set()
    for doc in docs:
        if doc["kind"] == "Role" and (doc["metadata"]["namespace"], doc["metadata"]["name"]) in bound:
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        grants.update((doc["metadata"]["namespace"], group, resource, verb) for verb in rule["verbs"])
    return grants


@pytest.fixture
def exercised(cluster, monkeypatch):
    """Run every Kubernetes code path of the plugins once on the emulated cluster; return the calls
    the API served."""
    kube = cluster.kube
    since = mark(kube)
    trigger_windows = []  # (mark before, mark after) of each trigger run

    def run_trigger(trigger) -> dict:
        """As the triggerer runs it: the calls it makes are the triggerer's."""
        before = mark(kube)
        event = first_event(trigger)
        trigger_windows.append((before, mark(kube)))
        return event

    # As Airflow's task pods (the admission policy of k8s-yaml/admission/ holds that user to the stage pods).
    conn_id = kube_connection(monkeypatch, kube.url, token=kube.token(airflow_identity("worker")),
                              xcom_sidecar_container_image=PIPELINE_IMAGE)
    settings = cluster_settings(kubernetes_conn_id=conn_id, pod_poll_interval_seconds=0.2, startup_timeout_seconds=120)

    def stage(task_id, stage_name, options, **kwargs):
        return StagePodOperator(task_id=task_id, stage=stage_name, options=options, cluster=settings, **kwargs)

    context = task_context()
    # A stage that succeeds, synchronously: create, find, wait, log, XCom through the sidecar, delete.
    given = {"dataset_content": EXAMPLE_DATASET.read_text(), "dataset_name": "iris"}  # as the DAG passes the file
    synchronous = stage("simulate", "simulate", {"partition": "2026-10-01", "rows": 20, **given}, deferrable=False)
    assert synchronous.execute(context)["rows"] == 20
    # The same, deferred to the triggerer (which also watches the pod's events while it starts).
    operator = stage("simulate_deferred", "simulate", {"partition": "2026-10-02", "rows": 20, **given},
                     deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    assert operator.trigger_reentry(context, run_trigger(deferred.value.trigger))["rows"] == 20
    # A stage that fails: its events are read, the pod is kept.
    with pytest.raises(RuntimeError, match="stage ingest failed in pod .*: no landing folder for partition 2026-10-03"):
        stage("ingest", "ingest", {"partition": "2026-10-03", **given}, deferrable=False).execute(context)
    # InferenceServices in both modes and the gateway route: read, create, patch, the readiness reads.
    for mode in ("Serverless", "RawDeployment"):
        mode_settings = dataclasses.replace(settings, **{"serving_deployment_mode": mode})
        hook = KServeHook(conn_id, settings.serving_namespace)
        name = f"rbac-{mode.lower()}"
        hook.get(name)  # the deploy reads what is served first (absent here)
        if mode == "RawDeployment":
            hook.predictor_deployment(name)  # and, in RawDeployment mode, the predictor Deployment's generation
        hook.apply(inference_service(name, "1", None, "s3://mlflow/1", mode_settings))  # an apply that creates
        hook.apply(inference_service(name, "2", None, "s3://mlflow/2", mode_settings))
        hook.apply(inference_route(name, mode_settings))
        hook.apply(inference_route(name, mode_settings))
        run_trigger(InferenceServiceReadyTrigger(name, settings.serving_namespace, None, mode, time.time() + 0.5,
                                                 conn_id, 0.1))
    # A RawDeployment canary: its own InferenceService, deleted once judged.
    hook.apply(inference_service("rbac-raw", "3", None, "s3://mlflow/3", mode_settings, name="rbac-raw-canary"))
    hook.delete("rbac-raw-canary")
    end = mark(kube)
    triggerer = set().union(*(api_calls(kube, before, after) for before, after in trigger_windows))
    # The task pods' calls: those made between the trigger runs.
    starts, ends = [since] + [after for _, after in trigger_windows], [before for before, _ in trigger_windows] + [end]
    worker = set().union(*(api_calls(kube, start, stop) for start, stop in zip(starts, ends, strict=True)))
    yield SimpleNamespace(calls=api_calls(kube, since), triggerer=triggerer, worker=worker)


# Made only when a pod is still starting as the trigger looks at it (KPO watches its events then): whether
# that happens depends on the machine's timing, so a run may not see it; the grant is needed when it does.
WHILE_A_POD_STARTS = {("mlops", "", "events", "watch")}


def _exactly(made: set, account: str) -> None:
    allowed = granted(account)
    assert made <= allowed and allowed - made <= WHILE_A_POD_STARTS, (
        f"{account}: made but not granted: {sorted(made - allowed)}; "
        f"granted but never made: {sorted(allowed - made - WHILE_A_POD_STARTS)}")


def test_each_service_account_is_granted_exactly_the_calls_made_with_it(exercised):
    _exactly(exercised.worker, "airflow-worker")
    _exactly(exercised.triggerer, "airflow-triggerer")
    assert exercised.worker | exercised.triggerer == exercised.calls


def test_the_triggerer_only_reads(exercised):
    assert {verb for *_, verb in granted("airflow-triggerer")} <= {"get", "list", "watch"}


def test_exec_is_granted_both_verbs_the_api_server_checks(exercised):
    """A websocket exec is checked as `get` and, from Kubernetes 1.35, also as `create`."""
    assert {("mlops", "", "pods/exec", "get"), ("mlops", "", "pods/exec", "create")} <= granted("airflow-worker")


def test_exec_is_authorised_by_its_http_method_as_the_api_server_does():
    """kube-apiserver's request-info resolver takes a connect subresource's verb from the HTTP method (GET
    get, POST create); Kubernetes 1.35 (AuthorizePodWebsocketUpgradeCreatePermission) also checks `create`
    for a websocket upgrade. The provider reads the XCom sidecar with the kubernetes client's `stream`
    (connect_get_namespaced_pod_exec: a GET that upgrades to a websocket), so it needs both; an SPDY-style
    POST needs `create` alone."""
    import httpx
    from kubernetes import client
    from kubernetes.stream import stream

    from tests.cluster.apiserver import KubeEmulator

    with KubeEmulator() as kube:
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "mlops"},
                     "spec": {"containers": [{"name": "c", "image": "example:1"}]}})
        kube.call(lambda: setattr(kube.api, "exec_handler", lambda namespace, pod, container, command, stdin:
                                  ("done", 0)))
        core = client.CoreV1Api(client.ApiClient(client.Configuration(host=kube.url)))
        start = mark(kube)
        answer = stream(core.connect_get_namespaced_pod_exec, "p", "mlops", container="c", command=["cat", "x"],
                        stderr=True, stdin=False, stdout=True, tty=False)
        assert answer == "done"
        assert api_calls(kube, start) == {("mlops", "", "pods/exec", "get"), ("mlops", "", "pods/exec", "create")}
        start = mark(kube)
        refused = httpx.post(f"{kube.url}/api/v1/namespaces/mlops/pods/p/exec",
                             params={"command": "cat", "container": "c", "stdout": "true"})
        assert refused.status_code == 400  # no websocket upgrade (SPDY is not played)
        assert api_calls(kube, start) == {("mlops", "", "pods/exec", "create")}


def test_nothing_is_granted_cluster_wide():
    kinds = {doc["kind"] for doc in yaml.safe_load_all(ROLES.read_text())}
    assert kinds == {"Role", "RoleBinding"}
    for doc in yaml.safe_load_all(ROLES.read_text()):
        if doc["kind"] == "RoleBinding":
            assert doc["roleRef"]["kind"] == "Role"
            assert {s["name"] for s in doc["subjects"]} <= {"airflow-worker", "airflow-triggerer"}


def test_a_server_side_apply_that_creates_is_authorised_as_create_too(monkeypatch):
    """k8s.io/apiserver handlers/patch.go: an apply is a PATCH (`patch`); when the object does not exist it
    is created, which is authorised as `create` as well. The deploy applies without reading first, so the
    Role needs both."""
    from tests.cluster.apiserver import KubeEmulator

    with KubeEmulator() as kube:
        hook = KServeHook(kube_connection(monkeypatch, kube.url), "mlops-serving")
        calls = []
        for _ in range(2):
            start = mark(kube)
            hook.apply(inference_route("rbac-apply", cluster_settings()))
            calls.append(api_calls(kube, start))
    assert calls == [{("mlops-serving", "networking.istio.io", "virtualservices", "create"),
                      ("mlops-serving", "networking.istio.io", "virtualservices", "patch")},
                     {("mlops-serving", "networking.istio.io", "virtualservices", "patch")}]
