"""`make up` (scripts/up.sh): the local stack without the demo's story. It prints each page with its
login, and each one opens with that login; it keeps what the run folder holds; `make down` stops it."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from mlpipeline.dataset import load
from tests import support

from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# "Airflow UI    http://...  (login admin / ...)": a page's line (services.sh's own lines are lower case)
LINE = re.compile(r"(?P<name>[A-Z]\w*(?: UI)?)\s+(?P<url>http\S+)(?:  \(login (?P<user>\S+) / (?P<password>\S+)\))?")


def test_make_up_prints_pages_that_open_with_their_logins_and_keeps_the_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "data" / "landing").mkdir(parents=True)
    kept = run_dir / "data" / "landing" / "kept.txt"
    kept.write_text("landed before `make up`")
    ports = {name: str(support.free_port()) for name in ("POSTGRES_PORT", "MLFLOW_PORT", "ALERTMANAGER_PORT",
                                                         "PUSHGATEWAY_PORT", "PROMETHEUS_PORT", "AIRFLOW_PORT")}
    env = {**os.environ, **ports, "RUN_DIR": str(run_dir)}
    env.pop("AIRFLOW_HOME", None)
    try:
        up = subprocess.run(["bash", str(REPO / "scripts" / "up.sh")], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=500)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        pages = {m["name"]: m for m in map(LINE.fullmatch, up.stdout.splitlines()) if m}
        assert set(pages) == {"Airflow UI", "MLflow UI", "Prometheus", "Alertmanager"}, up.stdout
        assert up.stdout.rstrip().endswith("stop everything with: make down")
        # every dataset file's model, where it answers once deployed: the one router address, under its name
        model = load(support.EXAMPLE_DATASET).model_name
        assert re.search(rf"^  {model} +http://127\.0\.0\.1:8085/v2/models/{model}/infer  \(DAG "
                         r"continuous_training_iris\)$", up.stdout, re.MULTILINE), up.stdout
        for name, page in pages.items():
            url = page["url"].split("#")[0]
            if name == "Airflow UI":  # the UI page opens, and its login is taken by the token endpoint it uses
                assert httpx.get(url).status_code == 200
                token = httpx.post(f"{url}/auth/token", json={"username": page["user"], "password": page["password"]})
                assert token.status_code in (200, 201) and token.json()["access_token"], token.text
            elif page["user"]:  # MLflow's pages: refused without the login, opened with it
                assert httpx.get(url).status_code == 401
                assert httpx.get(url, auth=(page["user"], page["password"])).status_code == 200
            else:
                assert httpx.get(url).status_code == 200, (name, url)
        assert kept.read_text() == "landed before `make up`"
    finally:
        down = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "stop"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=200)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not [p for p in run_dir.glob("*.pid")], "make down left pid files"
