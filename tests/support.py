"""Test support shared by every layer (standard library only: each layer has its own environment)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DATASET = REPO / "datasets" / "iris.yaml"  # the example model's dataset file
PIPELINE_BIN = REPO / ".venv/pipeline/bin"
SERVING_BIN = REPO / ".venv/serving/bin"


def send_json(handler, status: int, body) -> None:
    """Answer an http.server request with a JSON body."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class TextServer:
    """An HTTP server in a thread answering every GET with `render()` (a /metrics page for Prometheus to
    scrape, an upstream for the router). HTTP/1.1 kept alive, each answer in one write (as uvicorn
    sends it), so a proxy in front pays no Nagle delay."""

    def __init__(self, render, content_type: str = "text/plain; version=0.0.4"):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self):
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_port}"

    def shutdown(self) -> None:
        self.server.shutdown()


# Below Linux's ephemeral range (32768-60999, net.ipv4.ip_local_port_range), from which the kernel
# picks every outgoing connection's local port: a port taken from that range could be handed to a
# client between our check and the server's bind ("address already in use", seen in CI).
TEST_PORTS = range(20000, 32000)


# Ports handed out by this process, never handed out again: a port is only checked free, not held, until
# its server binds it, so two picks in one test (a serving URL, then a Prometheus) must not meet. Drawn from
# a generator of their own: code under test may seed the `random` module (Hypothesis does, per example),
# which would make successive picks repeat.
_HANDED_OUT: set[int] = set()
_PICKER = random.Random()


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive ports that are free now on every address (as the servers bind
    them) and not handed out before by this process, chosen at random so that test processes running
    side by side rarely pick the same."""
    while True:
        first = _PICKER.randrange(TEST_PORTS.start, TEST_PORTS.stop - count)
        ports = range(first, first + count)
        if _HANDED_OUT.intersection(ports):
            continue
        sockets = []
        try:
            for port in ports:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        _HANDED_OUT.update(ports)
        return first


def serving_url(models: int = 2) -> str:
    """A `mlserving_default` for the local target: the router's port with the ports its port plan gives the
    first `models` models (a stable and a canary server each: mlops.local_serving.model_ports) free as well."""
    return f"http://127.0.0.1:{free_port(1 + 2 * models)}"


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}") from exc
            time.sleep(0.3)


@contextmanager
def mlflow_server(root: Path, proxy_artifacts: bool = True, admin_password: str | None = None):
    """A real MLflow tracking server (sqlite, local artifacts, one worker, no job runner). It serves the
    artifacts itself (`mlflow-artifacts:/` URIs), as the cluster's does; or, with proxy_artifacts=False,
    it hands clients a `file://` root they read directly (as an s3:// or shared store would be).

    With admin_password, MLflow's basic-auth app checks every call (`mlflow server --app-name basic-auth`),
    configured as scripts/services.sh configures the local stack's: the admin `admin` with that password,
    default permission READ, its users in root/basic_auth.db, a session key of its own. (MLflow refuses to
    start with an admin password shorter than 12 characters.)"""
    port = free_port()
    log_path = root / "mlflow.log"
    artifacts = (["--artifacts-destination", str(root / "artifacts")] if proxy_artifacts else
                 ["--no-serve-artifacts", "--default-artifact-root", (root / "artifacts").as_uri()])
    auth, auth_env = [], {}
    if admin_password is not None:
        config = root / "basic_auth.ini"
        config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root}/basic_auth.db\n"
                          f"admin_username = admin\nadmin_password = {admin_password}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                          "auth_cache_ttl_seconds = 300\n")
        auth = ["--app-name", "basic-auth"]
        auth_env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(24).hex()}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(PIPELINE_BIN / "mlflow"), "server", *auth, "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
             *artifacts, "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **auth_env})
        try:
            uri = f"http://127.0.0.1:{port}"
            wait_http(f"{uri}/health", proc, log_path, 180)
            yield uri
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@contextmanager
def daemon(argv: list[str], ready_url: str, log_path: Path, seconds: float = 60, env: dict | None = None):
    """Any HTTP service (Alertmanager, Pushgateway, ...) for the length of a test."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_http(ready_url, proc, log_path, seconds)
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@contextmanager
def alertmanager(root: Path):
    port = free_port()
    config = root / "alertmanager.yml"
    config.write_text("route:\n  receiver: log\n  group_wait: 1s\nreceivers:\n  - name: log\n")
    argv = ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={root / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    with daemon(argv, f"http://127.0.0.1:{port}/-/ready", root / "alertmanager.log"):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def pushgateway(root: Path):
    port = free_port()
    argv = ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={root / 'pushgateway.data'}"]  # not Debian's machine-wide default
    with daemon(argv, f"http://127.0.0.1:{port}/-/ready", root / "pushgateway.log"):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def prometheus(root: Path, targets: list[str], interval: str = "1s", file_sd: Path | None = None,
               port: int | None = None):
    """Debian's Prometheus scraping `targets` (host:port, /metrics) every `interval`, and the targets a
    file_sd JSON file lists as it changes (how an operator feeds Prometheus discovered pods); on `port`, or a
    free one."""
    port = port or free_port()
    config = root / "prometheus.yml"
    discovered = f"    file_sd_configs:\n      - files: [{json.dumps(str(file_sd))}]\n" if file_sd else ""
    config.write_text(f"global:\n  scrape_interval: {interval}\nscrape_configs:\n  - job_name: test\n"
                      f"    static_configs:\n      - targets: {json.dumps(targets)}\n{discovered}")
    argv = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with daemon(argv, f"http://127.0.0.1:{port}/-/ready", root / "prometheus.log"):
        yield f"http://127.0.0.1:{port}"


def wait_scraped(prometheus_url: str, promql: str, check, seconds: float = 60) -> list:
    """Poll an instant query until `check(result)` holds; the last result otherwise (for the assertion)."""
    import urllib.parse

    deadline = time.monotonic() + seconds
    while True:
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        result = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
        if check(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def model_server_targets(data_root: Path) -> Path:
    """The file listing the local target's model servers on the data volume at `data_root`, every model's
    stable and canary server, as the deploys write it for Prometheus's file-based discovery
    (mlops.local_serving.model_ports). Its folder is made here: Prometheus watches it from its start."""
    serving = data_root / "serving"
    serving.mkdir(parents=True, exist_ok=True)
    return serving / "targets.json"


def stop_local_serving(data_root: Path) -> None:
    """Stop every model server and router the local target's deploys started on this data volume."""
    serving = data_root / "serving"
    for pid_file in [*serving.glob("*/mlserving.pid"), *serving.glob("*/canary/mlserving.pid"),
                     *serving.glob("_router/nginx.pid")]:
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


@contextmanager
def task_supervisor_socket():
    """File descriptor 0 as Airflow 3's supervisor hands it to a task process: one end of a socketpair,
    on which the task sends its requests (airflow.sdk.execution_time.supervisor dup2s it onto fd 0).
    Yields the supervisor's end. The supervisor counts the task finished when that socket closes, so
    once the block is left, a read on it must see end-of-file unless something the task started holds it."""
    supervisor, task = socket.socketpair()
    saved = os.dup(0)
    os.dup2(task.fileno(), 0)
    task.close()
    try:
        yield supervisor
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def held_open_by_others(supervisor: socket.socket, seconds: float = 5) -> bool:
    """True if the task's end of the supervisor socket is still open in some other process."""
    supervisor.settimeout(seconds)
    try:
        return supervisor.recv(1) != b""
    except TimeoutError:
        return True
    finally:
        supervisor.close()


def wait_until(check, seconds: float) -> bool:
    """Poll `check()` until it holds or the time is up; whether it held."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: compare before/after to prove nothing changed."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def first_event(trigger) -> dict:
    """Run a trigger (as the triggerer would) until its first event; return the event's payload."""
    import asyncio

    async def first():
        return (await anext(trigger.run())).payload

    return asyncio.run(first())


@contextmanager
def postgres_server(root: Path):
    """A throwaway PostgreSQL cluster (Debian's server) in root/pg on a free loopback port, trusting local
    connections (user `postgres`, database `postgres`); yields the port, stops it at the end. As root it runs
    as the `postgres` user, allowed to traverse to root (as scripts/services.sh starts it)."""
    import glob
    import shutil

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not bins:
        raise RuntimeError("PostgreSQL is missing: make system-deps installs Debian's postgresql")
    bin_dir, data = Path(bins[-1]), root / "pg"
    data.mkdir(parents=True)
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"] if os.getuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    log = root / "pg.log"
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*as_postgres, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                 "-c", "fsync=off"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text()[-2000:]}")
            return subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
                                  check=False).returncode == 0
        if not wait_until(ready, 60):
            raise RuntimeError(f"postgres did not start on :{port}: {log.read_text()[-2000:]}")
        yield port
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
