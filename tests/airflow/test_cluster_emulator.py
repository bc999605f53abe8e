"""The emulated cluster (tests/cluster) behaves as the real one does when an object is deleted while a
controller is working on it: the API server answers a change to it with 404 (NotFound), and the
Deployment controller drops the Deployment and goes on reconciling the others (kubernetes
pkg/controller/deployment, syncDeployment: a Deployment that is not found is forgotten, no error).
Before, the controller's thread died on that race and every later rollout in the session waited in vain."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.apiserver import DEPLOYMENTS, JOBS, PODS, KubeEmulator, NotFound
from tests.cluster.workloads import DeploymentController, JobController

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


def test_admission_policies_behave_as_kubernetes_documents_them():
    """The example of Kubernetes' "Validating Admission Policy" page (policy demo-policy.example.com,
    binding demo-binding-test.example.com on namespaces labelled environment=test): a Deployment over
    5 replicas is refused there with the documented message, and admitted in other namespaces; a
    dry run is checked and not stored."""
    from kubernetes import client

    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": "demo-policy.example.com"},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                               "operations": ["CREATE", "UPDATE"],
                                                               "resources": ["deployments"]}]},
                       "validations": [{"expression": "object.spec.replicas <= 5"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "demo-binding-test.example.com"},
               "spec": {"policyName": "demo-policy.example.com", "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}}}
    with KubeEmulator() as kube:
        for namespace, labels in (("test", {"environment": "test"}), ("prod", {})):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
        kube.create(policy)
        kube.create(binding)
        apps = client.AppsV1Api(client.ApiClient(client.Configuration(host=kube.url)))
        big, small = deployment("big"), deployment("small")
        big["spec"]["replicas"] = 6
        for obj in (big, small):
            del obj["metadata"]["namespace"]  # the request's path names it
        with pytest.raises(client.ApiException) as refused:
            apps.create_namespaced_deployment("test", big)
        assert refused.value.status == 422  # no reason given: Invalid
        assert json.loads(refused.value.body)["message"] == (
            "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' "
            "denied request: failed expression: object.spec.replicas <= 5")
        assert kube.stored(DEPLOYMENTS, "test", "big") is None
        apps.create_namespaced_deployment("test", small, dry_run="All")
        assert kube.stored(DEPLOYMENTS, "test", "small") is None
        apps.create_namespaced_deployment("prod", big)
        assert kube.stored(DEPLOYMENTS, "prod", "big")["spec"]["replicas"] == 6


def test_a_job_completes_with_its_pod_or_fails_at_its_backoff_limit():
    """pkg/controller/job: a pod from the template, labelled with the Job's name and uid; Complete when it
    succeeds; Failed (BackoffLimitExceeded) once more pods failed than backoffLimit allows. The pod phases
    are set here as a kubelet would report them."""
    def job(name: str, backoff_limit: int) -> dict:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"backoffLimit": backoff_limit,
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "example:1"}]}}}}

    def finish_pod(kube, name: str, phase: str) -> dict:
        pod = wait_for(lambda: next((p for p in kube.list(PODS, NAMESPACE)
                                     if p["metadata"]["labels"].get("job-name") == name), None))
        kube.patch(PODS, NAMESPACE, pod["metadata"]["name"], {"status": {"phase": phase}})
        return pod

    def conditions(kube, name: str) -> set[str]:
        status = kube.stored(JOBS, NAMESPACE, name).get("status") or {}
        return {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"}

    with KubeEmulator() as kube, JobController(kube):
        uid = kube.create(job("ok", 6))["metadata"]["uid"]
        pod = finish_pod(kube, "ok", "Succeeded")
        assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == uid
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job" and pod["metadata"]["name"].startswith("ok-")
        wait_for(lambda: "Complete" in conditions(kube, "ok"))
        assert kube.stored(JOBS, NAMESPACE, "ok")["status"]["succeeded"] == 1
        kube.create(job("broken", 0))
        finish_pod(kube, "broken", "Failed")
        wait_for(lambda: "Failed" in conditions(kube, "broken"))
        status = kube.stored(JOBS, NAMESPACE, "broken")["status"]
        assert status["failed"] == 1 and status["conditions"][0]["reason"] == "BackoffLimitExceeded"
        assert len([p for p in kube.list(PODS, NAMESPACE) if p["metadata"]["labels"].get("job-name") == "broken"]) == 1


def wait_for(found, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.1)
    return result


def test_server_side_apply_behaves_as_kubernetes_documents_it():
    """https://kubernetes.io/docs/reference/using-api/server-side-apply/ on a ConfigMap: an apply creates
    the object (201) and records its manager's fields; another manager's different value conflicts (409,
    the field named) unless forced, which moves the field to it; a manager that stops applying a field
    removes it unless another manager owns it too; the same value applied by two managers is shared."""
    from kubernetes import client

    from tests.cluster.apiserver import CONFIGMAPS

    def config_map(data: dict | None) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-cm", "namespace": NAMESPACE},
                **({"data": data} if data is not None else {})}

    with KubeEmulator() as kube:
        api = client.ApiClient(client.Configuration(host=kube.url))

        def apply(manager: str, data: dict | None, force: bool = False) -> tuple[int, dict]:
            response = client.CoreV1Api(api).patch_namespaced_config_map(
                "test-cm", NAMESPACE, config_map(data), field_manager=manager, force=force or None,
                _content_type="application/apply-patch+yaml", _preload_content=False)
            return response.status, json.loads(response.data)

        code, created = apply("alice", {"a": "1", "b": "2"})
        assert code == 201 and created["data"] == {"a": "1", "b": "2"}
        assert [(e["manager"], e["operation"], e["fieldsV1"]) for e in created["metadata"]["managedFields"]] == [
            ("alice", "Apply", {"f:data": {"f:a": {}, "f:b": {}}})]
        with pytest.raises(client.ApiException) as conflict:
            apply("bob", {"a": "9"})
        assert conflict.value.status == 409
        assert json.loads(conflict.value.body)["details"]["causes"] == [
            {"reason": "FieldManagerConflict", "message": 'conflict with "alice" using v1', "field": ".data.a"}]
        assert kube.stored(CONFIGMAPS, NAMESPACE, "test-cm")["data"] == {"a": "1", "b": "2"}  # unchanged
        apply("bob", {"a": "9", "b": "2"}, force=True)  # a taken over, b shared (same value)
        code, after = apply("alice", None)  # alice drops both: a is bob's now, b bob's too
        assert code == 200 and after["data"] == {"a": "9", "b": "2"}
        code, after = apply("bob", {"a": "9"})  # bob drops b, which no one else owns any more: gone
        assert after["data"] == {"a": "9"}
