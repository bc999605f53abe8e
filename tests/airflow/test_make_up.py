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
LINE = re.compile(r"(?P<name>[A-Z]\w*(?: [A-Za-z]+)?)\s+(?P<url>http\S+)"
                  r"(?:  \(login (?P<user>\S+) / (?P<password>\S+)\))?")


def alerts_page_shows_an_alert(url: str, page, alertmanager_port: str) -> None:
    """The link is the UI's route of the mlops plugin's Alerts entry (/plugin/<url_route>, a page of the UI's
    own, which frames the entry's href); signed in with the line's login, the framed page lists an alert
    just posted to Alertmanager, by name."""
    airflow, route = url.split("/plugin/")
    token = httpx.post(f"{airflow}/auth/token", json={"username": page["user"], "password": page["password"]})
    signed_in = {"Authorization": f"Bearer {token.json()['access_token']}"}
    plugins = httpx.get(f"{airflow}/api/v2/plugins", headers=signed_in).json()["plugins"]
    [view] = [v for p in plugins for v in p["external_views"] if v["url_route"] == route]
    alert = {"labels": {"alertname": "MakeUpLinkCheck", "severity": "info"}, "annotations": {"summary": "posted"}}
    httpx.post(f"http://127.0.0.1:{alertmanager_port}/api/v2/alerts", json=[alert]).raise_for_status()
    assert httpx.get(f"{airflow}/{view['href']}").status_code == 401  # not without the login
    framed = httpx.get(f"{airflow}/{view['href']}", headers=signed_in)
    assert framed.status_code == 200 and "MakeUpLinkCheck" in framed.text, framed.text[-2000:]


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
        assert set(pages) == {"Airflow UI", "MLflow UI", "MLflow runs", "MLflow promotions", "Prometheus",
                              "Alerts"}, up.stdout
        # nothing trained yet: the runs tables' links open MLflow's experiments list
        assert pages["MLflow runs"]["url"].endswith("/#/experiments"), up.stdout
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
            elif name == "Alerts":  # the UI's page of what Alertmanager holds: an alert posted there is on it
                alerts_page_shows_an_alert(url, page, ports["ALERTMANAGER_PORT"])
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
