"""Extra links from stage results: which result fields make which link."""

from __future__ import annotations

from mlops.links import MlflowModelVersionLink, MlflowRunLink, ServingEndpointLink, result_links

UI = "http://mlflow.example:5000/"


def test_links_from_a_training_register_and_deploy_result():
    assert result_links({"challenger_run_id": "abc", "decision": "promote"}, UI) == {
        "MLflow run": "http://mlflow.example:5000/#/runs/abc"}
    assert result_links({"model_name": "iris", "version": "3", "run_id": "r1"}, UI) == {
        "MLflow run": "http://mlflow.example:5000/#/runs/r1",
        "MLflow model version": "http://mlflow.example:5000/#/models/iris/versions/3"}
    deploy = result_links({"model_name": "iris", "version": "3",
                           "endpoint": "http://127.0.0.1:8085/v2/models/iris/infer"}, UI)
    assert deploy["Serving endpoint"] == "http://127.0.0.1:8085/v2/models/iris"


def test_no_result_fields_no_links():
    assert result_links(None, UI) == {} and result_links({"rows": 10}, UI) == {}


def test_a_link_reads_what_the_operator_recorded():
    class Ran:
        link_urls = {"MLflow run": "u1", "Serving endpoint": "u2"}

    assert MlflowRunLink().get_link(Ran(), ti_key=None) == "u1"
    assert ServingEndpointLink().get_link(Ran(), ti_key=None) == "u2"
    assert MlflowModelVersionLink().get_link(Ran(), ti_key=None) == ""
    assert MlflowRunLink().get_link(object(), ti_key=None) == ""  # the task failed before recording any
