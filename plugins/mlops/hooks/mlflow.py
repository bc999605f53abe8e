"""MlflowHook: the MLflow tracking server over its REST API (the mlflow package stays out of the Airflow
environment): the champion, where a version's files are (and, when the server proxies them, the files
themselves), and the decision a training run recorded.

Connection `mlflow_default` (type http): host = the tracking server; login and password = an MLflow user
(HTTP Basic, what MLflow's basic-auth app checks), or a password alone = a bearer token. Where users'
browsers reach the MLflow UI (task links) is the option `[mlops] mlflow_ui_url`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from mlops.hooks.http import HttpServiceHook, ServiceError
from mlpipeline.mlflow_api import API, ARTIFACTS, artifact_files, logged_model_id, proxied_path


class MlflowError(ServiceError):
    """The tracking server refused a request or could not be reached."""


class MlflowHook(HttpServiceHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    hook_name = "MLflow"
    error_class = MlflowError

    @property
    def tracking_uri(self) -> str:
        return self.base_url

    @property
    def ui_url(self) -> str:
        from mlops.settings import mlops_settings

        return (mlops_settings().mlflow_ui_url or self.base_url).rstrip("/")

    def client_env(self) -> dict[str, str]:
        """What an MLflow client process (a local stage) needs to reach the same server, as the MLflow
        client's own environment variables."""
        token, login = self.token(), self.login()
        if login:
            return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": login,
                    "MLFLOW_TRACKING_PASSWORD": token or ""}
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, **({"MLFLOW_TRACKING_TOKEN": token} if token else {})}

    def training_decision(self, model_name: str, run_key: str):
        """The TrainingDecision the pipeline recorded on its training run for this run key, or None."""
        from mlpipeline.contracts import TrainingDecision

        found = self.json("GET", f"{API}/experiments/get-by-name", ok=(200, 404),
                          params={"experiment_name": model_name})
        if "experiment" not in found:
            return None
        experiment_id = found["experiment"]["experiment_id"]
        runs = self.json("POST", f"{API}/runs/search", body={
            "experiment_ids": [experiment_id], "max_results": 1, "order_by": ["attributes.start_time DESC"],
            "filter": f"tags.run_key = '{run_key}' and tags.stage = 'train'"}).get("runs") or []
        if not runs:
            return None
        return TrainingDecision.from_tags({t["key"]: t["value"] for t in runs[0]["data"].get("tags", [])})

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """All at once (one log-batch request, which the server writes in one transaction): a failure
        leaves none of them."""
        self.json("POST", f"{API}/runs/log-batch",
                  body={"run_id": run_id, "tags": [{"key": k, "value": v} for k, v in tags.items()]})

    def experiment_of(self, run_id: str, **request) -> str:
        """The id of the experiment a run is in."""
        return self.json("GET", f"{API}/runs/get", params={"run_id": run_id}, **request)["run"]["info"]["experiment_id"]

    def run_tags(self, run_id: str) -> dict[str, str]:
        run = self.json("GET", f"{API}/runs/get", params={"run_id": run_id})["run"]
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def set_model_version_tags(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        """MLflow's REST API sets a model version's tags one at a time (`model-versions/set-tag`)."""
        for key, value in tags.items():
            self.json("POST", f"{API}/model-versions/set-tag",
                      body={"name": model_name, "version": str(version), "key": key, "value": value})

    def model_version_tags(self, model_name: str, version: str) -> dict[str, str]:
        found = self.json("GET", f"{API}/model-versions/get", params={"name": model_name, "version": str(version)})
        return {t["key"]: t["value"] for t in found["model_version"].get("tags", [])}

    def champion(self, model_name: str) -> dict | None:
        """The version the `champion` alias points at: {"version", "run_id", "source"}, or None."""
        # 400 INVALID_PARAMETER_VALUE: no such alias; 404: no such model; 403 to a user who is not an admin
        # when there is no such model (MLflow 3.17's basic-auth: no model, no permission to check)
        path, params = f"{API}/registered-models/alias", {"name": model_name, "alias": "champion"}
        answer = self.request("GET", path, params=params)
        if answer.status_code == 403 and "registered_model" not in self.json(
                "GET", f"{API}/registered-models/get", ok=(200, 404), params={"name": model_name}):
            return None
        found = self._accepted("GET", path, answer, (200, 400, 404))
        if "model_version" not in found:
            return None
        version = found["model_version"]
        return {"version": version["version"], "run_id": version.get("run_id"), "source": version["source"]}

    def artifact_location(self, source: str) -> str:
        """Where a version's files are: a logged model's artifact URI (MLflow 3 `models:/m-...` sources),
        else the source itself."""
        model_id = logged_model_id(source)
        if model_id is None:
            return source
        return self.json("GET", f"{API}/logged-models/{model_id}")["model"]["info"]["artifact_uri"]

    def download_version(self, model_name: str, version: str, destination: Path) -> Path | None:
        """The version's model directory at `destination` (mlpipeline.served_model_dir: written whole, or
        left as it was), downloaded through the server's artifact proxy: no MLflow process to start. None
        when the server does not proxy the version's files (another store, which an MLflow client
        reaches: the pipeline's fetch-model stage)."""
        from mlpipeline.served_model_dir import holds_version, staged

        if holds_version(destination, model_name, version):
            return destination
        found = self.json("GET", f"{API}/model-versions/get",
                          params={"name": model_name, "version": str(version)})["model_version"]
        location = self.artifact_location(found["source"])
        root = proxied_path(location)
        if root is None:
            return None
        with staged(destination, model_name, version, found.get("run_id")) as staging:
            for relative in self._artifact_files(root):
                answer = self.request("GET", f"{ARTIFACTS}/{quote(f'{root}/{relative}')}")
                if answer.status_code != 200:
                    raise MlflowError(f"MLflow: {model_name} v{version}: {relative} could not be downloaded "
                                      f"(HTTP {answer.status_code})")
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                (staging / relative).write_bytes(answer.content)
            if not (staging / "MLmodel").is_file():
                raise MlflowError(f"MLflow: {model_name} v{version} has no MLmodel at {location}")
        return destination

    def _artifact_files(self, root: str):
        """Every file under `root`, as paths relative to it (mlpipeline.mlflow_api.artifact_files)."""
        return artifact_files(lambda folder: self.json("GET", ARTIFACTS, params={"path": folder}), root,
                              MlflowError)
