"""Run the committed, compiled training pipeline with kfp.local (no Docker, no cluster)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings

from kfp import components, local

from .environment import environment
from .errors import PipelineError
from .kfp_pipeline import TRAINING_YAML
from .volume import DataVolume

log = logging.getLogger(__name__)


def run_training_locally(volume: DataVolume, run_key: str, model_name: str, tracking_uri: str,
                         dag_id: str = "", dag_run_id: str = "") -> dict:
    run_dir = volume.run_dir(run_key)
    if not (run_dir / "manifest.json").exists():
        raise PipelineError(f"run {run_key} has no split at {run_dir}; run split first")
    if not TRAINING_YAML.exists():
        raise PipelineError(f"compiled pipeline missing at {TRAINING_YAML}; run 'mlpipeline compile'")
    pipeline = components.load_component_from_file(str(TRAINING_YAML))
    pipeline_root = run_dir / "kfp-local"
    # The subprocess runner uses this interpreter, which has mlpipeline and kfp installed.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=False)
    log.info("running %s with kfp.local (outputs under %s)", TRAINING_YAML.name, pipeline_root)
    env_tracking = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}
    with environment(env_tracking), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        task = pipeline(run_key=run_key, data_root=str(volume.root.resolve()), model_name=model_name,
                        mlflow_tracking_uri=tracking_uri, dag_id=dag_id, dag_run_id=dag_run_id)
    # A failed run (raise_on_error=False) leaves the task without outputs; its step's log names the error.
    output = task.outputs.get("Output")
    if output is None:
        raise PipelineError("the kfp.local training run failed; its failed step's log is above")
    return {**json.loads(output), "pipeline_root": str(pipeline_root), "engine": "kfp.local"}
