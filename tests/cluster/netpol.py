"""NetworkPolicy ingress rules, decided for one connection as a CNI plugin (Calico, Cilium) enforces them.

The semantics are the API's (networking.k8s.io/v1 NetworkPolicy, kubernetes/kubernetes
pkg/apis/networking/types.go and the conformance tests in test/e2e/network/netpol):
- a pod is isolated for ingress when a policy in its namespace selects it (`podSelector`, empty = every
  pod) and lists Ingress in `policyTypes` (which defaults to Ingress, plus Egress when `egress` is set);
  a pod no policy isolates accepts every connection;
- an isolated pod accepts a connection that some rule of some policy selecting it allows (policies are
  additive): the rule's `ports` (none = every port; a number, or a name looked up among the pod's
  container ports; `endPort` for a range; protocol TCP by default) and its `from` peers (none = every
  source): `podSelector` alone picks pods in the policy's namespace, `namespaceSelector` alone every
  pod of the namespaces it picks, both together the pods they both pick, `ipBlock` addresses (`cidr`
  minus `except`);
- label selectors have `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist).
Egress rules are not enforced here (the project ships none).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .selectors import selects


@dataclass(frozen=True)
class Source:
    """Who opens a connection: a pod's namespace and labels, and its address."""

    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None


def policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def isolating(policies: list[dict], pod: dict) -> list[dict]:
    """The policies that isolate `pod` for ingress."""
    namespace, labels = pod["metadata"]["namespace"], pod["metadata"].get("labels") or {}
    return [p for p in policies if p["metadata"]["namespace"] == namespace and "Ingress" in policy_types(p)
            and selects(p["spec"].get("podSelector"), labels)]


def _port_matches(rule_port: dict, pod: dict, port: int) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):  # IntOrString: a string is always a port's name
        named = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []
                 if p.get("name") == wanted and p.get("protocol", "TCP") == "TCP"]
        return port in named
    return int(wanted) <= port <= int(rule_port.get("endPort", wanted))


def _peer_matches(peer: dict, policy_namespace: str, source: Source, namespace_labels: dict[str, dict]) -> bool:
    if "ipBlock" in peer:
        if source.ip is None:
            return False
        address = ipaddress.ip_address(source.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excluded) for excluded in block.get("except") or [])
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels.get(source.namespace) or {}):
            return False
    elif source.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], source.labels)


def allows(policies: list[dict], namespace_labels: dict[str, dict], source: Source, pod: dict, port: int) -> bool:
    """Whether `source` may open a TCP connection to `pod` on `port`."""
    found = isolating(policies, pod)
    if not found:
        return True
    for policy in found:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports") or []
            peers = rule.get("from") or []
            if ports and not any(_port_matches(p, pod, port) for p in ports):
                continue
            if not peers or any(_peer_matches(peer, policy["metadata"]["namespace"], source, namespace_labels)
                                for peer in peers):
                return True
    return False
