#!/usr/bin/env bash
# Start/stop the local target's services. State lives in .run/ (pids, logs, stores).
#   scripts/services.sh start mlflow prometheus alertmanager pushgateway airflow
#   scripts/services.sh stop             -> stop everything started here
# Ports: MLFLOW_PORT 5000, PROMETHEUS_PORT 9090, ALERTMANAGER_PORT 9093, PUSHGATEWAY_PORT 9091,
#        AIRFLOW_PORT 8080 (UI and API), MLOPS_SERVING_PORT 8085 (the model server the DAG starts).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090} ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
export PUSHGATEWAY_PORT=${PUSHGATEWAY_PORT:-9091} AIRFLOW_PORT=${AIRFLOW_PORT:-8080}
export MLOPS_SERVING_PORT=${MLOPS_SERVING_PORT:-8085}
mkdir -p "$RUN_DIR"

running() { [[ -f "$RUN_DIR/$1.pid" ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

wait_http() {  # url seconds name
  for _ in $(seq "$2"); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 1
  done
  echo "$3 did not answer at $1 within $2 s; see $RUN_DIR/$3.log" >&2
  return 1
}

start_mlflow() {
  if running mlflow; then echo "mlflow already running on :$MLFLOW_PORT"; return; fi
  mkdir -p "$RUN_DIR/mlflow"
  # One worker and no job runner: the defaults start nine processes and take both cores.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid .venv/pipeline/bin/mlflow server \
    --backend-store-uri "sqlite:///$RUN_DIR/mlflow/mlflow.db" \
    --artifacts-destination "$RUN_DIR/mlflow/artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >"$RUN_DIR/mlflow.log" 2>&1 &
  echo $! >"$RUN_DIR/mlflow.pid"
  wait_http "http://127.0.0.1:$MLFLOW_PORT/health" 120 mlflow
  echo "mlflow server: http://127.0.0.1:$MLFLOW_PORT"
}

launch() {  # name command... : start detached in its own process group, remember the pid
  local name=$1; shift
  if running "$name"; then echo "$name already running"; return 1; fi
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}

start_alertmanager() {
  mkdir -p "$RUN_DIR/alertmanager"
  printf 'route:\n  receiver: log\n  group_wait: 1s\nreceivers:\n  - name: log\n' >"$RUN_DIR/alertmanager/config.yml"
  launch alertmanager prometheus-alertmanager --config.file="$RUN_DIR/alertmanager/config.yml" \
    --storage.path="$RUN_DIR/alertmanager" --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address= || return 0
  wait_http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" 60 alertmanager
  echo "alertmanager: http://127.0.0.1:$ALERTMANAGER_PORT"
}

start_pushgateway() {
  # Debian's default persistence file is machine-wide (/var/lib/prometheus): keep ours in RUN_DIR.
  launch pushgateway prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSHGATEWAY_PORT" \
    --persistence.file="$RUN_DIR/pushgateway.data" || return 0
  wait_http "http://127.0.0.1:$PUSHGATEWAY_PORT/-/ready" 60 pushgateway
  echo "pushgateway: http://127.0.0.1:$PUSHGATEWAY_PORT"
}

start_prometheus() {
  mkdir -p "$RUN_DIR/prometheus"
  sed -e "s/\${ALERTMANAGER_PORT}/$ALERTMANAGER_PORT/; s/\${MLOPS_SERVING_PORT}/$MLOPS_SERVING_PORT/" \
    -e "s/\${PUSHGATEWAY_PORT}/$PUSHGATEWAY_PORT/" monitoring/prometheus.yml >"$RUN_DIR/prometheus/prometheus.yml"
  cp monitoring/alerts.yml "$RUN_DIR/prometheus/alerts.yml"
  launch prometheus prometheus --config.file="$RUN_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$RUN_DIR/prometheus/data" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" || return 0
  wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 60 prometheus
  echo "prometheus: http://127.0.0.1:$PROMETHEUS_PORT"
}

start_airflow() {
  # Tasks inherit this environment: where the data, the environments and the services are.
  export AIRFLOW_HOME="$RUN_DIR/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins" \
    AIRFLOW__API__PORT="$AIRFLOW_PORT" \
    AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$AIRFLOW_PORT/execution/" \
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=mlops.local_db.CONNECT_ARGS \
    MLOPS_DATA_ROOT="$RUN_DIR/data" MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" \
    MLOPS_ALERTMANAGER_URL="http://127.0.0.1:$ALERTMANAGER_PORT" MLOPS_PUSHGATEWAY_URL="127.0.0.1:$PUSHGATEWAY_PORT" \
    PATH="$PWD/.venv/airflow/bin:$PATH"
  launch airflow airflow standalone || return 0
  wait_http "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" 240 airflow
  echo "airflow: http://127.0.0.1:$AIRFLOW_PORT"
}

stop_all() {
  for pidfile in "$RUN_DIR"/*.pid "$RUN_DIR"/data/serving/mlserving.pid; do
    [[ -e "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 -- "-$pid" 2>/dev/null || true  # whatever ignored SIGTERM for 30 s
    rm -f "$pidfile"
    echo "stopped $(basename "$pidfile" .pid)"
  done
}

case "${1:-}" in
  start) shift; for s in "$@"; do "start_$s"; done ;;
  stop) stop_all ;;
  *) echo "usage: $0 start mlflow|prometheus|alertmanager|pushgateway|airflow ... | stop" >&2; exit 2 ;;
esac
