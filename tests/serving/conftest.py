"""Fixtures for the serving layer: real model directories (made by the pipeline environment),
the server in-process (FastAPI TestClient over KServe's app) and on a real port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests import support
from tests.reference import reference_file

REPO = Path(__file__).resolve().parents[2]
PIPELINE_PYTHON = support.PIPELINE_BIN / "python"
MODEL = "iris"
REPOSITORY_TOKEN = "test-repository-token-0123456789"


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models")
    subprocess.run([str(PIPELINE_PYTHON), str(Path(__file__).with_name("make_models.py")), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def served(model_dirs):
    """One in-process server per test session: KServe's FastAPI app is a module-level global."""
    from fastapi.testclient import TestClient

    from mlserving.server import create_app, make_server

    server, model, _ = make_server(MODEL, str(model_dirs / "good-v1"), http_port=0)
    client = TestClient(create_app(server, model), raise_server_exceptions=False)
    return client, model


@pytest.fixture
def client(served, model_dirs):
    client, model = served
    if model.active.version != "1":
        model.swap(model_dirs / "good-v1")
    return client


@pytest.fixture(scope="session")
def oip():
    spec = yaml.safe_load(reference_file("open-inference-protocol-rest-v2.yaml").read_text())
    from openapi_schema_validator import OAS30Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    registry = Registry().with_resource("spec", Resource.from_contents(spec, default_specification=DRAFT4))

    def check(schema_name: str, document: dict) -> None:
        schema = {"$ref": f"spec#/components/schemas/{schema_name}"}
        OAS30Validator(schema, registry=registry).validate(document)

    return check


def point(link: Path, target: Path) -> None:
    """Repoint a model link atomically, as the local deploy does before it asks for a load."""
    staged = link.with_name(f".{link.name}.new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


@pytest.fixture
def model_link(model_dirs, tmp_path) -> Path:
    """The served model's directory as the local deploy lays it out: a link to the version it serves."""
    link = tmp_path / "current"
    point(link, model_dirs / "good-v1")
    return link


class LiveServer:
    """`mlserving` as users start it, on a real port (its output in `log`), until stop()."""

    def __init__(self, model_dir: Path, log: Path, *args: str, repository_token: bool = True):
        self.log = log
        port = support.free_port()
        token_file = log.with_name("repository.token")
        token_file.write_text(REPOSITORY_TOKEN)
        if not repository_token:
            args = tuple(args) + ("--repository-token-file", "")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "mlserving"), "--model-dir", str(model_dir),
                                          "--model-name", MODEL, "--http-port", str(port), "--quiet-access-log",
                                          "--repository-token-file", str(token_file), *args],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.fixture
def live_server(model_link, tmp_path):
    """`mlserving` as users start it, on a real port, serving what `model_link` points at."""
    server = LiveServer(model_link, tmp_path / "server.log")
    yield server.url
    server.stop()


def pytest_terminal_summary(terminalreporter):
    """What the fast path's agreement test compared (test_agreement.py records it with record_property), in
    pytest's own summary: with or without -s, in `make test`'s output too."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        properties = dict(report.user_properties)
        if report.when == "call" and "requests_compared" in properties:
            terminalreporter.write_line(
                f"{report.nodeid}: the fast path and KServe's route compared on {properties['requests_compared']} "
                f"requests in {properties.get('agreement_seconds')} s ({properties.get('agreement_summary')})")
