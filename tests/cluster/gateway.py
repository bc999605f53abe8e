"""Istio's ingress gateway, as far as the project's VirtualServices use it: a host name on the pod network
whose HTTP requests are routed by the VirtualServices naming that host (istio.io VirtualService
reference: the first `http` rule whose `match` fits the request's URI, `exact` or `prefix`; its
`route` destinations picked by `weight`, which default to 100 for one destination; the `rewrite`d
authority sent upstream; 404 when no rule fits). A destination host is a Service's cluster DNS name,
reached through the emulated kube-proxy (network.Services).

One routing decision per connection, from its first request (Envoy decides per request; the tests'
clients send one request per connection). Gateways selected by `gateways` are not checked: there is
one gateway here.

`authorize` decides a request as Istio's AuthorizationPolicies on the gateway's workload would (DENY, then
ALLOW), including the second hop of a Serverless route: the same pods' cluster-local listener (8081),
where net-istio's knative-local-gateway receives it with the Host rewritten and the token stripped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass

from .apiserver import VIRTUAL_SERVICES, KubeEmulator
from .network import BRIDGE, Services

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def matches(rule: dict, path: str) -> bool:
    if not rule.get("match"):
        return True
    for match in rule["match"]:
        uri = match.get("uri") or {}
        if ("exact" in uri and path == uri["exact"]) or ("prefix" in uri and path.startswith(uri["prefix"])):
            return True
    return False


def pick(route: list[dict], draw: float) -> dict:
    """A destination by weight (`draw` in [0, 100))."""
    total = 0
    for destination in route:
        total += destination.get("weight", 100 if len(route) == 1 else 0)
        if draw < total:
            return destination
    return route[-1]


class IngressGateway:
    def __init__(self, kube: KubeEmulator, services: Services, host: str, seed: int = 3):
        self.kube, self.services, self.host = kube, services, host
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ingress-gateway", daemon=True)
        self._server = None

    def __enter__(self) -> IngressGateway:
        import subprocess

        self._thread.start()
        ip = self.services.allocate_address()
        subprocess.run(["ip", "addr", "replace", f"{ip}/32", "dev", BRIDGE], check=True, capture_output=True)
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, host=ip, port=80), self._loop).result(10)
        self.services.names[self.host] = ip
        self.ip = ip
        return self

    def __exit__(self, *exc) -> None:
        import subprocess

        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.services.names.pop(self.host, None)
        subprocess.run(["ip", "addr", "del", f"{self.ip}/32", "dev", BRIDGE], capture_output=True)

    def route(self, host: str, path: str) -> tuple[str, int, str | None] | None:
        """(destination host, port, rewritten authority) for a request, or None (404)."""
        for vs in self.kube.list(VIRTUAL_SERVICES):
            if host not in vs["spec"].get("hosts", []):
                continue
            for rule in vs["spec"].get("http") or []:
                if matches(rule, path):
                    chosen = pick(rule["route"], self._random.uniform(0, 100))["destination"]
                    port = (chosen.get("port") or {}).get("number", 80)
                    return chosen["host"], port, (rule.get("rewrite") or {}).get("authority")
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
        host = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("host:")), "")
        found = self.route(host.split(":")[0], path)
        address = self.services.names.get(found[0]) if found else None
        if address is None:
            writer.write(NOT_FOUND)
            await writer.drain()
            writer.close()
            return
        if found[2]:  # the rewritten authority replaces Host
            head = b"\r\n".join(f"Host: {found[2]}".encode() if line.lower().startswith(b"host:") else line
                                for line in head.split(b"\r\n"))
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(address, found[1])
        except OSError:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        upstream_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


# -- Istio's AuthorizationPolicy, as the ingress gateway's Envoy applies it -------------------------------
# The gateway's pods (labels istio: ingressgateway in istio-system) serve two kinds of listeners: the public
# Gateways' servers (a Service port 80/443 is container port 8080/8443: Istio translates a Gateway's port
# to the Service's targetPort), and net-istio's cluster-local gateway, which is the same pods: its Service
# knative-local-gateway (istio-system, selector istio: ingressgateway, port 80 -> targetPort 8081) and
# Gateway knative-local-gateway (knative-serving, selector istio: ingressgateway, port 8081, hosts "*")
# (knative-extensions/net-istio config/203-local-gateway.yaml). Policies see the container port.
PUBLIC_HTTPS_PORT, LOCAL_GATEWAY_PORT = 8443, 8081
GATEWAY_WORKLOAD = ("istio-system", {"app": "istio-ingressgateway", "istio": "ingressgateway"})


@dataclass(frozen=True)
class Request:
    """What an AuthorizationPolicy can look at in one HTTP request on the gateway. `request_principal` is
    `<iss>/<sub>` of a JWT a RequestAuthentication accepted (None without one: a RequestAuthentication
    rejects an invalid token with 401 before any policy, and admits a request without one)."""

    host: str
    port: int
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    request_principal: str | None = None
    namespace: str | None = None  # the source's, known only for mTLS peers (never at an ingress)


def _string_match(pattern: str, value: str, case_insensitive: bool = False) -> bool:
    """Istio's string match: exact, `prefix*`, `*suffix`, or `*` (non-empty) (security/v1beta1 StringMatch)."""
    if case_insensitive:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _field(values, negated, value, case_insensitive=False) -> bool:
    """One field of a source or operation: in `values` (when given) and not in `negated` (when given). A
    field asked about a value the request does not have (no principal) matches only a `not` list."""
    if values is not None and (value is None or not any(_string_match(v, value, case_insensitive) for v in values)):
        return False
    return not (negated is not None and value is not None
                and any(_string_match(v, value, case_insensitive) for v in negated))


def _source_matches(source: dict, request: Request) -> bool:
    return (_field(source.get("requestPrincipals"), source.get("notRequestPrincipals"), request.request_principal)
            and _field(source.get("namespaces"), source.get("notNamespaces"), request.namespace))


def _operation_matches(operation: dict, request: Request) -> bool:
    host = request.host.rsplit(":", 1)[0] if request.host.count(":") == 1 else request.host
    return (_field(operation.get("hosts"), operation.get("notHosts"), host, case_insensitive=True)
            and _field(operation.get("ports"), operation.get("notPorts"), str(request.port))
            and _field(operation.get("methods"), operation.get("notMethods"), request.method)
            and _field(operation.get("paths"), operation.get("notPaths"), request.path.split("?")[0]))


def _condition_matches(condition: dict, request: Request) -> bool:
    key = condition["key"]
    if key.startswith("request.headers[") and key.endswith("]"):
        wanted = key[len("request.headers["):-1].lower()
        value = next((v for k, v in request.headers if k.lower() == wanted), None)
    elif key == "request.auth.principal":
        value = request.request_principal
    else:
        raise NotImplementedError(f"condition {key} is not modelled")
    return _field(condition.get("values"), condition.get("notValues"), value)


def rule_matches(rule: dict, request: Request) -> bool:
    """All of a rule's parts must match; within `from` and `to`, any one entry."""
    sources, operations = rule.get("from"), rule.get("to")
    return ((not sources or any(_source_matches(s.get("source") or {}, request) for s in sources))
            and (not operations or any(_operation_matches(o.get("operation") or {}, request) for o in operations))
            and all(_condition_matches(c, request) for c in rule.get("when") or []))


def applies(policy: dict, namespace: str, labels: dict[str, str], root_namespace: str = "istio-system") -> bool:
    """A policy applies to a workload from its own namespace, or from the root namespace to every one; its
    selector (none: all workloads there) must pick the workload."""
    where = policy["metadata"]["namespace"]
    if where not in (namespace, root_namespace):
        return False
    selector = (policy.get("spec") or {}).get("selector") or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def authorize(policies: list[dict], request: Request, workload: tuple[str, dict] = GATEWAY_WORKLOAD) -> bool:
    """Whether Envoy lets the request through, in Istio's order (istio.io, Authorization policy, "Implicit
    enablement" and the reference's evaluation order): a matching DENY policy denies; with no ALLOW policy
    on the workload the request is allowed; else one ALLOW policy must have a rule that matches. A policy
    without rules matches nothing (an ALLOW one alone so denies all). CUSTOM and AUDIT are not modelled."""
    namespace, labels = workload
    mine = [p for p in policies if applies(p, namespace, labels)]
    for policy in mine:
        if policy["spec"].get("action", "ALLOW") not in ("ALLOW", "DENY"):
            raise NotImplementedError(f"action {policy['spec']['action']} is not modelled")

    def matched(policy):
        return any(rule_matches(rule, request) for rule in policy["spec"].get("rules") or [])

    if any(matched(p) for p in mine if p["spec"].get("action") == "DENY"):
        return False
    allows = [p for p in mine if p["spec"].get("action", "ALLOW") == "ALLOW"]
    return not allows or any(matched(p) for p in allows)
