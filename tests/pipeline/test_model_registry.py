"""The registry through MLflow's client (mlpipeline.model_registry) against real `mlflow server`s: one that
serves the artifacts itself, as the cluster's does, and one that hands clients a `file://` root. What it
writes is read back with MLflow's client directly, what it reads is compared with what MLflow reads; the
client's transport settings (auth, retries) are checked against a scripted server. Behind MLflow's basic-auth
app: test_mlflow_client_auth.py."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.exceptions
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlpipeline import dataset
from mlpipeline.errors import PipelineError
from mlpipeline.model_registry import REFERENCE_ARTIFACT, ChampionMoved, ModelVersion, Registry
from mlpipeline.training import model_logging_kwargs, write_prediction_buckets
from tests import support
from tests.support import EXAMPLE_DATASET

from .helpers import run_cli

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module", params=["proxied", "direct"])
def server(request, tmp_path_factory):
    with support.mlflow_server(tmp_path_factory.mktemp(request.param),
                               proxy_artifacts=request.param == "proxied") as uri:
        yield uri


@pytest.fixture
def client(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    with _use_tracking_uri(server):
        yield MlflowClient(server)


EXAMPLE = dataset.load(EXAMPLE_DATASET)


def log_model(seed: int = 0, prediction_edges: list[float] | None = None) -> dict:
    """A model and its reference sample, logged as the train stage logs them (with a regressor's prediction
    histogram edges beside the model when given)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(120, 4)) + [5.8, 3.0, 3.7, 1.2], columns=FEATURES)
    labels = np.where(frame["petal_length"] > 3.7, "virginica", "setosa")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    mlflow.set_experiment(f"registry-test-{uuid.uuid4().hex[:6]}")
    with mlflow.start_run() as run:
        reference = frame.sample(30, random_state=seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
            extra = [str(write_prediction_buckets(Path(tmp), prediction_edges, EXAMPLE))] if prediction_edges else None
            info = mlflow.sklearn.log_model(model, name="model", extra_files=extra,
                                            **model_logging_kwargs(model, frame, EXAMPLE))
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "model": model, "frame": frame,
            "reference": reference}


def registered(model_name: str, seed: int = 0) -> tuple[Registry, object, dict]:
    logged = log_model(seed)
    registry = Registry(model_name)
    version = registry.create_version(logged["model_uri"], logged["run_id"], {"run_key": f"key-{seed}"})
    return registry, version, logged


def test_a_version_registered_reads_back_through_mlflows_client(client, model_name):
    registry, version, logged = registered(model_name)
    registry.set_challenger(version)
    theirs = client.get_model_version(model_name, version.version)
    assert (theirs.status, theirs.run_id, theirs.source) == ("READY", logged["run_id"], logged["model_uri"])
    assert theirs.tags == {"run_key": "key-0"} and theirs.aliases == ["challenger"]
    assert registry.version_for_run_key("key-0") == version and registry.version_for_run_key("key-9") is None
    assert registry.alias("challenger") == version and registry.champion() is None


def test_the_champion_loads_and_predicts_like_the_logged_model(client, model_name):
    registry, version, logged = registered(model_name)
    loaded = registry.load_version(version)
    assert loaded.predict(logged["frame"]).tolist() == logged["model"].predict(logged["frame"]).tolist()
    pd.testing.assert_frame_equal(registry.reference_sample(version), logged["reference"].reset_index(drop=True))


def test_prediction_edges_are_the_versions_own_and_none_only_when_it_has_none(client, model_name, monkeypatch):
    registry, plain, _ = registered(model_name)
    with_edges = registry.create_version(*[log_model(1, [0.5, 1.5, 2.5])[k] for k in ("model_uri", "run_id")],
                                         {"run_key": "key-1"})
    assert registry.prediction_edges(with_edges) == (0.5, 1.5, 2.5)
    assert registry.prediction_edges(plain) is None
    # a registry that cannot be read is an error, never "no edges"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(mlflow.exceptions.MlflowException, match="Connection refused"):
        Registry(model_name, f"http://127.0.0.1:{support.free_port()}").prediction_edges(with_edges)


def test_the_downloaded_folder_is_what_mlflow_downloads(client, model_name, tmp_path):
    registry, version, _ = registered(model_name)
    ours = registry.download(version, tmp_path / "ours")
    theirs = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version.version}",
                                                      dst_path=str(tmp_path / "theirs")))

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    # MLflow's download of a models:/ URI adds registered_model_meta; through the proxy it is not there.
    expected = {k: v for k, v in files(theirs).items() if k != "registered_model_meta"}
    got = {k: v for k, v in files(ours).items() if k != "registered_model_meta"}
    assert json.loads(got.pop("registry.json")) == {
        "name": model_name, "version": version.version, "run_id": version.run_id,
        "model_uri": f"models:/{model_name}/{version.version}"}
    assert got == expected and "MLmodel" in got


def test_the_champion_moves_and_its_history_is_recorded(client, model_name):
    registry, first, _ = registered(model_name, 0)
    second = registry.create_version(*[log_model(1)[k] for k in ("model_uri", "run_id")], {"run_key": "key-1"})
    moves = [registry.move_champion(first, "promote", "first", {"airflow_run_id": "r1", "empty": ""}, expected=None),
             registry.move_champion(second, "promote", "better", {}, expected=first.version),
             registry.move_champion(first, "rollback", "worse live", {}, expected=second.version)]
    assert [m["previous_version"] for m in moves] == [None, first.version, second.version]
    assert client.get_model_version_by_alias(model_name, "champion").version == first.version
    tags = client.get_model_version(model_name, second.version).tags
    assert int(tags["champion_since_ms"]) == moves[1]["at_ms"] and int(tags["champion_until_ms"]) == moves[2]["at_ms"]
    runs = client.search_runs([client.get_experiment_by_name(f"{model_name}.promotions").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [(r.info.status, r.info.run_name, r.data.tags["event"]) for r in runs] == [
        ("FINISHED", f"promote v{first.version}", "promote"), ("FINISHED", f"promote v{second.version}", "promote"),
        ("FINISHED", f"rollback v{first.version}", "rollback")]
    assert runs[0].data.tags["airflow_run_id"] == "r1" and "empty" not in runs[0].data.tags
    history = registry.champion_history()
    assert [(h["event"], h["version"], h["reason"]) for h in history] == [
        ("promote", first.version, "first"), ("promote", second.version, "better"),
        ("rollback", first.version, "worse live")]
    at = [m["at_ms"] for m in moves]
    assert [registry.champion_at(t) for t in (at[0] - 1, at[0], at[1], at[2] + 1)] == [
        None, first.version, second.version, first.version]


def test_bad_input_gives_one_clear_line_and_changes_nothing(client, model_name, monkeypatch):
    registry, version, _ = registered(model_name)
    with pytest.raises(PipelineError, match=f"^{model_name} has no version '99'$"):
        registry.version("99")
    with pytest.raises(PipelineError, match="cannot use MLflow tracking URI 'sqlite:///x.db': the registry is "
                                            "reached through a tracking server"):
        Registry(model_name, "sqlite:///x.db")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # MLflow's own setting, honoured as it is
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    down = f"http://127.0.0.1:{support.free_port()}"
    with pytest.raises(PipelineError, match=f"^MLflow registry error reading {model_name}@champion: API request to "
                                            f"{down}/api/2.0/mlflow/registered-models/alias failed .*refused"):
        Registry(model_name, down).champion()
    assert [v.version for v in client.search_model_versions(f"name = '{model_name}'")] == [version.version]
    assert client.get_registered_model(model_name).aliases == {}


def test_mlflow_is_imported_only_by_a_stage_that_uses_the_registry(server, model_name):
    """Importing MLflow costs a stage about a second: the modules import it when a Registry is made, and the
    CLI's error path does not import it to check an error that cannot be MLflow's."""
    script = ("import sys; from mlpipeline import cli, model_registry; "
              "imported = lambda: sorted(m for m in ('mlflow', 'pandas', 'sklearn') if m in sys.modules); "
              "before = imported(); "
              "line = cli._external_failure(OSError(28, 'No space left on device', '/volume/x')); "
              "after_error = imported(); "
              f"r = model_registry.Registry({model_name!r}); r.champion(); r.champion_history(); "
              "print(before, after_error, line, 'mlflow' in sys.modules, sep='|')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_TRACKING_URI": server})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("|") == ["[]", "[]", "No space left on device: /volume/x", "True"]


def test_mlflows_failures_are_one_line_in_the_cli_with_what_went_wrong(monkeypatch):
    """A stage's one error line keeps MLflow's reason: its exceptions can run to several lines, and its artifact
    repositories let `requests`' HTTP errors through (the server was reached: not "cannot reach")."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import HTTPError

    from mlpipeline import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    several = MlflowException("The following failures occurred while downloading one or more artifacts from s:\n"
                              "##### File MLmodel #####\n403 Client Error: FORBIDDEN")
    assert cli._external_failure(several) == ("MLflow at http://mlflow:5000: The following failures occurred while "
                                              "downloading one or more artifacts from s: ##### File MLmodel ##### "
                                              "403 Client Error: FORBIDDEN")
    assert cli._external_failure(HTTPError("404 Client Error: Not Found for url: u")) == (
        "MLflow at http://mlflow:5000: HTTPError: 404 Client Error: Not Found for url: u")
    assert len(cli._external_failure(MlflowException("x" * 5000))) < 1100


# -- MLflow's client's transport, against a scripted server ----------------------------------------------

@contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]):
    """A threaded HTTP server on a free loopback port, answering with `handler`; its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()


@contextmanager
def scripted(answers: list[tuple]):
    """An HTTP server answering each request with the next (status, JSON body[, headers]); it records the
    requests (path, Authorization header, when)."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                         "at": time.monotonic()})
            status, body, *headers = answers.pop(0)
            content = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers[0] if headers else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args):
            pass

    with http_server(Handler) as url:
        yield url, seen


UNAVAILABLE = (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"})
ALIAS = (200, {"model_version": {"name": "m", "version": "3", "run_id": "r", "source": "s", "status": "READY"}})


@pytest.fixture
def no_backoff(monkeypatch):
    """MLflow's client settings for a quick test: retries at once; no login unless a test sets one."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_transient_answers_are_retried_with_mlflows_settings(monkeypatch, no_backoff):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    with scripted([UNAVAILABLE, UNAVAILABLE, ALIAS]) as (uri, seen):
        assert Registry("m", uri).champion().version == "3"
    assert [s["authorization"] for s in seen] == ["Bearer secret-token"] * 3
    assert seen[0]["path"] == "/api/2.0/mlflow/registered-models/alias?name=m&alias=champion"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    with scripted([UNAVAILABLE, UNAVAILABLE, ALIAS]) as (uri, seen), \
            pytest.raises(PipelineError, match="^MLflow registry error reading m@champion: .*too many 503 error"):
        Registry("m", uri).champion()
    assert len(seen) == 2


def test_a_retry_waits_as_long_as_the_servers_retry_after_says(monkeypatch, no_backoff):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    with scripted([(*UNAVAILABLE, {"Retry-After": "2"}), ALIAS]) as (uri, seen):
        assert Registry("m", uri).champion().version == "3"
    assert seen[1]["at"] - seen[0]["at"] >= 1.9


def test_a_missing_version_is_not_retried_and_a_login_beats_a_token(monkeypatch, no_backoff):
    """With both set, MLflow's client sends the user and password (Basic), not the token."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "a-token-mlflow-does-not-send")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    missing = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=m, version=7) not found"})
    with scripted([missing, ALIAS]) as (uri, seen), pytest.raises(PipelineError, match="^m has no version '7'$"):
        Registry("m", uri).version("7")
    assert [s["authorization"] for s in seen] == ["Basic YWRhOnB3"]  # base64 of ada:pw


def test_a_404_page_that_is_not_mlflows_answer_is_not_taken_for_no_champion(no_backoff):
    """Only MLflow's own "does not exist" means no champion (which would retrain by definition): a proxy's
    404 page, a tracking URI with a wrong path, is an error."""
    with scripted([(404, {"detail": "Not Found"})]) as (uri, _), \
            pytest.raises(PipelineError, match="MLflow registry error reading m@champion"):
        Registry("m", uri).champion()


def test_a_listing_that_leads_out_of_the_folder_writes_nothing(tmp_path, no_backoff):
    """The artifact proxy lists a folder by name: MLflow's client refuses a name that leads out of it, and the
    download leaves nothing behind."""
    with scripted([(200, {"files": [{"path": "MLmodel", "is_dir": False},
                                    {"path": "../escaped", "is_dir": True}]})]) as (uri, seen):
        version = ModelVersion("1", "r", "mlflow-artifacts:/1/models/m-1/artifacts", "READY")
        with pytest.raises(PipelineError, match="^cannot download m v1 from mlflow-artifacts:/1/models/m-1/artifacts: "
                                                "Invalid path$"):
            Registry("m", uri).download(version, tmp_path / "served" / "v1")
    assert seen[0]["path"].startswith("/api/2.0/mlflow-artifacts/artifacts?path=1%2Fmodels%2Fm-1%2Fartifacts")
    assert support.tree_snapshot(tmp_path) == {} and not (tmp_path / "served" / "escaped").exists()


def test_a_file_that_fails_to_download_is_named_in_one_line_and_nothing_is_kept(tmp_path, no_backoff):
    """MLflow reports a download's failures file by file on lines of their own, after a first line that names
    only the store: the one line keeps them."""
    root = "/api/2.0/mlflow-artifacts/artifacts"
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the folder lists one file, which is not there
            seen.append(self.path)
            if self.path.startswith(f"{root}?"):
                support.send_json(self, 200, {"files": [{"path": "MLmodel", "is_dir": False, "file_size": 10}]})
            else:
                support.send_json(self, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "gone"})

        def log_message(self, *args):
            pass

    with http_server(Handler) as uri:
        version = ModelVersion("1", "r", "mlflow-artifacts:/1/models/m-1/artifacts", "READY")
        with pytest.raises(PipelineError) as failed:
            Registry("m", uri).download(version, tmp_path / "served" / "v1")
    message = str(failed.value)
    assert "\n" not in message and message.startswith("cannot download m v1 from mlflow-artifacts:/1/models/m-1/")
    assert "File MLmodel" in message and "404" in message
    assert f"{root}/1/models/m-1/artifacts/MLmodel" in seen
    assert support.tree_snapshot(tmp_path) == {}


class RunsACommand:
    """Unpickling it runs a shell command: what a pickle or cloudpickle model file can do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def skops_calling_system(command: str) -> bytes:
    """A skops archive whose one node constructs `posix.system(command)` (skops's ConstructorFromReduceNode):
    loaded with that type trusted, it runs the command."""
    import io
    import zipfile

    def text(value: str, node_id: int) -> dict:
        return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(value),
                "is_json": True, "__id__": node_id}

    schema = {"__class__": "system", "__module__": "posix", "__loader__": "ConstructorFromReduceNode",
              "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                          "content": [text(command, 2)], "__id__": 1},
              "__id__": 0, "protocol": 2, "_skops_version": "0.16.0"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def hostile_version(client, model_name: str, tmp_path: Path, kind: str, marker: Path):
    """A version registered as anyone who can write to the registry could: a copy of a real logged model
    whose MLmodel and model file were replaced."""
    import yaml

    logged = log_model()
    folder = Path(mlflow.artifacts.download_artifacts(logged["model_uri"], dst_path=str(tmp_path / "real")))
    document = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = document["flavors"]["sklearn"]
    (folder / flavor["pickled_model"]).unlink()
    if kind == "skops trusting os.system":
        flavor.update(pickled_model="model.skops", skops_trusted_types=["posix.system"])
        (folder / "model.skops").write_bytes(skops_calling_system(f"touch {marker}"))
    else:
        import cloudpickle

        flavor.update(pickled_model="model.pkl", serialization_format=kind)
        flavor.pop("skops_trusted_types", None)
        (folder / "model.pkl").write_bytes(cloudpickle.dumps(RunsACommand(f"touch {marker}")))
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    with mlflow.start_run(run_id=logged["run_id"]):
        model = mlflow.initialize_logged_model(name="hostile")
        client.log_model_artifacts(model.model_id, str(folder))
    registry = Registry(model_name)
    return registry, registry.create_version(f"models:/{model.model_id}", logged["run_id"], {"run_key": "k"})


@pytest.mark.parametrize("kind, refusal", [
    ("skops trusting os.system", "asks skops to trust ['posix.system'], which is not allowed"),
    ("cloudpickle", "saved as 'cloudpickle'; only 'skops' is loaded"),
    ("pickle", "saved as 'pickle'; only 'skops' is loaded"),
])
def test_a_version_that_would_run_code_is_refused_and_runs_nothing(client, model_name, tmp_path, kind, refusal):
    marker = tmp_path / "ran"
    registry, version = hostile_version(client, model_name, tmp_path, kind, marker)
    with pytest.raises(PipelineError) as refused:
        registry.load_version(version)
    message = str(refused.value)
    assert message.startswith(f"refused to load {model_name} v{version.version}: ") and refusal in message
    assert "\n" not in message
    assert not marker.exists()


def test_the_skops_archive_here_does_run_its_command_when_its_type_is_trusted(tmp_path):
    """The refusal above is the policy's doing: the same archive runs the command once trusted."""
    import skops.io

    marker = tmp_path / "ran"
    skops.io.loads(skops_calling_system(f"touch {marker}"), trusted=["posix.system"])
    assert marker.exists()


def test_one_allow_list_and_one_loader_in_the_whole_code_base():
    """Every process that deserialises a model does it through mlpipeline.model_format: no other source file
    names a trusted type, calls skops's loader, MLflow's sklearn loader or unpickles."""
    from mlpipeline.model_format import TRUSTED_TYPES

    sources = [p for top in ("images", "plugins", "dags", "scripts", "benchmarks")
               for p in (support.REPO / top).rglob("*.py")]
    policy = support.REPO / "images/pipeline/src/mlpipeline/model_format.py"
    assert policy in sources
    patterns = [*TRUSTED_TYPES, "skops.io.load", "sio.load", "sklearn.load_model", "pickle.load", "joblib.load"]
    offenders = {(str(p.relative_to(support.REPO)), pattern) for p in sources if p != policy
                 for pattern in patterns if pattern in p.read_text()}
    assert offenders == set()


# -- moves as compare-and-swap, and creates that lose their answer ------------------------------------------

def test_a_rollback_after_another_runs_promotion_is_refused_and_changes_nothing(client, model_name):
    registry, first, _ = registered(model_name, 0)
    second = registry.create_version(*[log_model(1)[k] for k in ("model_uri", "run_id")], {"run_key": "key-1"})
    third = registry.create_version(*[log_model(2)[k] for k in ("model_uri", "run_id")], {"run_key": "key-2"})
    registry.move_champion(first, "promote", "first", {}, expected=None)
    registry.move_champion(second, "promote", "run A", {}, expected=first.version)
    registry.move_champion(third, "promote", "run B, meanwhile", {}, expected=second.version)
    history = registry.champion_history()

    # Run A's deploy of v2 failed: its rollback expects v2 to be the champion, which it no longer is.
    with pytest.raises(ChampionMoved, match=f"champion is v{third.version}, not v{second.version}"):
        registry.move_champion(first, "rollback", "deploy of v2 failed", {}, expected=second.version)
    assert client.get_model_version_by_alias(model_name, "champion").version == third.version
    assert registry.champion_history() == history


def test_the_rollback_stage_reports_a_superseded_rollback(client, model_name, server):
    registry, first, _ = registered(model_name, 0)
    second = registry.create_version(*[log_model(1)[k] for k in ("model_uri", "run_id")], {"run_key": "key-1"})
    registry.move_champion(first, "promote", "first", {}, expected=None)
    registry.move_champion(second, "promote", "second", {}, expected=first.version)
    arguments = ["rollback", "--model-name", model_name, "--to-version", first.version, "--reason", "failed",
                 "--tracking-uri", server]
    stale = run_cli(*arguments, "--from-version", "7").json
    assert stale["rolled_back"] is False and stale["outcome"] == "superseded" and "not v7" in stale["reason"]
    assert registry.champion().version == second.version
    done = run_cli(*arguments, "--from-version", second.version).json
    assert done["rolled_back"] is True and registry.champion().version == first.version
    assert "--from-version" in run_cli(*arguments, check=False).error_line


def test_a_move_whose_alias_write_fails_leaves_no_event_in_the_history(client, model_name, monkeypatch):
    registry, first, _ = registered(model_name, 0)
    registry.move_champion(first, "promote", "first", {}, expected=None)
    second = registry.create_version(*[log_model(1)[k] for k in ("model_uri", "run_id")], {"run_key": "key-1"})
    before = registry.champion_history()

    def unreachable(*args):
        raise PipelineError("MLflow did not answer")

    monkeypatch.setattr(registry, "_set_alias", unreachable)
    with pytest.raises(PipelineError):
        registry.move_champion(second, "promote", "better", {}, expected=first.version)
    assert registry.champion_history() == before
    assert client.get_model_version_by_alias(model_name, "champion").version == first.version


@contextmanager
def dropping_first_answer(upstream: str, path: str):
    """A proxy to a real server that forwards every request, but for the first one to `path` closes the
    connection after the server carried it out, before its answer reaches the client."""
    import urllib.request

    dropped = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            request = urllib.request.Request(f"{upstream}{self.path}", data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    status, content = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, content = exc.code, exc.read()
            if self.path.split("?")[0].endswith(path) and not dropped:
                dropped.append(self.path)
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PATCH = do_DELETE = _forward

        def log_message(self, *args):
            pass

    with http_server(Handler) as url:
        yield url, dropped


def test_a_create_whose_answer_is_dropped_registers_once(client, model_name, server):
    logged = log_model()
    with dropping_first_answer(server, "model-versions/create") as (proxy, dropped):
        registry = Registry(model_name, proxy)
        version = registry.create_version(logged["model_uri"], logged["run_id"], {"run_key": "key-dropped"})
    assert dropped, "the proxy dropped no answer"
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == [version.version] and version.tags["run_key"] == "key-dropped"
