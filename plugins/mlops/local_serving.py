"""The local target's model servers, supervised like a Deployment would be: `mlserving` started detached
(it outlives the task that starts it) on its own port, serving its folder's link `current`, which the
deploy points at the version it fetched.

Layout under `<data volume>/serving/`: per model, `<model>/` holds `v<N>/` (fetched versions); the stable
server's `current` (a link to one), `mlserving.log`, `mlserving.pid` and `repository.token` (the bearer
token its model loads need, generated once, readable by its owner only); `canary/` the same for a canary.
Beside them: `_router/`, the one router in front of every model's servers (mlops.local_router; `_` keeps
it apart from model names, which are DNS labels); `ports.json`, each model's place in the port plan
(`model_ports`); `targets.json`, every model's servers as Prometheus's file-based discovery reads them.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from mlops.hooks.serving import ServingError, ServingHook

ROUTER_FOLDER = "_router"
TARGETS_FILE = "targets.json"


def model_ports(serving: Path, model: str, router_port: int) -> tuple[int, int]:
    """`model`'s stable and canary server ports: the router's port + 1 + 2 x the model's place, given once per
    model in the order models are first deployed (`ports.json`), so a model keeps its ports and two models
    never share one. Also rewrites `targets.json` (Prometheus file_sd: every model's two servers)."""
    serving.mkdir(parents=True, exist_ok=True)
    with open(serving / "ports.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two models' first deploys at once: one place each
        plan_file = serving / "ports.json"
        plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
        if model not in plan:
            plan[model] = len(plan)
            _replace_json(plan_file, plan)
        ports = {name: (router_port + 1 + 2 * place, router_port + 2 + 2 * place) for name, place in plan.items()}
        _replace_json(serving / TARGETS_FILE, [{"targets": [f"127.0.0.1:{port}" for port in ports[name]]}
                                               for name in sorted(ports)])
    return ports[model]


def _replace_json(path: Path, value) -> None:
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(staged, path)  # a reader (Prometheus) sees the old file or the new one


class LocalModelServer:
    def __init__(self, mlserving: Path, folder: Path, model_name: str, port: int):
        self.mlserving, self.folder, self.port = Path(mlserving), Path(folder), port
        self.serving = ServingHook(model_name, base_url=self.url, repository_token=self._repository_token)

    @property
    def token_file(self) -> Path:
        return self.folder / "repository.token"

    def _repository_token(self) -> str:
        """The token this folder's server checks on a model load; made on first use (a server already
        running keeps the one it read at start)."""
        try:
            descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return self.token_file.read_text().strip()
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32))
        return self.token_file.read_text().strip()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def link(self) -> Path:
        return self.folder / "current"

    @property
    def pid_file(self) -> Path:
        return self.folder / "mlserving.pid"

    def version_dir(self, version: str) -> Path:
        return self.folder / f"v{version}"

    def point_at(self, model_dir: Path) -> None:
        """Point `current` at a fetched version, atomically (a reader sees the old or the new link)."""
        staged = self.folder / ".current.new"
        staged.unlink(missing_ok=True)
        staged.symlink_to(Path(model_dir).resolve())
        os.replace(staged, self.link)

    def pointed_at(self) -> Path | None:
        return self.link.resolve() if self.link.is_symlink() else None

    def start(self, wait: float = 120) -> int:
        """Start the server on the link and wait until the model is ready; returns its pid."""
        if not self.mlserving.exists():
            raise ServingError(f"the serving environment is missing: {self.mlserving} (run `make envs`)")
        log_file = self.folder / "mlserving.log"
        self._repository_token()
        # Not the task's stdin: in an Airflow task it is the supervisor's socket, which must close when
        # the task ends, and this server outlives the task.
        with open(log_file, "ab") as log:
            proc = subprocess.Popen([str(self.mlserving), "--model-dir", str(self.link), "--model-name",
                                     self.serving.model_name, "--http-port", str(self.port), "--quiet-access-log",
                                     "--repository-token-file", str(self.token_file)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=os.environ.copy())
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServingError(f"mlserving exited with {proc.returncode}: {log_file.read_text()[-1500:]}")
            if self.serving.model_ready():
                return proc.pid
            time.sleep(0.5)
        raise ServingError(f"mlserving did not become ready within {wait} s; see {log_file}")

    def stop(self, wait: float = 30) -> None:
        """Stop the server this folder records, if it runs."""
        try:
            pid = int(self.pid_file.read_text())
            os.killpg(pid, signal.SIGTERM)
        except (OSError, ValueError):  # no pid file, or its server is gone
            self.pid_file.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # started by this process: reap it, or it lingers as a zombie
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
