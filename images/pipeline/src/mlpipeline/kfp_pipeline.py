"""The KFP v2 training pipeline: train a challenger, evaluate it beside the champion and decide, in one step.

The component is a lightweight Python component whose body only calls
`mlpipeline.training`; the pipeline image already holds mlpipeline and kfp, so
nothing is pip-installed at run time. It reads the split and leaves the model's
evaluation in the run's folder on the data volume (a PVC in a cluster, mounted
with kfp-kubernetes; a directory with kfp.local); the decision is its output.
"""


import os
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from . import __version__
from .contracts import MLFLOW_CLIENT_LABEL

PIPELINE_IMAGE = f"ghcr.io/mlops-ct/pipeline:{__version__}"
# No "from __future__ import annotations" here: KFP reads the real annotation objects.
DATA_MOUNT = "/data"
# The committed, compiled pipeline: in the source tree, or where the image puts it.
TRAINING_YAML = Path(os.environ.get("MLPIPELINE_TRAINING_YAML",
                                    Path(__file__).resolve().parents[2] / "pipelines" / "training.yaml"))


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_evaluate_decide(data_root: str, run_key: str, model_name: str, mlflow_tracking_uri: str,
                          kfp_run_id: str, dag_id: str, dag_run_id: str) -> str:
    # One step, not three: a step is a process, and each pays ~3 s importing scikit-learn, MLflow and skops
    # before any work (python -X importtime), most of a small run's training time. A retried step
    # reuses the challenger its run key already trained (mlpipeline.training.train_challenger).
    import json
    import os

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from mlpipeline.logs import setup_logging
    from mlpipeline.training import decide_promotion, evaluate_models, train_challenger
    from mlpipeline.volume import DataVolume

    setup_logging()
    volume = DataVolume(data_root)
    context = {"kfp_run_id": kfp_run_id, "airflow_dag_id": dag_id, "airflow_run_id": dag_run_id}
    trained = train_challenger(volume, run_key, model_name, context)
    evaluate_models(volume, run_key, model_name, trained["run_id"])
    decision = json.dumps(decide_promotion(volume, run_key, kfp_run_id))
    import gc

    gc.freeze()  # the step's process ends next: its exit skips collecting the imports' objects (~0.5 s)
    return decision


def _in_cluster(task: dsl.PipelineTask, pvc_name, secret_name, config_map_name, cpu: str,
                memory: str) -> dsl.PipelineTask:
    """Platform settings a cluster run needs; kfp.local ignores them. The names are pipeline parameters
    and the Airflow side fills them, and the image, mount path and user, from the same settings its
    stage pods use (plugins/mlops/kfp_spec.py): what is compiled here are only defaults."""
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.use_secret_as_env(task, secret_name=secret_name, optional=True, secret_key_to_env={
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN"})
    # The tracking server's URI and MLflow client settings from the ConfigMap the stage pods read too (the
    # mlflow_tracking_uri parameter, when set, wins: kfp.local runs pass it): files through the server's
    # proxy, not presigned object-store URLs (k8s-yaml/mlflow/configmap.yaml says why).
    kubernetes.use_config_map_as_env(task, config_map_name=config_map_name, optional=True, config_map_key_to_env={
        name: name for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "MLFLOW_DISABLE_TELEMETRY")})
    kubernetes.add_pod_label(task, *MLFLOW_CLIENT_LABEL)  # through MLflow's NetworkPolicy
    # KFP's driver adds the rest of the stage pods' hardening itself (no privilege escalation, every
    # capability dropped, the runtime's seccomp profile); its platform spec has no read-only root.
    kubernetes.set_security_context(task, run_as_user=1000, run_as_group=1000, run_as_non_root=True)
    task.set_cpu_request(cpu).set_memory_request(memory).set_cpu_limit("2").set_memory_limit("4Gi")
    task.set_caching_options(False)  # run keys make steps idempotent; KFP's cache would hide registry changes
    return task


@dsl.pipeline(name="continuous-training", description="Train a challenger, compare it with the champion on the "
              "same test set, and decide promote/reject (registration is the next DAG task).")
def training_pipeline(run_key: str, model_name: str, data_root: str = DATA_MOUNT,
                      mlflow_tracking_uri: str = "", dag_id: str = "", dag_run_id: str = "",
                      data_pvc: str = "mlops-data", mlflow_secret: str = "mlflow-s3-credentials",
                      mlflow_config_map: str = "mlops-mlflow") -> str:
    decided = _in_cluster(train_evaluate_decide(
        data_root=data_root, run_key=run_key, model_name=model_name, mlflow_tracking_uri=mlflow_tracking_uri,
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, dag_id=dag_id, dag_run_id=dag_run_id),
        data_pvc, mlflow_secret, mlflow_config_map, "1", "2Gi")
    decided.set_display_name("train challenger, evaluate it beside the champion, decide")
    return decided.output


def compile_pipeline(path: Path = TRAINING_YAML) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(path))
    return path
