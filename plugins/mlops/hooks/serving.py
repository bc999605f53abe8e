"""ServingHook: the local model server (the serving image's `mlserving`), over its HTTP API."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
from airflow.sdk import BaseHook


class ServingError(RuntimeError):
    """The model server refused or failed; the message is its own reason."""


class ServingUnreachable(ServingError):
    """The model server did not answer at all (not running, killed): nothing is known about the model."""


class ServingHook(BaseHook):
    hook_name = "mlserving (local KServe ModelServer)"

    def __init__(self, base_url: str, model_name: str, timeout: float = 60.0):
        super().__init__()
        self.base_url, self.model_name, self.timeout = base_url.rstrip("/"), model_name, timeout

    @property
    def infer_url(self) -> str:
        """The model's v2 inference endpoint."""
        return f"{self.base_url}/v2/models/{self.model_name}/infer"

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return httpx.request(method, f"{self.base_url}{path}", timeout=kwargs.pop("timeout", self.timeout),
                                 **kwargs)
        except httpx.TransportError as exc:
            raise ServingUnreachable(f"the model server at {self.base_url} did not answer: {exc}") from None

    def _get(self, path: str) -> httpx.Response:
        return self._request("GET", path)

    def is_live(self) -> bool:
        try:
            return self._get("/v2/health/live").status_code == 200
        except ServingError:
            return False

    def start(self, serving_bin: Path, model_dir: Path, port: int, log_file: Path, wait: float = 120) -> int:
        """Start `mlserving` detached (it outlives the task, like a Deployment), wait until the model is ready."""
        executable = serving_bin / "mlserving"
        if not executable.exists():
            raise ServingError(f"the serving environment is missing: {executable} (run `make envs`)")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            proc = subprocess.Popen([str(executable), "--model-dir", str(model_dir), "--model-name", self.model_name,
                                     "--http-port", str(port), "--quiet-access-log"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=os.environ.copy())
        log_file.with_name("mlserving.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServingError(f"mlserving exited with {proc.returncode}: {log_file.read_text()[-1500:]}")
            if self.model_ready():
                return proc.pid
            time.sleep(0.5)
        raise ServingError(f"mlserving did not become ready within {wait} s; see {log_file}")

    def model_ready(self) -> bool:
        try:
            return self._get(f"/v2/models/{self.model_name}/ready").status_code == 200
        except ServingError:
            return False

    def metadata(self) -> dict:
        response = self._get(f"/v2/models/{self.model_name}")
        if response.status_code != 200:
            raise ServingError(f"metadata of {self.model_name}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def served_version(self) -> str | None:
        if not self.is_live():
            return None
        try:
            return self.metadata()["parameters"]["registry_version"]
        except ServingError:
            return None

    def load(self, model_dir: Path) -> dict:
        response = self._request("POST", f"/v2/repository/models/{self.model_name}/load",
                                 json={"parameters": {"model_dir": str(model_dir)}}, timeout=max(self.timeout, 300))
        if response.status_code != 200:
            raise ServingError(response.json().get("error", response.text[:300]))
        return response.json()

    def smoke_test(self, expected_version: str) -> dict:
        """A real v2 inference built from the model's signature (one row per named input)."""
        meta = self.metadata()
        body = {"inputs": [{"name": i["name"], "shape": [1], "datatype": "FP64", "data": [1.0]}
                           for i in meta["inputs"]]}
        response = self._request("POST", f"/v2/models/{self.model_name}/infer", json=body)
        if response.status_code != 200:
            raise ServingError(f"smoke test: HTTP {response.status_code} {response.text[:300]}")
        answer = response.json()
        predicted = answer["outputs"][0]["data"]
        if answer.get("model_version") != expected_version:
            raise ServingError(f"smoke test: served version {answer.get('model_version')}, expected {expected_version}")
        if len(predicted) != 1 or predicted[0] not in meta["parameters"]["classes"]:
            raise ServingError(f"smoke test: unexpected prediction {predicted}")
        return {"request": body, "prediction": predicted[0], "model_version": answer["model_version"]}
