"""RBAC contract: the Roles in k8s-yaml/rbac/ grant exactly the Kubernetes API calls the plugins make.

The calls are derived by running the plugins' Kubernetes code paths for real against the emulator
(a stage pod that succeeds, one that fails, one deferred, an InferenceService created, patched and
waited for) and reading what it served; no list is written by hand."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from mlops.cluster import ClusterSettings
from mlops.hooks.kserve import KServeHook
from mlops.inference_service import inference_service
from mlops.operators.stage_pod import StagePodOperator
from mlops.triggers.kserve import InferenceServiceReadyTrigger
from tests.support import first_event

from .cluster_actors import ScriptedKubelet, install_mlflow_config
from .conftest import REPO
from .kube_emulator import KubeEmulator, api_calls, kube_connection
from .test_kserve_contract import task_context

ROLES = REPO / "k8s-yaml" / "rbac" / "airflow-roles.yaml"


def granted() -> set[tuple[str, str, str, str]]:
    grants = set()
    for doc in yaml.safe_load_all(ROLES.read_text()):
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        grants.update((doc["metadata"]["namespace"], group, resource, verb) for verb in rule["verbs"])
    return grants


@pytest.fixture
def exercised(monkeypatch, tmp_path):
    """Run every Kubernetes code path of the plugins once; return the calls the API served."""
    volume = tmp_path / "volume"
    with KubeEmulator() as kube, ScriptedKubelet(kube, volume, tmp_path / "kubelet"):
        install_mlflow_config(kube, "http://127.0.0.1:9")
        cluster = ClusterSettings(kubernetes_conn_id=kube_connection(monkeypatch, kube.url),
                                  pod_poll_interval_seconds=0.2, startup_timeout_seconds=60)

        def stage(task_id, stage_name, options, **kwargs):
            return StagePodOperator(task_id=task_id, stage=stage_name, options=options, cluster=cluster, **kwargs)

        context = task_context()
        # A stage that succeeds, synchronously: create, find, wait, log, XCom through the sidecar, delete.
        synchronous = stage("simulate", "simulate", {"partition": "2026-11-01", "rows": 20}, deferrable=False)
        assert synchronous.execute(context)["rows"] == 20
        # The same, deferred to the triggerer.
        operator = stage("simulate_deferred", "simulate", {"partition": "2026-11-02", "rows": 20})
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context)
        assert operator.trigger_reentry(context, first_event(deferred.value.trigger))["rows"] == 20
        # A stage that fails: its events are read, the pod is kept.
        (volume / "landing" / "2026-11-03").mkdir(parents=True)
        (volume / "landing" / "2026-11-03" / "empty.csv").write_bytes(b"")
        with pytest.raises(RuntimeError, match="stage ingest failed in pod .*: .*yielded no usable data"):
            stage("ingest", "ingest", {"partition": "2026-11-03"}, deferrable=False).execute(context)
        # InferenceServices: read, create, patch, and the readiness trigger's reads.
        hook = KServeHook(cluster.kubernetes_conn_id, cluster.serving_namespace)
        hook.apply(inference_service("iris", "1", None, "s3://mlflow/1", cluster))
        applied, _ = hook.apply(inference_service("iris", "2", None, "s3://mlflow/2", cluster))
        first_event(InferenceServiceReadyTrigger("iris", cluster.serving_namespace, applied["metadata"]["generation"],
                                                 time.time() + 0.5, cluster.kubernetes_conn_id, 0.1))
        yield SimpleNamespace(calls=api_calls(kube))


def test_the_roles_grant_exactly_the_calls_the_plugins_make(exercised):
    assert exercised.calls == granted(), (
        f"made but not granted: {sorted(exercised.calls - granted())}; "
        f"granted but never made: {sorted(granted() - exercised.calls)}")


def test_nothing_is_granted_cluster_wide():
    kinds = {doc["kind"] for doc in yaml.safe_load_all(ROLES.read_text())}
    assert kinds == {"Role", "RoleBinding"}
    for doc in yaml.safe_load_all(ROLES.read_text()):
        if doc["kind"] == "RoleBinding":
            assert doc["roleRef"]["kind"] == "Role"
            assert {s["name"] for s in doc["subjects"]} == {"airflow-worker", "airflow-triggerer"}
