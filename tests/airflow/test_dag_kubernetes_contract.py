"""The whole DAG on the kubernetes target, under dag.test(), on the emulated cluster (tests/cluster).

A contract test: the Kubernetes API, kubelet, KServe and KFP controllers are stand-ins. Everything
they start is real: every stage pod, both KFP training steps and the KServe predictor run as
containers of the project's images with the command, env, volumes and security context they
declare; MLflow runs as the pod of k8s-yaml/mlflow/deployment.yaml and everyone, this test's Airflow
included, calls it as http://mlflow.mlflow.svc.cluster.local:5000; KServe's own storage code copies
the model from S3 into /mnt/models. Alertmanager and the Pushgateway are real too.

A second dataset file, tests/datasets/cancer-mixed.yaml (categorical features, missing values, JSON lines
batches) under a model name of its own, is a second DAG on the same cluster: its model is a second
InferenceService, answered with its own schema, and the first model's registry entries, landing area and
InferenceService are left as they were."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
import yaml

from mlops.operators.stage_pod import StagePodOperator
from mlpipeline.contracts import MLFLOW_CLIENT_LABEL
from tests import datasets as test_datasets
from tests import support
from tests.cluster.apiserver import ISVC, PODS, VIRTUAL_SERVICES, api_calls, kube_connection
from tests.cluster.cluster import MLFLOW_CONNECTION, PIPELINE_IMAGE, airflow_identity
from tests.cluster.kfp import ContainerBackend, FakeKfp

from .conftest import connect, data_volume
from .conftest import kubernetes_target as configure_kubernetes_target
from .dag_test import dataset_file, dataset_text
from .test_rbac_contract import granted

MODEL = "iris-k8s"
LAND = ["--dataset-name", "iris", "--dataset-content", dataset_text(model_name=MODEL)]  # as a pod gets the file
# The second model: the categorical test dataset with missing values, as this test's own model.
MIXED = "cancer-mixed-k8s"
MIXED_TEXT = yaml.safe_dump({**yaml.safe_load(test_datasets.dataset_path("cancer-mixed").read_text()),
                             "model_name": MIXED}, sort_keys=False)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def kubernetes_target(cluster, stack, monkeypatch, tmp_path, datasets):
    dataset_file(datasets, model_name=MODEL)  # the example, as this test's own model
    (datasets / "cancer-mixed.yaml").write_text(MIXED_TEXT)  # and a second dataset file: a DAG of its own
    with FakeKfp(executor=ContainerBackend(cluster, "mlops", tmp_path / "kfp")) as kfp:
        # Nothing can be pulled here: the XCom sidecar runs in the pipeline image (it has sh, sleep and
        # cat), set on the connection as an air-gapped cluster would.
        conn_id = kube_connection(monkeypatch, cluster.kube.url, token=cluster.kube.token(airflow_identity("worker")),
                                  xcom_sidecar_container_image=PIPELINE_IMAGE)
        # As the Airflow pods have it: the mlops-cluster ConfigMap (k8s-yaml/cluster.env) as env, the
        # options and connections of helm-values/airflow.yaml, waits in the triggerer.
        configure_kubernetes_target(monkeypatch, kubernetes_conn_id=conn_id, pod_poll_interval_seconds=0.5,
                                    startup_timeout_seconds=180, kfp_poll_interval_seconds=1,
                                    serving_poll_interval_seconds=0.5, serving_ready_timeout_seconds=300)
        connect(monkeypatch, kfp_default=json.dumps({"conn_type": "http", "host": kfp.url}),
                mlflow_default=MLFLOW_CONNECTION, mlops_data=data_volume(cluster.data_volume()),
                alertmanager_default=stack["alertmanager"], pushgateway_default=stack["pushgateway"])
        from .test_dag import IRIS, parse_dags

        dags = parse_dags()
        yield {"dag": dags[IRIS], "mixed_dag": dags["continuous_training_cancer-mixed"], "kfp": kfp,
               "cluster": cluster}


def run(dag, day: str):
    dagrun = dag.test(logical_date=dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC))
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def registry_entries(model: str) -> dict:
    """The model's registry entries as MLflow holds them, read with MLflow's client (the hook's): the
    registered model (its aliases, champion included) and every version, tags and all."""
    from mlops.hooks.mlflow import MlflowHook

    client = MlflowHook().client
    registered = client.get_registered_model(model)
    versions = sorted(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    return {"model": {"aliases": registered.aliases, "tags": registered.tags, "description": registered.description,
                      "last_updated_timestamp": registered.last_updated_timestamp},
            "versions": [{"version": v.version, "source": v.source, "run_id": v.run_id, "status": v.status,
                          "tags": v.tags, "aliases": sorted(v.aliases), "description": v.description,
                          "last_updated_timestamp": v.last_updated_timestamp} for v in versions]}


def artifacts(model: str) -> tuple[str, str]:
    """Where the model's experiment keeps its artifacts and where its champion's are, as KServe's storage
    initializer reads them (s3://...)."""
    from mlops.hooks.mlflow import MlflowHook
    from mlops.inference_service import storage_uri
    from mlops.settings import kubernetes_settings

    hook, cluster = MlflowHook(), kubernetes_settings()
    experiment = hook.client.get_experiment_by_name(model)
    champion = hook.champion(model)
    return (storage_uri(experiment.artifact_location, cluster),
            storage_uri(hook.artifact_location(champion["source"]), cluster))


def test_retrain_and_deploy_a_failing_stage_pod_and_a_second_model(kubernetes_target, stack):
    target, cluster = kubernetes_target, kubernetes_target["cluster"]
    kube = cluster.kube
    landed = cluster.run_pod("land-2026-11-01", ["simulate", "--data-root", "/data", "--partition", "2026-11-01",
                                                 "--rows", "900", "--seed", "1", *LAND])
    assert landed["status"]["phase"] == "Succeeded"

    pods_before = len(kube.requests(PODS))  # the emulator is shared by the session's cluster tests
    refused_before = len(cluster.services.refused)
    dagrun, states = run(target["dag"], "2026-11-01")
    assert dagrun.state == "success", (states, cluster.pod_logs("mlops", "mlpipeline-"))
    assert states["training.register"] == "success" and states["deploy"] == "success"
    assert states["roll_back_champion"] == "skipped"
    # The training result is the whole decision, as on the local target (mlpipeline.contracts).
    decision = dagrun.get_task_instance("training.train").xcom_pull(task_ids="training.train")
    assert decision["decision"] == "promote" and decision["engine"] == "kfp" and decision["challenger_accuracy"] > 0.7
    # Every stage ran as a pod of the pipeline image under its declared security context.
    # One pod per stage task of the DAG that ran: the DAG, not a list here, says which stages those are.
    stage_pods = [r for r in kube.requests(PODS)[pods_before:] if r.method.value == "POST"]
    ran = sorted(task.stage for task in target["dag"].tasks
                 if isinstance(task, StagePodOperator) and states.get(task.task_id) == "success")
    assert len(ran) >= 3 and sorted(p.data["metadata"]["labels"]["mlops-ct/stage"] for p in stage_pods) == ran
    assert all(p.data["spec"]["containers"][0]["image"] == PIPELINE_IMAGE and
               p.data["spec"]["securityContext"]["runAsNonRoot"] is True for p in stage_pods)
    # Only the stages that hold MLflow's login pass its NetworkPolicy, and no connection of the run,
    # theirs, the KFP step's or Airflow's, was refused by it (k8s-yaml/network/).
    client = dict([MLFLOW_CLIENT_LABEL])
    assert {p.data["metadata"]["labels"]["mlops-ct/stage"] for p in stage_pods
            if client.items() <= p.data["metadata"]["labels"].items()} == {"detect", "register"}
    assert cluster.services.refused[refused_before:] == []
    # Training was one KFP run of the submitted spec, its steps containers of the pipeline image.
    assert len(target["kfp"].runs) == 1 and target["kfp"].violations == []
    submitted = target["kfp"].executor.submitted[0]
    images = {e["container"]["image"] for e in submitted["spec"]["deploymentSpec"]["executors"].values()}
    assert images == {PIPELINE_IMAGE} and submitted["options"]["user"] == "1000:1000"
    assert submitted["parameters"]["mlflow_tracking_uri"] == ""  # the steps read the ConfigMap, as stage pods do
    # The champion is served by the InferenceService the DAG created: KServe's storage initializer
    # copied the artifacts into /mnt/models, the predictor's env names the registry version, and a
    # v2 request through the InferenceService's own address is answered by that version.
    isvc = kube.stored(ISVC, "mlops-serving", MODEL)
    assert isvc["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/")
    url = isvc["status"]["address"]["url"]
    assert url == f"http://{MODEL}.mlops-serving.svc.cluster.local"
    answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}).json()
    assert answer["model_version"] == "1" and answer["outputs"][0]["data"] == ["setosa"]
    route = kube.stored(VIRTUAL_SERVICES, "mlops-serving", MODEL)
    assert route["spec"]["hosts"] == ["inference.mlops.example.com"]

    # A corrupt batch: the ingest pod fails, the task fails with the pod's (the stage's) message,
    # the alert carries it, and nothing stored changed.
    volume = cluster.data_volume()
    curated_before = support.tree_snapshot(volume / "curated")
    landed = cluster.run_pod("land-2026-11-02", ["simulate", "--data-root", "/data", "--partition", "2026-11-02",
                                                 "--rows", "30", *LAND])
    broken = next((volume / "landing" / MODEL / "2026-11-02").glob("*.csv"))
    broken.write_bytes(b"sepal_length;sepal_width\n1;2\n")
    pods_before = len(kube.requests(PODS))
    dagrun, states = run(target["dag"], "2026-11-02")
    assert dagrun.state == "failed" and states["data.ingest"] == "failed"
    assert states["roll_back_champion"] == "skipped"  # deploy never ran: nothing to roll back
    alerts = httpx.get(f"{stack['alertmanager']}/api/v2/alerts",
                       params={"filter": ['alertname="AirflowTaskFailed"', 'task_id="data.ingest"']}).json()
    assert alerts, "no alert reached Alertmanager"
    error = alerts[0]["annotations"]["error"]
    assert error.startswith("stage ingest failed in pod mlpipeline-ingest-") and "yielded no usable data" in error
    assert support.tree_snapshot(volume / "curated") == curated_before
    assert api_calls(kube) <= granted()  # the whole DAG needs nothing k8s-yaml/rbac/ does not grant
    created = {r.data["metadata"]["name"] for r in kube.requests(PODS)[pods_before:] if r.method.value == "POST"}
    kept = [p for p in kube.list(PODS, "mlops") if p["metadata"]["name"] in created]  # other tests' share the emulator
    assert [p["metadata"]["labels"]["mlops-ct/stage"] for p in kept] == ["ingest"], \
        [p["metadata"]["name"] for p in kept]  # the failed pod, for debugging
    base = kept[0]["status"]["containerStatuses"][0]
    assert base["state"]["terminated"]["exitCode"] == 1 and "yielded no usable data" in \
        base["state"]["terminated"]["message"]

    # A second model beside the first: the categorical dataset with missing values, its own DAG on the same
    # day, its batch drawn from the test dataset's reference sample (on the data volume, where the pod
    # reads it). What the first model has is taken before and compared after.
    before = {"registry": registry_entries(MODEL), "landing": support.tree_snapshot(volume / "landing" / MODEL),
              "isvc": kube.stored(ISVC, "mlops-serving", MODEL),
              "route": kube.stored(VIRTUAL_SERVICES, "mlops-serving", MODEL)}
    assert before["registry"]["model"]["aliases"]["champion"] == "1"
    reference = volume / "references" / "cancer-mixed.parquet"
    reference.parent.mkdir(exist_ok=True)
    test_datasets.in_pipeline_environment("write-reference", "cancer-mixed", str(reference))
    landed = cluster.run_pod("land-mixed-2026-11-01", [
        "simulate", "--data-root", "/data", "--partition", "2026-11-01", "--rows", "900", "--seed", "1",
        "--dataset-name", "cancer-mixed", "--dataset-content", MIXED_TEXT,
        "--reference", f"/data/{reference.relative_to(volume)}"])
    assert landed["status"]["phase"] == "Succeeded", cluster.pod_logs("mlops", "land-mixed-")
    dagrun, states = run(target["mixed_dag"], "2026-11-01")
    assert dagrun.state == "success", (states, cluster.pod_logs("mlops", "mlpipeline-"))
    assert states["training.register"] == "success" and states["deploy"] == "success"
    decision = dagrun.get_task_instance("training.train").xcom_pull(task_ids="training.train")
    assert decision["decision"] == "promote" and decision["engine"] == "kfp", decision
    assert [p.name for p in (volume / "landing" / MIXED).iterdir()] == ["2026-11-01"]
    assert next((volume / "landing" / MIXED / "2026-11-01").glob("*.jsonl"))

    # Two InferenceServices, one per model, each on its own registry version and its own artifacts.
    served = {isvc["metadata"]["name"]: isvc for isvc in kube.list(ISVC, "mlops-serving")}
    assert {MODEL, MIXED} <= served.keys()
    for model in (MODEL, MIXED):
        isvc, entries = served[model], registry_entries(model)
        assert [v["version"] for v in entries["versions"]] == ["1"]
        assert entries["model"]["aliases"]["champion"] == "1"
        assert isvc["metadata"]["annotations"]["mlops-ct/registry-version"] == "1"
        env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"]["env"]}
        assert env["MLSERVING_MODEL_URI"] == f"models:/{model}/1"
        experiment_root, champion_artifacts = artifacts(model)
        uri = isvc["spec"]["predictor"]["model"]["storageUri"]
        assert uri == champion_artifacts and uri.startswith(f"{experiment_root.rstrip('/')}/"), (uri, experiment_root)
    assert served[MODEL]["spec"]["predictor"]["model"]["storageUri"] != \
        served[MIXED]["spec"]["predictor"]["model"]["storageUri"]

    # The second model answers at its own address with its own schema: an input per feature, BYTES for the
    # categorical ones, null for a missing value where the feature is nullable.
    url = served[MIXED]["status"]["address"]["url"]
    assert url == f"http://{MIXED}.mlops-serving.svc.cluster.local"
    features = yaml.safe_load(MIXED_TEXT)["features"]
    metadata = httpx.get(f"{url}/v2/models/{MIXED}").json()
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        f["name"]: "FP64" if f["type"] == "numeric" else "BYTES" for f in features}, metadata
    first = json.loads(test_datasets.in_pipeline_environment("v2-request", "cancer-mixed"))  # a reference row
    nullable = {f["name"] for f in features if f.get("nullable")}
    request = {"inputs": [{**i, "shape": [2], "data": [*i["data"], None if i["name"] in nullable else i["data"][0]]}
                          for i in first["inputs"]]}  # and the same row with every nullable value missing
    answer = httpx.post(f"{url}/v2/models/{MIXED}/infer", json=request, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == MIXED and answer.json()["model_version"] == "1"
    assert answer.json()["parameters"]["run_id"] == served[MIXED]["metadata"]["annotations"]["mlops-ct/run-id"]
    predicted = answer.json()["outputs"][0]["data"]
    assert len(predicted) == 2 and set(predicted) <= {"malignant", "benign"}, answer.json()
    assert predicted[0] == "malignant"  # the reference's first tumour: every measurement and band high
    # A bad request is refused, the message naming the feature: a number where a category is expected,
    # as a wrong datatype and as a value of the wrong type.
    for feature, change in (("area_band", {"datatype": "FP64", "data": [1.0, 2.0]}),
                            ("concavity_grade", {"data": [3, "low"]})):
        wrong = httpx.post(f"{url}/v2/models/{MIXED}/infer", timeout=30, json={"inputs": [
            {**i, **change} if i["name"] == feature else i for i in request["inputs"]]})
        assert wrong.status_code == 400 and feature in wrong.text, (feature, wrong.status_code, wrong.text)
    # The first model still answers at its own address, with its own schema and version; each refuses the
    # other's request.
    iris_request = {"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    assert httpx.post(f"{url}/v2/models/{MIXED}/infer", json=iris_request, timeout=30).status_code == 400
    url = served[MODEL]["status"]["address"]["url"]
    answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=iris_request, timeout=30).json()
    assert answer["model_version"] == "1" and answer["outputs"][0]["data"] == ["setosa"]
    assert httpx.post(f"{url}/v2/models/{MODEL}/infer", json=request, timeout=30).status_code == 400
    assert httpx.post(f"{url}/v2/models/{MIXED}/infer", json=request, timeout=30).status_code == 404  # not here
    # Neither model touched the other's: the first one's registry entries, landing area, InferenceService and
    # route are as they were, and the second one has its own route.
    assert registry_entries(MODEL) == before["registry"]
    assert support.tree_snapshot(volume / "landing" / MODEL) == before["landing"]
    assert kube.stored(ISVC, "mlops-serving", MODEL) == before["isvc"]
    assert kube.stored(VIRTUAL_SERVICES, "mlops-serving", MODEL) == before["route"]
    assert kube.stored(VIRTUAL_SERVICES, "mlops-serving", MIXED)["spec"]["http"][0]["match"][0] == \
        {"uri": {"prefix": f"/v2/models/{MIXED}/"}}
    assert len(target["kfp"].runs) == 2 and target["kfp"].violations == []
    assert api_calls(kube) <= granted()  # two models need nothing more of k8s-yaml/rbac/ than one
