"""`make down` (scripts/services.sh stop) stops what the local stack started, found by its pid files, and only
that: a pid file outlives its process, and the pid may belong to anything by then."""

from __future__ import annotations

import os
import subprocess

from .conftest import REPO


def test_stop_signals_the_services_it_started_and_leaves_a_stale_pid_file_s_process(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a service as `launch` starts it: a session of its own, its command line naming a path in the run folder
    service = subprocess.Popen(["bash", "-c", "sleep 60; true", str(run_dir / "prometheus.yml")],
                               start_new_session=True)
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (run_dir / "prometheus.pid").write_text(str(service.pid))
        (run_dir / "mlflow.pid").write_text(str(unrelated.pid))  # stale: that pid is someone else's now
        done = subprocess.run(["bash", "scripts/services.sh", "stop"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "RUN_DIR": str(run_dir)}, timeout=60)
        assert done.returncode == 0, done.stderr
        assert service.wait(timeout=10) is not None and "stopped prometheus" in done.stdout
        assert unrelated.poll() is None and f"pid {unrelated.pid} left alone" in done.stdout
        assert not list(run_dir.glob("*.pid"))
    finally:
        for process in (service, unrelated):
            process.kill()
            process.wait()
