"""Where things are, from one place: environment variables (or Airflow Variables) read at run time.

| setting | env | default |
|---|---|---|
| target (`local` or `kubernetes`) | `AIRFLOW_VAR_MLOPS_TARGET` (the Airflow Variable `mlops_target`) | `local` |
| data volume | `MLOPS_DATA_ROOT` | `<repo>/.run/data` |
| pipeline environment's bin folder (local target) | `MLOPS_PIPELINE_BIN` | `<repo>/.venv/pipeline/bin` |
| MLflow tracking server | `MLFLOW_TRACKING_URI` | `http://127.0.0.1:5000` |
| MLflow UI, as users' browsers reach it (task links) | `MLOPS_MLFLOW_UI_URL` | the tracking server |
| serving environment's bin folder (local target) | `MLOPS_SERVING_BIN` | `<repo>/.venv/serving/bin` |
| local model server port | `MLOPS_SERVING_PORT` | `8085` (8080 is Airflow's UI) |
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("local", "kubernetes")


class SettingsError(ValueError):
    """A setting has a value the platform cannot use."""


@dataclass(frozen=True)
class Settings:
    target: str
    data_root: Path
    pipeline_bin: Path
    mlflow_tracking_uri: str
    mlflow_ui_url: str
    serving_bin: Path
    serving_port: int

    @property
    def mlpipeline(self) -> Path:
        return self.pipeline_bin / "mlpipeline"

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"


def airflow_variable(name: str, default: str | None = None) -> str | None:
    """An Airflow Variable: its AIRFLOW_VAR_<NAME> env var, else the Variable itself, asked only where
    Airflow can answer (a task, a DAG-processor parse) and once per process: the DAG reads its settings
    while it is parsed, which must stay cheap."""
    value = os.environ.get(f"AIRFLOW_VAR_{name.upper()}")
    return value if value is not None else _stored_variable(name, default)


@functools.cache
def _stored_variable(name: str, default: str | None) -> str | None:
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if getattr(runner, "SUPERVISOR_COMMS", None) is None:  # a plain import of the DAG file, a script
        return default
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=default)
    except Exception:  # no Variable backend answering: the default, as when the Variable is unset
        return default


def target() -> str:
    """`local` or `kubernetes`; the DAG reads it when parsed, to pick each task's operator."""
    value = (airflow_variable("mlops_target", "local") or "local").strip().lower()
    if value not in TARGETS:
        raise SettingsError(f"mlops_target must be one of {', '.join(TARGETS)}, got {value!r}")
    return value


def task_retries(default: int = 2) -> int:
    """Retries per task (env MLOPS_TASK_RETRIES); read when the DAG is parsed."""
    return int(os.environ.get("MLOPS_TASK_RETRIES", default))


def task_retry_delay(default_seconds: float = 20) -> timedelta:
    """The first retry's delay (env MLOPS_TASK_RETRY_DELAY_SECONDS; it doubles per retry); read when the
    DAG is parsed."""
    return timedelta(seconds=float(os.environ.get("MLOPS_TASK_RETRY_DELAY_SECONDS", default_seconds)))


def batch_deadline(default_minutes: float = 120) -> timedelta:
    """How long after a run is queued its batch may still be missing before the BatchLate alert fires
    (env MLOPS_BATCH_DEADLINE_MINUTES); read when the DAG is parsed."""
    return timedelta(minutes=float(os.environ.get("MLOPS_BATCH_DEADLINE_MINUTES", default_minutes)))


def load_settings() -> Settings:
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    return Settings(
        target=target(),
        data_root=Path(os.environ.get("MLOPS_DATA_ROOT", REPO / ".run" / "data")),
        pipeline_bin=Path(os.environ.get("MLOPS_PIPELINE_BIN", REPO / ".venv" / "pipeline" / "bin")),
        mlflow_tracking_uri=tracking,
        mlflow_ui_url=os.environ.get("MLOPS_MLFLOW_UI_URL", tracking),
        serving_bin=Path(os.environ.get("MLOPS_SERVING_BIN", REPO / ".venv" / "serving" / "bin")),
        serving_port=int(os.environ.get("MLOPS_SERVING_PORT", "8085")),
    )
