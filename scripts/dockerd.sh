#!/usr/bin/env bash
# The Docker engine this checkout builds and runs its images with: Debian's dockerd, its images and
# containers under .run/docker/, on a socket of its own, started once and reused.
#   scripts/dockerd.sh start    -> installs docker.io if missing (needs root), starts the engine
#   scripts/dockerd.sh host     -> prints the DOCKER_HOST to use
#   scripts/dockerd.sh stop
#   scripts/dockerd.sh status   -> exit status 0 when the engine runs
# No NAT and no iptables rules: builds use the host's network (`docker build --network host`); test
# pods get addresses on a bridge of their own (10.213.0.0/16, created by the tests) and talk to each
# other and to the host directly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
DATA_ROOT="$RUN_DIR/docker"
# Unix socket paths are limited to 108 bytes: the engine's runtime state goes under /run, keyed by checkout.
EXEC_ROOT="/run/mlops-ct-docker/$(printf '%s' "$PWD" | sha1sum | cut -c1-10)"
SOCKET="$EXEC_ROOT/docker.sock"
export DOCKER_HOST="unix://$SOCKET"

running() { [[ -S "$SOCKET" ]] && docker version >/dev/null 2>&1; }

start() {
  if running; then echo "dockerd already running ($DOCKER_HOST)"; return; fi
  if ! command -v dockerd >/dev/null; then
    [[ $(id -u) == 0 ]] || { echo "dockerd is missing: install Debian's docker.io (as root)" >&2; exit 1; }
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io
  fi
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  setsid dockerd --data-root "$DATA_ROOT/data" --exec-root "$EXEC_ROOT/exec" --pidfile "$EXEC_ROOT/dockerd.pid" \
    --host "$DOCKER_HOST" --iptables=false --ip-masq=false --bridge=none \
    >"$DATA_ROOT/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    running && { echo "dockerd started ($DOCKER_HOST)"; return; }
    sleep 1
  done
  echo "dockerd did not start; see $DATA_ROOT/dockerd.log:" >&2
  tail -20 "$DATA_ROOT/dockerd.log" >&2
  exit 1
}

stop() {
  [[ -f "$EXEC_ROOT/dockerd.pid" ]] || { echo "dockerd is not running"; return; }
  local pid
  pid=$(cat "$EXEC_ROOT/dockerd.pid")
  kill "$pid" 2>/dev/null || true
  # until the process is gone, not only its pid file (it removes that before it exits)
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || { echo "dockerd stopped"; return; }; sleep 1; done
  echo "dockerd (pid $pid) did not stop within 30 s" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  host) echo "$DOCKER_HOST" ;;
  status) running ;;
  *) echo "usage: $0 start|stop|host|status" >&2; exit 2 ;;
esac
