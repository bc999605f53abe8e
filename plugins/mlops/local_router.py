"""The local target's router: Debian's nginx in front of every model's servers, on one address, as the
Istio ingress gateway is in a cluster. A request for `/v2/models/<model>/...` (or KServe's v1
`/v1/models/<model>:predict`) goes to that model's servers, shared by weight between its stable and its
canary server as the VirtualService's weighted routes share them; any other path gets a JSON 404 naming
the models served, and `/v2/health/live` is answered by the router itself.

It is supervised like the model servers (mlops.local_serving): started detached, its files in its own
folder (`nginx.conf`, `nginx.pid`, `error.log`, temporary paths), so nothing of the machine's nginx is
used or needed. Each model's weights are a file of their own (`routes/<model>.json`); a change of one
model's weights rewrites the configuration from all of them under a lock (two DAGs deploying at once
each see the other's routes) and signals nginx to reload it (SIGHUP): the master starts workers on the
new configuration and lets the old ones finish what they are answering, so no request in flight is
dropped (tested under load). An old worker does close the kept-alive connections it holds idle; a
request sent on one at that instant gets no answer (a close or a reset), which HTTP clients resend on a
new connection (RFC 9112, 9.3.1).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

# A DNS-1035 label, as a model name is (mlpipeline.volume.MODEL_NAME): safe in a path, a regex and a file name.
MODEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ADDRESS = re.compile(r"^127\.0\.0\.1:[0-9]{1,5}$")  # the local target's servers listen on loopback only


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

    @property
    def routes_folder(self) -> Path:
        return self.folder / "routes"

    def routes(self) -> dict[str, dict[str, int]]:
        """Every model's weights, as the last `route` of each left them."""
        found = {}
        for file in sorted(self.routes_folder.glob("*.json")):
            if MODEL.match(file.stem):
                found[file.stem] = json.loads(file.read_text())
        return found

    def configuration(self, routes: dict[str, dict[str, int]]) -> str:
        """routes: model -> {upstream address (host:port) -> weight}; a weight of 0 takes the upstream out."""
        upstreams, locations = [], []
        for model, weights in sorted(routes.items()):
            if not MODEL.match(model):
                raise RouterError(f"{model!r} is not a model name (a DNS-1035 label)")
            live = {address: weight for address, weight in weights.items() if weight > 0}
            if not live:
                raise RouterError(f"no upstream of {model} with a positive weight: {weights}")
            if bad := [address for address in live if not ADDRESS.match(address)]:
                raise RouterError(f"{model}: not a loopback address (127.0.0.1:<port>): {bad}")
            servers = "\n".join(f"        server {address} weight={weight} max_fails=0;"
                                 for address, weight in live.items())
            upstream = "model_" + model.replace("-", "_")
            upstreams.append(f"""    upstream {upstream} {{
{servers}
        keepalive 32;
        # shorter than uvicorn's 5 s: nginx, not the server, closes an idle upstream connection, so a
        # request is never sent on one the server is closing (nginx would not resend a POST)
        keepalive_timeout 4s;
    }}""")
            locations.append(f"""        location ~ ^/v[12]/models/{model}(/|:|$) {{
            proxy_pass http://{upstream};
        }}""")
        served = json.dumps(sorted(routes))
        not_here = json.dumps({"error": f"no model is served at this path; the models served: {served} "
                                        "(/v2/models/<model>/infer)"})
        temp = self.folder / "tmp"
        newline = "\n"
        return f"""# Written by mlops.local_router: do not edit (every change of a model's weights rewrites it).
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
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    # an upstream that refuses a connection (a server being stopped) hands the request on
    proxy_next_upstream error timeout;
{newline.join(upstreams)}
    server {{
        listen 127.0.0.1:{self.listen_port};
        default_type application/json;
{newline.join(locations)}
        location = /v2/health/live {{
            return 200 '{{"live": true}}';
        }}
        location / {{
            return 404 '{_nginx_string(not_here)}';
        }}
    }}
}}
"""

    @contextlib.contextmanager
    def _locked(self):
        """One change of routes at a time, across processes (two deploy tasks of two models)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "routes.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, routes: dict[str, dict[str, int]]) -> None:
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)
        staged = self.folder / ".nginx.conf.new"
        staged.write_text(self.configuration(routes))
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

    def route(self, model: str, weights: dict[str, int], wait: float = 15) -> None:
        """Send `model`'s traffic by these weights, the other models' as they were: starts nginx if it does
        not run, else reloads it. A configuration nginx refuses changes nothing (the model's weights, the
        running router)."""
        if not Path(self.nginx).exists():
            raise RouterError(f"nginx is missing ({self.nginx}): `make system-deps` installs Debian's nginx-light")
        with self._locked():
            self._write({**self.routes(), model: weights})
            self.routes_folder.mkdir(exist_ok=True)
            staged = self.routes_folder / f".{model}.json.new"
            staged.write_text(json.dumps(weights, sort_keys=True))
            os.replace(staged, self.routes_folder / f"{model}.json")
            self._apply(wait)

    def _apply(self, wait: float) -> None:
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


def _nginx_string(text: str) -> str:
    """`text` inside an nginx single-quoted string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()
