"""StagePodOperator: one pipeline stage as a pod of the pipeline image (the kubernetes target).

The container runs the same `mlpipeline <stage> <options>` command line as the local target's
subprocess; the stage writes its JSON result to /airflow/xcom/return.json, which KPO's sidecar hands
to XCom (each key also as its own). Everything cluster-specific comes from `[mlops_kubernetes]`
(mlops.settings.KubernetesSettings); whether it waits in the triggerer is Airflow's own
`[operators] default_deferrable`, which KPO reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import REGISTRY_STAGES, stage_arguments
from mlops.links import RESULT_LINKS, result_links
from mlops.operators.stage import RunsOnlyWith
from mlops.settings import KubernetesSettings, kubernetes_settings
from mlpipeline.contracts import MLFLOW_CLIENT_LABEL

SCRATCH = "/tmp"  # the only writable path besides the data volume (read-only root filesystem)


def hardened_container_context(cluster: KubernetesSettings) -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False, read_only_root_filesystem=True, run_as_non_root=True,
        run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_user,
        capabilities=k8s.V1Capabilities(drop=["ALL"]), seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def hardened_pod_context(cluster: KubernetesSettings) -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_user,
        fs_group=cluster.run_as_user, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


class StagePodOperator(RunsOnlyWith, KubernetesPodOperator):
    """`options` become the stage's flags when the pod is built (after they are rendered: they may hold
    XComArgs; a None value leaves its flag out); `data_root` defaults to the data volume's mount path
    (pass None for stages that take no data volume, such as rollback)."""

    template_fields = (*KubernetesPodOperator.template_fields, "options", "only_with")
    operator_extra_links = RESULT_LINKS

    def __init__(self, *, stage: str, options: Mapping[str, object] | None = None,
                 cluster: KubernetesSettings | None = None, mlflow_conn_id: str = MlflowHook.default_conn_name,
                 only_with=True, only_with_reason: str = "", **kwargs):
        cluster = cluster or kubernetes_settings()
        self.stage, self.mlflow_conn_id = stage, mlflow_conn_id
        self.only_with, self.only_with_reason = only_with, only_with_reason
        self.options = {"data_root": cluster.data_mount, **(options or {})}
        defaults = dict(
            kubernetes_conn_id=cluster.kubernetes_conn_id,
            namespace=cluster.namespace,
            name=f"mlpipeline-{stage}",
            labels={**cluster.labels, "app.kubernetes.io/name": "mlpipeline", "mlops-ct/stage": stage,
                    # through MLflow's NetworkPolicy: only the stages that hold its login
                    **(dict([MLFLOW_CLIENT_LABEL]) if stage in REGISTRY_STAGES else {})},
            image=cluster.pipeline_image,
            image_pull_policy=cluster.image_pull_policy,
            image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in cluster.image_pull_secrets] or None,
            cmds=["mlpipeline"],
            arguments=[stage],  # the flags follow once `options` are rendered (build_pod_request_obj)
            env_vars=[k8s.V1EnvVar(name="TMPDIR", value=SCRATCH), k8s.V1EnvVar(name="HOME", value=SCRATCH)],
            env_from=[
                k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=cluster.mlflow_config_map)),
                # optional: a tracking server without auth and a PVC-backed artifact store need no secret;
                # only the stages that talk to MLflow get it (ingest and split read the volume alone)
                *([k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=cluster.mlflow_secret, optional=True))]
                  if stage in REGISTRY_STAGES else []),
            ],
            volumes=[
                k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=cluster.data_pvc)),
                k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=cluster.scratch_size)),
            ],
            volume_mounts=[k8s.V1VolumeMount(name="data", mount_path=cluster.data_mount),
                           k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH)],
            container_resources=k8s.V1ResourceRequirements(requests=cluster.requests, limits=cluster.limits),
            service_account_name=cluster.service_account,
            automount_service_account_token=False,  # stages talk to MLflow and the volume, never to the API server
            security_context=hardened_pod_context(cluster),
            container_security_context=hardened_container_context(cluster),
            xcom_sidecar_container_security_context=hardened_container_context(cluster),
            node_selector=cluster.node_selector or None,
            # The stage's one-line error becomes the pod's termination message.
            termination_message_policy="FallbackToLogsOnError",
            do_xcom_push=True,
            multiple_outputs=True,
            get_logs=True,
            log_events_on_failure=True,
            poll_interval=cluster.pod_poll_interval_seconds,
            startup_timeout_seconds=cluster.startup_timeout_seconds,
            on_finish_action="delete_succeeded_pod",  # failed pods stay for `kubectl logs/describe`
        )
        super().__init__(**{**defaults, **kwargs})  # callers may override any default, e.g. deferrable

    def build_pod_request_obj(self, context=None, *, dry_run: bool = False) -> k8s.V1Pod:
        self.arguments = [self.stage, *stage_arguments(self.options)]
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        # KPO's XCom sidecar is the untagged `alpine` unless the connection names an image: the stage's own
        # image instead (pinned with the release, already on the node; its shell runs the sidecar's loop).
        if not self.hook.get_xcom_sidecar_container_image():
            for container in pod.spec.containers:
                if container.name == PodDefaults.SIDECAR_CONTAINER_NAME:
                    container.image = self.image
        return pod

    def _record_links(self, result):
        self.link_urls = result_links(result if isinstance(result, dict) else None, self.mlflow_conn_id)
        return result

    def execute(self, context):
        self._check_only_with()
        with self._stage_error():
            return self._record_links(super().execute(context))

    def trigger_reentry(self, context, event):
        with self._stage_error():
            return self._record_links(super().trigger_reentry(context, event))

    @contextmanager
    def _stage_error(self):
        """A failed pod fails the task with the stage's own error line (the container's termination
        message), not KPO's dump of the whole pod."""
        try:
            yield
        except AirflowException as exc:
            message = self._termination_message()
            if not message:
                raise
            raise RuntimeError(f"stage {self.stage} failed in pod {self.pod.metadata.name}: {message}") from exc

    def _termination_message(self) -> str | None:
        pod = getattr(self, "pod", None)
        if pod is None:
            return None
        try:
            remote = self.client.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        except Exception:  # the pod may be gone; then KPO's own error stands
            return None
        for status in (remote.status and remote.status.container_statuses) or []:
            terminated = status.state and status.state.terminated
            if status.name == self.base_container_name and terminated and terminated.exit_code:
                # FallbackToLogsOnError: the log's tail; the stage's one-line error is its last line.
                lines = (terminated.message or "").strip().splitlines()
                return lines[-1] if lines else terminated.reason or f"exit code {terminated.exit_code}"
        return None
