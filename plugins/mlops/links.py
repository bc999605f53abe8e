"""Operator extra links: the MLflow run, the registry version and the serving endpoint a task produced.

Airflow 3 works links out on the worker when a task ends and stores them as XCom, so the UI shows
them without importing this code. Operators put the URLs in `self.link_urls` while they run (see
`result_links`); a task that produced none shows the link greyed out.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)


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


def result_links(result: dict | None, mlflow_conn_id: str = "mlflow_default") -> dict[str, str]:
    """The links a task's JSON result supports: a run id, a model name + version, a serving endpoint.
    The MLflow ones point at the UI (`[mlops] mlflow_ui_url`, else the connection's host); without
    either, they are left out (and said so in the log): a link never fails the task."""
    from mlops.hooks.http import ServiceError
    from mlops.hooks.mlflow import MlflowHook

    result = result or {}
    links = {}
    if result.get("endpoint"):
        links[ServingEndpointLink.name] = result["endpoint"].removesuffix("/infer")  # GET-able model metadata
    try:
        ui = MlflowHook(mlflow_conn_id).ui_url
    except ServiceError as exc:
        log.warning("no MLflow links: %s", exc)
        return links
    run_id = result.get("challenger_run_id") or result.get("run_id")
    if run_id:
        links[MlflowRunLink.name] = f"{ui}/#/runs/{run_id}"
    if result.get("model_name") and result.get("version"):
        links[MlflowModelVersionLink.name] = f"{ui}/#/models/{result['model_name']}/versions/{result['version']}"
    return links
