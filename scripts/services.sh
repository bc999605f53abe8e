#!/usr/bin/env bash
# Start/stop the local target's services. State lives in .run/ (pids, logs, stores).
#   scripts/services.sh start postgres mlflow prometheus alertmanager pushgateway airflow
#   scripts/services.sh stop             -> stop everything started here
# Ports: POSTGRES_PORT 5433, MLFLOW_PORT 5000, PROMETHEUS_PORT 9090, ALERTMANAGER_PORT 9093,
#        PUSHGATEWAY_PORT 9091, AIRFLOW_PORT 8080 (UI and API), MLOPS_SERVING_PORT 8085 (the model
#        server the DAG starts). Airflow gets them as its connections (start_airflow).
# With postgres started first, Airflow's metadata database and MLflow's backend store are PostgreSQL
# databases (Debian's server, its cluster in $RUN_DIR/postgres, a random password per role in
# $RUN_DIR/postgres/credentials); without it they are SQLite files (fine for one process at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
POSTGRES_PORT=${POSTGRES_PORT:-5433}
PG_DIR="$RUN_DIR/postgres"
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090} ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
export PUSHGATEWAY_PORT=${PUSHGATEWAY_PORT:-9091} AIRFLOW_PORT=${AIRFLOW_PORT:-8080}
# The local router's port is chosen here only: the deploys read it from mlserving_default (set below) and
# give each model its servers' ports after it (mlops.local_serving.model_ports).
export MLOPS_SERVING_PORT=${MLOPS_SERVING_PORT:-8085}
# MLflow 3's client and server send usage data to MLflow's maintainers unless told not to: nothing of the
# user's leaves the machine unless they choose so (set it to false to take part).
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
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

as_postgres() {  # PostgreSQL refuses to run as root: as its user, allowed to traverse to $RUN_DIR
  if [[ $(id -u) == 0 ]]; then
    echo setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=+dac_read_search \
      --ambient-caps=+dac_read_search
  fi
}

pg_url() {  # role [driver]: the role's database URL, from the credentials made at start
  local password
  password=$(sed -n "s/^$1=//p" "$PG_DIR/credentials")
  echo "postgresql${2:++$2}://$1:$password@127.0.0.1:$(cat "$PG_DIR/port")/$1"
}

start_postgres() {
  if running postgres; then echo "postgres already running on :$(cat "$PG_DIR/port")"; return; fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -x "$bin/initdb" ]] || { echo "PostgreSQL is missing: make system-deps installs Debian's postgresql" >&2; exit 1; }
  if [[ ! -s "$PG_DIR/data/PG_VERSION" ]]; then
    mkdir -p "$PG_DIR" && chmod 700 "$PG_DIR"
    (umask 077
     { echo "postgres=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
       echo "airflow=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
       echo "mlflow=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"; } >"$PG_DIR/credentials"
     sed -n 's/^postgres=//p' "$PG_DIR/credentials" >"$PG_DIR/superuser")
    if [[ $(id -u) == 0 ]]; then chown -R postgres:postgres "$PG_DIR"; fi
    # shellcheck disable=SC2046  # as_postgres prints a command prefix, or nothing
    $(as_postgres) "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=scram-sha-256 --pwfile="$PG_DIR/superuser" \
      >"$RUN_DIR/postgres-init.log" 2>&1 || { tail -20 "$RUN_DIR/postgres-init.log" >&2; exit 1; }
    rm "$PG_DIR/superuser"
  fi
  echo "$POSTGRES_PORT" >"$PG_DIR/port"
  # TCP on loopback only, no Unix socket (the run folder's path may be too long for one).
  # shellcheck disable=SC2046
  launch postgres $(as_postgres) "$bin/postgres" -D "$PG_DIR/data" -c listen_addresses=127.0.0.1 \
    -c port="$POSTGRES_PORT" -c unix_socket_directories= || return 0
  local superuser
  superuser=$(sed -n 's/^postgres=//p' "$PG_DIR/credentials")
  for _ in $(seq 60); do
    PGPASSWORD=$superuser psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -c 'select 1' postgres \
      >/dev/null 2>&1 && break
    sleep 0.5
  done
  for role in airflow mlflow; do
    local password
    password=$(sed -n "s/^$role=//p" "$PG_DIR/credentials")
    PGPASSWORD=$superuser psql -q -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1 postgres \
      >>"$RUN_DIR/postgres-init.log" 2>&1 <<SQL || { echo "creating the $role database failed" >&2; exit 1; }
SELECT 'CREATE ROLE $role LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role')\gexec
ALTER ROLE $role PASSWORD '$password';
SELECT 'CREATE DATABASE $role OWNER $role' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$role')\gexec
SQL
  done
  echo "postgres: 127.0.0.1:$POSTGRES_PORT (databases airflow, mlflow)"
}

made_once() {  # file key...: a random value for each key, written once, by whichever start comes first
  local file=$1 made key
  shift
  [[ -s "$file" ]] && return
  # MLflow and Airflow start side by side and both need them: made aside, then hard-linked into place,
  # which fails for the second (no-clobber), so both read the same ones.
  mkdir -p "$(dirname "$file")"
  made=$(umask 077 && mktemp "$file.XXXXXX")
  for key in "$@"; do echo "$key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"; done >"$made"
  ln "$made" "$file" 2>/dev/null || true
  rm -f "$made"
}

mlflow_secret() {  # name: a value from the MLflow credentials (admin, secret_key, pipeline)
  # The admin's login and the session key; the pipeline's login apart (an install made before the
  # pipeline had a user of its own has only the first file).
  made_once "$RUN_DIR/mlflow/credentials" admin secret_key
  made_once "$RUN_DIR/mlflow/pipeline-credentials" pipeline
  sed -n "s/^$1=//p" "$RUN_DIR/mlflow/credentials" "$RUN_DIR/mlflow/pipeline-credentials"
}

start_mlflow() {
  if running mlflow; then echo "mlflow already running on :$MLFLOW_PORT"; return; fi
  mkdir -p "$RUN_DIR/mlflow"
  local store="sqlite:///$RUN_DIR/mlflow/mlflow.db"
  if running postgres; then store=$(pg_url mlflow psycopg2); fi
  # MLflow's own authentication (its basic-auth app): every call needs a user. The admin's password and
  # the session key are made at the first start, readable by their owner only (like PostgreSQL's).
  (umask 077
   # auth_cache_ttl_seconds: a login is checked (PBKDF2, ~0.4 s here) once per 5 minutes, not on every call;
   # with one worker a password changed through the API takes effect at once.
   printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s\nadmin_username = admin\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = 300\n' \
     "$RUN_DIR/mlflow/basic_auth.db" "$(mlflow_secret admin)" >"$RUN_DIR/mlflow/basic_auth.ini")
  # One worker and no job runner: the defaults start nine processes and take both cores.
  MLFLOW_AUTH_CONFIG_PATH="$RUN_DIR/mlflow/basic_auth.ini" MLFLOW_FLASK_SERVER_SECRET_KEY="$(mlflow_secret secret_key)" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid .venv/pipeline/bin/mlflow server --app-name basic-auth \
    --backend-store-uri "$store" \
    --artifacts-destination "$RUN_DIR/mlflow/artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >"$RUN_DIR/mlflow.log" 2>&1 &
  echo $! >"$RUN_DIR/mlflow.pid"
  wait_http "http://127.0.0.1:$MLFLOW_PORT/health" 120 mlflow
  # The pipeline's own login, not an admin (images/mlflow/pipeline_user.py, as the cluster's Job runs it).
  MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" MLFLOW_TRACKING_USERNAME=admin \
    MLFLOW_TRACKING_PASSWORD="$(mlflow_secret admin)" PIPELINE_MLFLOW_USERNAME=pipeline \
    PIPELINE_MLFLOW_PASSWORD="$(mlflow_secret pipeline)" .venv/pipeline/bin/python images/mlflow/pipeline_user.py 2>&1 \
    || { echo "mlflow: the pipeline's user could not be made (above)" >&2; return 1; }
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
  # the deploys put the router on MLOPS_SERVING_PORT and list every model's servers in serving/targets.json
  # (mlops.local_serving); its folder exists first, so that Prometheus watches it from the start
  mkdir -p "$RUN_DIR/prometheus" "$RUN_DIR/data/serving"
  sed -e "s/\${ALERTMANAGER_PORT}/$ALERTMANAGER_PORT/; s|\${MLOPS_SERVING_TARGETS}|$RUN_DIR/data/serving/targets.json|" \
    -e "s/\${PUSHGATEWAY_PORT}/$PUSHGATEWAY_PORT/" monitoring/prometheus.yml >"$RUN_DIR/prometheus/prometheus.yml"
  cp monitoring/alerts.yml "$RUN_DIR/prometheus/alerts.yml"
  launch prometheus prometheus --config.file="$RUN_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$RUN_DIR/prometheus/data" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" || return 0
  wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 60 prometheus
  echo "prometheus: http://127.0.0.1:$PROMETHEUS_PORT"
}

start_airflow() {
  # Every Airflow process inherits this environment: the connections to the data volume and the services
  # (docs/configuration.md), Airflow's own settings, and waits in the triggerer. An idle scheduler looks
  # for work every 0.25 s, not every second: the next task of a run starts that much sooner.
  export AIRFLOW_HOME="$RUN_DIR/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins" \
    AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$AIRFLOW_PORT" \
    AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$AIRFLOW_PORT/execution/" \
    AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=True \
    AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.25}" \
    AIRFLOW_CONN_MLOPS_DATA="{\"conn_type\": \"fs\", \"extra\": {\"path\": \"$RUN_DIR/data\"}}" \
    AIRFLOW_CONN_MLSERVING_DEFAULT="http://127.0.0.1:$MLOPS_SERVING_PORT" \
    AIRFLOW_CONN_ALERTMANAGER_DEFAULT="http://127.0.0.1:$ALERTMANAGER_PORT" \
    AIRFLOW_CONN_PUSHGATEWAY_DEFAULT="http://127.0.0.1:$PUSHGATEWAY_PORT" \
    AIRFLOW_CONN_PROMETHEUS_DEFAULT="http://127.0.0.1:$PROMETHEUS_PORT" \
    PATH="$PWD/.venv/airflow/bin:$PATH"
  # The pipeline's MLflow login (not an admin) as the connection's user: Airflow's calls and the stage
  # processes it starts (MLflow's basic-auth app checks every call)
  export AIRFLOW_CONN_MLFLOW_DEFAULT="http://pipeline:$(mlflow_secret pipeline)@127.0.0.1:$MLFLOW_PORT"
  if running postgres; then
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$(pg_url airflow psycopg2)
  else  # SQLite: wait for a lock rather than fail at once
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=mlops.local_db.CONNECT_ARGS
  fi
  launch airflow bash scripts/airflow_components.sh || return 0
  wait_http "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" 240 airflow
  echo "airflow: http://127.0.0.1:$AIRFLOW_PORT"
}

started_here() {  # pid: its command line names this run folder (every service above is given a path in it)
  # or is the Airflow components' script: a pid file outlives its process, and the pid may be anyone's by now
  [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' </proc/"$1"/cmdline 2>/dev/null \
    | grep -qF -e "$RUN_DIR/" -e "scripts/airflow_components.sh"
}

alive() {  # pid: running, not a zombie waiting for a parent (or an init that does not reap) to collect it
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

stop_all() {
  local serving="$RUN_DIR"/data/serving
  for pidfile in "$RUN_DIR"/*.pid "$serving"/*/mlserving.pid "$serving"/*/canary/mlserving.pid \
      "$serving"/_router/nginx.pid; do
    [[ -e "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    if ! started_here "$pid"; then
      rm -f "$pidfile"
      echo "$(basename "$pidfile" .pid): not running (a stale pid file, pid $pid left alone)"
      continue
    fi
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do alive "$pid" || break; sleep 1; done
    kill -9 -- "-$pid" 2>/dev/null || true  # whatever ignored SIGTERM for 30 s
    rm -f "$pidfile"
    echo "stopped $(basename "$pidfile" .pid)"
  done
}

timed_start() {
  local started
  started=$(date +%s%N)
  "start_$1"
  echo "  ($1 up in $(( ($(date +%s%N) - started) / 1000000 )) ms)"
}

case "${1:-}" in
  start) shift
    # PostgreSQL first (MLflow's and Airflow's databases live in it), then the rest side by side:
    # MLflow and Airflow each spend most of their start-up importing Python.
    starts=()
    for s in "$@"; do
      if [[ $s == postgres ]]; then timed_start "$s"; else timed_start "$s" & starts+=($!); fi
    done
    failed=0
    for pid in "${starts[@]}"; do wait "$pid" || failed=1; done
    exit "$failed" ;;
  stop) stop_all ;;
  *) echo "usage: $0 start postgres|mlflow|prometheus|alertmanager|pushgateway|airflow ... | stop" >&2; exit 2 ;;
esac
