#!/usr/bin/env bash
# Start/stop the local target's services. State lives in .run/ (pids, logs, stores).
#   scripts/services.sh start mlflow     -> MLflow tracking server on MLFLOW_PORT (default 5000)
#   scripts/services.sh stop             -> stop everything started here
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
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

stop_all() {
  for pidfile in "$RUN_DIR"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "stopped $(basename "$pidfile" .pid)"
  done
}

case "${1:-}" in
  start) shift; for s in "$@"; do "start_$s"; done ;;
  stop) stop_all ;;
  *) echo "usage: $0 start mlflow | stop" >&2; exit 2 ;;
esac
