"""Extra links from task results: which result fields make which link, where the MLflow UI is."""

from __future__ import annotations

import pytest

from mlops.links import MlflowModelVersionLink, MlflowRunLink, ServingEndpointLink, result_links

from .conftest import connect


@pytest.fixture
def mlflow_ui(monkeypatch):
    connect(monkeypatch, mlflow_default="http://mlflow.mlflow.svc.cluster.local:5000")
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "http://mlflow.example:5000/")


def test_links_from_a_training_register_and_deploy_result(mlflow_ui):
    assert result_links({"challenger_run_id": "abc", "decision": "promote"}) == {
        "MLflow run": "http://mlflow.example:5000/#/runs/abc"}
    assert result_links({"model_name": "iris", "version": "3", "run_id": "r1"}) == {
        "MLflow run": "http://mlflow.example:5000/#/runs/r1",
        "MLflow model version": "http://mlflow.example:5000/#/models/iris/versions/3"}
    deploy = result_links({"model_name": "iris", "version": "3",
                           "endpoint": "http://127.0.0.1:8085/v2/models/iris/infer"})
    assert deploy["Serving endpoint"] == "http://127.0.0.1:8085/v2/models/iris"


def test_a_run_is_linked_in_its_experiment_and_with_its_runs_table_in_model_training_mode(monitoring):
    """Against a real MLflow server: the run's experiment is looked up, and both pages open in MLflow's
    model-training mode (its UI defaults to GenAI, and `#/runs/<id>` redirects without the query)."""
    import httpx

    api = f"{monitoring['mlflow']}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": "links-check"}).json()["experiment_id"]
    run = httpx.post(f"{api}/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
    assert result_links({"challenger_run_id": run}) == {
        "MLflow run": f"{monitoring['mlflow']}/#/experiments/{experiment}/runs/{run}?workflowType=machine_learning",
        "MLflow runs": f"{monitoring['mlflow']}/#/experiments/{experiment}/runs?workflowType=machine_learning"}
    # a run the server does not know: the redirecting link, no runs table, and no failure
    assert result_links({"run_id": "0" * 32}) == {"MLflow run": f"{monitoring['mlflow']}/#/runs/{'0' * 32}"}


def test_without_a_ui_setting_the_links_go_to_the_tracking_server(monkeypatch):
    connect(monkeypatch, mlflow_default="http://127.0.0.1:5000")
    assert result_links({"run_id": "r1"}) == {"MLflow run": "http://127.0.0.1:5000/#/runs/r1"}


def test_without_an_mlflow_connection_there_are_no_mlflow_links_and_no_failure(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    links = result_links({"run_id": "r1", "endpoint": "http://127.0.0.1:8085/v2/models/iris/infer"})
    assert links == {"Serving endpoint": "http://127.0.0.1:8085/v2/models/iris"}
    assert "no MLflow links: MLflow: Airflow connection 'mlflow_default' is not defined" in caplog.text


def test_no_result_fields_no_links(mlflow_ui):
    assert result_links(None) == {} and result_links({"rows": 10}) == {}


def test_a_link_reads_what_the_operator_recorded():
    class Ran:
        link_urls = {"MLflow run": "u1", "Serving endpoint": "u2"}

    assert MlflowRunLink().get_link(Ran(), ti_key=None) == "u1"
    assert ServingEndpointLink().get_link(Ran(), ti_key=None) == "u2"
    assert MlflowModelVersionLink().get_link(Ran(), ti_key=None) == ""
    assert MlflowRunLink().get_link(object(), ti_key=None) == ""  # the task failed before recording any


def test_the_demo_s_experiment_pages_are_looked_up_with_mlflow_s_client(monitoring):
    """scripts/ui_links.py: the model's runs table once its experiment exists, MLflow's experiments list
    until then, and when MLflow does not answer (at once: one try)."""
    import time

    import httpx

    from scripts.ui_links import experiment_links
    from tests import support

    mlflow = monitoring["mlflow"]
    experiment = httpx.post(f"{mlflow}/api/2.0/mlflow/experiments/create", json={"name": "iris-pages"}
                            ).json()["experiment_id"]
    assert experiment_links(mlflow, None, "iris-pages") == {
        "MLflow runs": f"{mlflow}/#/experiments/{experiment}/runs?workflowType=machine_learning",
        "MLflow promotions": f"{mlflow}/#/experiments"}
    down = f"http://127.0.0.1:{support.free_port()}"
    started = time.monotonic()
    assert experiment_links(down, ("pipeline", "pw"), "iris-pages") == dict.fromkeys(
        ("MLflow runs", "MLflow promotions"), f"{down}/#/experiments")
    assert time.monotonic() - started < 10
