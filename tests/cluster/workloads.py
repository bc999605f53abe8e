"""The Deployment controller: a Deployment's pod template becomes Pods, rolled out as
kubernetes/kubernetes pkg/controller/deployment does it (RollingUpdate with maxSurge 25% rounded up and
maxUnavailable 25% rounded down, so one replica is replaced by surging one new pod, then removing the
old one once the new one is Ready), with the status a client reads: observedGeneration, replicas,
updatedReplicas, readyReplicas, availableReplicas, and the Available and Progressing conditions
(reason ReplicaSetUpdated while rolling out, NewReplicaSetAvailable when done, False with
ProgressDeadlineExceeded after progressDeadlineSeconds without progress). ReplicaSets are not
stored: the pods carry the template hash as a label, as their ReplicaSet would give them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import uuid

from .apiserver import DEPLOYMENTS, PODS, KubeEmulator, NotFound, labels_match
from .network import pod_ready

HASH_LABEL = "pod-template-hash"


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class DeploymentController:
    def __init__(self, kube: KubeEmulator):
        self.kube = kube
        self.progress: dict[tuple[str, str], tuple[int, float]] = {}  # deployment -> (generation, last progress)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deployment-controller", daemon=True)

    def __enter__(self) -> DeploymentController:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for deployment in self.kube.list(DEPLOYMENTS):
                try:
                    self._reconcile(deployment)
                except NotFound:  # deleted since the list: the real controller drops it too (syncDeployment)
                    self.progress.pop((deployment["metadata"]["namespace"], deployment["metadata"]["name"]), None)
            time.sleep(0.3)

    def _reconcile(self, deployment: dict) -> None:
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
