"""Who reaches the tracking server: k8s-yaml/network/mlflow.yaml on the emulated cluster, whose pod network
enforces NetworkPolicies as a CNI plugin would (tests/cluster/netpol.py).

A pod opens a connection to MLflow's Service from inside the cluster; only the pods the policy names
get an answer. The DAG's own pods are checked in test_dag_kubernetes_contract.py (no connection of a
whole run is refused)."""

from __future__ import annotations

import pytest

from mlpipeline.contracts import MLFLOW_CLIENT_LABEL
from tests.cluster.cluster import MLFLOW_URI
from tests.cluster.netpol import Source, allows

PROBE = ("import urllib.request\n"
         f"answer = urllib.request.urlopen('{MLFLOW_URI}/health', timeout=10)\n"
         "print('answered', answer.status)\n")


def probe(cluster, name: str, namespace: str, labels: dict[str, str]) -> tuple[str, str]:
    """A pod that calls MLflow's health endpoint by its Service: (phase, log)."""
    return cluster.run_python(name, namespace, PROBE, labels)


@pytest.fixture(scope="module")
def mlflow_up(cluster):
    cluster.services.wait_for("mlflow", "mlflow")
    return cluster


def test_a_pod_with_the_client_label_reaches_mlflow(mlflow_up):
    phase, log = probe(mlflow_up, "probe-client", "mlops", dict([MLFLOW_CLIENT_LABEL]))
    assert phase == "Succeeded" and "answered 200" in log, log


@pytest.mark.parametrize("name, namespace, labels", [
    ("probe-unlabelled", "mlops", {"app.kubernetes.io/name": "network-probe"}),  # as an ingest pod: no client label
    # the label alone does not do it from another namespace: a predictor never calls MLflow
    ("probe-predictor", "mlops-serving", dict([MLFLOW_CLIENT_LABEL])),
])
def test_any_other_pod_is_refused(mlflow_up, name, namespace, labels):
    refused_before = len(mlflow_up.services.refused)
    phase, log = probe(mlflow_up, name, namespace, labels)
    assert phase == "Failed" and "answered" not in log, log
    refused = mlflow_up.services.refused[refused_before:]
    assert refused and all(source.namespace == namespace and source.labels == labels for source, _ in refused)


# The evaluator itself, on the API reference's own distinctions (networking.k8s.io/v1 NetworkPolicyPeer).
POD = {"metadata": {"namespace": "db", "name": "pg", "labels": {"role": "db"}},
       "spec": {"containers": [{"ports": [{"name": "sql", "containerPort": 5432}]}]}}
NAMESPACES = {"db": {"kubernetes.io/metadata.name": "db"}, "web": {"team": "web"}}


def policy(*rules, selector=None, types=None):
    spec = {"podSelector": selector if selector is not None else {"matchLabels": {"role": "db"}},
            "ingress": list(rules)}
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"namespace": "db", "name": "p"}, "spec": spec}


def test_a_pod_no_policy_selects_accepts_everyone():
    assert allows([policy(selector={"matchLabels": {"role": "cache"}})], NAMESPACES, Source("web"), POD, 5432)
    assert allows([policy(types=["Egress"])], NAMESPACES, Source("web"), POD, 5432)


def test_a_selected_pod_without_rules_accepts_no_one():
    assert not allows([policy()], NAMESPACES, Source("db", {"role": "db"}), POD, 5432)


def test_namespace_and_pod_selector_in_one_peer_mean_both_in_two_peers_either():
    both = {"namespaceSelector": {"matchLabels": {"team": "web"}}, "podSelector": {"matchLabels": {"app": "api"}}}
    either = [{"namespaceSelector": {"matchLabels": {"team": "web"}}}, {"podSelector": {"matchLabels": {"app": "api"}}}]
    web_other, web_api = Source("web", {"app": "other"}), Source("web", {"app": "api"})
    db_api = Source("db", {"app": "api"})
    assert [allows([policy({"from": [both]})], NAMESPACES, s, POD, 5432) for s in (web_other, web_api, db_api)] == \
        [False, True, False]
    assert [allows([policy({"from": either})], NAMESPACES, s, POD, 5432) for s in (web_other, web_api, db_api)] == \
        [True, True, True]


def test_ports_by_name_number_and_range_and_ip_blocks():
    named = policy({"ports": [{"port": "sql"}]})
    assert allows([named], NAMESPACES, Source("web"), POD, 5432)
    assert not allows([named], NAMESPACES, Source("web"), POD, 80)
    ranged = policy({"ports": [{"port": 5000, "endPort": 6000}]})
    assert allows([ranged], NAMESPACES, Source("web"), POD, 5432)
    assert not allows([policy({"ports": [{"port": 5432, "protocol": "UDP"}]})], NAMESPACES, Source("web"), POD, 5432)
    block = policy({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]})
    assert allows([block], NAMESPACES, Source("web", ip="10.2.0.5"), POD, 5432)
    assert not allows([block], NAMESPACES, Source("web", ip="10.1.0.5"), POD, 5432)


def test_expressions_and_additive_policies():
    expression = policy({"from": [{"podSelector": {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["api", "worker"]},
        {"key": "debug", "operator": "DoesNotExist"}]}}]})
    assert allows([expression], NAMESPACES, Source("db", {"tier": "worker"}), POD, 5432)
    assert not allows([expression], NAMESPACES, Source("db", {"tier": "worker", "debug": "1"}), POD, 5432)
    closed = policy()
    assert allows([closed, policy({})], NAMESPACES, Source("web"), POD, 5432)  # an empty rule admits all
