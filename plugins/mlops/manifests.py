"""The Kubernetes objects each DAG would create for a sample run, rendered like a real run would render them.

`python -m mlops.manifests OUT_DIR` (what `make manifests` runs) writes one YAML file per object, in a
folder per DAG (`OUT_DIR/<dag_id>/`, one DAG per dataset file), so a platform team can review them like
`helm template` output. The sample run's upstream XCom values are
declared in SAMPLE_RESULTS: rendering needs them, and they are what a real run's tasks return.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

SAMPLE_DAY = "2026-11-01"
SAMPLE_RUN_KEY = "rk-0123456789abcdef"
# What the sample run's upstream tasks return, as the DAG's XComArgs read it (each key is its own XCom).
SAMPLE_RESULTS = {
    "wait_for_batch": {"partition": SAMPLE_DAY, "folder": f"/data/landing/<model>/{SAMPLE_DAY}", "started_at": 0.0},
    "data.ingest": {"partition": SAMPLE_DAY},
    "data.split": {"run_key": SAMPLE_RUN_KEY},
    "detect_degradation": {"run_key": SAMPLE_RUN_KEY},
    "training.train": {"run_key": SAMPLE_RUN_KEY, "decision": "promote"},
    "training.approve_promotion": {"approved_by": "admin"},
    "deploy": {"rollback_to_version": "1", "rollback_from_version": "2",
               "rollback_reason": "deploy of v2 failed: smoke test: HTTP 500"},
}
# The champion the deploy task would find in MLflow for the sample run.
SAMPLE_CHAMPION = {"version": "1", "run_id": "0123456789abcdef0123456789abcdef",
                   "artifact_uri": "mlflow-artifacts:/1/models/m-0123456789abcdef/artifacts"}
CLUSTER_ENV = Path(__file__).resolve().parents[2] / "k8s-yaml" / "cluster.env"


def cluster_env(path: Path = CLUSTER_ENV) -> dict[str, str]:
    """The facts about the cluster, as the mlops-cluster ConfigMap puts them in the Airflow pods' env."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def cluster_settings(**overrides):
    """KubernetesSettings as the Airflow pods read them from k8s-yaml/cluster.env, with overrides."""
    from mlops.settings import KubernetesSettings, env_name, settings_from

    prefix = env_name("mlops_kubernetes", "")
    raw = {name.removeprefix(prefix).lower(): value for name, value in cluster_env().items() if name.startswith(prefix)}
    return settings_from(KubernetesSettings, "mlops_kubernetes", raw, **overrides)


class _SampleTaskInstance:
    """Answers xcom_pull (of templates and XComArgs) from SAMPLE_RESULTS."""

    def xcom_pull(self, task_ids=None, key="return_value", default=None, **_):
        result = SAMPLE_RESULTS.get(task_ids, {})
        return result if key == "return_value" else result.get(key, default)


def sample_context(dag) -> dict:
    logical = dt.datetime.fromisoformat(SAMPLE_DAY).replace(tzinfo=dt.UTC)
    return {"dag": dag, "ds": SAMPLE_DAY, "ds_nodash": SAMPLE_DAY.replace("-", ""), "logical_date": logical,
            "run_id": f"scheduled__{logical.isoformat()}", "params": dag.params.validate(),
            "ti": _SampleTaskInstance()}


def rendered_tasks(dag, operator_class):
    """The DAG's tasks of one class, templates rendered as the sample run would render them."""
    context = sample_context(dag)
    for task in dag.tasks:
        if isinstance(task, operator_class):
            task = task.prepare_for_execution()
            task.render_template_fields(context, jinja_env=dag.get_template_env())
            yield task


def stage_pods(dag) -> dict[str, dict]:
    """task_id -> the pod (as the API server receives it) for every stage pod task of the DAG."""
    from kubernetes.client import ApiClient

    from mlops.operators.stage_pod import StagePodOperator

    return {task.task_id: ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
            for task in rendered_tasks(dag, StagePodOperator)}


def serving_objects(dag) -> dict[str, dict]:
    """file name -> the InferenceService and the gateway route each KServe deploy task would apply for the
    sample champion."""
    from mlops.inference_service import inference_route, inference_service, storage_uri
    from mlops.operators.kserve import KServeDeployOperator

    found = {}
    for task in rendered_tasks(dag, KServeDeployOperator):
        cluster = task._cluster()
        found[f"inferenceservice-{task.task_id}"] = inference_service(
            task.model_name, SAMPLE_CHAMPION["version"], SAMPLE_CHAMPION["run_id"],
            storage_uri(SAMPLE_CHAMPION["artifact_uri"], cluster), cluster)
        if cluster.inference_host:
            found[f"virtualservice-{task.task_id}"] = inference_route(task.model_name, cluster)
    return found


def write(out_dir: Path, dag) -> list[Path]:
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    objects = {f"pod-{task_id}": pod for task_id, pod in stage_pods(dag).items()}
    objects.update(serving_objects(dag))
    written = []
    for name, obj in objects.items():
        path = out_dir / f"{name.replace('.', '-')}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    return written


def helm_connections(values_file: Path) -> dict[str, str]:
    """The AIRFLOW_CONN_* the Helm values set as plain values (those from Secrets are not known here)."""
    import yaml

    env = yaml.safe_load(values_file.read_text()).get("env") or []
    return {e["name"]: e["value"] for e in env if e["name"].startswith("AIRFLOW_CONN_") and "value" in e}


def main(argv: list[str]) -> int:
    import os

    if len(argv) != 1:
        print("usage: python -m mlops.manifests OUT_DIR", file=sys.stderr)
        return 2
    # the kubernetes target's objects, with the facts of k8s-yaml/cluster.env and the connections the Helm
    # values give the Airflow pods
    repo = Path(__file__).resolve().parents[2]
    os.environ.update({**cluster_env(), **helm_connections(repo / "helm-values" / "airflow.yaml")})
    from airflow.dag_processing.dagbag import DagBag

    from mlops.datasets import INVALID_TAG

    bag = DagBag(dag_folder=str(repo / "dags"))
    if bag.import_errors:
        print(f"the DAG file does not parse: {bag.import_errors}", file=sys.stderr)
        return 1
    broken = {dag_id: dag.description for dag_id, dag in bag.dags.items() if INVALID_TAG in dag.tags}
    for dag_id, why in broken.items():
        print(f"{dag_id}: no manifests, its dataset file is invalid: {why}", file=sys.stderr)
    for dag_id, dag in sorted(bag.dags.items()):
        if dag_id not in broken:
            for path in write(Path(argv[0]) / dag_id, dag):
                print(path)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
