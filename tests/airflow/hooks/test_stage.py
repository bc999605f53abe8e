"""StageHook against the real `mlpipeline` CLI of the pipeline environment."""

from __future__ import annotations

import pytest

from mlops.hooks.stage import StageFailed, StageHook, stage_arguments
from tests.support import EXAMPLE_DATASET

from ..conftest import PIPELINE_BIN


def test_options_become_flags():
    assert stage_arguments({"data_root": "/d", "run_key": "rk-1", "window": None, "quiet": True, "dry": False}) == \
        ["--data-root", "/d", "--run-key", "rk-1", "--quiet"]


def test_a_whole_result_option_is_passed_as_json():
    """split's --pull: pull_batch's result, one argument, the same text on both targets."""
    pulled = {"rows": 3, "query": "SELECT 'é' WHERE day = %(partition)s", "new": True, "kind": "sql"}
    assert stage_arguments({"pull": pulled, "window": "all"}) == [
        "--pull", '{"kind":"sql","new":true,"query":"SELECT \'é\' WHERE day = %(partition)s","rows":3}',
        "--window", "all"]


def test_hook_streams_progress_and_returns_the_json_result(tmp_path):
    lines = []
    result = StageHook(PIPELINE_BIN / "mlpipeline").run(
        "simulate", {"data_root": tmp_path, "partition": "2026-11-01", "rows": 30, "dataset": EXAMPLE_DATASET},
        on_line=lines.append)
    assert result["rows"] == 30 and result["partition"] == "2026-11-01"
    assert any("simulating 30 rows" in line for line in lines)


def test_hook_fails_with_the_stage_s_own_error_line(tmp_path):
    with pytest.raises(StageFailed) as failure:
        StageHook(PIPELINE_BIN / "mlpipeline").run("ingest", {"data_root": tmp_path, "partition": "2026-11-31",
                                                               "dataset": EXAMPLE_DATASET},
                                                   on_line=lambda _: None)
    assert str(failure.value) == "mlpipeline ingest: error: partition must be a date YYYY-MM-DD, got '2026-11-31'"


def test_hook_explains_a_missing_pipeline_environment(tmp_path):
    with pytest.raises(StageFailed, match="the pipeline environment is missing"):
        StageHook(tmp_path / "nope" / "mlpipeline").run("simulate", {})


def test_the_task_log_keeps_the_stage_s_own_levels(tmp_path, caplog, capsys):
    """Progress at INFO, warnings and errors at theirs, the stage's error line at ERROR, and the KFP
    executor's JSON dumps (unformatted lines after INFO records) at DEBUG, out of the default task log."""
    import logging

    from mlops.hooks.stage import StageLog

    lines = ["2026-11-29 10:00:00,001 INFO mlpipeline.training: training on 900 rows", "{",
             '  "inputs": {"parameterValues": {}}', "}",
             "2026-11-29 10:00:01,002 WARNING mlpipeline.ingest: b.csv: quarantined",
             "Traceback (most recent call last):", "mlpipeline train-local: error: no rows"]
    logger = logging.getLogger("tests.stage-log")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    log = StageLog(logger, "train-local")
    for line in lines:
        log(line)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "mlpipeline.training: training on 900 rows"), ("DEBUG", "{"),
        ("DEBUG", '  "inputs": {"parameterValues": {}}'), ("DEBUG", "}"),
        ("WARNING", "mlpipeline.ingest: b.csv: quarantined"), ("WARNING", "Traceback (most recent call last):"),
        ("ERROR", "mlpipeline train-local: error: no rows")]
    # The hook logs a stage's stderr that way into the task log.
    script = tmp_path / "mlpipeline"
    script.write_text("#!/bin/sh\n" + "".join(f"echo '{line}' >&2\n" for line in lines) + "exit 1\n")
    script.chmod(0o755)
    with pytest.raises(StageFailed, match="no rows"):
        StageHook(script).run("train-local", {})
    task_log = capsys.readouterr().out
    assert "[warning  ] mlpipeline.ingest: b.csv: quarantined" in task_log
    assert "[error    ] mlpipeline train-local: error: no rows" in task_log
    assert "parameterValues" not in task_log


def test_the_local_stages_reach_the_mlflow_connection_s_server(monkeypatch):
    from ..conftest import connect

    connect(monkeypatch, mlflow_default='{"conn_type": "http", "host": "http://mlflow.test:5000", "password": "t0k"}')
    hook = StageHook.local()
    assert hook.executable == str(PIPELINE_BIN / "mlpipeline")
    assert hook.env == {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000", "MLFLOW_TRACKING_TOKEN": "t0k"}


def test_only_the_stages_that_talk_to_mlflow_get_its_credentials_and_none_gets_airflows(tmp_path, monkeypatch):
    """The stage process's environment, as the stage itself sees it."""
    script = tmp_path / "mlpipeline"
    script.write_text("#!/bin/sh\npython3 -c 'import json, os; print(json.dumps(dict(os.environ)))'\n")
    script.chmod(0o755)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:secret@db/airflow")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://:t0k@mlflow")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "inherited-key")
    monkeypatch.setenv("LANG", "C.UTF-8")
    hook = StageHook(script, env={"MLFLOW_TRACKING_URI": "http://mlflow.test", "MLFLOW_TRACKING_TOKEN": "t0k"})
    airflows = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_CONN_MLFLOW_DEFAULT"}
    for stage in ("ingest", "split"):
        seen = hook.run(stage, {})
        assert not airflows & set(seen) and "AWS_SECRET_ACCESS_KEY" not in seen
        # no tracking server nor login (MLflow's other settings, e.g. MLFLOW_DISABLE_TELEMETRY, may pass through)
        assert not {k for k in seen if k.startswith("MLFLOW_TRACKING_")} and seen["LANG"] == "C.UTF-8"
    for stage in ("detect", "register", "rollback", "fetch-model", "train-local"):  # MLflow's and the store's
        seen = hook.run(stage, {})
        assert seen["MLFLOW_TRACKING_TOKEN"] == "t0k" and seen["AWS_SECRET_ACCESS_KEY"] == "inherited-key"
        assert not airflows & set(seen)
