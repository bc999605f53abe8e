"""The compiled training pipeline, fitted to the cluster it is submitted to.

The committed `training.yaml` carries defaults (the pipeline image, the data volume's mount path, the
uid of the pipeline image's user); the stage pods take the same facts from `[mlops_kubernetes]`. So that
one setting governs both, the KFP operator submits the spec with them filled in from the settings:
every executor's image, the PVC mount path, the security context's user and group, the image pull
policy and node selector. The data claim, the MLflow Secret and ConfigMap names are pipeline
parameters and travel as run parameters (`pipeline_parameters`).
"""

from __future__ import annotations

import copy

from mlops.settings import KubernetesSettings


def pipeline_parameters(cluster: KubernetesSettings) -> dict[str, str]:
    return {"data_pvc": cluster.data_pvc, "data_root": cluster.data_mount, "mlflow_secret": cluster.mlflow_secret,
            "mlflow_config_map": cluster.mlflow_config_map}


def fit_to_cluster(package: dict, cluster: KubernetesSettings) -> dict:
    """A copy of the submitted package ({"pipeline_spec", "platform_spec"}) with the cluster's settings."""
    package = copy.deepcopy(package)
    spec = package.get("pipeline_spec", package)
    for executor in (spec.get("deploymentSpec") or {}).get("executors", {}).values():
        if "container" in executor:
            executor["container"]["image"] = cluster.pipeline_image
    platform = ((package.get("platform_spec") or {}).get("platforms") or {}).get("kubernetes") or {}
    for config in ((platform.get("deploymentSpec") or {}).get("executors") or {}).values():
        for mount in config.get("pvcMount") or []:
            mount["mountPath"] = cluster.data_mount
        context = config.setdefault("securityContext", {})
        context.update(runAsUser=str(cluster.run_as_user), runAsGroup=str(cluster.run_as_user), runAsNonRoot=True)
        config["imagePullPolicy"] = cluster.image_pull_policy
        if cluster.node_selector:
            config["nodeSelector"] = {"labels": dict(cluster.node_selector)}
    return package
