"""The local target's model servers, supervised like a Deployment would be: `mlserving` started detached
(it outlives the task that starts it) on its own port, serving its folder's link `current`, which the
deploy points at the version it fetched.

Layout under `<data volume>/serving/<model>/`: `v<N>/` (fetched versions); the stable server's
`current` (a link to one), `mlserving.log`, `mlserving.pid` and `repository.token` (the bearer token its
model loads need, generated once, readable by its owner only); `canary/` the same for a canary;
`router/` the router in front of them (mlops.local_router).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from mlops.hooks.serving import ServingError, ServingHook


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
