"""The Deployment and Job controllers.

The Deployment controller: a Deployment's pod template becomes Pods, rolled out as
kubernetes/kubernetes pkg/controller/deployment does it (RollingUpdate with maxSurge 25% rounded up and
maxUnavailable 25% rounded down, so one replica is replaced by surging one new pod, then removing the
old one once the new one is Ready), with the status a client reads: observedGeneration, replicas,
updatedReplicas, readyReplicas, availableReplicas, and the Available and Progressing conditions
(reason ReplicaSetUpdated while rolling out, NewReplicaSetAvailable when done, False with
ProgressDeadlineExceeded after progressDeadlineSeconds without progress). ReplicaSets are not
stored: the pods carry the template hash as a label, as their ReplicaSet would give them.

The Job controller, as kubernetes/kubernetes pkg/controller/job does it for a non-indexed Job with
completions and parallelism 1: one pod at a time from the template (named `<job>-<5 characters>`,
labelled batch.kubernetes.io/job-name and controller-uid and their legacy short forms, owned by the
Job); a failed pod is replaced after the pod failure backoff (10 s, doubled per failure, at most 6
minutes) until `backoffLimit` failures (6 by default) fail the Job (condition Failed, reason
BackoffLimitExceeded); a succeeded pod completes it (conditions SuccessCriteriaMet and Complete, as
from Kubernetes 1.31). Status: active, succeeded, failed, startTime, completionTime.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import threading
import time
import uuid

from .apiserver import DEPLOYMENTS, JOBS, PODS, KubeEmulator, NotFound, labels_match
from .network import pod_ready

HASH_LABEL = "pod-template-hash"


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class Controller:
    """A controller's loop, in a thread of its own: every 0.3 s, `sync` the objects of `resource` (by
    default `reconcile` each; one deleted since the list is `forget`-ed, as a real controller drops an
    object that is not found)."""

    resource = None
    thread_name = "controller"

    def __init__(self, kube: KubeEmulator):
        self.kube = kube
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sync(self.kube.list(self.resource))
            time.sleep(0.3)

    def sync(self, objects: list[dict]) -> None:
        for obj in objects:
            try:
                self.reconcile(obj)
            except NotFound:
                self.forget(obj)

    def reconcile(self, obj: dict) -> None:
        raise NotImplementedError

    def forget(self, obj: dict) -> None:
        """Drop what is kept about an object that is gone."""


class DeploymentController(Controller):
    resource, thread_name = DEPLOYMENTS, "deployment-controller"

    def __init__(self, kube: KubeEmulator):
        super().__init__(kube)
        self.progress: dict[tuple[str, str], tuple[int, float]] = {}  # deployment -> (generation, last progress)

    def forget(self, deployment: dict) -> None:  # syncDeployment forgets a Deployment that is not found
        self.progress.pop((deployment["metadata"]["namespace"], deployment["metadata"]["name"]), None)

    def reconcile(self, deployment: dict) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, name = meta["namespace"], meta["name"]
        replicas = spec.get("replicas", 1)
        wanted = template_hash(spec["template"])
        pods = [p for p in self.kube.list(PODS, namespace) if labels_match(p, spec["selector"]["matchLabels"])
                and p["metadata"].get("ownerReferences", [{}])[0].get("name") == name]
        new = [p for p in pods if p["metadata"]["labels"].get(HASH_LABEL) == wanted]
        old = [p for p in pods if p["metadata"]["labels"].get(HASH_LABEL) != wanted]
        for _ in range(replicas - len(new)):
            self._create_pod(deployment, wanted)
        ready_new = [p for p in new if pod_ready(p)]
        if len(ready_new) >= replicas:
            for pod in old:
                self.kube.delete(PODS, namespace, pod["metadata"]["name"])
            old = []
        generation = meta.get("generation", 1)
        key = (namespace, name)
        last_generation, since = self.progress.get(key, (0, time.monotonic()))
        done = len(ready_new) >= replicas and not old
        if generation != last_generation or done:
            since = time.monotonic()
        self.progress[key] = (generation, since)
        deadline = spec.get("progressDeadlineSeconds", 600)
        available = sum(pod_ready(p) for p in new + old)
        if done:
            progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{name}-{wanted}" has successfully progressed.'}
        elif time.monotonic() - since > deadline:
            progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{name}-{wanted}" has timed out progressing.'}
        else:
            progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{name}-{wanted}" is progressing.'}
        status = {"observedGeneration": generation, "replicas": len(new) + len(old), "updatedReplicas": len(new),
                  "readyReplicas": available, "availableReplicas": available,
                  "conditions": [{"type": "Available", "status": str(available >= replicas),
                                  "reason": "MinimumReplicasAvailable" if available >= replicas
                                  else "MinimumReplicasUnavailable"}, progressing]}
        if deployment.get("status") != {**(deployment.get("status") or {}), **status}:
            self.kube.patch(DEPLOYMENTS, namespace, name, {"status": status})

    def _create_pod(self, deployment: dict, wanted: str) -> None:
        template = copy.deepcopy(deployment["spec"]["template"])
        name = deployment["metadata"]["name"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template.get("metadata", {}), "name": f"{name}-{wanted}-{uuid.uuid4().hex[:5]}",
                            "namespace": deployment["metadata"]["namespace"],
                            "labels": {**(template.get("metadata") or {}).get("labels", {}), HASH_LABEL: wanted},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                 "uid": deployment["metadata"]["uid"], "controller": True}]},
               "spec": {"restartPolicy": "Always", **template["spec"]}}
        self.kube.create(pod)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobController(Controller):
    resource, thread_name = JOBS, "job-controller"

    def __init__(self, kube: KubeEmulator):
        super().__init__(kube)
        self.retry_at: dict[str, float] = {}  # job uid -> when its next pod may start

    def forget(self, job: dict) -> None:
        self.retry_at.pop(job["metadata"]["uid"], None)

    def reconcile(self, job: dict) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in status.get("conditions") or []):
            return
        namespace, uid = meta["namespace"], meta["uid"]
        pods = [p for p in self.kube.list(PODS, namespace)
                if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/controller-uid") == uid]
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
        active = sum(phase not in ("Succeeded", "Failed") for phase in phases)
        new = {"active": active, "succeeded": succeeded, "failed": failed,
               "startTime": status.get("startTime") or _now()}
        if succeeded:
            new["completionTime"] = _now()
            new["conditions"] = [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastTransitionTime": _now()},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastTransitionTime": _now()}]
        elif failed > spec.get("backoffLimit", 6):
            new["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                  "message": "Job has reached the specified backoff limit",
                                  "lastTransitionTime": _now()}]
        elif not active:
            if failed and uid not in self.retry_at:
                self.retry_at[uid] = time.monotonic() + min(10 * 2 ** (failed - 1), 360)
            if time.monotonic() >= self.retry_at.get(uid, 0):
                self.retry_at.pop(uid, None)
                self._create_pod(job)
                new["active"] = 1
        if {k: status.get(k) for k in new} != new:
            self.kube.patch(JOBS, namespace, meta["name"], {"status": new})

    def _create_pod(self, job: dict) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        meta = job["metadata"]
        labels = {**(template.get("metadata") or {}).get("labels", {}),
                  "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": meta["uid"], "controller-uid": meta["uid"]}
        self.kube.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {**template.get("metadata", {}), "name": f"{meta['name']}-{uuid.uuid4().hex[:5]}",
                         "namespace": meta["namespace"], "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True}]},
            "spec": template["spec"]})
