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


class MlflowRunsLink(_RecordedLink):
    name = "MLflow runs"


class MlflowModelVersionLink(_RecordedLink):
    name = "MLflow model version"


class ServingEndpointLink(_RecordedLink):
    name = "Serving endpoint"


class KfpRunLink(_RecordedLink):
    name = "KFP run"


RESULT_LINKS = (MlflowRunLink(), MlflowRunsLink(), MlflowModelVersionLink(), ServingEndpointLink())
# MLflow 3's UI opens a page in its GenAI mode (traces, sessions, an assistant) unless the URL asks for the
# model-training one; a run's page is addressed under its experiment, as `#/runs/<id>` redirects there
# without the query.
MODEL_TRAINING = "workflowType=machine_learning"


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
        hook = MlflowHook(mlflow_conn_id)
        ui = hook.ui_url
    except ServiceError as exc:
        log.warning("no MLflow links: %s", exc)
        return links
    run_id = result.get("challenger_run_id") or result.get("run_id")
    if run_id:
        try:  # one try (MLflow's retries off), 5 s: a link never fails the task, nor holds it up
            experiment = hook.experiment_of(run_id, max_retries=0, timeout=5)
        except ServiceError as exc:  # no answer, or no such run (the hook's MlflowError)
            log.warning("no MLflow runs table link: %s", exc)
            experiment = None
        if experiment:
            links[MlflowRunLink.name] = f"{ui}/#/experiments/{experiment}/runs/{run_id}?{MODEL_TRAINING}"
            links[MlflowRunsLink.name] = f"{ui}/#/experiments/{experiment}/runs?{MODEL_TRAINING}"
        else:
            links[MlflowRunLink.name] = f"{ui}/#/runs/{run_id}"
    if result.get("model_name") and result.get("version"):
        links[MlflowModelVersionLink.name] = f"{ui}/#/models/{result['model_name']}/versions/{result['version']}"
    return links

