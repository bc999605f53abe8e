#!/usr/bin/env bash
# Airflow on the local target, as the Helm chart runs it in a cluster: each component a process of its
# own (LocalExecutor, SimpleAuthManager: Airflow 3's defaults, which `airflow standalone` would force).
# Not `airflow standalone`, which starts the same components but also makes the scheduler and the
# triggerer serve their task logs on every interface (ports 8793 and 8794, a host Airflow hard-codes);
# here the API server reads those logs from this machine's disk. scripts/services.sh starts this in a
# process group of its own; when one component ends, the others are stopped with it.
set -euo pipefail
airflow db migrate
airflow scheduler --skip-serve-logs &
airflow dag-processor &
airflow triggerer --skip-serve-logs &
airflow api-server --host "${AIRFLOW__API__HOST:-127.0.0.1}" --port "${AIRFLOW__API__PORT:-8080}" &
wait -n || true
echo "airflow_components: a component ended; stopping the others" >&2
kill 0
