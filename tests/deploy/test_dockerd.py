"""The checkout's Docker engine (scripts/dockerd.sh) is stopped by what started it: `make test` runs the suite
under `scripts/dockerd.sh around`, which stops the engine, its containers and its mounts when the suite ends,
failed or not, so the clone can be removed right afterwards. Each test runs a real dockerd (Debian's, as
`make images` installs it) in a run folder of its own, with a container holding mounts, as the suite's
image builds and emulated-cluster pods do."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from .conftest import REPO

DOCKERD = REPO / "scripts" / "dockerd.sh"
IMAGE = "mlops-ct-test/sleep:1"

pytestmark = pytest.mark.skipif(shutil.which("dockerd") is None,
                                reason="Debian's docker.io is not installed (`make images` installs it)")


def _rootfs(path: Path) -> None:
    """A one-binary image's file system: this machine's `sleep` and the libraries it links (ldd)."""
    sleep = shutil.which("sleep")
    linked = subprocess.run(["ldd", sleep], capture_output=True, text=True, check=True).stdout
    libs = [word for line in linked.splitlines() for word in line.split() if word.startswith("/")]
    with tarfile.open(path, "w") as tar:
        for file in (sleep, *libs):
            tar.add(os.path.realpath(file), arcname=file.lstrip("/"))
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(info, io.BytesIO())


class Engine:
    """scripts/dockerd.sh for a run folder of its own (its engine is not the checkout's)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.env = {**os.environ, "RUN_DIR": str(run_dir)}
        self.env.pop("KEEP_DOCKERD", None)
        self.host = self.script("host").stdout.strip()
        self.exec_root = str(Path(self.host.removeprefix("unix://")).parent)

    def script(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(DOCKERD), *args], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=90, check=check, cwd=REPO)

    def docker(self, *args: str, stdin=None) -> str:
        return subprocess.run(["docker", *args], env={**self.env, "DOCKER_HOST": self.host}, stdin=stdin,
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    def start_with_a_container(self, tmp_path: Path) -> int:
        """The engine, an image and a running container (overlay mount, network namespace): the host pid of
        the container's process."""
        self.script("start")
        _rootfs(tmp_path / "rootfs.tar")
        with open(tmp_path / "rootfs.tar", "rb") as rootfs:
            self.docker("import", "-", IMAGE, stdin=rootfs)
        container = self.docker("run", "-d", "--network", "none", "--stop-timeout", "1", IMAGE, "sleep", "1000")
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", container))

    def processes(self) -> list[str]:
        """This engine's processes still running: a command line naming its runtime folder."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if proc.name.isdigit() and f"{self.exec_root}/" in cmdline:
                found.append(f"{proc.name}: {cmdline}")
        return found

    def mounts(self) -> list[str]:
        roots = (str(self.run_dir.resolve()), self.exec_root)
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        return [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)]

    def assert_gone(self) -> None:
        """Nothing of the engine left, and its run folder can be removed (rm -rf, as after `make test`)."""
        assert self.processes() == [] and self.mounts() == []
        subprocess.run(["rm", "-rf", str(self.run_dir)], check=True, capture_output=True, timeout=30)
        assert not self.run_dir.exists()


@pytest.fixture
def engine(tmp_path):
    engine = Engine(tmp_path / "run")
    yield engine
    engine.script("stop", check=False)  # whatever a failed test left


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"  # a zombie is gone
    except OSError:
        return False


def test_make_test_stops_the_engine_it_started_when_the_suite_fails(engine, tmp_path):
    """`make test`'s own recipe, the suite replaced by a stand-in that starts the engine, runs a container and
    fails: make fails with it, and nothing of the engine is left."""
    suite = (f"bash -c 'scripts/dockerd.sh start && DOCKER_HOST={engine.host} docker run -d --network none "
             f"--stop-timeout 1 {IMAGE} sleep 1000 && exit 3'")
    engine.start_with_a_container(tmp_path)  # the image, imported once; then the engine stops again
    engine.script("stop")
    done = subprocess.run(["make", "--no-print-directory", "-o", "system-deps", "-o", "envs", "test",
                           f"TEST_SUITE={suite}"], env=engine.env, cwd=REPO, capture_output=True, text=True,
                          timeout=90)
    assert done.returncode != 0 and "Error 3" in done.stderr, done.stderr
    assert "dockerd stopped" in done.stderr
    engine.assert_gone()


def test_keep_dockerd_or_an_engine_running_before_is_left_running(engine):
    kept = engine.script("around", "scripts/dockerd.sh", "start", env={"KEEP_DOCKERD": "1"})
    assert "left running" in kept.stderr and engine.script("status", check=False).returncode == 0
    before = engine.script("around", "true")  # it was running before this command
    assert "running before" in before.stderr and engine.script("status", check=False).returncode == 0
    engine.script("stop")
    engine.assert_gone()


def test_stop_clears_what_a_killed_engine_left(engine, tmp_path):
    """An engine killed outright (a crash, an OOM kill) leaves its containerd, the container shims with their
    containers and its mounts: stop removes all of them."""
    container_pid = engine.start_with_a_container(tmp_path)
    dockerd_pid = int(Path(engine.exec_root, "dockerd.pid").read_text())
    os.kill(dockerd_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(dockerd_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.processes() and engine.mounts()  # what would block `rm -rf`
    engine.script("stop")
    assert not alive(container_pid)
    engine.assert_gone()


def test_a_stale_pid_file_naming_another_process_is_not_signalled(engine):
    """The pid file outlives a killed engine; its pid may since be anyone's: stop leaves that process alone."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        Path(engine.exec_root).mkdir(parents=True, exist_ok=True)
        Path(engine.exec_root, "dockerd.pid").write_text(str(other.pid))
        engine.script("stop")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
