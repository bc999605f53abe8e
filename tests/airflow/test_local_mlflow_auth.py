"""The local stack's MLflow (scripts/services.sh) runs MLflow's own basic-auth app with an admin it made at
first start: a caller without a login can neither read nor write, and every client the platform has (the
Airflow connection's hook, the stage processes it starts) logs in, as the pipeline's own user, which is
not an admin (images/mlflow/pipeline_user.py)."""

from __future__ import annotations

import os
import stat
import subprocess

import httpx
import pytest

from mlops.hooks.mlflow import MlflowError, MlflowHook
from mlops.hooks.stage import StageHook
from scripts.airflow_cli import mlflow_login
from scripts.ui_links import experiment_links
from tests import support

from .conftest import REPO, connect

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def local_mlflow(tmp_path_factory):
    """`scripts/services.sh start mlflow`, as `make demo` starts it; stopped after the module."""
    run_dir = tmp_path_factory.mktemp("run")
    env = {**os.environ, "RUN_DIR": str(run_dir), "MLFLOW_PORT": str(support.free_port())}

    def services(*args):
        done = subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    services("start", "mlflow")
    try:
        yield f"http://127.0.0.1:{env['MLFLOW_PORT']}", run_dir, services
    finally:
        services("stop")


def test_mlflow_refuses_every_call_without_a_login_and_changes_nothing(local_mlflow):
    url, run_dir, _ = local_mlflow
    login = mlflow_login(run_dir)
    assert login and len(login[1]) >= 20
    credentials = run_dir / "mlflow" / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    for method, path, body in (("POST", "registered-models/create", {"name": "intruder"}),
                               ("POST", "registered-models/alias", {"name": "intruder", "alias": "champion",
                                                                    "version": "1"}),
                               ("GET", "registered-models/search", None)):
        for auth in (None, ("admin", "guessed-password")):
            answer = httpx.request(method, f"{url}{API}/{path}", json=body, auth=auth)
            assert answer.status_code == 401, (path, auth, answer.text[:200])
    assert httpx.get(f"{url}{API}/registered-models/search", auth=login).json() == {}  # nothing was created


def test_the_platforms_clients_log_in(local_mlflow, monkeypatch):
    url, run_dir, _ = local_mlflow
    user, password = mlflow_login(run_dir, "pipeline")
    # The Airflow connection as scripts/services.sh gives it to Airflow.
    connect(monkeypatch, mlflow_default=f"http://{user}:{password}@{url.removeprefix('http://')}")
    hook = MlflowHook()
    assert hook.champion("iris-auth") is None  # answered (no such model), not refused
    connect(monkeypatch, mlflow_default=url)
    with pytest.raises(MlflowError, match="401"):
        MlflowHook().champion("iris-auth")
    # A stage process started with the connection's client settings reads the registry.
    connect(monkeypatch, mlflow_default=f"http://{user}:{password}@{url.removeprefix('http://')}")
    stage = StageHook.local()
    assert stage.env["MLFLOW_TRACKING_USERNAME"] == user and "MLFLOW_TRACKING_TOKEN" not in stage.env
    assert stage.run("champion-at", {"model_name": "iris-auth"})["champion_version"] is None


def test_the_hook_works_with_the_connection_s_login_and_a_wrong_password_changes_nothing(local_mlflow, monkeypatch,
                                                                                          tmp_path):
    """The connection's login and password are MLflow's client settings: every call the operators make, and a
    model version's files through the artifact proxy, pass MLflow's basic-auth app; with a wrong password
    each is refused in one line and nothing is written."""
    url, run_dir, _ = local_mlflow
    user, password = mlflow_login(run_dir, "pipeline")
    auth = (user, password)

    def call(path: str, body: dict) -> dict:
        answer = httpx.post(f"{url}{API}/{path}", json=body, auth=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()

    experiment = call("experiments/create", {"name": "iris-login"})["experiment_id"]
    run = call("runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
    model = call("logged-models", {"experiment_id": experiment, "name": "model"})["model"]["info"]
    root = model["artifact_uri"].removeprefix("mlflow-artifacts:")
    httpx.put(f"{url}/api/2.0/mlflow-artifacts/artifacts{root}/MLmodel", content=b"flavors: {}\n",
              auth=auth).raise_for_status()
    call("registered-models/create", {"name": "iris-login"})
    call("model-versions/create", {"name": "iris-login", "source": f"models:/{model['model_id']}",
                                   "model_id": model["model_id"], "run_id": run})
    call("registered-models/alias", {"name": "iris-login", "alias": "champion", "version": "1"})

    host = url.removeprefix("http://")
    connect(monkeypatch, mlflow_default=f"http://{user}:{password}@{host}")
    hook = MlflowHook()
    assert hook.test_connection() == (True, f"MLflow at {url} answered")
    assert hook.champion("iris-login") == {"version": "1", "run_id": run, "source": f"models:/{model['model_id']}"}
    hook.set_run_tags(run, {"promotion_approval": "approved"})
    hook.set_model_version_tags("iris-login", "1", {"canary.verdict": "promote"})
    assert hook.run_tags(run)["promotion_approval"] == "approved" and hook.experiment_of(run) == experiment
    assert hook.model_version_tags("iris-login", "1") == {"canary.verdict": "promote"}
    served = tmp_path / "serving" / "v1"
    assert hook.download_version("iris-login", "1", served) == served
    assert (served / "MLmodel").read_bytes() == b"flavors: {}\n"

    connect(monkeypatch, mlflow_default=f"http://{user}:wrong-{password}@{host}")
    wrong = MlflowHook()
    refused = f"MLflow at {url} failed \\(.*\\): UNAUTHENTICATED: .* failed with error code 401"
    with pytest.raises(MlflowError, match=refused) as raised:
        wrong.set_run_tags(run, {"promotion_approval": "rejected"})
    assert "\n" not in str(raised.value) and password not in str(raised.value)
    with pytest.raises(MlflowError, match=refused):
        wrong.set_model_version_tags("iris-login", "1", {"canary.verdict": "rollback"})
    with pytest.raises(MlflowError, match=refused):
        wrong.champion("iris-login")
    with pytest.raises(MlflowError, match=refused):
        wrong.download_version("iris-login", "1", tmp_path / "serving" / "v1-again")
    ok, said = wrong.test_connection()
    assert ok is False and "401" in said
    # Nothing changed: read back as the pipeline.
    assert hook.run_tags(run)["promotion_approval"] == "approved"
    assert hook.model_version_tags("iris-login", "1") == {"canary.verdict": "promote"}
    assert [p.name for p in (tmp_path / "serving").iterdir()] == ["v1"]
    # The pages `make up` prints look the experiment up with the same login (scripts/ui_links.py).
    runs_table = f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert experiment_links(url, auth, "iris-login")["MLflow runs"] == runs_table
    assert experiment_links(url, (user, f"wrong-{password}"), "iris-login")["MLflow runs"] == f"{url}/#/experiments"


def test_the_pipelines_login_is_not_an_admin(local_mlflow):
    """Whoever holds it runs the pipeline: makes and changes its own models, and no more."""
    url, run_dir, _ = local_mlflow
    pipeline, admin = mlflow_login(run_dir, "pipeline"), mlflow_login(run_dir)
    assert stat.S_IMODE((run_dir / "mlflow" / "pipeline-credentials").stat().st_mode) == 0o600
    assert httpx.get(f"{url}{API}/users/get", params={"username": "pipeline"}, auth=pipeline).json()["user"][
        "is_admin"] is False
    assert httpx.post(f"{url}{API}/users/create", json={"username": "mallory", "password": "x" * 20},
                      auth=pipeline).status_code == 403
    assert httpx.post(f"{url}{API}/users/update-admin", json={"username": "pipeline", "is_admin": True},
                      auth=pipeline).status_code == 403
    # Its own model it may change; one a person made (as the admin) it may only read.
    assert httpx.post(f"{url}{API}/registered-models/create", json={"name": "own"}, auth=pipeline).status_code == 200
    assert httpx.post(f"{url}{API}/registered-models/set-tag", json={"name": "own", "key": "k", "value": "v"},
                      auth=pipeline).status_code == 200
    assert httpx.post(f"{url}{API}/registered-models/create", json={"name": "theirs"}, auth=admin).status_code == 200
    refused = httpx.post(f"{url}{API}/registered-models/set-tag", json={"name": "theirs", "key": "k", "value": "v"},
                         auth=pipeline)
    assert refused.status_code == 403
    theirs = httpx.get(f"{url}{API}/registered-models/get", params={"name": "theirs"}, auth=pipeline).json()
    assert theirs["registered_model"].get("tags") is None  # read, unchanged


def test_an_install_from_before_the_pipeline_user_hands_the_pipeline_what_it_made(local_mlflow):
    """Until the pipeline had a login of its own it used the admin's: a start that makes its user gives it
    what exists, so the next run can register on its models."""
    url, run_dir, services = local_mlflow
    admin = mlflow_login(run_dir)
    services("stop")
    # The state of such an install: no pipeline user, no pipeline credentials, a model the admin made.
    services("start", "mlflow")
    assert httpx.request("DELETE", f"{url}{API}/users/delete", json={"username": "pipeline"},
                         auth=admin).status_code == 200
    (run_dir / "mlflow" / "pipeline-credentials").unlink()
    assert httpx.post(f"{url}{API}/registered-models/create", json={"name": "made-as-admin"},
                      auth=admin).status_code == 200
    # what the module's other tests made (MLflow's Default experiment, id 0, is the server's own)
    existing = httpx.post(f"{url}{API}/experiments/search", json={"max_results": 1000, "view_type": "ALL"},
                          auth=admin).json()["experiments"]
    services("stop")
    started = services("start", "mlflow")
    made = sum(e["experiment_id"] != "0" for e in existing)
    assert f"made MLflow user 'pipeline' (not an admin); it manages the {made} experiments and" in started
    pipeline = mlflow_login(run_dir, "pipeline")
    assert httpx.post(f"{url}{API}/registered-models/set-tag", json={"name": "made-as-admin", "key": "k",
                                                                     "value": "v"}, auth=pipeline).status_code == 200
