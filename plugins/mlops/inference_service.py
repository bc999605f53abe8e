"""The InferenceService the kubernetes target deploys for a champion: what it contains, the gateway
route to it, and how its rollout and storage location are read. Plain functions of dicts; the hook
does the API calls.

When is a patched InferenceService serving the new spec? Not when status.observedGeneration reaches
the object's generation: KServe copies that field from the child Knative Service or Deployment
(kserve v0.20.0 pkg/apis/serving/v1beta1/inference_service_status.go L456, L635; kserve#6081), so
it counts the child's changes and may be read before the child is reconciled. What the controller
does report, per deployment mode:
- Serverless (Knative): each pod-template change is a new revision. The rollout is done when
  components.predictor.latestCreatedRevision has moved past the one seen before the change, the
  latest ready and rolled-out revisions are that one with 100 % of the traffic (L575-613), and Ready
  is True. While it rolls out, Ready is Unknown (Knative's Configuration waits for the new revision):
  waiting, not a failure. A failed revision shows on PredictorReady (reason RevisionFailed) while
  traffic stays on the old one; Knative reports a failing init container (the storage initializer)
  that way only after the revision's progress deadline (600 s by default).
- Both modes: KServe reports the model's own state at once in status.modelStatus (L658-830): a
  storage initializer or model server that failed is transitionStatus BlockedByFailedLoad,
  states.targetModelState FailedToLoad, lastFailureInfo {reason ModelLoadFailed, message, exitCode}.
  That is read as the failure, naming the reason; a download that failed the way a network does
  (`transient_load_failure`) is worth one more revision before giving up (mlops.operators.kserve).
- RawDeployment (Standard): the InferenceService stays Ready while the Deployment rolls (old pods
  keep it Available, L374-447), so the Deployment `<name>-predictor` itself is read, as
  `kubectl rollout status` does: its generation past the one seen before, observed, every replica
  updated and available, Progressing with reason NewReplicaSetAvailable; ProgressDeadlineExceeded
  is a failure.
"""

from __future__ import annotations

from mlops.settings import DEPLOYMENT_MODES, KubernetesSettings

API_VERSION = "serving.kserve.io/v1beta1"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
VERSION_ANNOTATION = "mlops-ct/registry-version"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
VISIBILITY_LABEL = "networking.knative.dev/visibility"
FAILED_REASONS = ("RevisionFailed", "InferenceServiceFailed", "ModelLoadFailed", "ProgressDeadlineExceeded")
RETRY_ANNOTATION = "mlops-ct/retry-of"  # the failed revision (or Deployment generation) a re-roll replaces
# What KServe's storage initializer (kserve-storage v0.20, storage_errors.py get_storage_error_message and
# kserve_storage.py _download_s3) says when the store could not be reached or a download broke off, as
# opposed to a URI, credential or permission that is wrong and will stay wrong.
TRANSIENT_LOAD_FAILURES = ("Failed to connect to ", "Failed to download ", "S3 error [SlowDown]",
                           "S3 error [ServiceUnavailable]", "S3 error [InternalError]", "S3 error [RequestTimeout]")


def is_standard(mode: str) -> bool:
    """Standard mode (a Deployment and a Service), by its v0.20 name or its older one (RawDeployment)."""
    return DEPLOYMENT_MODES.get(mode) == "Standard"


def storage_uri(artifact_uri: str, cluster: KubernetesSettings) -> str:
    """An artifact URI KServe's storage initializer can download: mlflow-artifacts:/ (the tracking
    server's proxy) is mapped onto the object store behind it."""
    if artifact_uri.startswith("mlflow-artifacts:"):
        path = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        return f"{cluster.artifact_store_root.rstrip('/')}/{path}"
    return artifact_uri


def canary_name(model_name: str) -> str:
    """RawDeployment mode's canary: a second InferenceService beside the model's own."""
    return f"{model_name}-canary"


def inference_service(model_name: str, version: str, run_id: str | None, storage: str,
                      cluster: KubernetesSettings, canary_percent: int | None = None, name: str | None = None) -> dict:
    """`canary_percent`: KServe's `canaryTrafficPercent` (Serverless mode): the new revision gets that
    share of the traffic and the last rolled-out one keeps the rest until the field goes. `name`: an
    InferenceService of another name serving the same model (RawDeployment mode's canary): the runtime
    names the model after the InferenceService, so the model's name is passed again, last."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name or model_name,
            "namespace": cluster.serving_namespace,
            "labels": {**cluster.labels, "app.kubernetes.io/name": model_name,
                       "app.kubernetes.io/component": "predictor",
                       # Knative mode: no route of its own on the public gateway, where istio-auth's JWT rule
                       # would refuse net-istio's readiness probes; clients come through inference_host's
                       # VirtualService. KServe reads this label (v0.20 ingress_reconciler.go, isInternal) and
                       # passes it to the Knative Service (kept off the revision: RevisionTemplateLabelDisallowedList).
                       **({} if is_standard(cluster.serving_deployment_mode) else {VISIBILITY_LABEL: "cluster-local"})},
            "annotations": {
                VERSION_ANNOTATION: str(version),
                "mlops-ct/run-id": run_id or "",
                MODE_ANNOTATION: DEPLOYMENT_MODES[cluster.serving_deployment_mode],
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": cluster.serving_service_account,
                "minReplicas": cluster.serving_min_replicas,
                "model": {
                    "modelFormat": {"name": cluster.serving_model_format},
                    "runtime": cluster.serving_runtime,
                    "protocolVersion": "v2",
                    "storageUri": storage,
                    # KServe's storage initializer copies only the artifact folder: the server learns
                    # which registry version it serves from here (mlserving.loader.registry_identity).
                    "env": [{"name": "MLSERVING_REGISTRY_VERSION", "value": str(version)},
                            {"name": "MLSERVING_RUN_ID", "value": run_id or ""},
                            {"name": "MLSERVING_MODEL_URI", "value": f"models:/{model_name}/{version}"}],
                    "resources": {"requests": dict(cluster.serving_requests),
                                  "limits": dict(cluster.serving_limits)},
                },
            },
        },
    }
    if canary_percent is not None:
        body["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
    if name and name != model_name:
        body["spec"]["predictor"]["model"]["args"] = [f"--model_name={model_name}"]
    return body


def as_config(isvc: dict) -> dict:
    """What we apply to make an object look like `isvc` (a live one, or one we built): its identity,
    labels, annotations and spec, none of the server's bookkeeping (managedFields, status)."""
    meta = isvc["metadata"]
    return {"apiVersion": isvc.get("apiVersion", API_VERSION), "kind": isvc.get("kind", "InferenceService"),
            "metadata": {"name": meta["name"], **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                         **{key: dict(meta[key]) for key in ("labels", "annotations") if meta.get(key)}},
            "spec": isvc["spec"]}


def without_canary(isvc: dict) -> dict:
    """The same InferenceService with all the traffic on its latest revision (a canary promoted)."""
    spec = isvc.get("spec") or {}
    predictor = {k: v for k, v in (spec.get("predictor") or {}).items() if k != "canaryTrafficPercent"}
    return {**isvc, "spec": {**spec, "predictor": predictor}}


def served_version(isvc: dict | None) -> str | None:
    return ((isvc or {}).get("metadata", {}).get("annotations") or {}).get(VERSION_ANNOTATION)


def predictor_name(model_name: str) -> str:
    """The Knative Service or Deployment KServe makes for the predictor (constants.PredictorServiceName)."""
    return f"{model_name}-predictor"


def rollout_marker(isvc: dict | None, deployment: dict | None, mode: str) -> str | int | None:
    """What to compare with after a change: the latest created revision (Serverless) or the predictor
    Deployment's generation (RawDeployment), as they were before it."""
    if is_standard(mode):
        return (deployment or {}).get("metadata", {}).get("generation")
    return (((isvc or {}).get("status") or {}).get("components") or {}).get("predictor", {}).get(
        "latestCreatedRevision")


def changed_by_apply(current: dict | None, applied: dict) -> bool:
    """Whether the apply started a rollout: a new spec generation (other than a change of
    canaryTrafficPercent alone), or new labels or annotations (KServe copies both onto the predictor's
    pod template, so they roll out as a new revision too)."""
    if current is None:
        return True
    meta, was = applied["metadata"], current["metadata"]
    if any((meta.get(key) or {}) != (was.get(key) or {}) for key in ("labels", "annotations")):
        return True
    if meta.get("generation") == was.get("generation"):
        return False
    # A new generation from canaryTrafficPercent alone moves traffic, not the pod template: no new revision.
    # (Both objects are the server's, defaults included, so comparing them is the server's own view.)
    return without_canary(applied)["spec"] != without_canary(current)["spec"]


def awaited_marker(current: dict | None, applied: dict, deployment: dict | None, mode: str) -> str | int | None:
    """The rollout marker readiness waits past. An apply that changed nothing starts no rollout: then
    the one already under way (say, the spec a rollback restored) is awaited as it is, not a newer one
    that will never come."""
    return rollout_marker(current, deployment, mode) if changed_by_apply(current, applied) else None


def _conditions(obj: dict | None) -> dict[str, dict]:
    return {c.get("type"): c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def load_failure(isvc: dict | None) -> dict | None:
    """KServe's modelStatus when the latest revision's model failed to load (its storage initializer or
    model server ended in error): {"reason", "message", "exitCode"}; None otherwise."""
    model = ((isvc or {}).get("status") or {}).get("modelStatus") or {}
    if model.get("transitionStatus") not in ("BlockedByFailedLoad", "InvalidSpec") and \
            (model.get("states") or {}).get("targetModelState") != "FailedToLoad":
        return None
    info = model.get("lastFailureInfo") or {}
    return {"reason": info.get("reason") or model.get("transitionStatus") or "FailedToLoad",
            "message": (info.get("message") or "").strip(), "exitCode": info.get("exitCode")}


def describe_load_failure(failure: dict) -> str:
    """One line: the reason KServe gives, the exit code, the last line of the container's message."""
    last = failure["message"].splitlines()[-1] if failure["message"] else "no message"
    code = f", exit code {failure['exitCode']}" if failure.get("exitCode") is not None else ""
    return f"the model failed to load ({failure['reason']}{code}): {last}"


def transient_load_failure(isvc: dict | None) -> str | None:
    """The load failure's description when it is a download that failed the way a network or a busy
    store does (TRANSIENT_LOAD_FAILURES), so that another try may pass; None for any other state."""
    failure = load_failure(isvc)
    if failure and any(marker in failure["message"] for marker in TRANSIENT_LOAD_FAILURES):
        return describe_load_failure(failure)
    return None


def _failure(isvc: dict) -> str | None:
    conditions = _conditions(isvc)
    failure = load_failure(isvc)
    if failure:
        return describe_load_failure(failure)
    for kind in ("PredictorReady", "Ready"):
        condition = conditions.get(kind) or {}
        if condition.get("status") == "False" and condition.get("reason") in FAILED_REASONS:
            return condition.get("message") or condition["reason"]
    return None


def readiness(isvc: dict, before, mode: str, deployment: dict | None = None,
              canary_percent: int | None = None) -> tuple[bool | None, str]:
    """(True, url) once the change after `before` (see rollout_marker) is rolled out and Ready;
    (False, message) when the controller reports that it failed; (None, why) while it is under way.
    With `canary_percent` (Serverless), rolled out means the new revision serves that share of the
    traffic beside the last rolled-out one (KServe's ksvc_reconciler.go traffic targets)."""
    status = isvc.get("status") or {}
    ready = (_conditions(isvc).get("Ready") or {}).get("status") == "True"
    url = (status.get("address") or {}).get("url") or status.get("url") or ""
    if is_standard(mode):
        if deployment is None:
            return None, f"Deployment {predictor_name(isvc['metadata']['name'])} does not exist yet"
        meta, rollout = deployment["metadata"], deployment.get("status") or {}
        progressing = _conditions(deployment).get("Progressing") or {}
        if progressing.get("status") == "False":
            return False, f"{progressing.get('reason')}: {progressing.get('message', '')}".rstrip(": ")
        wanted = (deployment.get("spec") or {}).get("replicas", 1)
        # the status describes the pods of the change only once KServe has applied it
        if before is not None and meta.get("generation", 0) <= before:
            return None, f"Deployment at generation {meta.get('generation')}: KServe has not applied the change yet"
        failure = _failure(isvc)
        if failure:
            return False, failure
        if rollout.get("observedGeneration", 0) < meta.get("generation", 0):
            return None, "Deployment change not observed yet"
        counts = (rollout.get("updatedReplicas", 0), rollout.get("replicas", 0), rollout.get("availableReplicas", 0))
        if counts != (wanted, wanted, wanted) or progressing.get("reason") != "NewReplicaSetAvailable":
            return None, f"rolling out: {counts[0]} of {wanted} updated, {counts[2]} available, {counts[1]} in all"
        return (True, url) if ready else (None, "Deployment rolled out; InferenceService not Ready yet")
    predictor = (status.get("components") or {}).get("predictor") or {}
    created = predictor.get("latestCreatedRevision")
    if not created or created == before:  # what the status says of failures is still the old revision's
        return None, f"no new revision yet (latest created: {created})"
    failure = _failure(isvc)
    if failure:
        return False, failure
    if predictor.get("latestReadyRevision") != created:
        return None, f"revision {created} is not ready yet"
    routed = [t for t in predictor.get("traffic") or [] if t.get("revisionName") == created]
    if canary_percent is not None:
        if not routed or routed[0].get("percent") != canary_percent:
            return None, f"revision {created} is ready but does not serve its canary share yet"
        return (True, url) if ready else (None, "canary revision ready; InferenceService not Ready yet")
    if predictor.get("latestRolledoutRevision") != created or not routed or routed[0].get("percent") != 100:
        return None, f"revision {created} is ready but does not have all the traffic yet"
    return (True, url) if ready else (None, "revision rolled out; InferenceService not Ready yet")


def inference_route(model_name: str, cluster: KubernetesSettings, canary_percent: int = 0) -> dict:
    """The Istio VirtualService that puts /v2/models/<name> (and v1) of the shared inference host on
    the model's predictor: through Knative's local gateway in Serverless mode (Host rewritten to the
    predictor, as KServe's own VirtualService does), straight to the predictor Service otherwise; in
    RawDeployment mode with `canary_percent`, that share goes to the canary InferenceService's
    predictor (weighted destinations)."""
    def service(name: str) -> str:
        return f"{predictor_name(name)}.{cluster.serving_namespace}.svc.cluster.local"

    predictor = service(model_name)
    if is_standard(cluster.serving_deployment_mode):
        destinations = [{"destination": {"host": predictor, "port": {"number": 80}}}]
        if canary_percent:
            destinations = [{**destinations[0], "weight": 100 - canary_percent},
                            {"destination": {"host": service(canary_name(model_name)), "port": {"number": 80}},
                             "weight": canary_percent}]
        route = {"route": destinations}
    else:
        route = {"rewrite": {"authority": predictor},
                 "route": [{"destination": {"host": "knative-local-gateway.istio-system.svc.cluster.local",
                                            "port": {"number": 80}}}]}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": model_name, "namespace": cluster.serving_namespace,
                     "labels": {**cluster.labels, "app.kubernetes.io/name": model_name}},
        "spec": {"hosts": [cluster.inference_host], "gateways": [cluster.inference_gateway],
                 "http": [{"match": [{"uri": {"prefix": f"/v2/models/{model_name}/"}},
                                     {"uri": {"exact": f"/v2/models/{model_name}"}},
                                     {"uri": {"prefix": f"/v1/models/{model_name}:"}},
                                     {"uri": {"exact": f"/v1/models/{model_name}"}}],
                           **route, "timeout": "30s"}]},
    }
