"""MlflowHook against a real MLflow tracking server: the champion, a logged model's files, the decision
a training run recorded (mlpipeline.contracts), tags, what a local stage needs to reach the same server, and
the connection as MLflow's client settings (tests/airflow/test_local_mlflow_auth.py: with MLflow's
basic-auth app)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mlops.hooks.mlflow import MlflowError, MlflowHook
from tests import support

from ..conftest import connect

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture
def mlflow(monitoring):
    return monitoring["mlflow"]


def api(mlflow: str, path: str, body: dict) -> dict:
    answer = httpx.post(f"{mlflow}/api/2.0/mlflow/{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_champion_is_what_the_alias_names(mlflow):
    hook = MlflowHook()
    assert hook.champion("iris-nothing") is None  # no such model
    api(mlflow, "registered-models/create", {"name": "iris-hook"})
    assert hook.champion("iris-hook") is None  # no alias yet
    for source in ("s3://mlflow/1", "s3://mlflow/2"):
        api(mlflow, "model-versions/create", {"name": "iris-hook", "source": source, "run_id": "r"})
    api(mlflow, "registered-models/alias", {"name": "iris-hook", "alias": "champion", "version": "2"})
    assert hook.champion("iris-hook") == {"version": "2", "run_id": "r", "source": "s3://mlflow/2"}
    assert hook.artifact_location("s3://mlflow/2") == "s3://mlflow/2"  # not a logged model: the source itself


def test_the_training_decision_is_the_recorded_contract(mlflow):
    from mlpipeline.contracts import TrainingDecision

    hook = MlflowHook()
    assert hook.training_decision("iris-undecided", "rk-1") is None  # no experiment
    experiment = api(mlflow, "experiments/create", {"name": "iris-decided"})["experiment_id"]
    run = api(mlflow, "runs/create", {"experiment_id": experiment, "tags": [
        {"key": "run_key", "value": "rk-1"}, {"key": "stage", "value": "train"}]})["run"]["info"]["run_id"]
    assert hook.training_decision("iris-decided", "rk-1") is None  # trained, not decided yet
    decision = TrainingDecision(run_key="rk-1", decision="reject", reason="not significant", challenger_run_id=run,
                                challenger_model_uri="models:/m-1", challenger_metrics={"accuracy": 0.9},
                                challenger_accuracy=0.9, champion_version="4", mcnemar={"pvalue": 0.3})
    for key, value in decision.tags().items():
        api(mlflow, "runs/set-tag", {"run_id": run, "key": key, "value": value})
    assert hook.training_decision("iris-decided", "rk-1") == decision
    assert hook.training_decision("iris-decided", "rk-other") is None
    with pytest.raises(MlflowError, match="run key \"rk' or tags.stage = 'x\" cannot be searched for"):
        hook.training_decision("iris-decided", "rk' or tags.stage = 'x")


def test_run_tags_are_set_all_at_once_or_not_at_all(mlflow):
    hook = MlflowHook()
    experiment = api(mlflow, "experiments/create", {"name": "iris-tags"})["experiment_id"]
    run = api(mlflow, "runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
    hook.set_run_tags(run, {"promotion_approval": "approved", "promotion_approval_by": "alice"})
    assert hook.experiment_of(run) == experiment
    tags = hook.run_tags(run)
    assert (tags["promotion_approval"], tags["promotion_approval_by"]) == ("approved", "alice")
    # One tag the server refuses (a key MLflow does not allow): the batch is refused whole.
    with pytest.raises(MlflowError, match=f"MLflow at {mlflow} refused tags on run {run}: HTTP 400"):
        hook.set_run_tags(run, {"promotion_approval": "rejected", "../bad key": "x"})
    assert hook.run_tags(run) == tags
    with pytest.raises(MlflowError, match=f"refused run {'0' * 32}: HTTP 404 RESOURCE_DOES_NOT_EXIST"):
        hook.run_tags("0" * 32)


def test_model_version_tags_are_set_and_read(mlflow):
    hook = MlflowHook()
    api(mlflow, "registered-models/create", {"name": "iris-version-tags"})
    api(mlflow, "model-versions/create", {"name": "iris-version-tags", "source": "s3://m/1", "run_id": "r"})
    hook.set_model_version_tags("iris-version-tags", "1", {"canary.verdict": "promote", "canary.requests": "201"})
    assert hook.model_version_tags("iris-version-tags", "1") == {"canary.verdict": "promote",
                                                                  "canary.requests": "201"}
    with pytest.raises(MlflowError, match="refused tag 'k' on iris-version-tags v9: HTTP 404"):
        hook.set_model_version_tags("iris-version-tags", "9", {"k": "v"})


def test_a_local_stage_reaches_the_same_server_with_the_same_token(monkeypatch):
    connect(monkeypatch, mlflow_default='{"conn_type": "http", "host": "http://mlflow.test:5000", "password": "t"}')
    assert MlflowHook().client_env() == {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000", "MLFLOW_TRACKING_TOKEN": "t"}
    assert MlflowHook().ui_url == "http://mlflow.test:5000"
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert MlflowHook().ui_url == "https://mlflow.example.com"


@pytest.mark.parametrize("connection", [
    {"host": "https://mlflow.test", "login": "pipeline", "password": "pw"},
    {"host": "mlflow.test", "schema": "https", "port": 8443, "password": "tok",
     "extra": {"server_cert_path": "/etc/ssl/mlflow-ca.pem", "client_cert_path": "/etc/ssl/me.pem"}},
    {"host": "http://mlflow.test:5000", "extra": {"insecure_tls": True}},
], ids=["basic", "token-and-certificates", "insecure"])
def test_a_stage_process_s_mlflow_builds_the_credentials_the_hook_uses(monkeypatch, connection):
    """client_env() are the variables MLflow's own client reads: MLflow, given them as its environment,
    builds the same MlflowHostCreds the hook gives its client (mlflow/utils/credentials.py)."""
    from mlflow.utils.credentials import get_default_host_creds

    connect(monkeypatch, mlflow_default=json.dumps({"conn_type": "mlflow", **connection}))
    hook = MlflowHook()
    for name in [n for n in os.environ if n.startswith("MLFLOW_TRACKING_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials
    for name, value in hook.client_env().items():
        monkeypatch.setenv(name, value)
    assert get_default_host_creds(hook.tracking_uri) == hook.host_creds()


def test_the_connection_s_secrets_stay_out_of_this_process_s_environment(mlflow, monkeypatch):
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    connect(monkeypatch, mlflow_default=json.dumps({"conn_type": "mlflow", "host": mlflow, "password": "a-token"}))
    hook = MlflowHook()
    assert hook.champion("iris-env") is None and hook.test_connection()[0] is True
    assert not {name for name in os.environ if name in CREDENTIAL_VARIABLES}


@pytest.mark.parametrize("connection, message", [
    ({"host": "http://m:5000", "extra": {"insecure_tls": "yes"}}, "insecure_tls must be true or false, got 'yes'"),
    ({"host": "http://m:5000", "extra": {"insecure_tsl": True}}, r"unknown extra field\(s\) \['insecure_tsl'\]"),
    ({"host": "http://m:5000", "extra": {"insecure_tls": True, "server_cert_path": "/ca.pem"}},
     "When 'ignore_tls_verification' is true then 'server_cert_path' must not be set"),
    ({"host": "http://m:5000", "login": "pipeline"}, "has a login but no password"),
    ({"login": "pipeline", "password": "pw"}, "has no host"),
])
def test_a_connection_that_cannot_work_is_refused_by_name(monkeypatch, connection, message):
    connect(monkeypatch, mlflow_default=json.dumps({"conn_type": "mlflow", **connection}))
    with pytest.raises(MlflowError, match=message):
        MlflowHook().champion("iris")
    ok, said = MlflowHook().test_connection()
    assert ok is False and "connection 'mlflow_default'" in said


def test_a_server_that_is_down_is_named_after_mlflow_s_retries(monkeypatch):
    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, mlflow_default=down)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with pytest.raises(MlflowError, match=f"MLflow at {down} did not answer \\(the champion of 'iris'\\): "
                                          "ConnectionError: .*Max retries exceeded"):
        MlflowHook().champion("iris")
    ok, said = MlflowHook().test_connection()
    assert ok is False and said.startswith(f"MLflow at {down} did not answer (the experiments list)")


def test_the_connection_test_tries_once_whatever_mlflow_s_retry_settings(monkeypatch):
    """The person pressing Test waits: one try, not MLflow's seven with a doubling back-off (minutes)."""
    import time

    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, mlflow_default=down)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2")
    started = time.monotonic()
    ok, said = MlflowHook().test_connection()
    assert ok is False and "did not answer" in said
    assert time.monotonic() - started < 20  # five retries would sleep 2+4+8+16 s before the last
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # the worker's own setting put back


class _Unavailable(BaseHTTPRequestHandler):
    """A tracking server that answers every request 503 (a proxy in front of one that is restarting)."""

    seen = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_retries_are_mlflow_s_policy_and_its_settings(monkeypatch):
    """MLflow's MLFLOW_HTTP_REQUEST_MAX_RETRIES decides how often a 503 is tried, and a block of
    request_settings overrides it for its calls only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        connect(monkeypatch, mlflow_default=url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
        with pytest.raises(MlflowError, match=f"MLflow at {url} did not answer \\(run r1\\): RetryError: .*503"):
            MlflowHook().run_tags("r1")
        assert _Unavailable.seen == 3
        with pytest.raises(MlflowError, match="did not answer"):
            MlflowHook().experiment_of("r1", max_retries=0, timeout=5)
        assert _Unavailable.seen == 4
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    finally:
        server.shutdown()
        server.server_close()


def test_the_connection_form_is_what_airflow_s_provider_schema_allows():
    """The hook's `connection-types` entry validates against Airflow's own provider.yaml schema, and its
    extra fields are exactly the ones the hook reads."""
    import importlib.resources

    import jsonschema

    from mlops.hooks.mlflow import EXTRA_FIELDS

    schema = json.loads(importlib.resources.files("airflow").joinpath("provider.yaml.schema.json").read_text())
    entry = MlflowHook.connection_type()
    jsonschema.validate(entry, schema["properties"]["connection-types"]["items"])
    assert set(entry["conn-fields"]) == set(EXTRA_FIELDS)
    assert entry["hook-class-name"] == "mlops.hooks.mlflow.MlflowHook" and entry["connection-type"] == "mlflow"


def logged_model(mlflow: str, name: str, files: dict[str, bytes]) -> str:
    """A model version whose files are a logged model's, uploaded through the server's artifact proxy as
    MLflow's client uploads them (PUT /api/2.0/mlflow-artifacts/artifacts/<path>); its version number."""
    experiment = api(mlflow, "experiments/create", {"name": f"{name}-experiment"})["experiment_id"]
    model = api(mlflow, "logged-models", {"experiment_id": experiment, "name": "model"})["model"]["info"]
    root = model["artifact_uri"].removeprefix("mlflow-artifacts:")
    assert model["artifact_uri"].startswith("mlflow-artifacts:/"), model["artifact_uri"]
    for relative, content in files.items():
        httpx.put(f"{mlflow}/api/2.0/mlflow-artifacts/artifacts{root}/{relative}", content=content).raise_for_status()
    api(mlflow, "registered-models/create", {"name": name})
    return api(mlflow, "model-versions/create", {"name": name, "source": f"models:/{model['model_id']}",
                                                 "model_id": model["model_id"], "run_id": "run-7"}
               )["model_version"]["version"]


def test_a_version_is_downloaded_whole_through_the_artifact_proxy(mlflow, tmp_path):
    files = {"MLmodel": b"flavors: {}\n", "model.skops": bytes(range(256)) * 40, "extra/nested/notes.txt": b"n"}
    version = logged_model(mlflow, "iris-proxied", files)
    destination = tmp_path / "serving" / "v1"

    assert MlflowHook().download_version("iris-proxied", version, destination) == destination
    assert {str(p.relative_to(destination)): p.read_bytes() for p in destination.rglob("*") if p.is_file()} == {
        **files, "registry.json": json.dumps({"name": "iris-proxied", "version": version, "run_id": "run-7",
                                              "model_uri": f"models:/iris-proxied/{version}"}).encode()}
    assert [p.name for p in destination.parent.iterdir()] == ["v1"]  # no staging folder left behind
    # What mlserving reads to name the version it serves
    assert json.loads((destination / "registry.json").read_text())["version"] == version

    # A directory that already holds the version is kept as it is (the deploy serves what is there).
    (destination / "model.skops").write_bytes(b"kept")
    assert MlflowHook().download_version("iris-proxied", version, destination) == destination
    assert (destination / "model.skops").read_bytes() == b"kept"


def test_a_version_without_mlmodel_is_refused_and_the_served_copy_kept(mlflow, tmp_path):
    version = logged_model(mlflow, "iris-no-mlmodel", {"model.skops": b"x"})
    destination = tmp_path / "v1"
    destination.mkdir()
    (destination / "MLmodel").write_text("the copy being served")
    with pytest.raises(MlflowError, match=f"iris-no-mlmodel v{version} has no MLmodel at mlflow-artifacts:/"):
        MlflowHook().download_version("iris-no-mlmodel", version, destination)
    assert [p.name for p in destination.iterdir()] == ["MLmodel"]
    assert (destination / "MLmodel").read_text() == "the copy being served"
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_files_in_a_store_the_server_does_not_proxy_are_left_to_an_mlflow_client(mlflow, tmp_path):
    api(mlflow, "registered-models/create", {"name": "iris-in-s3"})
    api(mlflow, "model-versions/create", {"name": "iris-in-s3", "source": "s3://mlflow/3/model", "run_id": "r"})
    assert MlflowHook().download_version("iris-in-s3", "1", tmp_path / "v1") is None
    assert not list(tmp_path.iterdir())


def test_a_version_that_does_not_exist_is_named_and_nothing_is_written(mlflow, tmp_path):
    with pytest.raises(MlflowError, match=f"MLflow at {mlflow} refused iris-unknown v1: HTTP 404"):
        MlflowHook().download_version("iris-unknown", "1", tmp_path / "v1")
    assert not list(tmp_path.iterdir())


class _ListsAnEscape(BaseHTTPRequestHandler):
    """A tracking server whose artifact listing names a file outside the folder, as a compromised or broken
    server could: MLflow's answers for the two calls (model-versions/get; the mlflow-artifacts listing,
    mlflow/server/handlers.py `_list_artifacts_mlflow_artifacts`), anything else 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/api/2.0/mlflow/model-versions/get"):
            body = {"model_version": {"name": "iris-escape", "version": "1", "run_id": "r",
                                      "source": "mlflow-artifacts:/1/models/m-1/artifacts"}}
        elif self.path.startswith("/api/2.0/mlflow-artifacts/artifacts?"):
            body = {"files": [{"path": "MLmodel", "is_dir": False, "file_size": 3},
                              {"path": "../../escaped", "is_dir": False, "file_size": 3}]}
        else:
            self.send_error(404)
            return
        content = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass


def test_an_artifact_listing_that_leads_out_of_the_folder_is_refused_and_nothing_written(monkeypatch, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ListsAnEscape)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connect(monkeypatch, mlflow_default=f"http://127.0.0.1:{server.server_port}")
        destination = tmp_path / "serving" / "v1"
        with pytest.raises(MlflowError, match="failed \\(the files of iris-escape v1 at mlflow-artifacts:/1/models/"
                                              "m-1/artifacts\\): INVALID_PARAMETER_VALUE: Invalid path"):
            MlflowHook().download_version("iris-escape", "1", destination)
        assert [p.name for p in tmp_path.rglob("*")] == ["serving"]  # no staging folder, nothing escaped
    finally:
        server.shutdown()
        server.server_close()
