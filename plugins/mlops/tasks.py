"""The DAG's tasks, each built for the target: the one place that tells `local` from `kubernetes`
(`[mlops] target`, read when the DAG is parsed; a wrong value fails the parse with its reason).

| task | local | kubernetes |
|---|---|---|
| a stage | StageOperator: `mlpipeline <stage>`, a subprocess | StagePodOperator: the same command, in a pod |
| training | KfpLocalRunOperator: the KFP pipeline, kfp.local | KfpClusterRunOperator: a KFP run over REST |
| deploy | LocalDeployOperator: the local model server | KServeDeployOperator: an InferenceService |

The Kubernetes client is imported only where the kubernetes target is built. The DAG file passes
`target` (its settings' `[mlops] target`, read once per parse, not once per task of every DAG); without
it, each call reads the option.
"""

from __future__ import annotations

from collections.abc import Mapping

from airflow.sdk import BaseOperator

from mlops.settings import target as configured_target


def stage_task(*, task_id: str, stage: str, options: Mapping[str, object] | None = None, target: str | None = None,
               **kwargs) -> BaseOperator:
    if (target or configured_target()) == "kubernetes":
        from mlops.operators.stage_pod import StagePodOperator

        return StagePodOperator(task_id=task_id, stage=stage, options=options, **kwargs)
    from mlops.operators.stage import StageOperator

    return StageOperator(task_id=task_id, stage=stage, options=options, **kwargs)


def training_task(*, task_id: str, run_key, model_name: str, target: str | None = None, **kwargs) -> BaseOperator:
    if (target or configured_target()) == "kubernetes":
        from mlops.operators.kfp_cluster import KfpClusterRunOperator

        return KfpClusterRunOperator(task_id=task_id, run_key=run_key, model_name=model_name, **kwargs)
    from mlops.operators.kfp_local import KfpLocalRunOperator

    return KfpLocalRunOperator(task_id=task_id, run_key=run_key, model_name=model_name, **kwargs)


def deploy_task(*, task_id: str, model_name: str, target: str | None = None, **kwargs) -> BaseOperator:
    if (target or configured_target()) == "kubernetes":
        from mlops.operators.kserve import KServeDeployOperator

        return KServeDeployOperator(task_id=task_id, model_name=model_name, **kwargs)
    from mlops.operators.deploy import LocalDeployOperator

    return LocalDeployOperator(task_id=task_id, model_name=model_name, **kwargs)
