"""The local target's traffic router for canary rollouts: Debian's nginx in front of model servers,
sharing requests between them by weight, as the Istio VirtualService's weighted routes do in a cluster.

It is supervised like the model server (mlops.local_serving): started detached, its files in its own
folder (`nginx.conf`, `nginx.pid`, `error.log`, temporary paths), so nothing of the machine's nginx is
used or needed. A change of weights rewrites the configuration and signals nginx to reload it (SIGHUP):
the master starts workers on the new configuration and lets the old ones finish what they are
answering, so no request in flight is dropped (tested under load). An old worker does close the
kept-alive connections it holds idle; a request sent on one at that instant gets no answer (a close or
a reset), which HTTP clients resend on a new connection (RFC 9112, 9.3.1).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class RouterError(Exception):
    """nginx is missing, refused the configuration or did not start; the message says which."""


class LocalRouter:
    def __init__(self, folder: Path, listen_port: int, nginx: str | None = None):
        self.folder, self.listen_port = Path(folder), listen_port
        self.nginx = nginx or shutil.which("nginx") or "/usr/sbin/nginx"

    @property
    def conf(self) -> Path:
        return self.folder / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.folder / "nginx.pid"

    def configuration(self, weights: dict[str, int]) -> str:
        """weights: upstream address (host:port) -> weight; a weight of 0 takes the upstream out."""
        live = {address: weight for address, weight in weights.items() if weight > 0}
        if not live:
            raise RouterError(f"no upstream with a positive weight: {weights}")
        servers = "\n".join(f"        server {address} weight={weight} max_fails=0;"
                            for address, weight in live.items())
        temp = self.folder / "tmp"
        return f"""# Written by mlops.local_router: do not edit (every change of weights rewrites it).
worker_processes 1;
daemon off;
pid {self.pid_file};
error_log {self.folder / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 64m;
    upstream model_servers {{
{servers}
        keepalive 32;
        # shorter than uvicorn's 5 s: nginx, not the server, closes an idle upstream connection, so a
        # request is never sent on one the server is closing (nginx would not resend a POST)
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{self.listen_port};
        location / {{
            proxy_pass http://model_servers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # an upstream that refuses a connection (a server being stopped) hands the request on
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""

    def _write(self, weights: dict[str, int]) -> None:
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)
        staged = self.folder / ".nginx.conf.new"
        staged.write_text(self.configuration(weights))
        checked = subprocess.run([self.nginx, "-t", "-q", "-c", str(staged), "-p", str(self.folder)],
                                 capture_output=True, text=True)
        if checked.returncode != 0:
            raise RouterError(f"nginx refused the configuration: {checked.stderr.strip()}")
        os.replace(staged, self.conf)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def route(self, weights: dict[str, int], wait: float = 15) -> None:
        """Send traffic by these weights: starts nginx if it does not run, else reloads it."""
        if not Path(self.nginx).exists():
            raise RouterError(f"nginx is missing ({self.nginx}): `make system-deps` installs Debian's nginx-light")
        self._write(weights)
        pid = self.pid()
        if pid is not None:
            self._reload(pid, wait)
            return
        with open(self.folder / "nginx.out", "ab") as out:
            # stdin: not the Airflow task's (its supervisor socket, see local_serving.LocalModelServer.start)
            proc = subprocess.Popen([self.nginx, "-c", str(self.conf), "-p", str(self.folder)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + wait
        while self.pid() is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RouterError(f"nginx did not start: {self._log_tail()}")
            time.sleep(0.1)
        while not _children(proc.pid) and time.monotonic() < deadline:  # a worker to answer
            time.sleep(0.05)

    def _reload(self, pid: int, wait: float) -> None:
        """SIGHUP, then wait until a worker runs the new configuration and the old ones have finished
        what they were answering (until then a kept-alive connection is still served the old weights)."""
        old = _children(pid)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + wait
        while not (_children(pid) - old):
            if time.monotonic() > deadline:
                raise RouterError(f"nginx did not reload within {wait} s: {self._log_tail()}")
            time.sleep(0.05)
        while _children(pid) & old and time.monotonic() < deadline:
            time.sleep(0.05)

    def _log_tail(self) -> str:
        log = self.folder / "error.log"
        return log.read_text()[-1000:] if log.exists() else ""

    def stop(self, wait: float = 15) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)  # graceful: answer what is in flight, then exit
        deadline = time.monotonic() + wait
        while self.pid() is not None and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()
