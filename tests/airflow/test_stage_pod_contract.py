"""Contract tests for the kubernetes target's stage pods: no cluster runs here, so every pod the DAG
would create is rendered for a sample run and validated against the Kubernetes API schema (strict:
unknown fields rejected) with kubernetes-validate, and checked for what the design requires."""

from __future__ import annotations

import argparse

import kubernetes_validate
import pytest

from mlops.hooks.stage import stage_arguments
from mlops.manifests import SAMPLE_RUN_KEY, stage_pods
from mlops.operators.stage import StageOperator
from mlops.operators.stage_pod import StagePodOperator
from mlops.settings import kubernetes_settings
from mlops.tasks import stage_task
from tests.support import EXAMPLE_DATASET

from .conftest import REPO, kubernetes_target

KUBERNETES_VERSION = "1.33.0"


def parse_iris():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["continuous_training_iris"]


@pytest.fixture
def kubernetes_dag(monkeypatch):
    kubernetes_target(monkeypatch)
    return parse_iris()


@pytest.fixture
def local_stage_tasks(monkeypatch):
    """The task ids the local target runs as `mlpipeline` subprocesses (StageOperator)."""
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "local")
    return {task.task_id for task in parse_iris().tasks if type(task) is StageOperator}


def test_the_target_picks_the_operator(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "local")
    assert type(stage_task(task_id="a", stage="ingest")) is StageOperator
    kubernetes_target(monkeypatch)
    assert type(stage_task(task_id="a", stage="ingest")) is StagePodOperator


def test_the_kubernetes_dag_trains_over_kfp_and_deploys_to_kserve(kubernetes_dag):
    from mlops.operators.kfp_cluster import KfpClusterRunOperator
    from mlops.operators.kserve import KServeDeployOperator

    assert type(kubernetes_dag.get_task("training.train")) is KfpClusterRunOperator
    assert type(kubernetes_dag.get_task("deploy")) is KServeDeployOperator


def test_make_manifests_writes_valid_objects(kubernetes_dag, local_stage_tasks, tmp_path):
    import yaml
    from jsonschema import Draft7Validator

    from mlops.manifests import write
    from tests.reference import crd_schema

    written = {path.name: yaml.safe_load(path.read_text()) for path in write(tmp_path, kubernetes_dag)}
    # a pod per stage the local target runs as a subprocess, and the deploy's two serving objects
    assert set(written) == {f"pod-{task_id.replace('.', '-')}.yaml" for task_id in local_stage_tasks} | {
        "inferenceservice-deploy.yaml", "virtualservice-deploy.yaml"}
    isvc = written.pop("inferenceservice-deploy.yaml")
    assert not list(Draft7Validator(crd_schema("kserve-crd-inferenceservices.json", "v1beta1")).iter_errors(isvc))
    route = written.pop("virtualservice-deploy.yaml")
    assert not list(Draft7Validator(crd_schema("istio-crd-virtualservices.json", "v1")).iter_errors(route))
    for pod in written.values():
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_every_stage_pod_is_a_valid_pod_running_a_command_line_the_cli_accepts(kubernetes_dag, local_stage_tasks):
    """The same stages on both targets (a task that is a subprocess locally is a pod in the cluster), each pod
    valid, and each pod's arguments a command line the image's `mlpipeline` parses: a stage it has, with
    options it knows (its own argparse parser, which refuses anything else)."""
    from mlpipeline.cli import build_parser

    pods = stage_pods(kubernetes_dag)
    assert set(pods) == local_stage_tasks and pods
    parser = build_parser()
    stages = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for task_id, pod in pods.items():
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)  # raises on any schema violation
        stage = pod["spec"]["containers"][0]
        assert stage["command"] == ["mlpipeline"] and stage["args"][0] in stages, (task_id, stage["args"][:1])
        try:
            stages[stage["args"][0]].parse_args(stage["args"][1:])
        except SystemExit:
            pytest.fail(f"{task_id}: mlpipeline refuses {stage['args']}")


def test_pods_run_the_local_command_line_hardened_on_the_data_volume(kubernetes_dag):
    cluster = kubernetes_settings()
    pods = stage_pods(kubernetes_dag)
    register = pods["training.register"]["spec"]
    stage = register["containers"][0]
    # The same command line as the local subprocess, rendered for the run.
    assert stage["command"] == ["mlpipeline"]
    assert stage["args"] == ["register", *stage_arguments({
        "data_root": "/data", "run_key": SAMPLE_RUN_KEY, "model_name": "iris-classifier", "approved_by": "admin",
        "dag_id": "continuous_training_iris", "dag_run_id": "scheduled__2026-11-01T00:00:00+00:00"})]
    assert pods["roll_back_champion"]["spec"]["containers"][0]["args"][:3] == ["rollback", "--model-name",
                                                                             "iris-classifier"]
    ingest = pods["data.ingest"]["spec"]["containers"][0]["args"]  # the dataset file's text, exactly as read
    assert ingest[0] == "ingest" and dict(zip(ingest[1::2], ingest[2::2], strict=True)) == {
        "--data-root": "/data", "--partition": "2026-11-01", "--dataset-content": EXAMPLE_DATASET.read_text(),
        "--dataset-name": "iris"}
    assert {name for name, pod in pods.items() if not any(
        "secretRef" in e for e in pod["spec"]["containers"][0]["envFrom"])} == {"data.ingest", "data.split"}
    for pod in pods.values():
        spec = pod["spec"]
        assert pod["metadata"]["namespace"] == cluster.namespace
        assert spec["serviceAccountName"] == cluster.service_account and spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"] == {
            "type": "RuntimeDefault"}
        # KPO's XCom sidecar runs the stage's own pinned image, not KPO's untagged default `alpine`
        assert [c["image"] for c in spec["containers"]] == [cluster.pipeline_image] * 2
        for container in spec["containers"]:  # the stage and KPO's XCom sidecar alike
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
            assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == cluster.data_pvc
        assert "emptyDir" in volumes["scratch"]
        stage = spec["containers"][0]
        assert {m["mountPath"] for m in stage["volumeMounts"]} == {"/data", "/tmp", "/airflow/xcom"}
        assert stage["resources"] == {"requests": cluster.requests, "limits": cluster.limits}
        # The MLflow/S3 Secret goes to the stages that talk to MLflow only, not to those reading the volume.
        talks_to_mlflow = stage["args"][0] not in ("ingest", "split")
        assert [e.get("configMapRef", e.get("secretRef"))["name"] for e in stage["envFrom"]] == [
            cluster.mlflow_config_map, *([cluster.mlflow_secret] if talks_to_mlflow else [])]
        assert stage["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_settings_come_from_the_cluster_options(monkeypatch, kubernetes_dag):
    kubernetes_target(monkeypatch, namespace="ml-prod", data_pvc="lake", pipeline_image="registry.local/pipeline:9")
    task = stage_task(task_id="ingest", stage="ingest", options={"partition": "2026-11-01"})
    pod = task.build_pod_request_obj(dry_run=True)
    assert pod.metadata.namespace == "ml-prod" and pod.spec.containers[0].image == "registry.local/pipeline:9"
    assert [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim] == ["lake"]
    # Failed pods are kept for debugging; waiting in the triggerer is Airflow's [operators] default_deferrable,
    # which KPO reads (when it is imported) as its own default: the stage pods set nothing of their own.
    import inspect

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    assert task.on_finish_action.value == "delete_succeeded_pod"
    assert task.deferrable is inspect.signature(KubernetesPodOperator.__init__).parameters["deferrable"].default
