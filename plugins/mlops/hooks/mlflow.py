"""MlflowRestHook: the few MLflow tracking-server reads the Airflow side needs, over its REST API (the
mlflow package stays out of the Airflow environment)."""

from __future__ import annotations

import os

import httpx
from airflow.sdk import BaseHook


class MlflowError(RuntimeError):
    """The tracking server refused a request or could not be reached."""


class MlflowRestHook(BaseHook):
    hook_name = "MLflow tracking server (REST)"

    def __init__(self, tracking_uri: str, token: str | None = None, timeout_seconds: float = 30.0):
        super().__init__()
        self.tracking_uri = tracking_uri.rstrip("/")
        self.token = token if token is not None else os.environ.get("MLFLOW_TRACKING_TOKEN")
        self.timeout_seconds = timeout_seconds

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            return httpx.request(method, f"{self.tracking_uri}/api/2.0/mlflow{path}", headers=headers,
                                 timeout=self.timeout_seconds, **kwargs)
        except httpx.TransportError as exc:
            raise MlflowError(f"MLflow at {self.tracking_uri} unreachable: {exc}") from None

    def training_decision(self, model_name: str, run_key: str) -> dict | None:
        """The decision the training pipeline recorded on its challenger run for this run key, or None."""
        found = self._call("GET", "/experiments/get-by-name", params={"experiment_name": model_name})
        if found.status_code == 404:
            return None
        if found.status_code != 200:
            raise MlflowError(f"MLflow refused experiments/get-by-name: HTTP {found.status_code} {found.text[:300]}")
        experiment_id = found.json()["experiment"]["experiment_id"]
        search = self._call("POST", "/runs/search", json={
            "experiment_ids": [experiment_id], "max_results": 1, "order_by": ["attributes.start_time DESC"],
            "filter": f"tags.run_key = '{run_key}' and tags.stage = 'train'"})
        if search.status_code != 200:
            raise MlflowError(f"MLflow refused runs/search: HTTP {search.status_code} {search.text[:300]}")
        runs = search.json().get("runs") or []
        if not runs:
            return None
        run = runs[0]
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        if "decision" not in tags:
            return None
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        return {"run_key": run_key, "decision": tags["decision"], "reason": tags.get("decision_reason", ""),
                "challenger_run_id": run["info"]["run_id"], "challenger_model_uri": tags.get("model_uri"),
                "challenger_metrics": {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
                "champion_version": tags.get("compared_with_champion_version")}

    def champion(self, model_name: str) -> dict | None:
        """The version the `champion` alias points at: {"version", "run_id", "source"}, or None."""
        found = self._call("GET", "/registered-models/alias", params={"name": model_name, "alias": "champion"})
        if found.status_code in (400, 404):  # alias missing (INVALID_PARAMETER_VALUE) or model missing
            return None
        if found.status_code != 200:
            raise MlflowError(f"MLflow refused registered-models/alias: HTTP {found.status_code} {found.text[:300]}")
        version = found.json()["model_version"]
        return {"version": version["version"], "run_id": version.get("run_id"), "source": version["source"]}

    def artifact_location(self, source: str) -> str:
        """Where a version's files are: a logged model's artifact URI (MLflow 3 `models:/m-...` sources),
        else the source itself."""
        if not source.startswith("models:/m-"):
            return source
        model_id = source.removeprefix("models:/")
        found = self._call("GET", f"/logged-models/{model_id}")
        if found.status_code != 200:
            raise MlflowError(f"MLflow has no logged model {model_id}: HTTP {found.status_code} {found.text[:300]}")
        return found.json()["model"]["info"]["artifact_uri"]
