#!/usr/bin/env bash
# `make up`: the local stack `make demo` starts (PostgreSQL, MLflow, Alertmanager, Pushgateway,
# Prometheus and Airflow's components with the DAG), without the demo's story and keeping what the
# run folder already holds (data, registry, Airflow's history); prints the pages and their logins
# (scripts/ui_links.py; Alertmanager's alerts are on the Airflow UI's Alerts page, /plugin/alerts).
# `make down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUN_DIR=${RUN_DIR:-$PWD/.run}
scripts/services.sh start postgres mlflow alertmanager pushgateway prometheus airflow
exec .venv/airflow/bin/python scripts/ui_links.py
