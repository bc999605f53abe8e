"""StageHook: run one `mlpipeline <stage>` as a subprocess of the pipeline environment."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from airflow.sdk import BaseHook


class StageFailed(RuntimeError):
    """The stage exited non-zero; the message is the stage's own one-line error."""


# The stage's log format (mlpipeline.logs): "<date> <time> <LEVEL> <logger>: <message>".
STAGE_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2} [\d:,.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")


class StageLog:
    """A stage's stderr into the task log at the stage's own levels: its records at their level, its
    one-line error at ERROR, and other lines (tracebacks, the KFP executor's JSON that kfp.local prints)
    at the level of the record they follow if that was a warning or worse, else at DEBUG."""

    def __init__(self, logger: logging.Logger, stage: str):
        self.logger, self.stage, self.level = logger, stage, logging.DEBUG

    def __call__(self, line: str) -> None:
        record = STAGE_RECORD.match(line)
        if record:
            level = logging.getLevelName(record[1])
            self.level = level if level >= logging.WARNING else logging.DEBUG
            self.logger.log(level, "%s", record[2])
        elif line.startswith((f"mlpipeline {self.stage}: error:", "mlpipeline: error:")):
            self.logger.error("%s", line)
        elif line.strip():
            self.logger.log(self.level, "%s", line)


def stage_arguments(options: Mapping[str, object]) -> list[str]:
    """{"data_root": "/d", "window": None, "quiet": True} -> ["--data-root", "/d", "--quiet"]; a mapping or a
    list (an upstream task's whole result, such as pull_batch's for split's --pull) is passed as JSON."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if isinstance(value, Mapping | list | tuple):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def run_lineage(context) -> dict[str, str]:
    """The Airflow DAG and run a stage works for, as the stage CLIs and the KFP pipeline record them."""
    dag_run = context.get("dag_run")
    return {"dag_id": getattr(dag_run, "dag_id", "") or "", "dag_run_id": getattr(dag_run, "run_id", "") or ""}


# The stages that talk to MLflow (and through it to the artifact store): the only ones given its address and
# credentials, on both targets. ingest and split read and write the data volume alone; a stage left out
# here that needs MLflow fails for want of a tracking URI, not silently.
REGISTRY_STAGES = frozenset({"detect", "train-local", "register", "rollback", "fetch-model", "champion-at"})

# What a stage subprocess never inherits from the Airflow process that starts it: Airflow's settings (its
# database URL, Fernet and secret keys, connections, variables: AIRFLOW__*, AIRFLOW_CONN_*, ...); and for a
# stage that talks to neither MLflow nor the object store, their credentials (CREDENTIALS).
AIRFLOW_PREFIXES = ("AIRFLOW",)
CREDENTIALS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def stage_environment(stage: str, inherited: Mapping[str, str], registry_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a local stage process: the inherited one without Airflow's secrets, plus the
    MLflow client's settings for a registry stage only."""
    env = {k: v for k, v in inherited.items() if not k.startswith(AIRFLOW_PREFIXES)}
    if stage in REGISTRY_STAGES:  # MLflow's, and the artifact store's where the server does not proxy it
        return {**env, **registry_env}
    return {k: v for k, v in env.items() if k not in CREDENTIALS}


class StageHook(BaseHook):
    """Runs the stage CLI locally. The pod path (kubernetes target) runs the same command line."""

    hook_name = "mlpipeline stage"

    def __init__(self, executable: str | Path, env: Mapping[str, str] | None = None):
        super().__init__()
        self.executable = str(executable)
        self.env = dict(env or {})  # given to registry stages only (stage_environment)

    @classmethod
    def local(cls, mlflow_conn_id: str = "mlflow_default") -> StageHook:
        """The local target's stages: `[mlops] pipeline_bin`'s CLI, talking to the MLflow connection's server."""
        from mlops.hooks.mlflow import MlflowHook
        from mlops.settings import mlops_settings

        return cls(mlops_settings().mlpipeline, env=MlflowHook(mlflow_conn_id).client_env())

    def command(self, stage: str, options: Mapping[str, object]) -> list[str]:
        return [self.executable, stage, *stage_arguments(options)]

    def run(self, stage: str, options: Mapping[str, object], on_line: Callable[[str], None] | None = None,
            timeout: float | None = None) -> dict:
        """Run the stage, stream its stderr (progress) to on_line, return its JSON result."""
        command = self.command(stage, options)
        if not Path(self.executable).exists():
            raise StageFailed(f"the pipeline environment is missing: {self.executable} does not exist "
                              "(run `make envs`, or set [mlops] pipeline_bin)")
        log_line = on_line or StageLog(self.log, stage)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=stage_environment(stage, os.environ, self.env))
        errors: list[str] = []

        def pump():
            for line in proc.stderr:
                line = line.rstrip("\n")
                log_line(line)
                if line.startswith(f"mlpipeline {stage}: error:") or line.startswith("mlpipeline: error:"):
                    errors.append(line)

        out: list[str] = []
        readers = [threading.Thread(target=pump, daemon=True),
                   threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise StageFailed(f"mlpipeline {stage} did not finish within {timeout} s") from None
        finally:
            for reader in readers:
                reader.join(timeout=10)
        stdout = "".join(out)
        if proc.returncode != 0:
            raise StageFailed(errors[-1] if errors else f"mlpipeline {stage} exited with {proc.returncode}")
        try:
            return json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise StageFailed(f"mlpipeline {stage} printed no JSON result: {stdout[:200]!r}") from exc

    @staticmethod
    def render(command: Sequence[str]) -> str:
        return " ".join(command)
