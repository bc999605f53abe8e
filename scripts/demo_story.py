"""Land three partitions of the example dataset (datasets/iris.yaml), backfill them through its DAG
(continuous_training_iris), report what happened. The days, and what changes on the last one (a sensor
recalibration), are scripts/demo_plan.py's.

Airflow is driven through its REST API, as the stack's admin: each `airflow` CLI call costs seconds of
imports, and the demo polls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mlpipeline.dataset import load  # noqa: E402  (PyYAML and the standard library only)
from scripts import demo_plan  # noqa: E402
from scripts.airflow_cli import api_headers, mlflow_login  # noqa: E402
from scripts.traffic import Traffic  # noqa: E402
from scripts.ui_links import link_lines, stack_ports  # noqa: E402

RUN_DIR = Path(os.environ["RUN_DIR"])
PORTS = stack_ports()
DAYS = demo_plan.DAYS
# The example dataset file names the model (its landing area, registry name and served name) and its DAG.
DATASET_FILE = REPO / "datasets" / "iris.yaml"
DATASET = load(DATASET_FILE)
MODEL = DATASET.model_name
# A new champion serves 30 % of the traffic for half a minute before Prometheus's verdict promotes it.
CANARY = {"canary_percent": 30, "canary_minutes": 0.5}
DAG = f"continuous_training_{DATASET.name}"
FEATURES = DATASET.feature_names


class SensorTraffic(Traffic):
    """The demo's clients. They measure with the same sensors as the labelled batches, so once the drift day's
    run starts their requests carry the recalibrated readings too (the model served then has to cope with
    them, and the canary is judged on them)."""

    recalibrated = False

    def row(self) -> list[float]:
        row = super().row()
        return demo_plan.recalibrated(row, FEATURES) if self.recalibrated else row


class Phases:
    """Wall time per phase of the demo, from demo.sh's start (so a slow phase is named, not guessed)."""

    def __init__(self):
        self.started = float(os.environ.get("DEMO_STARTED", time.time()))
        services_up = os.environ.get("DEMO_SERVICES_UP")
        self.marks = [("start services", float(services_up))] if services_up else []

    def done(self, phase: str) -> None:
        self.marks.append((phase, time.time()))

    def report(self, runs: list[dict]) -> str:
        lines, last = [], self.started
        for phase, at in self.marks:
            lines.append(f"  {at - last:6.1f} s  {phase}")
            last = at
        for run in runs:  # Airflow's own start and end of each run, inside "wait for the runs"
            if run.get("start_date") and run.get("end_date"):
                seconds = _iso_seconds(run["end_date"]) - _iso_seconds(run["start_date"])
                lines.append(f"         ({run['logical_date'][:10]} ran {seconds:.1f} s)")
        lines.append(f"  {last - self.started:6.1f} s  in all")
        return "\n".join(lines)


def _iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


class Airflow:
    """Airflow's REST API with the admin password Airflow generated into the run folder."""

    def __init__(self):
        self.url = f"http://127.0.0.1:{PORTS['airflow']}"
        self.headers = api_headers(self.url, RUN_DIR)

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        answer = httpx.request(method, f"{self.url}/api/v2{path}", headers=self.headers, timeout=30, **kwargs)
        if answer.is_error and answer.status_code != 404:
            sys.exit(f"Airflow API {method} {path} failed: {answer.status_code} {answer.text[:500]}")
        return answer

    def xcom(self, run: dict, task_id: str) -> dict:
        """The task's return value in `run` ({} when it has none: skipped, or not run)."""
        answer = self.call("GET", f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/xcomEntries/"
                                  "return_value", params={"deserialize": "true"})
        return (answer.json().get("value") or {}) if answer.status_code == 200 else {}


def mlpipeline(*args) -> dict:
    user, password = mlflow_login(RUN_DIR)
    out = subprocess.run([str(REPO / ".venv/pipeline/bin/mlpipeline"), "--quiet", *args], capture_output=True,
                         text=True, check=True, env={**os.environ,
                                                     "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{PORTS['mlflow']}",
                                                     "MLFLOW_TRACKING_USERNAME": user,
                                                     "MLFLOW_TRACKING_PASSWORD": password})
    return json.loads(out.stdout)


def runs(airflow: Airflow) -> list[dict]:
    return airflow.call("GET", f"/dags/{DAG}/dagRuns", params={"run_type": "backfill",
                                                               "order_by": "logical_date"}).json()["dag_runs"]


def land(day: str, drift: str) -> dict:
    return mlpipeline("simulate", "--data-root", RUN_DIR / "data", "--dataset", DATASET_FILE,
                      *demo_plan.simulate_args(day, drift))


def main() -> None:
    phases = Phases()
    with ThreadPoolExecutor() as pool:  # three processes that mostly import: side by side on two cores
        list(pool.map(land, *zip(*DAYS, strict=True)))
    for day, drift in DAYS:
        print(f"landed {day}: {'clean' if drift == 'none' else demo_plan.what_changed()}")
    phases.done("land three partitions")
    airflow = Airflow()
    deadline = time.monotonic() + 180
    while airflow.call("GET", f"/dags/{DAG}").status_code == 404:
        if time.monotonic() > deadline:
            sys.exit(f"the DAG processor did not pick up {DAG} (dags/continuous_training.py, {DATASET_FILE.name})")
        time.sleep(1)
    phases.done("wait for the DAG processor")
    # Backfills need an unpaused DAG. The backfill runs the three days in order, one at a time, since
    # each day's decision depends on the champion the day before left. (Unpausing also starts today's
    # scheduled run, which waits in the triggerer for a batch that the demo does not land.)
    airflow.call("PATCH", f"/dags/{DAG}", json={"is_paused": False})
    airflow.call("POST", "/backfills", json={"dag_id": DAG, "from_date": f"{DAYS[0][0]}T00:00:00Z",
                                             "to_date": f"{DAYS[-1][0]}T00:00:00Z", "dag_run_conf": CANARY,
                                             "reprocess_behavior": "completed", "max_active_runs": 1})
    print(f"backfill created ({json.dumps(CANARY)}); waiting for the three runs", flush=True)
    phases.done("unpause, create the backfill")
    # Clients send requests once the first model serves (a canary is judged on live traffic).
    traffic = SensorTraffic(f"http://127.0.0.1:{PORTS['mlops_serving']}", MODEL, rate=20)
    try:
        wait_for_runs(airflow, traffic)
    finally:
        if traffic.started:
            traffic.__exit__()
    phases.done("wait for the runs")
    summary(airflow, traffic)
    phases.done("summary")
    print("\nwhere the time went (wall clock, from `make demo`'s start)")
    print(phases.report(runs(airflow)))
    links()


def wait_for_runs(airflow: Airflow, traffic: SensorTraffic) -> None:
    deadline, last = time.monotonic() + 1200, None
    while True:
        if not traffic.started and serving():
            traffic.__enter__()
            print("  the model serves: sending 20 requests/s through the router", flush=True)
        states = {r["logical_date"][:10]: r["state"] for r in runs(airflow)}
        if not traffic.recalibrated and states.get(demo_plan.DRIFT_DAY) not in (None, "queued"):
            traffic.recalibrated = True
            print(f"  {demo_plan.DRIFT_DAY} started: the clients' {demo_plan.sensor_words()} sensors are "
                  f"recalibrated too, so their requests now carry the new readings ({demo_plan.SCALE:g}×)", flush=True)
        finished = {d: s for d, s in states.items() if s in ("success", "failed")}
        if states != last:
            print("  " + ", ".join(f"{d}: {s}" for d, s in sorted(states.items())), flush=True)
            last = states
        if len(finished) >= len(DAYS):
            break
        if time.monotonic() > deadline:
            sys.exit("runs did not finish within 20 minutes; see the Airflow UI")
        time.sleep(2)


def serving() -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{PORTS['mlops_serving']}/v2/models/{MODEL}/ready", timeout=2).is_success
    except httpx.HTTPError:
        return False


def canary_verdicts() -> list[str]:
    """The canary verdicts the deploys recorded on the model versions."""
    mlflow = f"http://127.0.0.1:{PORTS['mlflow']}/api/2.0/mlflow"
    found = httpx.get(f"{mlflow}/model-versions/search", params={"filter": f"name='{MODEL}'"},
                      auth=mlflow_login(RUN_DIR)).json()
    lines = []
    for version in sorted(found.get("model_versions", []), key=lambda v: int(v["version"])):
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        if "canary.verdict" in tags:
            lines.append(f"  v{version['version']} at {tags['canary.percent']} %: {tags['canary.verdict']} "
                         f"({tags['canary.reason']})")
    return lines


def drift_day(airflow: Airflow, run: dict) -> list[str]:
    """The drift day in plain words: what changed, how the model served then did on that day's batch, and what
    retraining made of it (from the run's detect, training and report results)."""
    detect, trained = airflow.xcom(run, "detect_degradation"), airflow.xcom(run, "training.train")
    report = airflow.xcom(run, "report")
    lines = [f"\nwhat changed on {demo_plan.DRIFT_DAY}: {demo_plan.what_changed()}"]
    served = (detect.get("champion") or {}).get("version")
    accuracy = (detect.get("fresh_metrics") or {}).get("accuracy")
    if served and accuracy is not None:
        lines.append(f"  the served v{served}'s accuracy on that day's batch fell to {accuracy:.3f} (the threshold is "
                     f"{report.get('metric_threshold', DATASET.metric_threshold)})")
    if trained.get("challenger_accuracy") is not None and trained.get("champion_accuracy") is not None:
        outcome = {"promote": "promoted", "reject": "rejected"}.get(trained["decision"], trained["decision"])
        lines.append(f"  retrained on it, the new model scored {trained['challenger_accuracy']:.3f} on the day's "
                     f"held-out rows (v{served}: {trained['champion_accuracy']:.3f}) and was {outcome}"
                     + (f"; its canary verdict: {report['canary']}" if report.get("canary") else ""))
    return lines


def summary(airflow: Airflow, traffic: Traffic) -> None:
    print("\nsummary")
    backfilled = runs(airflow)
    for run in backfilled:
        found = airflow.call("GET", f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances").json()
        tis = {t["task_id"]: t["state"] for t in found["task_instances"]}
        if tis.get("training.train") == "success":
            branch = "retrained, " + ("promoted and deployed" if tis.get("training.register") == "success"
                                      else "challenger rejected")
        else:
            branch = "no retraining needed" if tis.get("no_retraining") == "success" else "stopped early"
        print(f"  {run['logical_date'][:10]}  {run['state']:<8} {branch}")
    for run in backfilled:
        if run["logical_date"][:10] == demo_plan.DRIFT_DAY:
            print("\n".join(drift_day(airflow, run)))
    history = mlpipeline("champion-at", "--model-name", MODEL)
    print(f"\nchampion: {MODEL} v{history['champion_version']}")
    for event in history["history"]:
        print(f"  {event['event']} v{event['version']} (was {event['previous_version'] or 'none'}): {event['reason']}")
    print("\ncanary rollouts (verdicts from Prometheus, recorded on the model versions):")
    print("\n".join(canary_verdicts()) or "  none")
    print(f"traffic through the router during the demo: {traffic.summary()}")
    # The textbook flowers, measured as a user measures them now: with the recalibrated sensor.
    url = f"http://127.0.0.1:{PORTS['mlops_serving']}/v2/models/{MODEL}/infer"
    request = demo_plan.textbook_request(FEATURES)
    at = FEATURES.index(demo_plan.RECALIBRATED)
    readings = ", a ".join(f"{row[at]:g} cm petal reads {demo_plan.recalibrated(row, FEATURES)[at]:g}"
                         for row in demo_plan.TEXTBOOK.values())
    print(f"\nthe textbook {' and '.join(demo_plan.TEXTBOOK)} (Fisher's flowers 1 and 51), measured with the "
          f"recalibrated {demo_plan.sensor_words()} sensor (a {readings}):")
    print(f"  curl -s {url} -H 'Content-Type: application/json' -d '{json.dumps(request, separators=(',', ':'))}'")
    answer = httpx.post(url, json=request).json()
    print(f"live v2 inference -> {', '.join(answer['outputs'][0]['data'])} (served version {answer['model_version']})")
    if answer["outputs"][0]["data"] != list(demo_plan.TEXTBOOK):  # the story's point: the loop fixed the model
        sys.exit(f"the served model calls the textbook {', '.join(demo_plan.TEXTBOOK)} "
                 f"{', '.join(answer['outputs'][0]['data'])}: the retrained champion should know them")
    query = "mlops_champion_version"
    print(f"PromQL {query}: {', '.join(scraped(query, history['champion_version'])) or 'no data yet'}")


def scraped(query: str, champion_version, wait: float = 15) -> list[str]:
    """The query's values once Prometheus has scraped the current champion (a scrape takes up to 5 s)."""
    deadline = time.monotonic() + wait
    while True:
        result = httpx.get(f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/query", params={"query": query}).json()
        values = {r["metric"].get("model"): r["value"][1] for r in result["data"]["result"]}
        if values.get(MODEL) == str(champion_version) or time.monotonic() > deadline:
            return [f"{model}={value}" for model, value in values.items()]
        time.sleep(0.5)


def links() -> None:
    print()
    print("\n".join(link_lines(RUN_DIR, PORTS, MODEL)))
    print("stop everything with: make down")


if __name__ == "__main__":
    main()
