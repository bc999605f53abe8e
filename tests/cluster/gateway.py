"""Istio's ingress gateway, as far as the project's VirtualServices use it: a host name on the pod network
whose HTTP requests are routed by the VirtualServices naming that host (istio.io VirtualService
reference: the first `http` rule whose `match` fits the request's URI, `exact` or `prefix`; its
`route` destinations picked by `weight`, which default to 100 for one destination; the `rewrite`d
authority sent upstream; 404 when no rule fits). A destination host is a Service's cluster DNS name,
reached through the emulated kube-proxy (network.Services).

One routing decision per connection, from its first request (Envoy decides per request; the tests'
clients send one request per connection). Gateways selected by `gateways` are not checked: there is
one gateway here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading

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
