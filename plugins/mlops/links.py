"""Operator extra links: the MLflow run, the registry version and the serving endpoint a task produced.

Airflow 3 works links out on the worker when a task ends and stores them as XCom, so the UI shows
them without importing this code. Operators put the URLs in `self.link_urls` while they run (see
`result_links`); a task that produced none shows the link greyed out.
"""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink


class _RecordedLink(BaseOperatorLink):
    name = ""

    def get_link(self, operator, *, ti_key) -> str:
        return (getattr(operator, "link_urls", None) or {}).get(self.name, "")


class MlflowRunLink(_RecordedLink):
    name = "MLflow run"


class MlflowModelVersionLink(_RecordedLink):
    name = "MLflow model version"


class ServingEndpointLink(_RecordedLink):
    name = "Serving endpoint"


class KfpRunLink(_RecordedLink):
    name = "KFP run"


RESULT_LINKS = (MlflowRunLink(), MlflowModelVersionLink(), ServingEndpointLink())


def result_links(result: dict | None, mlflow_ui: str) -> dict[str, str]:
    """The links a stage's JSON result supports: a run id, a model name + version, a serving endpoint."""
    result = result or {}
    ui = mlflow_ui.rstrip("/")
    links = {}
    run_id = result.get("challenger_run_id") or result.get("run_id")
    if run_id:
        links[MlflowRunLink.name] = f"{ui}/#/runs/{run_id}"
    if result.get("model_name") and result.get("version"):
        links[MlflowModelVersionLink.name] = f"{ui}/#/models/{result['model_name']}/versions/{result['version']}"
    if result.get("endpoint"):
        links[ServingEndpointLink.name] = result["endpoint"].removesuffix("/infer")  # GET-able model metadata
    return links
