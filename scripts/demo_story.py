"""Land three partitions, backfill them through the continuous_training DAG, report what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.airflow_cli import airflow_env, run_airflow  # noqa: E402
from scripts.traffic import Traffic  # noqa: E402
from scripts.ui_links import demo_links  # noqa: E402

RUN_DIR = Path(os.environ["RUN_DIR"])
PORTS = {name: os.environ.get(f"{name.upper()}_PORT", default) for name, default in
         {"mlflow": "5000", "prometheus": "9090", "airflow": "8080", "mlops_serving": "8085",
          "alertmanager": "9093"}.items()}
DAYS = [("2026-11-01", "none"), ("2026-11-02", "none"), ("2026-11-03", "concept")]
MODEL = "iris-classifier"
# A new champion serves 30 % of the traffic for half a minute before Prometheus's verdict promotes it.
CANARY = {"canary_percent": 30, "canary_minutes": 0.5}
AIRFLOW_ENV = airflow_env(RUN_DIR)


def airflow(*args) -> str:
    done = run_airflow(args, AIRFLOW_ENV)
    if done.returncode != 0:
        sys.exit(f"airflow {' '.join(map(str, args))} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def mlpipeline(*args) -> dict:
    out = subprocess.run([str(REPO / ".venv/pipeline/bin/mlpipeline"), "--quiet", *args], capture_output=True,
                         text=True, check=True, env={**os.environ,
                                                     "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{PORTS['mlflow']}"})
    return json.loads(out.stdout)


def runs() -> list[dict]:
    lines = airflow("dags", "list-runs", "continuous_training", "-o", "json").strip().splitlines()
    found = json.loads(lines[-1]) if lines and lines[-1].startswith("[") else []
    return [r for r in found if r["run_id"].startswith("backfill__")]


def main() -> None:
    for seed, (day, drift) in enumerate(DAYS, 1):
        mlpipeline("simulate", "--data-root", RUN_DIR / "data", "--partition", day, "--rows", "1500", "--drift",
                   drift, "--seed", str(seed))
        print(f"landed {day} ({'clean' if drift == 'none' else drift + ' drift'})")
    deadline = time.monotonic() + 180
    while "continuous_training" not in airflow("dags", "list", "-o", "plain"):
        if time.monotonic() > deadline:
            sys.exit("the DAG processor did not pick up dags/continuous_training.py")
        time.sleep(3)
    # Backfills need an unpaused DAG. The backfill runs the three days in order, one at a time, since
    # each day's decision depends on the champion the day before left. (Unpausing also starts today's
    # scheduled run, which waits in the triggerer for a batch that the demo does not land.)
    airflow("dags", "unpause", "continuous_training")
    airflow("backfill", "create", "--dag-id", "continuous_training", "--from-date", DAYS[0][0], "--to-date",
            DAYS[-1][0], "--reprocess-behavior", "completed", "--max-active-runs", "1",
            "--dag-run-conf", json.dumps(CANARY))
    print(f"backfill created ({json.dumps(CANARY)}); waiting for the three runs", flush=True)
    # Clients send requests once the first model serves (a canary is judged on live traffic).
    traffic = Traffic(f"http://127.0.0.1:{PORTS['mlops_serving']}", MODEL, rate=20)
    try:
        wait_for_runs(traffic)
    finally:
        if traffic.started:
            traffic.__exit__()
    summary(traffic)


def wait_for_runs(traffic: Traffic) -> None:
    deadline, last = time.monotonic() + 1200, None
    while True:
        if not traffic.started and serving():
            traffic.__enter__()
            print("  the model serves: sending 20 requests/s through the router", flush=True)
        states = {r["logical_date"][:10]: r["state"] for r in runs()}
        finished = {d: s for d, s in states.items() if s in ("success", "failed")}
        if states != last:
            print("  " + ", ".join(f"{d}: {s}" for d, s in sorted(states.items())), flush=True)
            last = states
        if len(finished) >= len(DAYS):
            break
        if time.monotonic() > deadline:
            sys.exit("runs did not finish within 20 minutes; see the Airflow UI")
        time.sleep(5)


def serving() -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{PORTS['mlops_serving']}/v2/models/{MODEL}/ready", timeout=2).is_success
    except httpx.HTTPError:
        return False


def canary_verdicts() -> list[str]:
    """The canary verdicts the deploys recorded on the model versions."""
    mlflow = f"http://127.0.0.1:{PORTS['mlflow']}/api/2.0/mlflow"
    found = httpx.get(f"{mlflow}/model-versions/search", params={"filter": f"name='{MODEL}'"}).json()
    lines = []
    for version in sorted(found.get("model_versions", []), key=lambda v: int(v["version"])):
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        if "canary.verdict" in tags:
            lines.append(f"  v{version['version']} at {tags['canary.percent']} %: {tags['canary.verdict']} "
                         f"({tags['canary.reason']})")
    return lines


def summary(traffic: Traffic) -> None:
    print("\nsummary")
    for run in sorted(runs(), key=lambda r: r["logical_date"]):
        out = airflow("tasks", "states-for-dag-run", "continuous_training", run["run_id"], "-o", "json")
        tis = {t["task_id"]: t["state"] for t in json.loads(out.strip().splitlines()[-1])}
        if tis.get("training.train") == "success":
            branch = "retrained, " + ("promoted and deployed" if tis.get("training.register") == "success"
                                      else "challenger rejected")
        else:
            branch = "no retraining needed" if tis.get("no_retraining") == "success" else "stopped early"
        print(f"  {run['logical_date'][:10]}  {run['state']:<8} {branch}")
    history = mlpipeline("champion-at", "--model-name", MODEL)
    print(f"\nchampion: {MODEL} v{history['champion_version']}")
    for event in history["history"]:
        print(f"  {event['event']} v{event['version']} (was {event['previous_version'] or 'none'}): {event['reason']}")
    print("\ncanary rollouts (verdicts from Prometheus, recorded on the model versions):")
    print("\n".join(canary_verdicts()) or "  none")
    print(f"traffic through the router during the demo: {traffic.summary()}")
    answer = httpx.post(f"http://127.0.0.1:{PORTS['mlops_serving']}/v2/models/{MODEL}/infer", json={"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}).json()
    print(f"\nlive v2 inference [5.1, 3.5, 1.4, 0.2] -> {answer['outputs'][0]['data'][0]} "
          f"(served version {answer['model_version']})")
    time.sleep(6)  # one Prometheus scrape
    query = "mlops_champion_version"
    result = httpx.get(f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/query", params={"query": query}).json()
    values = [f"{r['metric'].get('model')}={r['value'][1]}" for r in result["data"]["result"]]
    print(f"PromQL {query}: {', '.join(values) or 'no data yet'}")
    password_file = RUN_DIR / "airflow" / "simple_auth_manager_passwords.json.generated"
    password = json.loads(password_file.read_text()).get("admin") if password_file.exists() else "(see airflow.log)"
    print()
    for name, url in demo_links(PORTS, MODEL).items():
        print(f"{name:<13} {url}" + (f"  (login admin / {password})" if name == "Airflow UI" else ""))
    print("stop everything with: make down")


if __name__ == "__main__":
    main()
