#!/usr/bin/env bash
# `make demo`: the continuous-training loop on the local target.
# Today it drives the stage CLIs directly (the Airflow DAG that will drive them is the next step):
# MLflow server -> three daily partitions (clean, clean, concept drift) -> ingest, split, detect,
# kfp.local training and registration for each -> a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_PORT=${MLFLOW_PORT:-5000}
scripts/services.sh start mlflow
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
exec .venv/pipeline/bin/python scripts/demo_stages.py "$@"
