#!/usr/bin/env bash
# Build the project's images with the checkout's own Docker engine (scripts/dockerd.sh):
#   scripts/images.sh build [pipeline serving mlflow airflow storage-initializer]   (default: all)
#   scripts/images.sh sizes
#   scripts/images.sh tag NAME
# The Dockerfiles start from the official registry bases (PYTHON_IMAGE, AIRFLOW_IMAGE). Where those
# cannot be pulled, a stand-in is built here: a Python 3.11 base from Debian's archive (debootstrap,
# with this machine's CA bundle, which the builds need to reach PyPI) and, on it, an Airflow base
# (images/base/airflow.Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.7-slim-bookworm}
AIRFLOW_IMAGE=${AIRFLOW_IMAGE:-apache/airflow:3.3.2-python3.11}
LOCAL_PYTHON=mlops-ct/python-base:3.11-bookworm
LOCAL_AIRFLOW=mlops-ct/airflow-base:3.3.2-python3.11
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export DOCKER_BUILDKIT=0  # Debian's engine has no BuildKit; the classic builder handles these Dockerfiles
declare -A TAGS=(
  [pipeline]=ghcr.io/mlops-ct/pipeline:0.1.0
  [serving]=ghcr.io/mlops-ct/serving:0.1.0
  [mlflow]=ghcr.io/mlops-ct/mlflow:3.17.2
  [airflow]=ghcr.io/mlops-ct/airflow:0.1.0
  # test-only: a stand-in for kserve/storage-initializer, for the cluster tests (never deployed)
  [storage-initializer]=mlops-ct/kserve-storage-initializer:0.21.0
)
dockerfile() { [[ $1 == storage-initializer ]] && echo tests/cluster/storage-initializer/Dockerfile \
  || echo "images/$1/Dockerfile"; }

scripts/dockerd.sh start >&2
DOCKER_HOST=$(scripts/dockerd.sh host)
export DOCKER_HOST

have() { docker image inspect "$1" >/dev/null 2>&1; }

pullable() {  # a registry base, if this machine can reach its registry
  have "$1" || timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

local_python_base() {
  have "$LOCAL_PYTHON" && return
  command -v debootstrap >/dev/null || {
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap; }
  local root="$RUN_DIR/images/rootfs"
  rm -rf "$root" && mkdir -p "$root"
  echo "building $LOCAL_PYTHON from Debian's archive (debootstrap, about 2 minutes)" >&2
  debootstrap --variant=minbase --include=python3.11,python3-pip,python3.11-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$RUN_DIR/images/debootstrap.log" 2>&1 \
    || { tail -20 "$RUN_DIR/images/debootstrap.log" >&2; exit 1; }
  # What an image base does not carry; and pip may install here (this base is ours, not Debian's system).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/{doc,man,locale}/*
  rm -f "$root"/usr/lib/python3.11/EXTERNALLY-MANAGED
  ln -s /usr/bin/python3 "$root/usr/local/bin/python"  # as in the official python images
  cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV UV_NATIVE_TLS=1' --change 'CMD ["python3"]' - "$LOCAL_PYTHON" >/dev/null
  rm -rf "$root"
}

bases() {
  mkdir -p "$RUN_DIR/images"
  if ! pullable "$PYTHON_IMAGE"; then
    echo "cannot pull $PYTHON_IMAGE: using $LOCAL_PYTHON" >&2
    local_python_base
    PYTHON_IMAGE=$LOCAL_PYTHON
  fi
  if [[ " $* " == *" airflow "* ]] && ! pullable "$AIRFLOW_IMAGE"; then
    echo "cannot pull $AIRFLOW_IMAGE: building $LOCAL_AIRFLOW on $PYTHON_IMAGE" >&2
    build_image airflow-base images/base/airflow.Dockerfile "$LOCAL_AIRFLOW"
    AIRFLOW_IMAGE=$LOCAL_AIRFLOW
  fi
}

build_image() {  # name dockerfile tag
  local start=$SECONDS log="$RUN_DIR/images/$1.build.log"
  if ! docker build --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "AIRFLOW_IMAGE=$AIRFLOW_IMAGE" \
      --build-arg "GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)" -f "$2" -t "$3" . >"$log" 2>&1; then
    echo "building $3 failed; the end of $log:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  printf '%-40s built in %3d s, %s\n' "$3" $((SECONDS - start)) \
    "$(docker image inspect -f '{{.Size}}' "$3" | awk '{printf "%.0f MB", $1 / 1e6}')" >&2
}

build() {
  local names=("$@")
  [[ ${#names[@]} -gt 0 ]] || names=(pipeline serving mlflow airflow storage-initializer)
  bases "${names[@]}"
  for name in "${names[@]}"; do
    [[ -n ${TAGS[$name]:-} ]] || { echo "unknown image $name (known: ${!TAGS[*]})" >&2; exit 2; }
    build_image "$name" "$(dockerfile "$name")" "${TAGS[$name]}"
  done
}

sizes() {
  for name in pipeline serving mlflow airflow storage-initializer; do
    docker image inspect -f "{{.Size}}" "${TAGS[$name]}" 2>/dev/null \
      | awk -v t="${TAGS[$name]}" '{printf "%-40s %6.0f MB\n", t, $1 / 1e6}' || echo "${TAGS[$name]}: not built"
  done
}

case "${1:-}" in
  build) shift; build "$@" ;;
  sizes) sizes ;;
  tag) echo "${TAGS[${2:?image name}]}" ;;
  *) echo "usage: $0 build [pipeline serving mlflow airflow storage-initializer] | sizes | tag NAME" >&2; exit 2 ;;
esac
