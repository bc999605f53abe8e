"""The emulated cluster (tests/cluster) behaves as the real one does when an object is deleted while a
controller is working on it: the API server answers a change to it with 404 (NotFound), and the
Deployment controller drops the Deployment and goes on reconciling the others (kubernetes
pkg/controller/deployment, syncDeployment: a Deployment that is not found is forgotten, no error).
Before, the controller's thread died on that race and every later rollout in the session waited in vain."""

from __future__ import annotations

import time

import pytest

from tests.cluster.apiserver import DEPLOYMENTS, KubeEmulator, NotFound
from tests.cluster.workloads import DeploymentController

NAMESPACE = "mlops"


def deployment(name: str) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "example:1"}]}}}}


def test_a_change_to_a_deleted_object_is_not_found():
    with KubeEmulator() as kube:
        kube.create(deployment("gone"))
        kube.delete(DEPLOYMENTS, NAMESPACE, "gone")
        with pytest.raises(NotFound, match="gone not found"):
            kube.patch(DEPLOYMENTS, NAMESPACE, "gone", {"status": {"replicas": 1}})
        with pytest.raises(NotFound, match="never not found"):
            kube.patch(DEPLOYMENTS, NAMESPACE, "never", {"status": {"replicas": 1}})


def test_the_deployment_controller_survives_a_deployment_deleted_under_it(monkeypatch):
    with KubeEmulator() as kube:
        stale = kube.create(deployment("deleted-during-reconcile"))
        kube.delete(DEPLOYMENTS, NAMESPACE, "deleted-during-reconcile")
        listed = kube.list

        def list_with_the_stale_copy(resource, namespace=None):  # as if listed just before the delete
            return ([stale] if resource is DEPLOYMENTS else []) + listed(resource, namespace)

        monkeypatch.setattr(kube, "list", list_with_the_stale_copy)
        with DeploymentController(kube) as controller:
            kube.create(deployment("alive"))
            deadline = time.monotonic() + 30
            while (kube.stored(DEPLOYMENTS, NAMESPACE, "alive").get("status") or {}).get("observedGeneration") is None:
                assert controller._thread.is_alive(), "the controller's thread died"
                assert time.monotonic() < deadline, "the controller never reconciled the live Deployment"
                time.sleep(0.1)
            assert controller._thread.is_alive()
            assert (NAMESPACE, "deleted-during-reconcile") not in controller.progress
