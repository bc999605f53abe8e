"""The cluster's network: a pod network, Services and cluster DNS.

- PodNetwork: a Docker bridge on which every pod gets its own address (as a CNI plugin gives it);
  the host is its gateway, so the host can reach pods and pods can reach the host's services.
- Services: each Service object in the API server gets a cluster IP (an address on the bridge) and
  DNS names (<name>.<namespace>.svc.cluster.local); a connection to <cluster IP>:<port> is forwarded
  to a Ready pod its selector picks, on the targetPort (a number or a container port's name), or to
  the addresses of the Endpoints object of the same name when the Service has no selector. This is
  kube-proxy's userspace mode (kubernetes/kubernetes pkg/proxy/userspace, removed in 1.26): the
  same contract as today's iptables mode, without needing iptables.
- Cluster DNS: containers get the names as /etc/hosts entries (`docker run --add-host`); the test
  process, which plays Airflow inside the cluster, resolves them through `resolving_cluster_names`.
- NetworkPolicies (netpol.py) decide each connection to a pod behind a Service, as the CNI plugin
  would: the source is the pod with the connection's address (a pod in the API server, or a KFP step's
  container, which carries its pod's namespace and labels as Docker labels, else no pod: no labels);
  a connection from the host's own addresses is this process, which plays Airflow's task pods
  (`host_source`). A refused connection is closed at once, where a real CNI drops its packets (the
  client would time out instead). Connections straight to a pod's address (the kubelet's probes, the
  gateway) are not policed, as node traffic is not.
- Istio's sidecar as a scrape meets it (`inject_sidecar`, `mtls_mode`, `plaintext_accepted`): injection
  with metrics merging, inbound capture and PeerAuthentication modes; a client without an Istio
  certificate (Prometheus) gets no answer from a captured port under STRICT. The kubelet does not run the
  sidecar: these decide what a scrape of a pod's address would get.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import itertools
import json
import socket
import subprocess
import threading
import time

from .apiserver import ENDPOINTS, NAMESPACES, NETWORK_POLICIES, PODS, SERVICES, KubeEmulator, labels_match
from .engine import docker
from .netpol import Source, allows
from .selectors import selects

NETWORK = "mlops-ct-pods"
BRIDGE = "mlops-ct0"
SUBNET = ipaddress.ip_network("10.213.0.0/16")  # rarely taken by other tools (kind uses 10.244/16)
GATEWAY = "10.213.0.1"  # the host, on the pod network
POD_RANGE = "10.213.0.0/17"  # pods; cluster IPs come from the top of the subnet
CLUSTER_DOMAIN = "svc.cluster.local"
# The Docker labels a container that is a pod's but not a kubelet's (a KFP step) carries.
POD_NAMESPACE_LABEL, POD_LABELS_LABEL = "mlops-ct.pod-namespace", "mlops-ct.pod-labels"


class PodNetwork:
    """The bridge pods are attached to; made once, reused across tests."""

    name, gateway = NETWORK, GATEWAY

    def ensure(self) -> PodNetwork:
        if docker("network", "inspect", NETWORK, check=False).returncode != 0:
            docker("network", "create", "--driver", "bridge", "--subnet", str(SUBNET), "--ip-range", POD_RANGE,
                   "--gateway", GATEWAY, "-o", f"com.docker.network.bridge.name={BRIDGE}", NETWORK)
        return self


def pod_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def target_port(pod: dict, port) -> int | None:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return declared["containerPort"]
    return None


class Services:
    """Cluster IPs, DNS names and forwarding for every Service in the API server."""

    def __init__(self, kube: KubeEmulator, host_source: Source):
        self.kube, self.host_source = kube, host_source
        self.refused: list[tuple[Source, str]] = []  # (who, "namespace/pod:port") of each refused connection
        self._addresses = (str(ip) for ip in itertools.islice(reversed(list(SUBNET.hosts())), 1, 250))
        self.cluster_ips: dict[tuple[str, str], str] = {}
        self.names: dict[str, str] = {}  # DNS name -> cluster IP
        self._servers: list[asyncio.AbstractServer] = []
        self._loop = asyncio.new_event_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-proxy", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="service-watch", daemon=True)

    def __enter__(self) -> Services:
        self._thread.start()
        self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._watcher.join(10)
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for ip in self.cluster_ips.values():
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", BRIDGE], capture_output=True)

    def allocate_address(self) -> str:
        """An unused address on the pod network (for a listener that is not a Service, e.g. a gateway)."""
        return next(self._addresses)

    def hosts(self) -> dict[str, str]:
        return dict(self.names)

    def wait_for(self, namespace: str, name: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (namespace, name) not in self.cluster_ips:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Service {namespace}/{name} got no cluster IP")
            time.sleep(0.1)
        return self.cluster_ips[(namespace, name)]

    def _watch(self) -> None:
        while not self._stop.is_set():
            for service in self.kube.list(SERVICES):
                key = (service["metadata"]["namespace"], service["metadata"]["name"])
                if key not in self.cluster_ips and service["spec"].get("type") != "ExternalName":
                    self._expose(key, service)
            time.sleep(0.1)

    def _expose(self, key: tuple[str, str], service: dict) -> None:
        ip = next(self._addresses)
        # replace, not add: an address left by an interrupted run is taken over, not an error
        subprocess.run(["ip", "addr", "replace", f"{ip}/32", "dev", BRIDGE], check=True, capture_output=True)
        for port in service["spec"]["ports"]:
            future = asyncio.run_coroutine_threadsafe(asyncio.start_server(
                lambda r, w, p=port: self._forward(key, p, r, w), host=ip, port=port["port"]), self._loop)
            self._servers.append(future.result(10))
        self.kube.patch(SERVICES, *key, {"spec": {"clusterIP": ip}})
        namespace, name = key
        for dns in (f"{name}.{namespace}.{CLUSTER_DOMAIN}", f"{name}.{namespace}.svc", f"{name}.{namespace}"):
            self.names[dns] = ip
        self.cluster_ips[key] = ip

    def endpoints(self, key: tuple[str, str], port: dict) -> list[tuple[str, int, dict | None]]:
        """(address, port, the pod or None for an Endpoints address) of each Ready backend."""
        namespace, name = key
        service = self.kube.stored(SERVICES, namespace, name)
        if service is None:
            return []
        selector = service["spec"].get("selector")
        if not selector:
            found = self.kube.stored(ENDPOINTS, namespace, name) or {}
            return [(a["ip"], p["port"], None) for subset in found.get("subsets") or []
                    for a in subset.get("addresses") or []
                    for p in subset.get("ports") or [] if p.get("name", port.get("name")) == port.get("name")]
        wanted = port.get("targetPort", port["port"])
        backends = []
        for pod in self.kube.list(PODS, namespace):
            ip = (pod.get("status") or {}).get("podIP")
            if ip and pod_ready(pod) and labels_match(pod, selector) and pod["metadata"].get("deletionTimestamp") \
                    is None and target_port(pod, wanted):
                backends.append((ip, target_port(pod, wanted), pod))
        return backends

    def source(self, ip: str) -> Source:
        """Who has this address: this process (Airflow) when it is the host's own (the gateway or a cluster
        IP), else a pod, a KFP step's container, or else an unknown source with no labels."""
        if ip == GATEWAY or ipaddress.ip_address(ip) not in ipaddress.ip_network(POD_RANGE):
            return self.host_source
        for pod in self.kube.list(PODS):
            if (pod.get("status") or {}).get("podIP") == ip and pod["metadata"].get("deletionTimestamp") is None:
                return Source(pod["metadata"]["namespace"], pod["metadata"].get("labels") or {}, ip)
        attached = docker("network", "inspect", NETWORK, "--format", "{{json .Containers}}", check=False)
        for container_id, container in (json.loads(attached.stdout or "null") or {}).items():
            if container.get("IPv4Address", "").split("/")[0] == ip:
                labels = json.loads(docker("inspect", container_id, "--format", "{{json .Config.Labels}}",
                                           check=False).stdout or "null") or {}
                if POD_NAMESPACE_LABEL in labels:
                    return Source(labels[POD_NAMESPACE_LABEL], json.loads(labels.get(POD_LABELS_LABEL) or "{}"), ip)
        return Source("", {}, ip)  # a container that is no pod's: no policy's selector picks it

    def admits(self, peer_ip: str, pod: dict, port: int) -> bool:
        policies = self.kube.list(NETWORK_POLICIES, pod["metadata"]["namespace"])
        if not policies:
            return True
        namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.kube.list(NAMESPACES)}
        source = self.source(peer_ip)
        if allows(policies, namespaces, source, pod, port):
            return True
        self.refused.append((source, f"{pod['metadata']['namespace']}/{pod['metadata']['name']}:{port}"))
        return False

    async def _forward(self, key, port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backends = await asyncio.to_thread(self.endpoints, key, port)
        if not backends:  # no Ready endpoint: the connection is refused, as kube-proxy rejects it
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        ip, target, pod = backends[hash(peer) % len(backends)]
        if pod is not None and not await asyncio.to_thread(self.admits, peer[0], pod, target):
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(ip, target)
        except OSError:
            writer.close()
            return

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


@contextlib.contextmanager
def resolving_cluster_names(services: Services):
    """Cluster DNS for this process: *.svc.cluster.local (and the shorter forms) resolve to cluster IPs."""
    original = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        ip = services.names.get(host.rstrip(".")) if isinstance(host, str) else None
        return original(ip or host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original


# -- Istio's sidecar and mutual TLS, as far as a scrape of a pod meets them ---------------------------------
# Prometheus scrapes a pod's address directly, not through a Service, and has no Istio client certificate.
# What it gets back depends on the pod's sidecar, modelled here after Istio 1.2x:
# - injection (the sidecar injector, pkg/kube/inject: injection-template.yaml and webhook.go): a pod in a
#   namespace labelled istio-injection=enabled, unless it says sidecar.istio.io/inject: "false", gets the
#   istio-proxy container (its one declared port: 15090 `http-envoy-prom`), the `sidecar.istio.io/status`
#   annotation and the `security.istio.io/tlsMode: istio` label; with metrics merging (meshConfig
#   enablePrometheusMerge, on by default, unless the pod's `prometheus.istio.io/merge-metrics` says) a
#   pod whose `prometheus.io/scrape` is not "false" has its prometheus.io annotations moved into the proxy's
#   ISTIO_PROMETHEUS_ANNOTATIONS env and rewritten to port 15020, path /stats/prometheus, where istio-agent
#   serves Envoy's and the application's metrics merged (pilot/cmd/pilot-agent/status/server.go handleStats,
#   which fetches the application's from localhost, inside the pod);
# - inbound capture (istio-iptables, as the injector configures it): every inbound port goes through Envoy
#   except the agent's and Envoy's own (15020, 15021, 15090) and the ports the pod lists in
#   `traffic.sidecar.istio.io/excludeInboundPorts`;
# - mutual TLS (PeerAuthentication, security.istio.io/v1): the workload's mode is the first that is set of
#   a policy in its namespace whose selector picks it (its `portLevelMtls` for the port first), the
#   namespace's policy without a selector, the mesh-wide policy (istio-system, no selector); UNSET inherits,
#   and the default is PERMISSIVE. Envoy refuses a plaintext connection on a captured port under STRICT
#   (the TLS handshake the listener demands never comes): the scrape gets no answer.
ISTIO_ROOT_NAMESPACE = "istio-system"
SIDECAR_STATUS = "sidecar.istio.io/status"
AGENT_PORTS = (15020, 15021, 15090)  # never captured: the agent's stats and health, Envoy's own stats
MERGED_METRICS_PORT, MERGED_METRICS_PATH = 15020, "/stats/prometheus"


def inject_sidecar(pod: dict, namespace_labels: dict[str, str], merge_metrics: bool = True) -> dict:
    """The pod as Istio's sidecar injector admits it (a copy; the pod unchanged when it is not injected).
    `merge_metrics` is the mesh's meshConfig.enablePrometheusMerge."""
    annotations = (pod["metadata"].get("annotations") or {})
    if namespace_labels.get("istio-injection") != "enabled" or annotations.get("sidecar.istio.io/inject") == "false":
        return pod
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    annotations = meta.setdefault("annotations", {})
    env = []
    # the pod's annotation first, when it is a boolean, else the mesh's setting (webhook.go enablePrometheusMerge)
    merging = {"true": True, "false": False}.get(annotations.get("prometheus.istio.io/merge-metrics", "").lower(),
                                                 merge_metrics)
    if merging and annotations.get("prometheus.io/scrape", "true") != "false":
        original = {k: annotations[f"prometheus.io/{k}"] for k in ("scrape", "path", "port")
                    if f"prometheus.io/{k}" in annotations}
        env.append({"name": "ISTIO_PROMETHEUS_ANNOTATIONS", "value": json.dumps(original)})
        annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(MERGED_METRICS_PORT),
                            "prometheus.io/path": MERGED_METRICS_PATH})
    annotations[SIDECAR_STATUS] = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-init"]})
    meta.setdefault("labels", {})["security.istio.io/tlsMode"] = "istio"
    pod["spec"]["containers"] = [*pod["spec"]["containers"], {
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2", "env": env,
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}]}]
    return pod


def mtls_mode(pod: dict, port: int, peer_authentications: list[dict]) -> str:
    """The PeerAuthentication mode that holds for `port` of `pod` (STRICT, PERMISSIVE or DISABLE)."""
    namespace, labels = pod["metadata"]["namespace"], pod["metadata"].get("labels") or {}

    def mode(policy: dict, with_ports: bool) -> str | None:
        spec = policy.get("spec") or {}
        if with_ports:
            found = (spec.get("portLevelMtls") or {}).get(str(port)) or (spec.get("portLevelMtls") or {}).get(port)
            if found and found.get("mode", "UNSET") != "UNSET":
                return found["mode"]
        wanted = (spec.get("mtls") or {}).get("mode", "UNSET")
        return None if wanted == "UNSET" else wanted

    workload = [p for p in peer_authentications if p["metadata"]["namespace"] == namespace
                and (p.get("spec") or {}).get("selector") and selects(p["spec"]["selector"], labels)]
    namespace_wide = [p for p in peer_authentications if p["metadata"]["namespace"] == namespace
                      and not (p.get("spec") or {}).get("selector")]
    mesh = [p for p in peer_authentications if p["metadata"]["namespace"] == ISTIO_ROOT_NAMESPACE
            and not (p.get("spec") or {}).get("selector")]
    # portLevelMtls counts only on a policy with a selector (the API reference says so)
    for policy, with_ports in [*((p, True) for p in workload), *((p, False) for p in namespace_wide + mesh)]:
        if (found := mode(policy, with_ports)) is not None:
            return found
    return "PERMISSIVE"


def plaintext_accepted(pod: dict, port: int, peer_authentications: list[dict]) -> bool:
    """Whether a client outside the mesh (no Istio certificate: Prometheus) gets an answer on `port`."""
    annotations = pod["metadata"].get("annotations") or {}
    if SIDECAR_STATUS not in annotations:
        return True  # no sidecar: nothing between the client and the container
    excluded = {int(p) for p in annotations.get("traffic.sidecar.istio.io/excludeInboundPorts", "").split(",")
                if p.strip()}
    if port in AGENT_PORTS or port in excluded:
        return True  # not redirected to Envoy
    return mtls_mode(pod, port, peer_authentications) != "STRICT"
