#!/usr/bin/env bash
# The Docker engine this checkout builds and runs its images with: Debian's dockerd, its images and
# containers under .run/docker/, on a socket of its own, started once and reused.
#   scripts/dockerd.sh start    -> installs docker.io if missing (needs root), starts the engine
#   scripts/dockerd.sh host     -> prints the DOCKER_HOST to use
#   scripts/dockerd.sh stop     -> stops the engine and whatever of it is left: its containerd and container
#                                  shims, and its mounts under .run/docker/ and its runtime folder
#   scripts/dockerd.sh status   -> exit status 0 when the engine runs
#   scripts/dockerd.sh around COMMAND...  -> runs COMMAND, then stops the engine if COMMAND started it (also
#                                  when COMMAND fails or is interrupted), unless KEEP_DOCKERD=1; exits with
#                                  COMMAND's status. `make test` and the other targets that build images run so.
# No NAT and no iptables rules: builds use the host's network (`docker build --network host`); test
# pods get addresses on a bridge of their own (10.213.0.0/16, created by the tests) and talk to each
# other and to the host directly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
DATA_ROOT="$RUN_DIR/docker"
# Unix socket paths are limited to 108 bytes: the engine's runtime state goes under /run, keyed by its data
# folder (one engine per run folder: a test's engine in a folder of its own is not the checkout's).
EXEC_ROOT="/run/mlops-ct-docker/$(printf '%s' "$(realpath -m "$DATA_ROOT")" | sha1sum | cut -c1-10)"
SOCKET="$EXEC_ROOT/docker.sock"
export DOCKER_HOST="unix://$SOCKET"
STOP_SECONDS=${DOCKERD_STOP_SECONDS:-30}

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

ours() {  # pid: true when it is this engine's dockerd, containerd or a container shim: the program is one of
  # those and its command line names the engine's runtime folder. A pid read from a file may since belong
  # to anything else, and other commands may name the folder too (a client's DOCKER_HOST, this script's caller).
  local args
  [[ -r /proc/$1/cmdline ]] || return 1
  mapfile -d '' -t args </proc/"$1"/cmdline 2>/dev/null || return 1
  [[ ${#args[@]} -gt 0 ]] || return 1
  case "${args[0]##*/}" in dockerd | containerd | containerd-shim*) ;; *) return 1 ;; esac
  [[ " ${args[*]} " == *"$EXEC_ROOT/"* ]]
}

leftover_pids() {  # this engine's processes still running (dockerd, containerd, shims)
  local dir pid
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    ours "$pid" && echo "$pid"
  done
  return 0
}

leftover_mounts() {  # mounts under the data folder or the runtime folder, deepest first (kernel's own list)
  local root
  root=$(realpath -m "$DATA_ROOT")
  # mountinfo's 5th field is the mount point, with spaces and the like escaped as octal (\040)
  awk -v a="$root" -v b="$EXEC_ROOT" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 \
    { print $5 }' /proc/self/mountinfo | sort -ru
}

descendants() {  # pid...: their children, grandchildren, ... (a shim's are its container's processes)
  local pid child
  for pid in "$@"; do
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do echo "$child"; descendants "$child"; done
  done
  return 0
}

signal_all() {  # signal pid...: only those still this engine's
  local sig=$1 pid; shift
  for pid in "$@"; do ours "$pid" && kill "-$sig" "$pid" 2>/dev/null; done
  return 0
}

gone_within() {  # seconds pid...: true once none of them is this engine's any more
  local pid left
  for _ in $(seq "$(( $1 * 5 ))"); do
    left=""
    for pid in "${@:2}"; do ours "$pid" && left=1; done
    [[ -z $left ]] && return 0
    sleep 0.2
  done
  return 1
}

stop() {
  # The engine first, as it asks to be stopped: it stops its containers, unmounts their file systems and
  # its data folder's bind mount (moby's setupDaemonRootPropagation), then stops its containerd.
  local pid="" pids mount status=0
  [[ -f "$EXEC_ROOT/dockerd.pid" ]] && pid=$(cat "$EXEC_ROOT/dockerd.pid")
  if [[ -n $pid ]] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    # until the process is gone, not only its pid file (it removes that before it exits)
    if ! gone_within "$STOP_SECONDS" "$pid"; then
      echo "dockerd (pid $pid) did not stop within $STOP_SECONDS s: killing it" >&2
      signal_all KILL "$pid"
    fi
  fi
  # What an engine that crashed or was killed leaves: its containerd and the container shims (each keeps
  # its container running), then their mounts. Without this `rm -rf` of the checkout fails ("Device or
  # resource busy") and the shims hold the container's processes.
  mapfile -t pids < <(leftover_pids)
  if [[ ${#pids[@]} -gt 0 ]]; then
    echo "stopping what the engine left: pids ${pids[*]}" >&2
    # the containers' processes first: a shim that goes leaves its container running, reparented to init
    # shellcheck disable=SC2046  # one pid per word
    kill -KILL $(descendants "${pids[@]}") 2>/dev/null || true
    signal_all TERM "${pids[@]}"
    gone_within 10 "${pids[@]}" || signal_all KILL "${pids[@]}"
    gone_within 5 "${pids[@]}" || { echo "pids $(leftover_pids | xargs) did not stop" >&2; status=1; }
  fi
  while read -r mount; do
    [[ -n $mount ]] || continue
    mount=$(printf '%b' "${mount//\\/\\0}")  # mountinfo's octal escapes, back to the path
    umount "$mount" 2>/dev/null || umount --lazy "$mount" 2>/dev/null || true
  done < <(leftover_mounts)
  if [[ -n $(leftover_mounts) ]]; then
    echo "still mounted: $(leftover_mounts | xargs)" >&2
    status=1
  fi
  [[ $status == 0 ]] && rm -rf "$EXEC_ROOT"
  [[ $status == 0 ]] && echo "dockerd stopped"
  return "$status"
}

around() {  # command...: run it; stop the engine afterwards if it was not running before
  local status=0
  was_running=""  # global: the EXIT trap reads it after this function has returned
  [[ $# -gt 0 ]] || { echo "usage: $0 around COMMAND..." >&2; exit 2; }
  running && was_running=1
  # On EXIT, so that a failed or interrupted command stops it too (INT and TERM end this shell, which
  # runs the trap; the command has had the signal from the terminal or is killed with its group).
  # shellcheck disable=SC2317  # reached through the trap
  finish() {
    if [[ -n $was_running ]]; then echo "dockerd was running before: left running" >&2
    elif [[ ${KEEP_DOCKERD:-} == 1 ]]; then echo "KEEP_DOCKERD=1: dockerd left running ($DOCKER_HOST)" >&2
    else stop >&2 || true
    fi
  }
  trap finish EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  "$@" || status=$?
  return "$status"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  host) echo "$DOCKER_HOST" ;;
  status) running ;;
  around) shift; around "$@" ;;
  *) echo "usage: $0 start|stop|host|status|around COMMAND..." >&2; exit 2 ;;
esac
