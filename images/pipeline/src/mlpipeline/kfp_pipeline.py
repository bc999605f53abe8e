"""The KFP v2 training pipeline: train a challenger, evaluate it beside the champion, decide.

Components are lightweight Python components whose bodies only call
`mlpipeline.training`; the pipeline image already holds mlpipeline and kfp, so
nothing is pip-installed at run time. Steps exchange data through the run's
folder on the data volume (a PVC in a cluster, mounted with kfp-kubernetes; a
directory with kfp.local), and small results through parameters.
"""


from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes

from . import __version__

PIPELINE_IMAGE = f"ghcr.io/mlops-ct/pipeline:{__version__}"
# No "from __future__ import annotations" here: KFP reads the real annotation objects.
DATA_MOUNT = "/data"
TRAINING_YAML = Path(__file__).resolve().parents[2] / "pipelines" / "training.yaml"


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_challenger(data_root: str, run_key: str, model_name: str, mlflow_tracking_uri: str,
                     kfp_run_id: str, dag_id: str, dag_run_id: str) -> NamedTuple("Outputs", run_id=str, model_uri=str):
    import os
    from collections import namedtuple

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from mlpipeline.logs import setup_logging
    from mlpipeline.training import train_challenger as train
    from mlpipeline.volume import DataVolume

    setup_logging()
    context = {"kfp_run_id": kfp_run_id, "airflow_dag_id": dag_id, "airflow_run_id": dag_run_id}
    result = train(DataVolume(data_root), run_key, model_name, context)
    return namedtuple("Outputs", ["run_id", "model_uri"])(result["run_id"], result["model_uri"])


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_models(data_root: str, run_key: str, model_name: str, mlflow_tracking_uri: str,
                    challenger_run_id: str) -> str:
    import json
    import os

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from mlpipeline.logs import setup_logging
    from mlpipeline.training import evaluate_models as evaluate
    from mlpipeline.volume import DataVolume

    setup_logging()
    return json.dumps(evaluate(DataVolume(data_root), run_key, model_name, challenger_run_id))


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def decide_promotion(data_root: str, run_key: str, mlflow_tracking_uri: str, kfp_run_id: str,
                     evaluation: str) -> str:
    import json
    import os

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from mlpipeline.logs import setup_logging
    from mlpipeline.training import decide_promotion as decide
    from mlpipeline.volume import DataVolume

    setup_logging()
    del evaluation  # only orders this step after evaluation; the data is on the volume
    return json.dumps(decide(DataVolume(data_root), run_key, kfp_run_id))


def _in_cluster(task: dsl.PipelineTask, pvc_name, cpu: str, memory: str) -> dsl.PipelineTask:
    """Platform settings a cluster run needs; kfp.local ignores them."""
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.use_secret_as_env(task, secret_name="mlflow-s3-credentials", optional=True, secret_key_to_env={
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN"})
    kubernetes.set_security_context(task, run_as_user=1000, run_as_group=1000, run_as_non_root=True)
    task.set_cpu_request(cpu).set_memory_request(memory).set_cpu_limit("2").set_memory_limit("4Gi")
    task.set_caching_options(False)  # run keys make steps idempotent; KFP's cache would hide registry changes
    return task


@dsl.pipeline(name="continuous-training", description="Train a challenger, compare it with the champion on the "
              "same test set, and decide promote/reject (registration is the next DAG task).")
def training_pipeline(run_key: str, data_root: str = DATA_MOUNT, model_name: str = "iris-classifier",
                      mlflow_tracking_uri: str = "", dag_id: str = "", dag_run_id: str = "",
                      data_pvc: str = "mlops-data") -> str:
    trained = _in_cluster(train_challenger(
        data_root=data_root, run_key=run_key, model_name=model_name, mlflow_tracking_uri=mlflow_tracking_uri,
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, dag_id=dag_id, dag_run_id=dag_run_id), data_pvc, "1", "2Gi")
    trained.set_display_name("train challenger")
    evaluated = _in_cluster(evaluate_models(
        data_root=data_root, run_key=run_key, model_name=model_name, mlflow_tracking_uri=mlflow_tracking_uri,
        challenger_run_id=trained.outputs["run_id"]), data_pvc, "500m", "1Gi")
    evaluated.set_display_name("evaluate challenger and champion")
    decided = _in_cluster(decide_promotion(
        data_root=data_root, run_key=run_key, mlflow_tracking_uri=mlflow_tracking_uri,
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, evaluation=evaluated.output), data_pvc, "250m", "512Mi")
    decided.set_display_name("decide promote or reject")
    return decided.output


def compile_pipeline(path: Path = TRAINING_YAML) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(path))
    return path
