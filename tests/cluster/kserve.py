"""KServe's InferenceService controller (kserve/kserve v0.20.0), and below it what Knative Serving or
the Deployment controller does with the predictor, as far as a client of the InferenceService sees it.

The predictor pod (pkg/controller/v1beta1/inferenceservice/components/predictor.go and the pod
webhook pkg/webhook/admission/pod/storage_initializer_injector.go):
- the ClusterServingRuntime's `kserve-container`, its args' {{.Name}} rendered, with the
  InferenceService's model fields merged over it (image, resources, env by name; args appended);
- the runtime's annotations and the InferenceService's labels and annotations on the pod, plus
  `serving.kserve.io/inferenceservice: <name>` and `component: predictor`;
- an emptyDir `kserve-provision-location` at /mnt/models (read-only in kserve-container), filled by
  the `storage-initializer` init container with args [storageUri, /mnt/models] and the S3 settings
  of the service account's secrets: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the secret, and
  from its `serving.kserve.io/s3-*` annotations S3_ENDPOINT, AWS_ENDPOINT_URL (with the scheme
  s3-usehttps gives), S3_USE_HTTPS, S3_VERIFY_SSL and AWS_DEFAULT_REGION (pkg/credentials/s3).
  The init container runs KServe's own storage code (the `kserve-storage` package, in an image of
  tests/cluster/storage-initializer.Dockerfile).

The defaulting webhook (`default`, pkg/apis/serving/v1beta1/inference_service_defaults.go), which the
emulated API server calls on every create and update before validating admission: the deprecated mode
names Serverless and RawDeployment become Knative and Standard, the `modelFormat` annotation is added,
and with the security config's autoMountServiceAccountToken false the predictor gets
`automountServiceAccountToken: false` (copied onto the pod, as every predictor pod field is).

Knative mode (Serverless), the default: each change of the pod template is a new revision
`<name>-predictor-<5-digit configuration generation>` whose pod runs the container with its port
renamed `user-port` and PORT/K_SERVICE/K_CONFIGURATION/K_REVISION set (knative/serving v0.48.1
pkg/reconciler/revision/resources/deploy.go). Status as inference_service_status.go writes it:
latestCreatedRevision at once, latestReadyRevision and the 100 % traffic target (and so
latestRolledoutRevision) when the revision's pod is Ready, the old revision's pod then removed. Until
then PredictorReady and Ready are Unknown (Knative's Configuration waits for its latest revision). A
revision whose server container fails is reported on PredictorReady (reason RevisionFailed) at once,
one whose storage initializer fails only after the revision's progress deadline (Knative's 600 s, or
the `serving.knative.dev/progress-deadline` annotation), while traffic stays on the last ready one;
status.modelStatus (PropagateModelStatus) reports either failure at once: BlockedByFailedLoad,
FailedToLoad, lastFailureInfo {ModelLoadFailed, the container's termination message, exit code}.
status.deploymentMode carries v0.20's names (Knative, Standard). status.observedGeneration is copied
from the child Knative Service (L635), whose generation counts pod-template changes and which is
returned before Knative has reconciled it (kserve#6081): it is not the InferenceService's own.
With `canaryTrafficPercent` and a rolled-out revision, the route splits as ksvc_reconciler.go
(L133-157) sets it: the latest ready revision gets that share, the last rolled-out one the rest (tag
`prev`), both pods keep running, and latestRolledoutRevision stays until a revision has 100 %
(PropagateStatus). Knative's ingress weighs the split; here the Service has an Endpoints object
listing each pod in proportion to its share, which the emulated kube-proxy picks from per connection.
The queue-proxy sidecar and the activator are not played: traffic goes to the pod's port.

Standard mode (RawDeployment), annotation serving.kserve.io/deploymentMode: a Deployment
`<name>-predictor` (labels app: isvc.<name>-predictor) rolled out by the Deployment controller
(workloads.py), a Service of the same name on port 80 to the first container port, PredictorReady
from the Deployment's Available and Progressing conditions (L374-447), observedGeneration copied from
the Deployment (L456), modelStatus from a pod of the Deployment's current template. An
InferenceService keeps the mode its status recorded first (utils.GetDeploymentMode).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import uuid

from .apiserver import (
    DEPLOYMENTS,
    ENDPOINTS,
    ISVC,
    PODS,
    RUNTIMES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    KubeEmulator,
    labels_match,
)
from .network import pod_ready
from .workloads import HASH_LABEL, Controller, template_hash

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# v0.20 pkg/constants: the deprecated names and what the webhook and GetDeploymentMode make of them
LEGACY_MODES = {"Serverless": "Knative", "RawDeployment": "Standard"}
MODEL_FORMAT_ANNOTATION = "modelFormat"  # constants.ModelFormatAnnotationKey
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"  # knative pkg/apis/serving/register.go
STORAGE_INITIALIZER = "storage-initializer"  # constants.StorageInitializerContainerName
MODEL_DIR = "/mnt/models"
PROVISION_VOLUME = "kserve-provision-location"
# Annotations KServe does not copy to the pod (pkg/constants ServiceAnnotationDisallowedList).
DISALLOWED = ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
              "kubectl.kubernetes.io/last-applied-configuration", MODEL_FORMAT_ANNOTATION)


def _seconds(duration: str) -> float:
    """A Go duration as Knative's annotations give them ("600s", "10m", "1.5s")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)
    if not parts:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def _failure_info(terminated: dict) -> dict:
    """FailureInfo of a terminated container (reason ModelLoadFailed)."""
    return {"reason": "ModelLoadFailed", "message": terminated.get("message", ""),
            "exitCode": terminated.get("exitCode", 1)}


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": "True" if ok else "False", **({"reason": reason} if reason else {}),
            **({"message": message} if message else {})}


class KServeController(Controller):
    resource, thread_name = ISVC, "kserve-controller"

    def __init__(self, kube: KubeEmulator, storage_initializer_image: str, domain: str = "mlops.example.com",
                 default_mode: str = "Serverless", auto_mount_service_account_token: bool = True,
                 progress_deadline_seconds: float = 600):
        """`default_mode`, `auto_mount_service_account_token`: the inferenceservice-config ConfigMap's
        deploy.defaultDeploymentMode and security.autoMountServiceAccountToken (v0.20's defaults:
        Serverless, true); `progress_deadline_seconds`: Knative's config-deployment progress-deadline
        (600 s), which a revision's `serving.knative.dev/progress-deadline` annotation overrides."""
        super().__init__(kube)
        self.image, self.domain, self.default_mode = storage_initializer_image, domain, default_mode
        self.auto_mount, self.progress_deadline = auto_mount_service_account_token, progress_deadline_seconds
        self.seen: dict[tuple[str, str], str] = {}
        self.revisions: dict[tuple[str, str], list[dict]] = {}  # serverless: [{"name", "hash", "pod", "created", ...}]
        self.ksvc_generation: dict[tuple[str, str], int] = {}
        self.rolled_out: dict[tuple[str, str], str] = {}  # serverless: KServe's latestRolledoutRevision
        self.known: set[tuple[str, str]] = set()
        # KServe's InferenceService defaulting webhook, which the API server calls on every create and update
        kube.call(lambda: kube.api.mutators.setdefault(ISVC, []).append(self.default))

    def default(self, operation: str, isvc: dict, old: dict | None) -> dict:
        """The defaulting webhook as far as an InferenceService with a `model` predictor sees it (v0.20
        pkg/apis/serving/v1beta1/inference_service_defaults.go DefaultInferenceService,
        setPredictorModelDefaults, disableAutomountServiceAccountToken): the deprecated deployment-mode
        names rewritten (Serverless -> Knative, RawDeployment -> Standard), the annotation set from the
        configured default when absent and that default is Standard (or ModelMesh), the `modelFormat`
        annotation from the model's format when absent, and, when the security config turns token
        mounting off, `automountServiceAccountToken: false` on the predictor unless it says otherwise."""
        meta = isvc.setdefault("metadata", {})
        annotations = dict(meta.get("annotations") or {})
        mode = annotations.get(MODE_ANNOTATION)
        if mode in LEGACY_MODES:
            annotations[MODE_ANNOTATION] = LEGACY_MODES[mode]
        elif mode is None and self.default_mode in ("Standard", "ModelMesh"):
            annotations[MODE_ANNOTATION] = self.default_mode
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        format_name = ((predictor.get("model") or {}).get("modelFormat") or {}).get("name")
        if format_name and MODEL_FORMAT_ANNOTATION not in annotations:
            annotations[MODEL_FORMAT_ANNOTATION] = format_name
        if annotations:
            meta["annotations"] = annotations
        if not self.auto_mount and predictor and predictor.get("automountServiceAccountToken") is None:
            predictor["automountServiceAccountToken"] = False
        return isvc

    def sync(self, listed: list[dict]) -> None:
        for isvc in listed:
            try:
                self._reconcile(isvc)
            except Exception as exc:  # a controller logs and requeues; the test sees the status
                key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
                self._status(key, {"conditions": [_condition("Ready", False, "InternalError", str(exc))]})
        present = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed}
        for key in self.known - present:
            self._collect(key)
        self.known = present

    def _collect(self, key) -> None:
        """A deleted InferenceService's children go with it: Kubernetes' garbage collector follows the
        controller references KServe sets on the Deployment, Services and (through them) the pods."""
        namespace, name = key
        for resource, child in ((DEPLOYMENTS, f"{name}-predictor"), (SERVICES, f"{name}-predictor"),
                                (SERVICES, name)):
            if self.kube.stored(resource, namespace, child) is not None:
                self.kube.delete(resource, namespace, child)
        for pod in self.kube.list(PODS, namespace):
            if (pod["metadata"].get("labels") or {}).get("serving.kserve.io/inferenceservice") == name:
                self.kube.delete(PODS, namespace, pod["metadata"]["name"])
        self.revisions.pop(key, None)
        self.rolled_out.pop(key, None)

    # -- the predictor pod template ------------------------------------------------------------------
    def mode(self, isvc: dict) -> str:
        """utils.GetDeploymentMode: the mode the status recorded first (an InferenceService keeps its mode),
        then the annotation, then the configured default; legacy names count as the current ones."""
        wanted = (isvc.get("status") or {}).get("deploymentMode") or \
            (isvc["metadata"].get("annotations") or {}).get(MODE_ANNOTATION) or self.default_mode
        return "raw" if LEGACY_MODES.get(wanted, wanted) == "Standard" else "serverless"

    def pod_template(self, isvc: dict) -> dict:
        meta, model = isvc["metadata"], isvc["spec"]["predictor"]["model"]
        name, namespace = meta["name"], meta["namespace"]
        runtime = self.kube.stored(RUNTIMES, None, model.get("runtime", ""))
        if runtime is None:
            raise LookupError(f"no ClusterServingRuntime {model.get('runtime')!r} for {namespace}/{name}")
        base = copy.deepcopy(next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"))
        rendered = [arg.replace("{{.Name}}", name) for arg in base.get("args") or []]
        base["args"] = rendered + list(model.get("args") or [])
        if model.get("image"):
            base["image"] = model["image"]
        if model.get("resources"):
            base["resources"] = model["resources"]
        env = {e["name"]: e for e in base.get("env") or []}
        env.update({e["name"]: e for e in model.get("env") or []})
        base["env"] = list(env.values())
        base.setdefault("volumeMounts", []).append({"name": PROVISION_VOLUME, "mountPath": MODEL_DIR,
                                                    "readOnly": True})
        account = isvc["spec"]["predictor"].get("serviceAccountName", "default")
        initializer = {"name": "storage-initializer", "image": self.image, "args": [model["storageUri"], MODEL_DIR],
                       "env": self._storage_env(namespace, account),
                       "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                                     "limits": {"cpu": "1", "memory": "1Gi"}},
                       "terminationMessagePolicy": "FallbackToLogsOnError",
                       "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR}]}
        annotations = {k: v for k, v in {**(runtime["spec"].get("annotations") or {}),
                                         **(meta.get("annotations") or {})}.items() if k not in DISALLOWED}
        labels = {**(meta.get("labels") or {}), "serving.kserve.io/inferenceservice": name, "component": "predictor"}
        automount = isvc["spec"]["predictor"].get("automountServiceAccountToken")
        return {"metadata": {"labels": labels, "annotations": annotations},
                "spec": {"serviceAccountName": account, "initContainers": [initializer], "containers": [base],
                         "volumes": [{"name": PROVISION_VOLUME, "emptyDir": {}}],
                         **({} if automount is None else {"automountServiceAccountToken": automount})}}

    def _storage_env(self, namespace: str, account: str) -> list[dict]:
        """S3 settings from the service account's secrets (pkg/credentials/s3/s3_secret.go, utils.go)."""
        sa = self.kube.stored(SERVICE_ACCOUNTS, namespace, account) or {}
        for ref in sa.get("secrets") or []:
            secret = self.kube.stored(SECRETS, namespace, ref["name"])
            if not secret or "AWS_SECRET_ACCESS_KEY" not in (secret.get("data") or {}):
                continue
            notes = secret["metadata"].get("annotations") or {}
            env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}}}
                   for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
            endpoint = notes.get("serving.kserve.io/s3-endpoint")
            if endpoint:
                https = notes.get("serving.kserve.io/s3-usehttps", "1") != "0"
                host = endpoint.split("://", 1)[-1]
                scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ("https" if https else "http")
                env += [{"name": "S3_ENDPOINT", "value": host},
                        {"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{host}"},
                        {"name": "S3_USE_HTTPS", "value": "1" if scheme == "https" else "0"}]
            for note, key in (("serving.kserve.io/s3-verifyssl", "S3_VERIFY_SSL"),
                              ("serving.kserve.io/s3-region", "AWS_DEFAULT_REGION")):
                if note in notes:
                    env.append({"name": key, "value": notes[note]})
            return env
        return []

    # -- reconciling ---------------------------------------------------------------------------------------
    def _reconcile(self, isvc: dict) -> None:
        key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
        if self.mode(isvc) == "raw":
            self._reconcile_raw(key, isvc)
        else:
            self._reconcile_serverless(key, isvc)

    def _status(self, key, status: dict) -> None:
        current = self.kube.stored(ISVC, *key)
        if current is not None and {**(current.get("status") or {}), **status} != current.get("status"):
            self.kube.patch(ISVC, *key, {"status": status})

    def _ensure_service(self, namespace: str, name: str, selector: dict, target) -> None:
        wanted = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                  "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": target}]}}
        current = self.kube.stored(SERVICES, namespace, name)
        if current is None:
            self.kube.create(wanted)
        elif current["spec"].get("selector") != selector:
            self.kube.patch(SERVICES, namespace, name, {"spec": {"selector": selector}})

    def _reconcile_serverless(self, key, isvc: dict) -> None:
        namespace, name = key
        template = self.pod_template(isvc)
        container = template["spec"]["containers"][0]
        port = (container.get("ports") or [{"containerPort": 8080}])[0]["containerPort"]
        container["ports"] = [{"name": "user-port", "containerPort": port, "protocol": "TCP"}]
        revisions = self.revisions.setdefault(key, [])
        wanted = template_hash(template)
        if not revisions or revisions[-1]["hash"] != wanted:
            stale = self.ksvc_generation.get(key, 0)
            self.ksvc_generation[key] = stale + 1
            revision = f"{name}-predictor-{self.ksvc_generation[key]:05d}"
            pod = copy.deepcopy(template)
            pod["metadata"]["labels"].update({"serving.knative.dev/revision": revision,
                                              "serving.knative.dev/service": f"{name}-predictor",
                                              "serving.knative.dev/configuration": f"{name}-predictor"})
            container = pod["spec"]["containers"][0]
            container["env"] = [*container["env"], {"name": "PORT", "value": str(port)},
                                {"name": "K_REVISION", "value": revision},
                                {"name": "K_CONFIGURATION", "value": f"{name}-predictor"},
                                {"name": "K_SERVICE", "value": f"{name}-predictor"}]
            pod_name = f"{revision}-deployment-{uuid.uuid4().hex[:5]}"
            self.kube.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {**pod["metadata"], "name": pod_name, "namespace": namespace},
                              "spec": {"restartPolicy": "Always", **pod["spec"]}})
            deadline = (isvc["metadata"].get("annotations") or {}).get(PROGRESS_DEADLINE_ANNOTATION)
            revisions.append({"name": revision, "hash": wanted, "pod": pod_name, "created": time.monotonic(),
                              "deadline": _seconds(deadline) if deadline else self.progress_deadline})
            status = isvc.get("status") or {}
            predictor = {**((status.get("components") or {}).get("predictor") or {}), "latestCreatedRevision": revision}
            # The Knative Service as KServe's update returned it: not reconciled yet (ksvc_reconciler.go L303-317);
            # what it reports of the new revision comes with the Configuration waiting for it (Unknown), and
            # KServe's model state is the new revision's, which has no pod yet (Pending).
            conditions = self._waiting(name, any(r.get("ready") for r in revisions[:-1]))
            self._status(key, {"observedGeneration": stale, "components": {"predictor": predictor},
                               "deploymentMode": "Knative", "conditions": conditions,
                               "modelStatus": self._model_status(isvc, None, conditions, predictor)})
            return
        latest = revisions[-1]
        pod = self.kube.stored(PODS, namespace, latest["pod"])
        if pod is not None and pod_ready(pod) and not latest.get("ready"):
            latest["ready"] = True
        ready_revisions = [r for r in revisions if r.get("ready")]
        routed = ready_revisions[-1]["name"] if ready_revisions else None
        traffic = self._traffic(key, routed, isvc["spec"]["predictor"].get("canaryTrafficPercent"))
        failure = None if latest.get("ready") else self._revision_failure(pod, latest)
        if routed:
            shares = {r["pod"]: traffic[r["name"]] for r in revisions if r["name"] in traffic}
            for service in (f"{name}-predictor", name):
                self._route(namespace, service, shares, port)
        for old in revisions[:-1]:  # routed away from: a revision with no traffic scales to zero
            if old["name"] not in traffic and self.kube.stored(PODS, namespace, old["pod"]) is not None:
                self.kube.delete(PODS, namespace, old["pod"])
        predictor = {"latestCreatedRevision": latest["name"]}
        if routed:
            predictor.update(latestReadyRevision=routed, latestRolledoutRevision=self.rolled_out[key],
                             traffic=[{"revisionName": revision, "latestRevision": revision == routed,
                                       "percent": percent, **({} if revision == routed else {"tag": "prev"})}
                                      for revision, percent in traffic.items()],
                             url=f"http://{name}-predictor.{namespace}.{self.domain}")
        if failure is not None:  # configuration_lifecycle.go MarkLatestCreatedFailed, as the ksvc propagates it
            message = f'Revision "{latest["name"]}" failed with message: {failure}.'
            conditions = [_condition("PredictorReady", False, "RevisionFailed", message),
                          _condition("Ready", False, "RevisionFailed", message)]
        elif latest.get("ready"):
            conditions = [_condition(c, True) for c in ("PredictorReady", "IngressReady", "Ready")]
        else:
            conditions = self._waiting(name, bool(routed))
        status = {"components": {"predictor": predictor}, "conditions": conditions, "deploymentMode": "Knative",
                  "modelStatus": self._model_status(isvc, pod, conditions, predictor),
                  "observedGeneration": self.ksvc_generation[key] if latest.get("ready") or failure is not None
                  else self.ksvc_generation[key] - 1}
        if routed:
            status.update(url=f"http://{name}.{namespace}.{self.domain}",
                          address={"url": f"http://{name}.{namespace}.svc.cluster.local"})
        self._status(key, status)

    @staticmethod
    def _waiting(name: str, serving: bool) -> list[dict]:
        """Conditions while the latest revision comes up. A rollout (an older revision serves):
        SetLatestCreatedRevisionName marks the Configuration, so the Knative Service and KServe's
        PredictorReady and Ready, Unknown (configuration_lifecycle.go). Nothing serving yet: the Route
        waits for the Configuration's first ready Revision (RevisionMissing)."""
        if serving:
            return [{"type": "PredictorReady", "status": "Unknown"}, _condition("IngressReady", True),
                    {"type": "Ready", "status": "Unknown"}]
        waiting = f'Configuration "{name}-predictor" is waiting for a Revision to become ready.'
        return [{"type": kind, "status": "Unknown", "reason": "RevisionMissing", "message": waiting}
                for kind in ("PredictorReady", "Ready")]

    def _traffic(self, key, latest_ready: str | None, canary_percent: int | None) -> dict[str, int]:
        """Revision -> percent, as ksvc_reconciler.go sets the Knative route: with canaryTrafficPercent and
        a rolled-out revision, the latest ready revision gets that share and the last rolled-out one the
        rest (tag `prev`); otherwise the latest ready one gets everything. latestRolledoutRevision moves
        only to a revision that has 100 % (inference_service_status.go PropagateStatus)."""
        if latest_ready is None:
            return {}
        rolled_out = self.rolled_out.get(key)
        if canary_percent is not None and canary_percent < 100 and rolled_out and rolled_out != latest_ready:
            return {latest_ready: canary_percent, rolled_out: 100 - canary_percent}
        self.rolled_out[key] = latest_ready
        return {latest_ready: 100}

    def _route(self, namespace: str, service: str, shares: dict[str, int], port: int) -> None:
        """The Service to the revisions' pods. One revision: a selector, as before. A split (Knative's
        ingress weighs routes; not played here): no selector, and an Endpoints object listing each pod
        in proportion to its percent, which the emulated kube-proxy picks from per connection."""
        if len(shares) == 1:
            pod = self.kube.stored(PODS, namespace, next(iter(shares)))
            revision = ((pod or {}).get("metadata", {}).get("labels") or {}).get("serving.knative.dev/revision")
            if revision:
                self._ensure_service(namespace, service, {"serving.knative.dev/revision": revision}, "user-port")
            return
        unit = math.gcd(*shares.values())
        addresses = []
        for pod_name, percent in shares.items():
            ip = ((self.kube.stored(PODS, namespace, pod_name) or {}).get("status") or {}).get("podIP")
            addresses += [{"ip": ip, "targetRef": {"kind": "Pod", "name": pod_name}}] * (percent // unit) if ip else []
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": service, "namespace": namespace},
                     "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": port}]}]}
        if self.kube.stored(ENDPOINTS, namespace, service) is None:
            self.kube.create(endpoints)
        elif self.kube.stored(ENDPOINTS, namespace, service).get("subsets") != endpoints["subsets"]:
            self.kube.patch(ENDPOINTS, namespace, service, {"subsets": endpoints["subsets"]})
        # only then the selector goes: a selector-less Service never routes by an earlier split's Endpoints
        self._ensure_service(namespace, service, None, "user-port")

    @staticmethod
    def _revision_failure(pod: dict | None, revision: dict) -> str | None:
        """What Knative reports for a revision whose pod cannot come up (knative/serving v0.48.1
        pkg/reconciler/revision/reconcile_resources.go reconcileDeployment): a user container that exited
        at once ("Container failed with: <its termination message>"); a container still waiting (behind a
        failing init container, the storage initializer: PodInitializing) only once the Deployment's
        progress deadline has passed (hasDeploymentTimedOut), with the waiting reason's message. The
        queue-proxy is not played."""
        status = (pod or {}).get("status") or {}
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("lastState") or {}).get("terminated") or \
                (container.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode"):
                return f"Container failed with: {(terminated.get('message') or terminated.get('reason', '')).strip()}"
            if container.get("restartCount", 0) > 0 and not container.get("ready"):
                return f"Container {container['name']} is restarting (CrashLoopBackOff)"
        timed_out = time.monotonic() - revision["created"] > revision["deadline"]
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting and timed_out:
                return waiting.get("message") or ""
        return None

    def _model_status(self, isvc: dict, pod: dict | None, conditions: list[dict], predictor: dict) -> dict:
        """status.modelStatus as PropagateModelStatus and UpdateModelRevisionStates write it (v0.20
        pkg/apis/serving/v1beta1/inference_service_status.go L658-L830) from the latest revision's pod: a
        storage initializer that ended in Error (or is in CrashLoopBackOff) is FailedToLoad,
        BlockedByFailedLoad, with lastFailureInfo {reason ModelLoadFailed, its termination message, exit
        code} at once, whatever Knative says yet; running, it is Loading (unless it failed before: then the
        status stays as it was); a Ready InferenceService whose
        latest created revision is ready is Loaded (UpToDate); a kserve-container in Error is FailedToLoad;
        otherwise Pending. lastFailureInfo stays until another failure replaces it."""
        previous = (isvc.get("status") or {}).get("modelStatus") or {}
        states = dict(previous.get("states") or {"activeModelState": "Pending"})
        info = previous.get("lastFailureInfo")
        status = (pod or {}).get("status") or {}

        def failed(container: dict) -> dict | None:
            state, last = container.get("state") or {}, (container.get("lastState") or {}).get("terminated")
            if (state.get("terminated") or {}).get("reason") == "Error":
                return state["terminated"]
            if (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff" and last:
                return last
            return None

        target, transition = "Pending", "InProgress"
        initializer = next((c for c in status.get("initContainerStatuses") or [] if c["name"] == STORAGE_INITIALIZER),
                           None)
        server = next((c for c in status.get("containerStatuses") or [] if c["name"] == "kserve-container"), None)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if initializer is not None and failed(initializer):
            target, transition = "FailedToLoad", "BlockedByFailedLoad"
            info = _failure_info(failed(initializer))
        elif initializer is not None and "running" in (initializer.get("state") or {}):
            if (initializer.get("lastState") or {}).get("terminated") and previous:
                return previous  # running again after an error: KServe leaves the status as it was (requeues)
            target = "Loading"
        elif ready and predictor.get("latestReadyRevision") == predictor.get("latestCreatedRevision"):
            target, transition = "Loaded", "UpToDate"
            states["activeModelState"] = "Loaded"
        elif server is not None and failed(server):
            target, transition = "FailedToLoad", "BlockedByFailedLoad"
            info = _failure_info(failed(server))
        states["targetModelState"] = target
        return {"transitionStatus": transition, "states": states,
                "copies": {"failedCopies": 0, "totalCopies": int(pod_ready(pod)) if pod else 0},
                **({"lastFailureInfo": info} if info else {})}

    def _reconcile_raw(self, key, isvc: dict) -> None:
        namespace, name = key
        predictor = f"{name}-predictor"
        template = self.pod_template(isvc)
        template["metadata"]["labels"]["app"] = f"isvc.{predictor}"
        container = template["spec"]["containers"][0]
        port = (container.get("ports") or [{"containerPort": 8080, "name": predictor}])[0]
        spec = {"replicas": isvc["spec"]["predictor"].get("minReplicas", 1) or 1, "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": f"isvc.{predictor}"}}, "template": template}
        deployment = self.kube.stored(DEPLOYMENTS, namespace, predictor)
        if deployment is None:
            deployment = self.kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                                           "metadata": {"name": predictor, "namespace": namespace}, "spec": spec})
        elif json.dumps(deployment["spec"], sort_keys=True) != json.dumps(spec, sort_keys=True):
            # A spec change bumps the Deployment's generation (the emulated apiserver does that).
            deployment = self.kube.patch(DEPLOYMENTS, namespace, predictor, {"spec": spec})
        self._ensure_service(namespace, predictor, {"app": f"isvc.{predictor}"}, port["containerPort"])
        status = deployment.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        available = conditions.get("Available", {}).get("status") == "True"
        progressing = conditions.get("Progressing", {})
        if available:  # old pods keep the Deployment Available during a rollout: still Ready
            ready = _condition("PredictorReady", True, progressing.get("reason", ""))
        elif progressing.get("status") == "False":
            ready = _condition("PredictorReady", False, progressing.get("reason", ""), progressing.get("message", ""))
        else:
            ready = {"type": "PredictorReady", "status": "Unknown", "reason": progressing.get("reason", "")}
        ok = ready["status"] == "True"
        conditions = [ready, _condition("IngressReady", ok), {**ready, "type": "Ready"}]
        # PropagateModelStatus reads the first of the predictor's pods: here the newest template's
        current = template_hash(deployment["spec"]["template"])
        pods = [p for p in self.kube.list(PODS, namespace) if labels_match(p, {"app": f"isvc.{predictor}"})
                and p["metadata"]["labels"].get(HASH_LABEL) == current]
        self._status(key, {
            "observedGeneration": status.get("observedGeneration", 0), "deploymentMode": "Standard",
            "modelStatus": self._model_status(isvc, pods[0] if pods else None, conditions, {}),
            "conditions": conditions,
            **({"url": f"http://{name}-{namespace}.{self.domain}",
                "address": {"url": f"http://{predictor}.{namespace}.svc.cluster.local"},
                "components": {"predictor": {"url": f"http://{predictor}-{namespace}.{self.domain}"}}} if ok else {}),
        })
