"""The local target's serving backend (a CanaryServingBackend of mlops.operators.deploy): the model servers
mlops.local_serving supervises, behind the one nginx router (mlops.local_router).

A pid read from a file is signalled only while it is the model server this folder started: the pid file
outlives its server (a reboot, a server killed by hand, a data volume copied elsewhere) and the kernel
hands its pid to the next process, which a stop must not kill. `/proc/<pid>/cmdline` says what a pid runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlops.hooks.http import ServiceError
from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.serving import ServingError, ServingHook, ServingUnreachable
from mlops.hooks.stage import StageFailed, StageHook
from mlops.local_router import LocalRouter
from mlops.local_serving import ROUTER_FOLDER, LocalModelServer, model_ports
from mlops.operators.deploy import ModelFailed
from mlops.settings import mlops_settings
from mlops.volume import data_root

log = logging.getLogger(__name__)


def command_line(pid: int) -> list[str] | None:
    """A process's argv as the kernel holds it (/proc/<pid>/cmdline, NUL-separated); None when there is no
    such process (or it has exited and waits to be reaped: a zombie's is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


class SupervisedModelServer(LocalModelServer):
    """mlops.local_serving's supervisor, stopping only the server it started."""

    def started_here(self, pid: int) -> bool:
        """Whether `pid` runs this folder's model server: `mlserving` (a console script, so argv[0] may be its
        interpreter and argv[1] the script) given this folder's link and this server's port, as `start` runs
        it."""
        argv = command_line(pid)
        if not argv or str(self.mlserving) not in argv[:2]:
            return False
        options = argv[argv.index(str(self.mlserving)) + 1:]

        def given(flag: str) -> str | None:
            return options[options.index(flag) + 1] if flag in options[:-1] else None

        return given("--model-dir") == str(self.link) and given("--http-port") == str(self.port)

    def stop(self, wait: float = 30) -> None:
        """Stop the server this folder records, if it is still the one it started; a pid file naming anything
        else is stale: removed, nothing signalled."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and not self.started_here(pid):
            try:  # a server this process started that has exited: reaped, or it lingers as a zombie
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            log.warning("%s names pid %s, which is not this folder's model server (%s); not signalling it",
                        self.pid_file, pid, " ".join(command_line(pid) or ["gone"])[:200])
            self.pid_file.unlink(missing_ok=True)
            return
        super().stop(wait)


class LocalServingBackend:
    """The local target: Debian's nginx (mlops.local_router) on the mlserving connection's port, in front
    of every model's stable model server and, during a canary, its canary server (each model's two ports
    from mlops.local_serving.model_ports). A version is fetched with the pipeline's `fetch-model` stage and
    a server's `current` link pointed at it; a straight swap hot-swaps the stable server; a canary is a
    second server given a share of the model's traffic at the router, and its promotion hot-swaps the
    stable server to its version before the canary's share goes back to it, so no request finds no server.
    Other models' servers and routes are not touched."""

    mode = "local ModelServer"
    supports_canary = True

    def __init__(self, model_name: str, mlflow_conn_id: str, mlserving_conn_id: str, regression: bool = False):
        self.model_name, self.regression = model_name, regression
        self.stages = StageHook.local(mlflow_conn_id)
        self.mlflow = MlflowHook(mlflow_conn_id)
        self.public = ServingHook(model_name, mlserving_conn_id)
        # The router's port is the connection's, which the local stack sets (scripts/services.sh, the one place
        # the port is chosen); the models' own ports follow from it (model_ports).
        port, serving = self.public.connection.port, data_root() / "serving"
        if not port:
            raise ServiceError(f"the {mlserving_conn_id} connection names no port: the local router listens on it "
                               "and each model's servers on the ports after it (scripts/services.sh sets it from "
                               "MLOPS_SERVING_PORT)")
        mlserving, (stable_port, canary_port) = mlops_settings().mlserving, model_ports(serving, model_name, port)
        self.folder = serving / model_name
        self.stable = SupervisedModelServer(mlserving, self.folder, model_name, stable_port)
        self.canary = SupervisedModelServer(mlserving, self.folder / "canary", model_name, canary_port)
        self.router = LocalRouter(serving / ROUTER_FOLDER, port)

    def current(self) -> dict | None:
        version = self.stable.serving.served_version()
        return {"version": version, "url": self.public.base_url} if version else None

    def is_ready(self, current: dict) -> bool:
        # the stable server answered; clients reach it through the router, which must route to it
        return self.router.pid() is not None and self.model_name in self.router.routes()

    def _fetch(self, version: str) -> Path:
        """The version's files in `v<version>/`: over MLflow's artifact proxy when the server has one (no
        MLflow process to start, ~1.5 s of imports), else with the pipeline's fetch-model stage."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if (fetched := self.mlflow.download_version(self.model_name, version, self.folder / f"v{version}")):
            return fetched
        try:
            fetched = self.stages.run("fetch-model", {"model_name": self.model_name, "version": version,
                                                      "into": self.folder})
        except StageFailed as exc:
            raise RuntimeError(str(exc)) from None
        return Path(fetched["model_dir"])

    def _serve(self, server, model_dir: Path) -> None:
        """Point a server at a version and swap it in (or start it). ModelFailed: the server refused it."""
        server.folder.mkdir(parents=True, exist_ok=True)
        server.point_at(model_dir)
        try:
            if server.serving.is_live():
                server.serving.load()
            else:
                server.start()
        except ServingUnreachable:
            raise
        except ServingError as exc:
            raise ModelFailed(str(exc)) from None

    def share(self, percent: int) -> None:
        """Never called: start_canary gives the canary its share at the router before it returns."""

    def promoted(self) -> None:
        """Nothing to remove: promote hot-swaps the stable server and stops the canary before it returns."""

    def _route_to_stable(self) -> None:
        self.router.route(self.model_name, {self.stable.address: 100})
        self.canary.stop()

    def roll_out(self, champion: dict) -> str:
        """A straight swap. Raises ModelFailed when the server refuses the version; anything else is the
        infrastructure's."""
        self._serve(self.stable, self._fetch(champion["version"]))
        self._route_to_stable()  # an interrupted canary's share, if any, goes back
        return self.public.base_url

    def start_canary(self, champion: dict, percent: int) -> None:
        """The canary server on the new version, smoke-tested on its own port before the router gives it
        `percent` of the requests. ModelFailed: it did not load or answer (it never got a request)."""
        model_dir = self._fetch(champion["version"])
        self.canary.stop()
        try:
            self._serve(self.canary, model_dir)
            self.canary.serving.smoke_test(champion["version"], regression=self.regression)
        except (ModelFailed, ServingError) as exc:
            self.canary.stop()
            raise ModelFailed(str(exc)) from None
        self.router.route(self.model_name, {self.stable.address: 100 - percent, self.canary.address: percent})

    def promote(self, champion: dict) -> str:
        self._serve(self.stable, self.stable.version_dir(champion["version"]))
        self._route_to_stable()
        return self.public.base_url

    def restore(self, previous: dict) -> None:
        try:
            before = self.stable.version_dir(previous["version"])
            if self.stable.serving.served_version() != previous["version"]:
                self._serve(self.stable, before)
            else:  # it refused the new version and serves on: its link names what it serves again
                self.stable.point_at(before)
            if self.router.pid() is not None or self.canary.pid_file.exists():
                self._route_to_stable()
        except (ServiceError, ModelFailed) as exc:
            raise RuntimeError(f"restoring v{previous['version']} failed too: {exc}") from None
