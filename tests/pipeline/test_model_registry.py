"""The registry over MLflow's REST API (mlpipeline.model_registry, mlpipeline.mlflow_api) against real
`mlflow server`s: one that serves the artifacts itself, as the cluster's does, and one that hands
clients a `file://` root. What it writes is read back with MLflow's own client, what it reads is
compared with what MLflow's client reads."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlpipeline.errors import PipelineError
from mlpipeline.mlflow_api import MlflowApi
from mlpipeline.model_registry import REFERENCE_ARTIFACT, Registry
from mlpipeline.training import model_logging_kwargs
from tests import support

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


def log_model(seed: int = 0) -> dict:
    """A model and its reference sample, logged as the train stage logs them."""
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
        info = mlflow.sklearn.log_model(model, name="model", **model_logging_kwargs(model, frame))
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
    moves = [registry.move_champion(first, "promote", "first", {"airflow_run_id": "r1", "empty": ""}),
             registry.move_champion(second, "promote", "better", {}),
             registry.move_champion(first, "rollback", "worse live", {})]
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
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    down = f"http://127.0.0.1:{support.free_port()}"
    with pytest.raises(PipelineError, match=f"MLflow at {down} did not answer GET .* after 2 attempt"):
        Registry(model_name, down).champion()
    assert [v.version for v in client.search_model_versions(f"name = '{model_name}'")] == [version.version]
    assert client.get_registered_model(model_name).aliases == {}


def test_the_registry_calls_import_no_mlflow_pandas_or_sklearn(server, model_name):
    script = (f"import sys; from mlpipeline.model_registry import Registry; r = Registry({model_name!r}); "
              "r.champion(); r.champion_history(); "
              "print(sorted(m for m in ('mlflow', 'pandas', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_TRACKING_URI": server})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the transport, against a scripted server --------------------------------------------------------------

@contextmanager
def scripted(answers: list[tuple[int, dict]]):
    """An HTTP server answering each request with the next (status, JSON body); it records the requests."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            status, body = answers.pop(0)
            content = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", seen
    finally:
        httpd.shutdown()


UNAVAILABLE = (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"})
ALIAS = (200, {"model_version": {"name": "m", "version": "3", "run_id": "r", "source": "s", "status": "READY"}})


def test_transient_answers_are_retried_with_mlflows_settings(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    with scripted([UNAVAILABLE, UNAVAILABLE, ALIAS]) as (uri, seen):
        assert Registry("m", uri).champion().version == "3"
    assert [s["authorization"] for s in seen] == ["Bearer secret-token"] * 3
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    with scripted([UNAVAILABLE, UNAVAILABLE, ALIAS]) as (uri, seen), \
            pytest.raises(PipelineError, match="HTTP 503 TEMPORARILY_UNAVAILABLE: try later"):
        Registry("m", uri).champion()
    assert len(seen) == 2


def test_a_missing_version_is_not_retried_and_basic_auth_is_sent_without_a_token(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    missing = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=m, version=7) not found"})
    with scripted([missing, ALIAS]) as (uri, seen), pytest.raises(PipelineError, match="^m has no version '7'$"):
        Registry("m", uri).version("7")
    assert [s["authorization"] for s in seen] == ["Basic YWRhOnB3"]  # base64 of ada:pw


def test_a_listing_that_leads_out_of_the_folder_is_refused(tmp_path):
    with scripted([(200, {"files": [{"path": "MLmodel", "is_dir": False}, {"path": "..", "is_dir": True}]})]) \
            as (uri, _), pytest.raises(PipelineError, match="unsafe artifact name '..' under 1/models/m-1/artifacts"):
        list(MlflowApi(uri).artifact_files("1/models/m-1/artifacts"))
