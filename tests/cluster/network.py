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
"""

from __future__ import annotations

import asyncio
import contextlib
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
