#!/usr/bin/env bash
# The whole suite (`make test`), each layer in its own environment, with the waiting overlapped:
#   1. ruff; then, in the background, the images build and a second Airflow pytest process runs the
#      tests that need no image: the live stack's (a whole Airflow on the local target, which mostly
#      waits on its scheduler), then the longest dag.test() and canary runs (BESIDE below);
#   2. meanwhile the pipeline and serving tests, then (once the images are built) the rest of the
#      Airflow tests (the emulated cluster, whose pods run the images, and the short ones);
#   3. the deployment assets.
# Every layer runs even when an earlier one failed; the exit status is non-zero if any did. The
# background processes' output is printed whole when they end, never interleaved.
# Environment: PYTEST_ARGS (extra pytest arguments for every layer).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-$PWD/.run}
LOGS="$RUN_DIR/test-logs"
mkdir -p "$LOGS"
read -r -a extra <<<"${PYTEST_ARGS:-}"
export MLFLOW_DISABLE_TELEMETRY=true  # MLflow 3 sends usage data unless told not to (scripts/services.sh)
failed=()
# Airflow tests that need no image, longest first, run by the background process: the foreground
# reaches the Airflow layer only once the images are built, and would otherwise run them alone.
BESIDE=(tests/airflow/test_live_stack.py tests/airflow/test_canary_rollout.py tests/airflow/operators/test_deploy.py
        tests/airflow/test_dag_run.py tests/airflow/test_dag_run_regression.py)
images=""
beside=""
interrupted=""
# The Docker engine the images build starts is stopped by `scripts/dockerd.sh around`, which `make test`
# runs this script under: after the suite nothing of the checkout's keeps running.
# Ctrl-C stops the whole run, not only the layer under way. Whatever runs in the background stops too:
# the image build at once, the live stack's pytest as on Ctrl-C (SIGINT, which Ctrl-C has already sent
# it), so that it tears down the services it started; the script waits for that.
cleanup() {
  [[ -n $images ]] && kill "$images" 2>/dev/null
  if [[ -n $beside ]]; then
    [[ -n $interrupted ]] || kill -INT "$beside" 2>/dev/null
    wait "$beside" 2>/dev/null
  fi
  return 0
}
trap cleanup EXIT
trap 'interrupted=1; echo "== interrupted"; exit 130' INT

layer() {  # name venv pytest-args...: one pytest run in the foreground
  local name=$1 venv=$2; shift 2
  echo "== $name"
  "$venv/bin/python" -m pytest "$@" "${extra[@]}" 2>&1 | tee -i "$LOGS/$name.log" || failed+=("$name")
}

started() {  # name log: report a background job's start
  echo "== $1: started in the background (output in ${2#"$PWD"/}, printed when it ends)"
}

finished() {  # name pid log: wait for a background job and print what it wrote
  local status=0
  wait "$2" || status=$?
  echo "== $1 (background) ended with status $status:"
  cat "$3"
  [[ $status == 0 ]] || failed+=("$1")
}

echo "== lint"
.venv/pipeline/bin/ruff check . || failed+=(lint)

scripts/images.sh build >"$LOGS/images.log" 2>&1 &
images=$!
started images "$LOGS/images.log"
# A background job starts with SIGINT ignored; Python's own handler is put back for the cleanup above.
.venv/airflow/bin/python -c 'import signal, sys, pytest
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))' "${BESIDE[@]}" -p no:cacheprovider "${extra[@]}" \
  >"$LOGS/airflow-beside.log" 2>&1 &
beside=$!
started "airflow (live stack and no-image runs)" "$LOGS/airflow-beside.log"
layer pipeline .venv/pipeline tests/pipeline
layer serving .venv/serving tests/serving
finished images "$images" "$LOGS/images.log"
images=""

if [[ " ${failed[*]} " == *" images "* ]]; then
  echo "== the images did not build: the other Airflow tests and the deployment tests need them"
else
  layer airflow .venv/airflow tests/airflow "${BESIDE[@]/#/--ignore=}" -p no:cacheprovider
fi
finished "airflow (live stack and no-image runs)" "$beside" "$LOGS/airflow-beside.log"
beside=""
[[ " ${failed[*]} " == *" images "* ]] || layer deploy .venv/airflow tests/deploy -p no:cacheprovider

# One closing line for the whole suite, summed over every layer's pytest summary line.
summary=$(cat "$LOGS"/{pipeline,serving,airflow,airflow-beside,deploy}.log 2>/dev/null | grep -E '^=+ .* in [0-9.]+s' |
  awk '{ for (i = 2; i < NF; i++) if ($(i+1) ~ /^(passed|failed|errors?)/) n[$(i+1) ~ /^passed/ ? "p" : "f"] += $i }
       END { printf "%d passed, %d failed", n["p"], n["f"] }')
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== failed: ${failed[*]}"
  echo "total: $summary"
  exit 1
fi
echo "== every layer passed"
echo "total: $summary"
