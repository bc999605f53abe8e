"""Contract test of the whole DAG on the kubernetes target, under dag.test(): no cluster and no KFP
backend run here, so the Kubernetes API is the emulator (kmock plus apiserver behaviour), a scripted
kubelet runs each stage pod's real command and reports its phase and exit code (XCom through the
sidecar's exec), the KFP API is the swagger-checking fake whose backend runs the submitted run with
kfp.local, and a scripted KServe controller rolls out the InferenceService onto a real mlserving.
MLflow and Alertmanager are real."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import httpx
import pytest

from mlops.hooks.stage import StageHook
from tests import support

from .cluster_actors import ScriptedKServe, ScriptedKubelet, install_mlflow_config
from .kfp_fake import FakeKfp
from .kube_emulator import ISVC, PODS, KubeEmulator, api_calls, kube_connection
from .test_rbac_contract import granted

MODEL = "iris-k8s"
pytestmark = pytest.mark.slow


def kfp_backend(volume, mlflow_uri):
    """Runs a submitted training run the way a KFP backend would, here with kfp.local (`train-local`)."""
    def execute(run: dict) -> str | None:
        parameters = run["runtime_config"]["parameters"]
        assert parameters["data_root"] == "/data" and parameters["data_pvc"] == "mlops-data"
        done = subprocess.run(
            [str(support.PIPELINE_BIN / "mlpipeline"), "train-local", "--data-root", str(volume),
             "--run-key", parameters["run_key"], "--model-name", parameters["model_name"],
             "--dag-id", parameters["dag_id"], "--dag-run-id", parameters["dag_run_id"]],
            capture_output=True, text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": parameters["mlflow_tracking_uri"]})
        return None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]

    return execute


@pytest.fixture
def kubernetes_target(stack, monkeypatch, tmp_path):
    volume = tmp_path / "volume"  # the data PVC, as the stage pods and the sensor see it
    with KubeEmulator() as kube, FakeKfp(executor=kfp_backend(volume, stack["mlflow"])) as kfp, \
            ScriptedKubelet(kube, volume, tmp_path / "kubelet") as kubelet, \
            ScriptedKServe(kube, lambda generation: "serve", stack["mlflow"], tmp_path / "kserve") as kserve:
        install_mlflow_config(kube, stack["mlflow"])
        conn_id = kube_connection(monkeypatch, kube.url)
        for key, value in {
            "AIRFLOW_VAR_MLOPS_TARGET": "kubernetes",
            "AIRFLOW_VAR_MLOPS_KUBERNETES": json.dumps({
                "kubernetes_conn_id": conn_id, "pod_poll_interval_seconds": 0.5, "startup_timeout_seconds": 120,
                "kfp_poll_interval_seconds": 0.5, "serving_poll_interval_seconds": 0.3,
                "serving_ready_timeout_seconds": 120}),
            "AIRFLOW_CONN_KFP_DEFAULT": json.dumps({"conn_type": "http", "host": kfp.url}),
            "MLFLOW_TRACKING_URI": stack["mlflow"], "MLOPS_DATA_ROOT": str(volume),
            "MLOPS_ALERTMANAGER_URL": stack["alertmanager"], "MLOPS_PUSHGATEWAY_URL": stack["pushgateway"],
        }.items():
            monkeypatch.setenv(key, value)
        from airflow.dag_processing.dagbag import DagBag

        from .conftest import REPO

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        yield {"dag": bag.dags["continuous_training"], "kube": kube, "kfp": kfp, "kubelet": kubelet,
               "kserve": kserve, "volume": volume, "mlflow": stack["mlflow"]}


def run(dag, day: str):
    dagrun = dag.test(logical_date=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC),
                      run_conf={"model_name": MODEL})
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


@pytest.mark.timeout(600)
def test_retrain_and_deploy_then_a_failing_stage_pod(kubernetes_target, stack):
    target = kubernetes_target
    kube, kubelet = target["kube"], target["kubelet"]
    StageHook(support.PIPELINE_BIN / "mlpipeline").run(
        "simulate", {"data_root": target["volume"], "partition": "2026-11-01", "rows": 900, "seed": 1},
        on_line=lambda _: None)

    dagrun, states = run(target["dag"], "2026-11-01")
    assert dagrun.state == "success", states
    assert states["training.register"] == "success" and states["deploy"] == "success"
    # Every stage ran as a pod of the pipeline image, its result handed over by the XCom sidecar.
    stages = sorted(run["argv"][1] for run in kubelet.runs.values())
    assert stages == ["detect", "ingest", "register", "split"]
    assert all(run["returncode"] == 0 for run in kubelet.runs.values())
    assert not [p for p in kube.requests(PODS) if p.method.value == "POST" and
                p.data["spec"]["securityContext"].get("runAsNonRoot") is not True]
    # Training was one KFP run, over the REST API, checked against the swagger.
    assert len(target["kfp"].runs) == 1 and target["kfp"].violations == []
    # The champion is served by the InferenceService the DAG created.
    isvc = kube.stored(ISVC, "mlops-serving", MODEL)
    assert isvc["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    served = httpx.get(f"{isvc['status']['address']['url']}/v2/models/{MODEL}").json()
    assert served["parameters"]["registry_version"] == "1"

    # A corrupt batch: the ingest pod fails, the task fails with the pod's (the stage's) message,
    # the alert carries it, and nothing stored changed.
    curated_before = support.tree_snapshot(target["volume"] / "curated")
    landing = target["volume"] / "landing" / "2026-11-02"
    landing.mkdir(parents=True)
    (landing / "broken.csv").write_bytes(b"sepal_length;sepal_width\n1;2\n")
    (landing / "_SUCCESS").touch()
    dagrun, states = run(target["dag"], "2026-11-02")
    assert dagrun.state == "failed" and states["data.ingest"] == "failed"
    alerts = httpx.get(f"{stack['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="AirflowTaskFailed"', 'task_id="data.ingest"']}).json()
    assert alerts, "no alert reached Alertmanager"
    error = alerts[0]["annotations"]["error"]
    assert error.startswith("stage ingest failed in pod mlpipeline-ingest-") and "yielded no usable data" in error
    assert support.tree_snapshot(target["volume"] / "curated") == curated_before
    assert api_calls(kube) <= granted()  # the whole DAG needs nothing k8s-yaml/rbac/ does not grant
    failed_pods = [name for name, run in kubelet.runs.items() if run["returncode"] != 0]
    assert len(failed_pods) == 1 and kube.stored(PODS, "mlops", failed_pods[0]) is not None  # kept for debugging
