"""The stages against a real MLflow behind its basic-auth app, logged in as the pipeline's own user (not an
admin, made by images/mlflow/pipeline_user.py as the local stack and the cluster make it), with a token set as
well: MLflow's client sends the user and password (Basic) when both are set (`mlflow/utils/rest_utils.py`
`http_request`), so the stages work where a client that preferred the token would be refused. A wrong
password is one clear line, and nothing is written."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from mlpipeline.model_registry import Registry
from tests import support

from .helpers import run_cli
from .test_model_registry import log_model

BOGUS_TOKEN = "a-token-no-server-issued"
LOGIN_VARIABLES = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The server, its admin's login and the pipeline user's login."""
    admin = ("admin", secrets.token_urlsafe(18))
    pipeline = ("pipeline", secrets.token_urlsafe(18))
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), admin_password=admin[1]) as uri:
        made = subprocess.run(
            [sys.executable, str(support.REPO / "images/mlflow/pipeline_user.py")], capture_output=True, text=True,
            timeout=120, env={**{k: v for k, v in os.environ.items() if k not in LOGIN_VARIABLES},
                              "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": admin[0],
                              "MLFLOW_TRACKING_PASSWORD": admin[1], "PIPELINE_MLFLOW_USERNAME": pipeline[0],
                              "PIPELINE_MLFLOW_PASSWORD": pipeline[1]})
        assert made.returncode == 0, made.stdout + made.stderr
        yield uri, admin, pipeline


def login(uri: str, user: str, password: str, token: str | None = BOGUS_TOKEN) -> dict[str, str]:
    """MLflow's client settings for a stage: the server, a user and password, and (unless None) a token."""
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
            **({"MLFLOW_TRACKING_TOKEN": token} if token else {})}


@pytest.fixture
def as_pipeline(auth_server, monkeypatch) -> dict[str, str]:
    """This process (and the stages it starts) logged in as the pipeline user, with a token set too."""
    uri, _, pipeline = auth_server
    env = login(uri, *pipeline)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with _use_tracking_uri(uri):
        yield env


def as_admin(auth_server, monkeypatch) -> MlflowClient:
    """MLflow's client as the admin, to read back what the stages wrote (MLflow's client reads its login from
    the environment: from here on this process is the admin)."""
    uri, admin, _ = auth_server
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    for name, value in login(uri, *admin, token=None).items():
        monkeypatch.setenv(name, value)
    return MlflowClient(uri)


def promoted_model(model_name: str, versions: int) -> list[str]:
    """`versions` versions of a new model, registered and each promoted in turn, in this process (logged in
    as the environment says): their numbers."""
    registry, numbers = Registry(model_name), []
    for seed in range(versions):
        logged = log_model(seed)
        version = registry.create_version(logged["model_uri"], logged["run_id"], {"run_key": f"key-{seed}"})
        registry.move_champion(version, "promote", f"seed {seed}", {}, expected=numbers[-1] if numbers else None)
        numbers.append(version.version)
    return numbers


def promotion_runs(client: MlflowClient, model_name: str) -> list[tuple[str, str]]:
    experiment = client.get_experiment_by_name(f"{model_name}.promotions")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [(r.info.status, r.info.run_name) for r in runs]


@pytest.mark.timeout(600)
def test_the_stages_log_in_with_the_password_when_a_token_is_set_too(auth_server, as_pipeline, model_name,
                                                                    tmp_path, monkeypatch):
    uri = auth_server[0]
    assert run_cli("champion-at", "--model-name", model_name).json["champion_version"] is None
    # MLflow's basic-auth answers the pipeline's user (not an admin) 403 for an alias of a model that does
    # not exist; the registry takes it for "no champion" once the model is known not to exist
    with pytest.raises(MlflowException) as refused:
        MlflowClient(uri).get_model_version_by_alias(model_name, "champion")
    assert refused.value.get_http_status_code() == 403
    assert Registry(model_name).champion() is None
    missing = run_cli("fetch-model", "--model-name", model_name, "--alias", "champion", "--dest",
                      tmp_path / "none", check=False)
    assert missing.error_line == (f"mlpipeline fetch-model: error: {model_name} has no version with alias "
                                  "'champion'")

    first, second = promoted_model(model_name, 2)
    rolled = run_cli("rollback", "--model-name", model_name, "--to-version", first, "--from-version", second,
                     "--reason", "deploy failed").json
    assert rolled["rolled_back"] is True and rolled["previous_version"] == second
    at = run_cli("champion-at", "--model-name", model_name).json
    assert at["champion_version"] == first
    assert [(h["event"], h["version"]) for h in at["history"]] == [
        ("promote", first), ("promote", second), ("rollback", first)]
    fetched = run_cli("fetch-model", "--model-name", model_name, "--alias", "champion", "--into",
                      tmp_path / "served").json
    assert fetched["version"] == first and (tmp_path / "served" / f"v{first}" / "MLmodel").is_file()

    admin = as_admin(auth_server, monkeypatch)
    assert admin.get_model_version_by_alias(model_name, "champion").version == first
    assert promotion_runs(admin, model_name) == [("FINISHED", f"promote v{first}"),
                                                 ("FINISHED", f"promote v{second}"),
                                                 ("FINISHED", f"rollback v{first}")]


@pytest.mark.timeout(600)
def test_a_wrong_password_is_one_clear_line_and_writes_nothing(auth_server, as_pipeline, model_name, tmp_path,
                                                               monkeypatch):
    uri, _, pipeline = auth_server
    first, second = promoted_model(model_name, 2)
    admin = as_admin(auth_server, monkeypatch)
    before = (promotion_runs(admin, model_name), admin.get_model_version(model_name, first).tags,
              admin.get_model_version(model_name, second).tags)

    wrong = login(uri, pipeline[0], "not-the-password")
    unauthenticated = "You are not authenticated"
    for stage in (["rollback", "--to-version", first, "--from-version", second, "--reason", "deploy failed"],
                  ["champion-at"], ["fetch-model", "--alias", "champion", "--dest", tmp_path / "served"]):
        done = run_cli(*stage, "--model-name", model_name, env=wrong, check=False)
        assert done.returncode == 1 and done.stdout == ""
        line = done.error_line
        assert line.startswith(f"mlpipeline {stage[0]}: error: ") and "401" in line and unauthenticated in line
    assert admin.get_model_version_by_alias(model_name, "champion").version == second
    assert (promotion_runs(admin, model_name), admin.get_model_version(model_name, first).tags,
            admin.get_model_version(model_name, second).tags) == before
    assert not (tmp_path / "served").exists()


def test_the_token_alone_is_refused(auth_server, model_name):
    """What the first test relies on: this server takes no token, so a stage that sent the token where a
    password is set too would have failed. (MLflow 3.17.2's basic-auth app, with its login cache on as the
    project configures it, answers a Bearer token 500, not 401: `_auth_cache_key` encodes the missing password.
    The client counts 500 as transient, so the retries are cut to none here.)"""
    only_token = {"MLFLOW_TRACKING_URI": auth_server[0], "MLFLOW_TRACKING_TOKEN": BOGUS_TOKEN,
                  "MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": "",
                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = run_cli("champion-at", "--model-name", model_name, env=only_token, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.error_line.startswith(f"mlpipeline champion-at: error: MLflow at {auth_server[0]}: API request to ")
