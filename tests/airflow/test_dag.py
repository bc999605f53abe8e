"""DAG integrity: one DAG per dataset file, each with the designed shape and the file's settings; a broken
file becomes a DAG that says why without taking the others down; parsing imports nothing heavy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .dag_test import EXAMPLE_DATASET, dataset_file

IRIS = "continuous_training_iris"  # datasets/iris.yaml's DAG
# What the README's screenshots (docs/img/, `make screenshots`) were taken of: the DAG's tasks then.
SCREENSHOTS_MANIFEST = REPO / "docs" / "img" / "screenshots.json"

def parse_dags():
    """The DAGs as the DAG processor parses them (for the target and the dataset folder the environment
    names), keyed by DAG id; the DAG file itself must import."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def parse_dag(dag_id: str = IRIS):
    """One DAG as the DAG processor parses it: by default the example dataset file's."""
    return parse_dags()[dag_id]


@pytest.fixture(scope="module")
def dag():
    return parse_dag()


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def downstream(dag, task_id: str) -> set[str]:
    """Every task a run can reach from this one (not the task itself)."""
    return set(dag.get_task(task_id).get_flat_relative_ids(upstream=False))


def branch_answers(dag) -> dict[str, dict[str, str]]:
    """What each branch task of the DAG answers, by outcome: its callable called with the DAG's own op_kwargs
    and a result of each kind (decide_retraining, check_decision), or the approval's options (an answer
    follows the option's task)."""
    from mlops.operators.approval import APPROVE, REJECT

    from .test_decisions import HEALTHY, PARAMS, training

    def called(task_id: str, **inputs) -> str:
        task = dag.get_task(task_id)
        return task.python_callable(**{**task.op_kwargs, **inputs})

    approve = dag.get_task("training.approve_promotion").options_mapping
    return {
        "decide_retraining": {"retrain": called("decide_retraining", detect={"champion": None}, params=PARAMS),
                              "keep": called("decide_retraining", detect=HEALTHY, params=PARAMS)},
        "training.check_decision": {"promote": called("training.check_decision", decision=training("promote")),
                                    "keep": called("training.check_decision", decision=training("reject"))},
        "training.approve_promotion": {"approve": approve[APPROVE], "reject": approve[REJECT]},
    }


def test_every_branch_of_a_run_reaches_what_it_should_and_ends_in_the_report(dag):
    """Each answer a branch task can give is one of its own next tasks (Airflow skips the others), none of its
    next tasks is out of reach of every answer, and each branch leads where the loop says: retraining and an
    approved promotion to the deploy (and its rollback), every other answer straight to the report."""
    answers = branch_answers(dag)
    for branch, by_outcome in answers.items():
        assert set(by_outcome.values()) == dag.get_task(branch).downstream_task_ids, branch
    followed = {outcome: {answer} | downstream(dag, answer) for by_outcome in answers.values()
                for outcome, answer in by_outcome.items()}
    assert {"training.train", "training.register", "deploy", "roll_back_champion", "report"} <= followed["retrain"]
    assert {"training.register", "deploy", "roll_back_champion", "report"} <= followed["promote"] & followed["approve"]
    for outcome in ("keep", "reject"):
        assert followed[outcome] & {"training.register", "deploy"} == set(), outcome
        assert "report" in followed[outcome], outcome
    # Every task but the report leads to it, and it runs after whichever branch ran (the others are skipped).
    assert all("report" in downstream(dag, t) for t in dag.task_ids if t != "report")
    assert dag.get_task("report").trigger_rule == "none_failed_min_one_success"
    # The batch comes first: everything the run does follows from the sensor.
    assert downstream(dag, "wait_for_batch") == set(dag.task_ids) - {"wait_for_batch"}
    assert dag.schedule == "@daily"


def test_a_waiting_run_does_not_block_others_but_registry_moves_are_serial(dag):
    assert dag.max_active_runs > 1  # a run waiting hours for its batch holds no one up
    for task_id in ("training.register", "deploy"):
        assert dag.get_task(task_id).max_active_tis_per_dag == 1, task_id


def test_each_task_takes_its_upstream_s_result(dag):
    """XComArgs, not Jinja strings: the partition the sensor resolved, the run key split made."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    def reads(task_id, option):
        arg = dag.get_task(task_id).options[option]
        assert isinstance(arg, PlainXComArg), (task_id, option, arg)
        return arg.operator.task_id, arg.key

    assert dag.get_task("wait_for_batch").partition == "{{ params.partition or ds }}"
    assert reads("data.ingest", "partition") == ("wait_for_batch", "partition")
    assert reads("data.split", "partition") == ("data.ingest", "partition")
    assert reads("detect_degradation", "run_key") == ("data.split", "run_key")
    assert reads("training.register", "run_key") == ("training.train", "run_key")
    assert reads("training.register", "approved_by") == ("training.approve_promotion", "approved_by")
    assert reads("roll_back_champion", "to_version") == ("deploy", "rollback_to_version")
    assert reads("roll_back_champion", "from_version") == ("deploy", "rollback_from_version")
    assert not dag.render_template_as_native_obj
    param = dag.params.get_param("partition")
    assert param.value is None and "latest" in param.description


def test_a_failed_deploy_is_rolled_back_by_a_task_of_its_own(dag):
    roll_back = dag.get_task("roll_back_champion")
    assert roll_back.trigger_rule == "none_skipped" and roll_back.upstream_task_ids == {"deploy"}
    assert roll_back.stage == "rollback" and roll_back.options["data_root"] is None
    assert "roll_back_champion" in dag.get_task("report").upstream_task_ids  # a rolled-back canary is reported
    # none_skipped also lets a deploy that never ran (upstream_failed) by: without a plan it skips itself.
    assert (roll_back.only_with.operator.task_id, roll_back.only_with.key) == ("deploy", "rollback_reason")


def test_the_readme_screenshots_show_the_dag_as_it_is(dag):
    taken_of = json.loads(SCREENSHOTS_MANIFEST.read_text())
    now = {"dag_tasks": sorted(dag.task_ids), "params": sorted(dag.params)}
    assert taken_of == now, f"the README's screenshots show {taken_of}, the DAG has {now}: run `make screenshots`"


def test_params_are_typed_and_described(dag):
    for name in ("metric_threshold", "drift_limit", "force_retrain", "training_window", "partition"):
        param = dag.params.get_param(name)
        assert param.schema.get("type") and param.description, name
    assert "model_name" not in dag.params  # the dataset file's, not the trigger form's
    assert dag.doc_md and "Continuous training" in dag.doc_md


def test_the_trigger_form_refuses_what_a_run_cannot_do(dag):
    """Every Param is checked whole when the run is created: a partition must be a real date (or 'latest'), a
    number out of range is refused by name, and an empty live_drift_window is a value (off), not a gap."""
    from airflow.exceptions import ParamValidationError

    def refusal(name: str, value) -> str | None:
        try:
            dag.params.get_param(name).resolve(value)
        except ParamValidationError as exc:
            return str(exc)
        return None

    for partition in (None, "latest", "2026-11-02", "2024-02-29"):
        assert refusal("partition", partition) is None, partition
    for partition in ("2026-13-45", "2026-02-29", "yesterday", "LATEST", ""):
        assert "is not a 'date'" in (refusal("partition", partition) or "") or \
            "does not match" in (refusal("partition", partition) or ""), partition
    assert "greater than the maximum of 1" in refusal("drift_limit", 1.5)
    assert "greater than the maximum of 1" in refusal("metric_threshold", 1.5)
    assert refusal("live_drift_window", None) is None and refusal("live_drift_window", "") is None
    assert "does not match" in refusal("live_drift_window", "an hour")
    # The form clamps a number to a top-level minimum/maximum before anything is sent (1.5 became 1), and marks
    # a Param whose type has no "null" as required: neither may happen to these.
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        if schema.get("type") in ("number", "integer"):
            assert not {"minimum", "maximum"} & set(schema), name
    assert "null" in dag.params.get_param("live_drift_window").schema["type"]


def test_retries_back_off_and_alert(monkeypatch):
    """What production gets: the tests' own override ([mlops] task_retries = 0, conftest) removed, every task
    of the parsed DAG but the sensor retries as the option's default says, backing off; set, the option wins."""
    import dataclasses

    from mlops.notifications.alertmanager import AlertmanagerNotifier
    from mlops.notifications.pushgateway import FailureMetricNotifier
    from mlops.settings import MlopsSettings

    defaults = {f.name: f.default for f in dataclasses.fields(MlopsSettings)}
    monkeypatch.delenv("AIRFLOW__MLOPS__TASK_RETRIES", raising=False)
    monkeypatch.delenv("AIRFLOW__MLOPS__TASK_RETRY_DELAY_SECONDS", raising=False)
    dag = parse_dag()
    task = dag.get_task("data.ingest")
    assert defaults["task_retries"] > 0  # a transient failure is retried, not a failed run
    assert {t.retries for t in dag.tasks if t.task_id != "wait_for_batch"} == {defaults["task_retries"]}
    assert task.retry_delay.total_seconds() == defaults["task_retry_delay_seconds"] and task.retry_exponential_backoff
    monkeypatch.setenv("AIRFLOW__MLOPS__TASK_RETRIES", "5")
    assert parse_dag().get_task("data.ingest").retries == 5
    assert {type(n) for n in task.on_failure_callback} == {AlertmanagerNotifier, FailureMetricNotifier}
    [failure_metric] = [n for n in task.on_failure_callback if isinstance(n, FailureMetricNotifier)]
    assert failure_metric.model_name == "iris-classifier"  # the failure goes to the model's Pushgateway group
    assert [n.severity for n in task.on_retry_callback] == ["warning"]


def test_parsing_the_dag_folder_imports_nothing_heavy():
    # Also not Airflow's task supervisor: reading the settings asks nothing of a running Airflow.
    code = ("import sys; sys.path.insert(0, 'plugins'); import runpy; "
            "assert 'continuous_training_iris' in runpy.run_path('dags/continuous_training.py'); "
            "heavy = {'sklearn', 'mlflow', 'kfp', 'kserve', 'pandas', 'kubernetes'} & "
            "{m.split('.')[0] for m in sys.modules} | {'airflow.sdk.execution_time.supervisor'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "AIRFLOW__MLOPS__TARGET": "local"})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_wrong_target_fails_the_parse_with_its_reason(monkeypatch):
    """No silent fallback to `local`: the import error the Airflow UI shows names the option."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "moon")
    errors = DagBag(dag_folder=str(REPO / "dags")).import_errors
    [message] = errors.values()
    assert "[mlops] target must be one of local, kubernetes, got 'moon' (AIRFLOW__MLOPS__TARGET)" in message


def test_extra_links_survive_serialization(dag):
    """The UI reads links through the serialized DAG; the stages that produce runs, versions and an endpoint
    carry them."""
    from airflow.serialization.serialized_objects import DagSerialization

    tasks = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(dag)["dag"]["tasks"]}
    assert tasks["training.train"]["_operator_extra_links"] == {"MLflow run": "_link_MlflowRunLink",
                                                                "MLflow runs": "_link_MlflowRunsLink"}
    assert set(tasks["deploy"]["_operator_extra_links"]) == {"MLflow model version", "Serving endpoint"}
    assert "MLflow model version" in tasks["training.register"]["_operator_extra_links"]


# -- one DAG per dataset file ---------------------------------------------------------------------------------
WINE = {"model_name": "wine-classifier", "description": "Wine cultivars from a chemical analysis.",
        "schedule": "0 6 * * 1", "window": "last:3", "metric": {"name": "macro_f1", "min": 0.8},
        "canary": {"percent": 25, "minutes": 3}, "owners": ["ml-team", "ana"], "tags": ["wine", "example"]}


def test_each_dataset_file_is_a_dag_with_the_file_s_settings(datasets):
    dataset_file(datasets)  # datasets/iris.yaml as it is
    dataset_file(datasets, "wine", **WINE)
    dags = parse_dags()
    assert set(dags) == {IRIS, "continuous_training_wine"}
    wine, iris = dags["continuous_training_wine"], dags[IRIS]
    assert edges(wine) == edges(iris)  # each carries the whole loop
    assert wine.schedule == "0 6 * * 1" and wine.description == "Wine cultivars from a chemical analysis."
    assert set(wine.tags) == {"mlops", "continuous-training", "wine-classifier", "wine", "example"}
    assert wine.default_args["owner"] == "ml-team, ana" and iris.default_args["owner"] == "airflow"
    assert "`wine.yaml`" in wine.doc_md and "macro_f1" in wine.doc_md and "Continuous training" in wine.doc_md

    def default(dag, name):
        return dag.params.get_param(name).value

    assert (default(wine, "metric_threshold"), default(iris, "metric_threshold")) == (0.8, 0.85)
    assert "macro_f1" in wine.params.get_param("metric_threshold").description
    assert (default(wine, "training_window"), default(iris, "training_window")) == ("last:3", "last:1")
    assert (default(wine, "canary_percent"), default(wine, "canary_minutes")) == (25, 3.0)
    # a file without canary defaults gets the settings' (the tests set [mlops] canary_percent to 0)
    assert (default(iris, "canary_percent"), default(iris, "canary_minutes")) == (0, 10.0)
    # Every task works on the file's model; the retraining decision reads the file's metric.
    assert wine.get_task("wait_for_batch").model_name == "wine-classifier"
    assert wine.get_task("decide_retraining").op_kwargs["metric"] == "macro_f1"
    for task_id in ("detect_degradation", "training.register", "roll_back_champion"):
        assert wine.get_task(task_id).options["model_name"] == "wine-classifier", task_id
    for task_id in ("training.train", "deploy", "report", "training.approve_promotion"):
        assert wine.get_task(task_id).model_name == "wine-classifier", task_id
    assert iris.get_task("deploy").model_name == "iris-classifier"


def test_a_regression_file_s_threshold_follows_its_metric(datasets):
    """rmse (better lower): a positive maximum, retrained above it; r2 (better higher): a minimum, at most 1,
    perhaps negative; the branch is given the direction, deploy the task, the report the direction."""
    import shutil

    from airflow.exceptions import ParamValidationError

    for name in ("diabetes", "friedman"):  # rmse max 65.0; r2 min 0.7
        shutil.copy(REPO / "tests" / "datasets" / f"{name}.yaml", datasets / f"{name}.yaml")
    dataset_file(datasets)
    dags = parse_dags()
    rmse, r2, iris = (dags[f"continuous_training_{name}"] for name in ("diabetes", "friedman", "iris"))
    threshold = {dag: dag.params.get_param("metric_threshold") for dag in (rmse, r2, iris)}
    assert (threshold[rmse].value, threshold[r2].value) == (65.0, 0.7)
    assert threshold[rmse].description == ("Retrain when the champion's rmse on the fresh batch is above this (the "
                                           "dataset file's metric.max: 65.0).")
    assert "r2 on the fresh batch is below this (the dataset file's metric.min: 0.7)" in threshold[r2].description
    assert "rmse at most 65.0" in rmse.doc_md and "r2 at least 0.7" in r2.doc_md and "(regression)" in rmse.doc_md

    def accepts(dag, value) -> bool:
        try:
            threshold[dag].resolve(value)
        except ParamValidationError:
            return False
        return True

    assert [accepts(rmse, v) for v in (120.0, 0.01, 0, -1)] == [True, True, False, False]  # any positive scale
    # as the dataset file bounds metric.min: r2 below 1 (maybe negative), a classification metric in (0, 1]
    assert [accepts(r2, v) for v in (1, 0.5, -0.3, 1.01)] == [False, True, True, False]
    assert [accepts(iris, v) for v in (0, 0.85, 1, 1.2, -0.1)] == [False, True, True, False, False]
    assert rmse.get_task("decide_retraining").op_kwargs["direction"] == "lower"
    assert (r2.get_task("decide_retraining").op_kwargs["direction"], iris.get_task("decide_retraining").op_kwargs[
        "direction"]) == ("higher", "higher")
    assert rmse.get_task("deploy").regression and r2.get_task("deploy").regression
    assert not iris.get_task("deploy").regression
    assert (rmse.get_task("report").metric_direction, r2.get_task("report").metric_direction) == ("lower", "higher")


def test_every_dataset_file_the_project_has_is_a_whole_dag(datasets):
    """The example and the test datasets (categorical features, missing values, other metrics) side by side."""
    import shutil

    files = [*sorted((REPO / "datasets").glob("*.yaml")), *sorted((REPO / "tests" / "datasets").glob("*.yaml"))]
    for path in files:
        shutil.copy(path, datasets / path.name)
    dags = parse_dags()
    assert set(dags) == {f"continuous_training_{path.stem}" for path in files}
    for dag_id, dag in dags.items():
        assert "invalid-dataset-file" not in dag.tags, (dag_id, dag.description)
        assert edges(dag) == edges(dags[IRIS]), dag_id  # the example's loop, whatever the file


def rendered_options(dag, task_id: str) -> dict:
    """A task's options as a run renders them (its upstream results stand in as sample values)."""
    from mlops.manifests import sample_context

    task = dag.get_task(task_id).prepare_for_execution()
    task.render_template_fields(sample_context(dag), jinja_env=dag.get_template_env())
    return task.options


@pytest.mark.parametrize("target", ["local", "kubernetes"])
def test_ingest_and_split_get_the_file_s_text_exactly_as_written_never_rendered(datasets, monkeypatch, target):
    """The stages parse the text the DAG parsed; a "{{" in it is the user's, not a template."""
    from mlops.hooks.stage import stage_arguments

    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", target)
    if target == "kubernetes":
        from .conftest import kubernetes_target

        kubernetes_target(monkeypatch)
    path = dataset_file(datasets, description="Iris, {{ 7 * 7 }} and {% raw %}, as a user may write.")
    text = path.read_text()
    dag = parse_dag()
    for task_id in ("data.ingest", "data.split"):
        options = rendered_options(dag, task_id)
        assert options["dataset_content"] == text and options["dataset_name"] == "iris", task_id
        argv = stage_arguments(options)
        assert argv[argv.index("--dataset-content") + 1] == text
    assert "dataset_content" not in rendered_options(dag, "detect_degradation")  # it reads the run's split
    if target == "kubernetes":
        from mlops.manifests import stage_pods

        args = stage_pods(dag)["data.ingest"]["spec"]["containers"][0]["args"]
        assert args[args.index("--dataset-content") + 1] == text


BROKEN = "metric: {name: rmse, min: 0.5}\n"  # a metric the parser does not allow


def test_a_broken_file_is_a_dag_that_says_why_and_the_others_load(datasets, caplog):
    from airflow.sdk.exceptions import AirflowFailException

    from mlpipeline.dataset import DatasetFileError, load

    dataset_file(datasets)
    broken = datasets / "wine.yaml"
    broken.write_text(EXAMPLE_DATASET.read_text().replace("metric: {name: accuracy, min: 0.85}", BROKEN.strip()))
    with pytest.raises(DatasetFileError) as parsed:
        load(broken)
    message = str(parsed.value)  # the parser's own message: the file, the key and what is allowed
    assert str(broken) in message and "'metric.name'" in message and "accuracy, balanced_accuracy, macro_f1" in message
    caplog.set_level(logging.ERROR)
    dags = parse_dags()  # no import error: the DAG file itself loads
    assert set(dags) == {IRIS, "continuous_training_wine"}
    assert "training.train" in dags[IRIS].task_ids and "continuous-training" in dags[IRIS].tags
    invalid = dags["continuous_training_wine"]
    assert invalid.schedule is None and set(invalid.tags) == {"mlops", "invalid-dataset-file"}
    assert invalid.description == message and message in invalid.doc_md.replace("\n    ", "\n")
    [task] = invalid.tasks
    assert task.task_id == "invalid_dataset_file" and task.retries == 0
    with pytest.raises(AirflowFailException) as failed:
        task.execute({})
    assert str(failed.value) == message  # a manual run's log shows it
    assert message in caplog.text  # and so does the DAG processor's


@pytest.mark.parametrize(("change", "refusal"), [
    ({"tags": ["x" * 101]}, "tag cannot be longer than 100 characters"),
    ({"schedule": "99 * * * *"}, "AirflowTimetableInvalid: [99 * * * *] is not acceptable, out of range"),
], ids=["long-tag", "cron-out-of-range"])
def test_a_file_airflow_refuses_is_a_broken_file_not_an_import_error(datasets, change, refusal):
    """What the parser lets through but Airflow refuses when it builds the DAG breaks that file's DAG only."""
    dataset_file(datasets)
    dataset_file(datasets, "wine", **{**WINE, **change})
    dags = parse_dags()
    assert "invalid-dataset-file" not in dags[IRIS].tags
    invalid = dags["continuous_training_wine"]
    assert "invalid-dataset-file" in invalid.tags
    assert invalid.description.startswith(f"dataset file {datasets / 'wine.yaml'}: Airflow refuses the DAG built")
    assert refusal in invalid.description


def test_two_files_for_one_model_the_second_is_refused_by_name(datasets):
    """Two DAGs moving one model's champion would undo each other's work: the first file keeps the model."""
    first = dataset_file(datasets, "iris")
    dataset_file(datasets, "iris_copy")
    dags = parse_dags()
    assert "invalid-dataset-file" not in dags[IRIS].tags
    copy = dags["continuous_training_iris_copy"]
    assert copy.description == (f"dataset file {datasets / 'iris_copy.yaml'}: key 'model_name': 'iris-classifier' is "
                                f"declared by {first} already; each model has one dataset file")


def test_one_name_twice_the_second_file_is_refused_with_an_id_of_its_own(datasets):
    dataset_file(datasets, "iris")
    (datasets / "iris.yml").write_text(EXAMPLE_DATASET.read_text().replace("iris-classifier", "iris-other"))
    dags = parse_dags()
    assert set(dags) == {IRIS, "continuous_training_iris.yml"}
    assert "invalid-dataset-file" not in dags[IRIS].tags
    assert dags["continuous_training_iris.yml"].description == (
        f"dataset file {datasets / 'iris.yml'}: its DAG id {IRIS} is another dataset file's already (one file per "
        "name: iris.yaml or iris.yml)")


def test_a_file_name_that_is_no_dag_name_gets_a_sanitized_id(datasets):
    dataset_file(datasets)
    (datasets / "Wine Data.yaml").write_text(EXAMPLE_DATASET.read_text())
    dags = parse_dags()
    invalid = dags["continuous_training_wine_data.yaml"]
    assert "the file name 'Wine Data' must be lower-case letters" in invalid.description
    assert set(dags) == {IRIS, "continuous_training_wine_data.yaml"}


def test_a_file_too_long_for_one_command_line_argument_is_refused(datasets):
    from mlops.datasets import MAX_ARGUMENT_BYTES

    dataset_file(datasets, description="x" * MAX_ARGUMENT_BYTES)
    invalid = parse_dags()[IRIS]
    assert "a stage is given the file as one command-line argument" in invalid.description


def test_an_empty_dataset_folder_gives_no_dags_and_says_so(datasets, caplog):
    caplog.set_level(logging.WARNING)
    assert parse_dags() == {}
    assert f"no dataset files (*.yaml, *.yml) in {datasets} ([mlops] datasets_folder)" in caplog.text


def test_a_dataset_folder_that_is_not_there_is_an_import_error_naming_the_option(monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__MLOPS__DATASETS_FOLDER", str(tmp_path / "missing"))
    [message] = DagBag(dag_folder=str(REPO / "dags")).import_errors.values()
    missing = tmp_path / "missing"
    assert f"[mlops] datasets_folder '{missing}' is not a folder (AIRFLOW__MLOPS__DATASETS_FOLDER)" in message


def test_a_sql_or_http_source_is_pulled_before_the_wait_and_files_are_not(datasets):
    query = "SELECT * FROM iris WHERE day = %(partition)s ORDER BY id"
    dataset_file(datasets, "warehouse", model_name="iris-sql", source={"kind": "sql", "conn_id": "warehouse",
                                                                        "query": query})
    dataset_file(datasets, "server", model_name="iris-http",
                 source={"kind": "http", "conn_id": "data_server", "endpoint": "/batches/{partition}",
                         "format": "csv"})
    dataset_file(datasets)  # files
    dags = parse_dags()

    sql = dags["continuous_training_warehouse"]
    pull = sql.get_task("pull_batch")
    # split records what the pull fetched (its whole result, --pull) in the run's manifest: lineage
    assert edges(sql) == edges(dags[IRIS]) | {("pull_batch", "wait_for_batch"), ("pull_batch", "data.split")}
    record = sql.get_task("data.split").options["pull"]
    assert (record.operator.task_id, record.key) == ("pull_batch", "return_value")
    assert dags[IRIS].get_task("data.split").options["pull"] is None  # landed files: nothing to record
    assert (pull.kind, pull.conn_id, pull.query, pull.format, pull.partition) == \
        ("sql", "warehouse", query, "jsonl", "{{ params.partition or ds }}")
    http = dags["continuous_training_server"].get_task("pull_batch")
    assert (http.kind, http.endpoint, http.format) == ("http", "/batches/{partition}", "csv")
    assert http.downstream_task_ids == {"wait_for_batch", "data.split"}
    assert not dags[IRIS].has_task("pull_batch")


@pytest.mark.parametrize("target", ["local", "kubernetes"])
def test_split_is_given_what_the_pull_fetched_as_one_json_argument_on_both_targets(datasets, monkeypatch, target):
    """The lineage of a pull takes the path of every stage option: split's command line, subprocess or pod."""
    from mlops import manifests
    from mlops.hooks.stage import stage_arguments

    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", target)
    if target == "kubernetes":
        from .conftest import kubernetes_target

        kubernetes_target(monkeypatch)
    query = "SELECT * FROM iris WHERE day = %(partition)s AND note <> '{{ ds }}' ORDER BY id"
    dataset_file(datasets, "warehouse", model_name="iris-sql", source={"kind": "sql", "conn_id": "warehouse",
                                                                        "query": query})
    pulled = {"partition": "2026-11-01", "folder": "/data/landing/iris-sql/2026-11-01", "file": "pull-0123.jsonl",
              "new": True, "rows": 150, "bytes": 9000, "sha256": "0123", "kind": "sql", "conn_id": "warehouse",
              "query": query}
    monkeypatch.setitem(manifests.SAMPLE_RESULTS, "pull_batch", pulled)
    dag = parse_dag("continuous_training_warehouse")
    argv = stage_arguments(rendered_options(dag, "data.split"))
    assert json.loads(argv[argv.index("--pull") + 1]) == pulled  # the query as written, never rendered
    if target == "kubernetes":
        args = manifests.stage_pods(dag)["data.split"]["spec"]["containers"][0]["args"]
        assert json.loads(args[args.index("--pull") + 1]) == pulled
