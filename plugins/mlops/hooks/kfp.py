"""KfpHook: the Kubeflow Pipelines v2beta1 REST API over plain HTTP (the kfp SDK cannot live in the
Airflow environment: it pins an older kubernetes client than the cncf-kubernetes provider).

Connection `kfp_default` (type http): host = the API endpoint (e.g. http://ml-pipeline.kubeflow:8888),
password = a bearer token, or extra {"token_path": "/var/run/secrets/kfp/token"} for a projected
service-account token (re-read on every request, as it rotates), extra {"namespace": ...} for
multi-user installations and {"ui_url": ...} for task links.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from airflow.sdk import BaseHook

API = "/apis/v2beta1"
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


class KfpError(RuntimeError):
    """The KFP API refused a request or could not be reached; the message says which and why."""


def load_pipeline_package(path: str | Path) -> dict:
    """A compiled pipeline YAML as the API's `pipeline_spec`: the spec alone, or with its platform spec
    (kfp-kubernetes volume mounts, secrets) as {"pipeline_spec": ..., "platform_spec": ...}."""
    import yaml

    try:
        docs = [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]
    except (OSError, yaml.YAMLError) as exc:
        raise KfpError(f"cannot read the compiled pipeline {path}: {exc}") from None
    if not docs or "root" not in docs[0]:
        raise KfpError(f"{path} is not a compiled KFP pipeline (no root component)")
    platform: dict = {}
    for doc in docs[1:]:
        platform.update(doc)
    return {"pipeline_spec": docs[0], "platform_spec": platform} if platform else docs[0]


class KfpHook(BaseHook):
    conn_name_attr = "kfp_conn_id"
    default_conn_name = "kfp_default"
    conn_type = "http"
    hook_name = "Kubeflow Pipelines"

    def __init__(self, kfp_conn_id: str = default_conn_name, *, host: str | None = None, token: str | None = None,
                 token_path: str | None = None, namespace: str | None = None, ui_url: str | None = None,
                 retries: int = 3, backoff_seconds: float = 1.0, timeout_seconds: float = 30.0):
        super().__init__()
        self.kfp_conn_id = kfp_conn_id
        self._host, self._token, self._token_path = host, token, token_path
        self._namespace, self._ui_url = namespace, ui_url
        self.retries, self.backoff_seconds, self.timeout_seconds = retries, backoff_seconds, timeout_seconds
        self._resolved = host is not None

    def _resolve(self) -> None:
        if self._resolved:
            return
        conn = self.get_connection(self.kfp_conn_id)
        extra = conn.extra_dejson
        scheme = conn.schema or "http"
        self._host = conn.host if "://" in (conn.host or "") else f"{scheme}://{conn.host}"
        if conn.port:
            self._host = f"{self._host}:{conn.port}"
        self._token = self._token or conn.password or None
        self._token_path = self._token_path or extra.get("token_path")
        self._namespace = self._namespace or extra.get("namespace")
        self._ui_url = self._ui_url or extra.get("ui_url")
        self._resolved = True

    @property
    def host(self) -> str:
        self._resolve()
        return self._host.rstrip("/")

    @property
    def namespace(self) -> str | None:
        self._resolve()
        return self._namespace

    def run_url(self, run_id: str) -> str:
        """The run in the KFP UI."""
        self._resolve()
        return f"{(self._ui_url or self.host).rstrip('/')}/#/runs/details/{run_id}"

    def _headers(self) -> dict:
        self._resolve()
        token = self._token
        if self._token_path:
            try:
                token = Path(self._token_path).read_text().strip()
            except OSError as exc:
                raise KfpError(f"cannot read the KFP token file {self._token_path}: {exc}") from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, *, params: Mapping | None = None, body: Mapping | None = None) -> dict:
        """One API call; connection failures and 5xx are retried with backoff, 4xx fail at once."""
        url = f"{self.host}{API}{path}"
        last = ""
        for attempt in range(1, self.retries + 1):
            try:
                response = httpx.request(method, url, params=params, json=body, headers=self._headers(),
                                         timeout=self.timeout_seconds)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return response.json() if response.content else {}
                last = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code < 500:
                    raise KfpError(f"KFP API {method} {path} refused: {last}")
            if attempt < self.retries:
                self.log.warning("KFP API %s %s failed (attempt %d/%d): %s", method, path, attempt, self.retries, last)
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise KfpError(f"KFP API at {self.host} unreachable after {self.retries} attempts ({method} {path}): {last}")

    # -- the calls the operator makes ------------------------------------------------------------
    def healthz(self) -> dict:
        return self.request("GET", "/healthz")

    def get_or_create_experiment(self, name: str, description: str = "") -> str:
        predicate = {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]}
        params = {"filter": json.dumps(predicate), "page_size": 1}
        if self.namespace:
            params["namespace"] = self.namespace
        found = self.request("GET", "/experiments", params=params).get("experiments") or []
        if found:
            return found[0]["experiment_id"]
        body = {"display_name": name, "description": description}
        if self.namespace:
            body["namespace"] = self.namespace
        return self.request("POST", "/experiments", body=body)["experiment_id"]

    def create_run(self, experiment_id: str, display_name: str, pipeline_spec: dict, parameters: Mapping,
                   service_account: str | None = None, description: str = "") -> dict:
        body = {"experiment_id": experiment_id, "display_name": display_name, "description": description,
                "pipeline_spec": pipeline_spec, "runtime_config": {"parameters": dict(parameters)}}
        if service_account:
            body["service_account"] = service_account
        return self.request("POST", "/runs", body=body)

    def get_run(self, run_id: str) -> dict:
        return self.request("GET", f"/runs/{run_id}")

    def terminate_run(self, run_id: str) -> None:
        self.request("POST", f"/runs/{run_id}:terminate")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return body.get("message") or body.get("error") or json.dumps(body)[:500]


def run_error(run: dict) -> str:
    """The run's own reason for failing: its error, else the first failed task's, else its state."""
    if (run.get("error") or {}).get("message"):
        return run["error"]["message"]
    for task in (run.get("run_details") or {}).get("task_details") or []:
        if task.get("state") == "FAILED" and (task.get("error") or {}).get("message"):
            return f"task {task.get('display_name')}: {task['error']['message']}"
    return f"run ended {run.get('state')}"
