"""KfpHook: the Kubeflow Pipelines v2beta1 REST API over plain HTTP (the kfp SDK cannot live in the
Airflow environment: it pins an older kubernetes client than the cncf-kubernetes provider).

Connection `kfp_default` (type http): host = the API endpoint (e.g. http://ml-pipeline.kubeflow:8888),
password = a bearer token, or extra {"token_path": "/var/run/secrets/kfp/token"} for a projected
service-account token (re-read on every request, as it rotates), extra {"namespace": ...} for
multi-user installations and {"ui_url": ...} for task links.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mlops.hooks.http import HttpServiceHook, ServiceError

API = "/apis/v2beta1"
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


class KfpError(ServiceError):
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


class KfpHook(HttpServiceHook):
    conn_name_attr = "kfp_conn_id"
    default_conn_name = "kfp_default"
    conn_type = "kfp"
    hook_name = "KFP API"
    error_class = KfpError
    test_path = f"{API}/healthz"  # the v2beta1 API's health (HealthzService: GET /apis/v2beta1/healthz)
    host_placeholder = "http://ml-pipeline.kubeflow:8888"
    extra_fields = {
        "namespace": ("Namespace", "the profile namespace of a multi-user installation", {"type": ["string", "null"]}),
        "ui_url": ("UI URL", "the KFP UI as users' browsers reach it, for task links", {"type": ["string", "null"]}),
        "token_path": ("Token file", "a projected service-account token, re-read on every request (it rotates)",
                       {"type": ["string", "null"]}),
    }

    def __init__(self, kfp_conn_id: str | None = None, *, host: str | None = None, token: str | None = None,
                 token_path: str | None = None, namespace: str | None = None, ui_url: str | None = None, **kwargs):
        super().__init__(kfp_conn_id, base_url=host, token=token, **kwargs)
        self._token_path, self._namespace, self._ui_url = token_path, namespace, ui_url

    @property
    def host(self) -> str:
        return self.base_url

    @property
    def namespace(self) -> str | None:
        return self._namespace or self.extra.get("namespace")

    def run_url(self, run_id: str) -> str:
        """The run in the KFP UI."""
        return f"{(self._ui_url or self.extra.get('ui_url') or self.host).rstrip('/')}/#/runs/details/{run_id}"

    def token(self) -> str | None:
        path = self._token_path or self.extra.get("token_path")
        if not path:
            return super().token()
        try:
            return Path(path).read_text().strip()  # a projected token rotates: read on every request
        except OSError as exc:
            raise KfpError(f"cannot read the KFP token file {path}: {exc}") from None

    def request_json(self, method: str, path: str, *, params: Mapping | None = None,
                     body: Mapping | None = None) -> dict:
        """One API call (retried per the policy); any answer but 200 raises with the API's own reason."""
        return self.json(method, f"{API}{path}", params=params, body=body)

    # -- the calls the operator makes ------------------------------------------------------------
    def healthz(self) -> dict:
        return self.request_json("GET", "/healthz")

    def get_or_create_experiment(self, name: str, description: str = "") -> str:
        predicate = {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]}
        params = {"filter": json.dumps(predicate), "page_size": 1}
        if self.namespace:
            params["namespace"] = self.namespace
        found = self.request_json("GET", "/experiments", params=params).get("experiments") or []
        if found:
            return found[0]["experiment_id"]
        body = {"display_name": name, "description": description}
        if self.namespace:
            body["namespace"] = self.namespace
        return self.request_json("POST", "/experiments", body=body)["experiment_id"]

    def create_run(self, experiment_id: str, display_name: str, pipeline_spec: dict, parameters: Mapping,
                   service_account: str | None = None, description: str = "") -> dict:
        body = {"experiment_id": experiment_id, "display_name": display_name, "description": description,
                "pipeline_spec": pipeline_spec, "runtime_config": {"parameters": dict(parameters)}}
        if service_account:
            body["service_account"] = service_account
        return self.request_json("POST", "/runs", body=body)

    def get_run(self, run_id: str) -> dict:
        return self.request_json("GET", f"/runs/{run_id}")

    def terminate_run(self, run_id: str) -> None:
        self.request_json("POST", f"/runs/{run_id}:terminate")


def run_error(run: dict) -> str:
    """The run's own reason for failing: its error, else the first failed task's, else its state."""
    if (run.get("error") or {}).get("message"):
        return run["error"]["message"]
    for task in (run.get("run_details") or {}).get("task_details") or []:
        if task.get("state") == "FAILED" and (task.get("error") or {}).get("message"):
            return f"task {task.get('display_name')}: {task['error']['message']}"
    return f"run ended {run.get('state')}"
