"""The users' paths on a live stack (tests/airflow/live.py: what `make demo` starts, Airflow's and MLflow's
databases on PostgreSQL), taken as users take them: backfills and re-runs through the CLI, manual
triggers through the REST API the UI uses, alerts read back from Alertmanager. The tests run in order
on one stack; each says what it leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from .live import DAG_ID, MODEL, REPO, LiveStack
from .test_dag import SCREENSHOTS_MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DAYS = [("2026-11-01", "none"), ("2026-11-02", "none"), ("2026-11-03", "concept")]


@pytest.fixture(scope="module")
def stack():
    # Short waits, so that the tests see retries and the batch deadline fire in seconds.
    overrides = {"AIRFLOW__MLOPS__BATCH_DEADLINE_MINUTES": "1.5", "AIRFLOW__MLOPS__TASK_RETRY_DELAY_SECONDS": "3",
                 # a canary without traffic is out of time in seconds (test_a_canary_without_traffic_...)
                 "AIRFLOW__MLOPS__CANARY_DEADLINE_MINUTES": "0.25", "AIRFLOW__MLOPS__CANARY_POLL_SECONDS": "2",
                 # a killed worker's task is found out in seconds, not the default five minutes
                 "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20"}
    # Under .run/, not pytest's temporary folders (pytest keeps the last three of those, and the other
    # layers' runs rotate them out): the services' and the task logs stay for a failure's post-mortem. A
    # second session running these tests at the same time gets a folder of its own, not the first's emptied.
    import fcntl

    (REPO / ".run").mkdir(exist_ok=True)
    with open(REPO / ".run" / "live-stack.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            run_dir = REPO / ".run" / "live-stack"
        except BlockingIOError:
            run_dir = REPO / ".run" / f"live-stack-{os.getpid()}"
        shutil.rmtree(run_dir, ignore_errors=True)
        with LiveStack(run_dir, overrides) as live:
            yield live


def backfill(stack: LiveStack, first: str, last: str, reprocess: bool = False) -> list[dict]:
    args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", first, "--to-date", last,
            "--max-active-runs", "1"]
    stack.cli(*args, *(["--reprocess-behavior", "completed"] if reprocess else []))
    deadline = time.monotonic() + 600
    wanted = {d for d, _ in DAYS if first <= d <= last}
    while True:
        runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill",
                                                                   "order_by": "logical_date"}).json()["dag_runs"]
        mine = [r for r in runs if r["logical_date"][:10] in wanted]
        # Done when its runs are, and the scheduler has closed the backfill (one open backfill per DAG).
        backfills = stack.get("/api/v2/backfills", params={"dag_id": DAG_ID}).json()["backfills"]
        if len(mine) == len(wanted) and all(r["state"] in ("success", "failed") for r in mine) and all(
                b["completed_at"] for b in backfills):
            return mine
        assert time.monotonic() < deadline, f"backfill did not finish: {[(r['dag_run_id'], r['state']) for r in runs]}"
        time.sleep(3)


def test_a_backfill_replays_three_partitions(stack):
    """Leaves: v1 (2026-11-01) and v2 (2026-11-03, concept drift) registered, v2 champion and served."""
    for seed, (day, drift) in enumerate(DAYS, 1):
        stack.land(day, drift, seed)
    stack.cli("dags", "unpause", DAG_ID)
    runs = backfill(stack, DAYS[0][0], DAYS[-1][0])
    assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(d, "success") for d, _ in DAYS]
    first, second, third = (stack.states(r["dag_run_id"]) for r in runs)
    assert first["training.register"] == "success" and first["deploy"] == "success"
    assert second["no_retraining"] == "success" and second["training.train"] == "skipped"
    assert third["training.register"] == "success" and third["deploy"] == "success"
    assert stack.served_version() == "2" and stack.champion() == "2"

    # The task links the UI shows, as its REST API serves them.
    def links(run, task_id):
        return stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/links"
                         ).json()["extra_links"]

    deploy_links = links(runs[2], "deploy")
    assert deploy_links["MLflow model version"] == f"{stack.mlflow}/#/models/iris-classifier/versions/2"
    import httpx

    assert httpx.get(deploy_links["Serving endpoint"]).json()["parameters"]["registry_version"] == "2"
    train_links = links(runs[2], "training.train")
    run_link = train_links["MLflow run"]
    # MLflow's pages need its login (its basic-auth app): with it, the link opens
    assert httpx.get(run_link.split("#")[0]).status_code == 401
    assert httpx.get(run_link.split("#")[0], auth=stack.mlflow_auth).status_code == 200
    # the run under its experiment, beside the experiment's runs table, both in MLflow's model-training mode
    assert run_link.startswith(train_links["MLflow runs"].split("?")[0] + "/")
    assert run_link.endswith("?workflowType=machine_learning")
    assert links(runs[1], "training.train")["MLflow run"] is None  # skipped: nothing to link


def tcp_listeners() -> dict[str, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket here, from /proc/net."""
    found = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
            found[fields[9]] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return found


def listening_processes(run_dir: Path) -> list[tuple[str, str, int]]:
    """(command line, address, port) of every TCP socket a process of the stack listens on: the process
    groups services.sh and the local deploys start (each leader's pid in a *.pid file of the run folder)."""
    groups = {int(p.read_text().split()[0]) for p in run_dir.rglob("*.pid") if p.read_text().strip().isdigit()}
    sockets, found = tcp_listeners(), []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) not in groups:
                continue
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    found.append((command, *sockets[target[8:-1]]))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile
    return found


def host_is_hard_coded(command: str) -> bool:
    """A listener whose host its component hard-codes: KServe's REST server in the model servers
    (kserve/protocol/rest/server.py, host="0.0.0.0"). docs/security.md lists it as open."""
    words = command.split()
    return len(words) > 1 and Path(words[1]).name == "mlserving"


def test_the_stack_listens_on_loopback_only_but_where_a_component_hard_codes_its_host(stack):
    """After a deploy: PostgreSQL, MLflow, Alertmanager, the Pushgateway, Airflow's API server and the
    router (each found listening) listen on loopback, and Airflow's components serve no logs on other
    interfaces; the only other listeners are the model servers, whose host cannot be set."""
    listeners = listening_processes(stack.run_dir)
    ports = {int(stack.env[name]) for name in ("POSTGRES_PORT", "MLFLOW_PORT", "ALERTMANAGER_PORT",
                                               "PUSHGATEWAY_PORT", "AIRFLOW_PORT", "MLOPS_SERVING_PORT")}
    assert ports <= {port for *_, port in listeners}, listeners
    exposed = [(command, address, port) for command, address, port in listeners
               if address not in ("127.0.0.1", "::1") and not host_is_hard_coded(command)]
    assert exposed == []
    # With no log server, the API server reads the task logs from disk: a task's and a deferred one's.
    runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()["dag_runs"]
    run = next(r["dag_run_id"] for r in runs if r["state"] == "success")
    for task_id, expected in (("data.ingest", "ingest"), ("wait_for_batch", "_SUCCESS")):
        log = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/logs/1")
        assert log.status_code == 200 and expected in log.text, (task_id, log.text[:500])


def test_re_runs_report_what_happened_not_what_was_decided(stack):
    """Backfilling 2026-11-01 again with v2 champion: the v2 model (concept labels) is bad on that data,
    so it retrains, reuses the run key's training and decides promote; but that run key is v1 already:
    nothing is registered or moved again, and the report says so. Then 2026-11-03 again: v2 was trained
    on it, so the no_retraining branch, whose report must not read the XCom train and register left from the
    run's first try (promote, v2). The re-run decides in a training run of its own: v1's source run (params,
    metrics, tags, end time, as MLflow's own client reads them) is the same before and after. Last, a forced
    retrain of 2026-11-03 from the trigger form leaves the champion's (v2's) source run as it was."""
    import httpx

    def source_run(version: str) -> dict:
        """The version's source run as MLflow's own client reads it (the pipeline environment has MLflow)."""
        import subprocess

        from ..support import PIPELINE_BIN

        code = ("import json, sys; from mlflow import MlflowClient; client = MlflowClient(); "
                "run = client.get_run(client.get_model_version(sys.argv[1], sys.argv[2]).run_id); "
                "print(json.dumps(run.to_dictionary(), sort_keys=True))")
        user, password = stack.mlflow_auth
        env = {"PATH": os.environ["PATH"], "MLFLOW_TRACKING_URI": stack.mlflow, "MLFLOW_TRACKING_USERNAME": user,
               "MLFLOW_TRACKING_PASSWORD": password}
        done = subprocess.run([str(PIPELINE_BIN / "python"), "-c", code, MODEL, version], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    v1_source = source_run("1")
    [rerun] = backfill(stack, "2026-11-01", "2026-11-01", reprocess=True)
    assert rerun["state"] == "success"
    assert source_run("1") == v1_source  # never written again by the re-run
    decided = stack.xcom(rerun["dag_run_id"], "training.train")
    assert decided["challenger_run_id"] != v1_source["info"]["run_id"]
    rerun_tags = {t["key"]: t["value"] for t in httpx.get(
        f"{stack.mlflow}/api/2.0/mlflow/runs/get", auth=stack.mlflow_auth,
        params={"run_id": decided["challenger_run_id"]}).json()["run"]["data"]["tags"]}
    assert rerun_tags["rerun_of"] == v1_source["info"]["run_id"] and rerun_tags["airflow_run_id"] == rerun["dag_run_id"]
    states = stack.states(rerun["dag_run_id"])
    assert states["training.register"] == "success"
    assert stack.xcom(rerun["dag_run_id"], "training.register")["outcome"] == "already_registered"
    report = stack.xcom(rerun["dag_run_id"], "report")
    assert report["decision"] == "already_registered" and report["champion_version"] == "2"
    assert stack.pushed()["mlops_promoted"] == 0 and stack.pushed()["mlops_champion_version"] == 2
    assert stack.champion() == "2" and stack.versions() == ["1", "2"] and stack.served_version() == "2"

    [skipped] = backfill(stack, "2026-11-03", "2026-11-03", reprocess=True)
    assert stack.states(skipped["dag_run_id"])["no_retraining"] == "success"
    report = stack.xcom(skipped["dag_run_id"], "report")
    assert report["decision"] == "skipped" and report["champion_version"] == "2"
    assert stack.pushed()["mlops_champion_version"] == 2

    # Forced from the trigger form for the partition that made the champion (v2): its run key, its model, so
    # the challenger is the champion itself and is rejected; v2's source run is not written to.
    v2_source = source_run("2")
    forced = stack.trigger({"partition": "2026-11-03", "force_retrain": True})
    assert stack.wait_run(forced)["state"] == "success", stack.tries(forced)
    assert source_run("2") == v2_source
    decided = stack.xcom(forced, "training.train")
    assert decided["decision"] == "reject" and decided["challenger_run_id"] != v2_source["info"]["run_id"]
    assert stack.champion() == "2" and stack.states(forced)["training.keep_champion"] == "success"


def test_task_logs_carry_no_warnings_of_ours(stack):
    """Every task of a finished run logs no Python warning: Airflow 3.3 read the plugins folder's .airflowignore
    with a pathspec class pathspec 1.0 deprecated, and each task logged that DeprecationWarning."""
    runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()["dag_runs"]
    finished = [r["dag_run_id"] for r in runs if r["state"] == "success"]
    if not finished:  # run alone: one run of its own
        stack.land("2026-11-01")
        finished = [stack.trigger({"partition": "2026-11-01"})]
        assert stack.wait_run(finished[0])["state"] == "success"
    tasks = [t for t in stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{finished[-1]}/taskInstances").json()[
        "task_instances"] if t["state"] == "success"]
    assert len(tasks) >= 5
    for task in tasks:
        content = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{finished[-1]}/taskInstances/{task['task_id']}/logs/"
                            f"{task['try_number']}").json()["content"]
        assert len(content) > 1, task["task_id"]  # the log was read
        warned = [line.get("event") for line in content
                  if isinstance(line, dict) and str(line.get("category", "")).endswith("Warning")]
        assert warned == [], (task["task_id"], warned)


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def signed_in(stack: LiveStack, browser):
    """A page of the Airflow UI, signed in as the admin."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(f"{stack.api}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack.admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.api}/")
    return page


@pytest.fixture
def screenshots(tmp_path):
    """Where the journey's screenshots go: docs/img/ with MLOPS_SCREENSHOTS=docs (make screenshots), else a
    temporary folder."""
    return SCREENSHOTS_MANIFEST.parent if os.environ.get("MLOPS_SCREENSHOTS") == "docs" else tmp_path


def screenshots_taken(stack: LiveStack, folder: Path) -> None:
    """Once every picture is taken (the journey passed): what they show, the DAG's tasks and the trigger form's
    Params, beside them (test_dag.py fails when the DAG no longer matches)."""
    if folder != SCREENSHOTS_MANIFEST.parent:
        return
    dag = stack.get(f"/api/v2/dags/{DAG_ID}/details").json()
    tasks = sorted(t["task_id"] for t in stack.get(f"/api/v2/dags/{DAG_ID}/tasks").json()["tasks"])
    SCREENSHOTS_MANIFEST.write_text(json.dumps({"dag_tasks": tasks, "params": sorted(dag["params"])}, indent=1)
                                    + "\n")


def test_the_airflow_ui_as_a_user_takes_it(stack, browser, screenshots):
    """Log in, read the grid, trigger with Params (an invalid window refused with the reason), watch the
    run succeed, open the deploy task's Serving endpoint link, start a backfill from the dialog."""
    import re

    from playwright.sync_api import expect

    page = signed_in(stack, browser)

    # The grid shows which branch each backfill run took.
    page.goto(f"{stack.api}/dags/{DAG_ID}")
    page.get_by_role("button", name="Expand all task groups").click()

    def state(run_id: str, task_id: str) -> str:
        """A task's state as a user finds it: its grid cell clicked, the badge on the task's page."""
        page.get_by_test_id(f"grid-{run_id}-{task_id}").click()
        page.wait_for_url(f"**/runs/{run_id}/tasks/{task_id}")
        heading = page.locator("h2", has_text=re.compile(rf"^\s*{re.escape(task_id)}\s*$"))
        badge = heading.locator("xpath=..").get_by_test_id("state-badge")  # beside the task's own heading
        expect(badge).to_have_text(re.compile(r"[A-Za-z]"))
        return badge.inner_text().strip()

    # As the re-runs above left them: 2026-11-02 skipped training, 2026-11-01 retrained (and registered
    # nothing new), 2026-11-03 skipped.
    quiet, retrained = "backfill__2026-11-02T00:00:00+00:00", "backfill__2026-11-01T00:00:00+00:00"
    got = (state(quiet, "no_retraining"), state(quiet, "training.train"))
    assert got == ("Success", "Skipped"), got
    assert (state(retrained, "training.register"), state(retrained, "no_retraining")) == ("Success", "Skipped")
    page.goto(f"{stack.api}/dags/{DAG_ID}")
    page.get_by_test_id(f"grid-{retrained}-training.register").wait_for()  # groups stay expanded
    page.mouse.move(0, 500)  # no chart tooltip in the picture
    page.screenshot(path=str(screenshots / "dag-grid.png"))

    # Trigger with Params: what a run cannot do is refused in the dialog, naming the Param and why.
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")

    def refused(param: str, why: str) -> None:
        dialog.get_by_role("button", name="Trigger").click()
        refusal = dialog.get_by_text(f"Invalid input for param {param}")
        refusal.wait_for()
        assert why in refusal.inner_text(), refusal.inner_text()
        refusal.scroll_into_view_if_needed()
        # The error toast ("Failed to Trigger Dag") covers the button; it goes once the pointer leaves it.
        page.mouse.move(600, 100)
        page.locator("[data-scope=toast][data-type=error]").wait_for(state="hidden", timeout=20_000)

    # Empty means off: the form must not call the drift window required.
    dialog.locator("#element_live_drift_window").fill("")
    expect(dialog.get_by_text("This field is required")).to_have_count(0)
    dialog.locator("#element_partition").fill("2026-13-45")  # matches YYYY-MM-DD, is no date
    refused("partition", "'2026-13-45' is not a 'date'")
    dialog.locator("#element_partition").fill("2026-11-02")
    threshold = dialog.locator("input[name=element_metric_threshold]")  # a number field: the root has the id
    threshold.fill("1.5")  # refused as typed, never clamped to 1
    dialog.locator("#element_partition").click()  # the number field loses focus (where a clamp would happen)
    expect(threshold).to_have_value("1.5")
    refused("metric_threshold", "1.5 is greater than the maximum of 1")
    threshold.fill("0.85")
    dialog.locator("#element_training_window").fill("every")
    refused("training_window", "'every' does not match")
    page.screenshot(path=str(screenshots / "trigger-refused.png"))
    dialog.locator("#element_training_window").fill("last:2")
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url(f"{stack.api}/dags/{DAG_ID}/runs/**")
    run_id = page.url.rsplit("/runs/", 1)[1].split("?")[0].replace("%2B", "+").replace("%3A", ":")
    assert stack.wait_run(run_id)["state"] == "success"
    assert stack.xcom(run_id, "wait_for_batch")["partition"] == "2026-11-02"
    assert stack.xcom(run_id, "data.split")["window"] == "last:2"
    assert stack.xcom(run_id, "detect_degradation")["live_drift"] is None  # the window left empty: off

    # The deploy task's links: the Serving endpoint opens the served model.
    page.goto(f"{stack.api}/dags/{DAG_ID}/runs/{retrained}/tasks/deploy")
    page.get_by_role("link", name="Details", exact=True).click()  # the task's Extra Links are there
    link = page.get_by_role("link", name="Serving endpoint")
    link.wait_for()
    page.screenshot(path=str(screenshots / "deploy-links.png"))
    with page.context.expect_page() as opened:
        link.click()
    endpoint = opened.value
    endpoint.wait_for_load_state()
    assert f'"registry_version":"{stack.served_version()}"' in endpoint.content().replace(" ", "")
    endpoint.close()

    # A backfill from the dialog, reprocessing two days.
    before = {b["id"] for b in stack.get("/api/v2/backfills", params={"dag_id": DAG_ID}).json()["backfills"]}
    page.goto(f"{stack.api}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Backfill", exact=True).click()
    pickers = dialog.get_by_text("Select date and time")
    for picker, day in ((pickers.first, "2026/11/01"), (pickers.last, "2026/11/02")):
        picker.click()
        page.get_by_placeholder("YYYY/MM/DD").fill(day)
        page.get_by_placeholder("HH:mm").fill("00:00")
        page.keyboard.press("Escape")
        expect(page.get_by_placeholder("YYYY/MM/DD")).to_have_count(0)  # closed before the next one opens
    dialog.get_by_text("All Runs", exact=True).click()
    page.screenshot(path=str(screenshots / "backfill-dialog.png"))
    dialog.get_by_role("button", name="Run Backfill").click()
    deadline = time.monotonic() + 60
    while not (new := [b for b in stack.get("/api/v2/backfills", params={"dag_id": DAG_ID}).json()["backfills"]
                       if b["id"] not in before]):
        assert time.monotonic() < deadline, "the dialog created no backfill"
        time.sleep(1)
    assert (new[0]["from_date"][:10], new[0]["to_date"][:10], new[0]["reprocess_behavior"]) == \
        ("2026-11-01", "2026-11-02", "completed")
    deadline = time.monotonic() + 400
    while stack.get(f"/api/v2/backfills/{new[0]['id']}").json().get("completed_at") is None:
        assert time.monotonic() < deadline, "the UI's backfill did not complete"
        time.sleep(3)
    page.close()
    screenshots_taken(stack, screenshots)


def test_mlflow_opens_the_model_s_runs_as_model_training_not_genai(stack, browser):
    """The pages `make demo` prints for the model's experiments, and the train task's links, open in MLflow's
    model-training mode (MLflow 3's UI opened them as GenAI projects: traces, sessions, an assistant) on the
    runs tables; the champion's times are ISO 8601 beside the epoch milliseconds. Needs a training run (the
    backfill's)."""
    import re

    from playwright.sync_api import expect

    from scripts.ui_links import experiment_links

    pages = experiment_links(stack.mlflow, stack.mlflow_auth, MODEL)
    runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()["dag_runs"]
    trained = [r["dag_run_id"] for r in runs if stack.states(r["dag_run_id"]).get("training.train") == "success"]
    assert trained, "no run trained a model"
    task_links = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{trained[0]}/taskInstances/training.train/links"
                           ).json()["extra_links"]
    user, password = stack.mlflow_auth
    context = browser.new_context(http_credentials={"username": user, "password": password},
                                  viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    for title, url, lists in (("MLflow runs", pages["MLflow runs"], "train rk-"),
                              ("MLflow promotions", pages["MLflow promotions"], "promote v"),
                              ("the task's MLflow runs", task_links["MLflow runs"], "train rk-")):
        assert re.search(r"/#/experiments/[0-9]+/runs\?workflowType=machine_learning$", url), (title, url)
        page.goto(url)
        expect(page.get_by_text(lists).first).to_be_visible()  # the runs table lists the experiment's runs
        assert "workflowType=machine_learning" in page.url, (title, page.url)
        # the model-training side bar (Runs, Models, Traces), not GenAI's (Sessions, Judges, Prompts, ...)
        expect(page.get_by_text("Sessions", exact=True)).to_have_count(0)
        expect(page.get_by_text("Detect Issues")).to_have_count(0)
    page.goto(task_links["MLflow run"])  # the run's page, under its experiment
    expect(page.get_by_role("heading", level=2)).to_contain_text("rk-")  # "train rk-..." or "re-run rk-..."
    expect(page.get_by_text("Sessions", exact=True)).to_have_count(0)
    assert re.search(r"/#/experiments/[0-9]+/runs/[0-9a-f]{32}", page.url), page.url
    context.close()
    champion = stack.champion()
    tags = {t["key"]: t["value"] for t in stack_mlflow(stack, "model-versions/get", name=MODEL,
                                                       version=champion)["model_version"]["tags"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", tags["champion_since"]), tags


def test_a_run_waiting_for_its_batch_does_not_hold_up_a_manual_one(stack):
    """Unpaused, the DAG's scheduled run for today waits in the sensor (no batch lands today). A manual
    run for another partition goes through meanwhile. Leaves the scheduled run waiting."""
    deadline = time.monotonic() + 120
    while not (waiting := [r for r in stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns",
                                                params={"run_type": "scheduled"}).json()["dag_runs"]
                           if r["state"] == "running"]):
        assert time.monotonic() < deadline, "no scheduled run started"
        time.sleep(2)
    scheduled = waiting[0]["dag_run_id"]
    stack.wait_task(scheduled, "wait_for_batch", states=("deferred",))
    manual = stack.trigger({"partition": "2026-11-02"})
    assert stack.wait_run(manual)["state"] == "success"
    assert stack.task(scheduled, "wait_for_batch")["state"] == "deferred"  # still waiting, never blocking
    # `latest`: the newest complete batch, whatever the run's date.
    latest = stack.trigger({"partition": "latest"})
    assert stack.wait_run(latest)["state"] == "success"
    assert stack.xcom(latest, "wait_for_batch")["partition"] == "2026-11-03"


def test_a_second_trigger_for_one_logical_date_is_refused_with_a_reason(stack):
    logical_date = "2026-11-20T00:00:00Z"
    first = stack.trigger({"partition": "2026-11-02"}, logical_date=logical_date)
    again = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": logical_date, "conf": {}})
    assert again.status_code == 409  # Airflow keeps one run per logical date: re-run with `partition` instead
    assert stack.wait_run(first)["state"] == "success"


def run_alerts(stack) -> list[tuple]:
    """The run-level alerts Alertmanager holds, for a failure's message."""
    return [(a["labels"]["alertname"], a["status"]["state"], a["annotations"].get("run_id"),
             a["annotations"].get("run_ended_at"), a["updatedAt"])
            for a in stack.alerts('alertname=~"AirflowDagRunFailed|BatchLate"', active_only=False)]


def test_a_late_batch_and_a_run_marked_failed_alert(stack):
    """The scheduled run has waited past the batch deadline: BatchLate for that run, still active (a
    deadline fires once); a user marks the run failed: a DAG-run alert, and the run no longer waits; the
    next successful run resolves the DAG-run alert."""
    scheduled = next(r for r in stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"}
                                          ).json()["dag_runs"] if r["state"] == "running")["dag_run_id"]
    late = ('alertname="BatchLate"', f'run_id="{scheduled}"')
    deadline = time.monotonic() + 240
    while not stack.alerts(*late):
        assert time.monotonic() < deadline, "no BatchLate alert"
        time.sleep(3)
    marked = stack.request("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{scheduled}", json={"state": "failed"})
    assert marked.status_code == 200, marked.text
    deadline = time.monotonic() + 120
    while not stack.alerts('alertname="AirflowDagRunFailed"') or stack.alerts(*late):
        assert time.monotonic() < deadline, ("marking the run failed sent no alert, or left its BatchLate "
                                             f"active: {run_alerts(stack)}")
        time.sleep(3)
    assert stack.wait_run(stack.trigger({"partition": "2026-11-02"}))["state"] == "success"
    deadline = time.monotonic() + 60
    while stack.alerts('alertname="AirflowDagRunFailed"'):
        assert time.monotonic() < deadline, f"the successful run did not resolve the DAG-run alert: {run_alerts(stack)}"
        time.sleep(2)


# -- faults, each on a run of its own partition ------------------------------------------------------------
# Each lands a partition the served champion is bad on (the labels of the last one rotated), so the run
# retrains, promotes and deploys, and injects its fault while the named task runs. Each must end in a
# retry that succeeds, or a clean failure with an alert, with the curated data, the registry's aliases
# and the served version as they should be.

FAULT_DAYS = iter(["2026-11-05", "2026-11-06", "2026-11-07", "2026-11-08"])


def fault_run(stack: LiveStack, seed: int) -> tuple[str, str]:
    day = next(FAULT_DAYS)
    stack.land(day, stack.promoting_drift(), seed)
    return day, stack.trigger({"partition": day})


def test_mlflow_stopped_while_register_runs(stack):
    before = stack.versions()
    day, run = fault_run(stack, 51)
    stack.wait_task(run, "training.register")
    stack.kill_group(stack.pid("mlflow"))
    time.sleep(8)
    stack.services("start", "mlflow")
    assert stack.wait_run(run)["state"] == "success", stack.states(run)
    new = stack.xcom(run, "training.register")["version"]
    assert stack.versions() == sorted([*before, new])  # one version, not a duplicate from the retry
    assert stack.champion() == new and stack.served_version() == new


def test_the_model_server_killed_during_deploy(stack):
    day, run = fault_run(stack, 52)
    stack.wait_task(run, "deploy")
    stack.kill_group(int((stack.data / "serving" / "iris-classifier" / "mlserving.pid").read_text()))
    assert stack.wait_run(run)["state"] == "success", stack.states(run)
    new = stack.xcom(run, "training.register")["version"]
    # The server's death says nothing against the model: no rollback. Killed before deploy looked, the
    # deploy starts it; killed during the swap, the deploy fails and its retry starts it.
    assert stack.champion() == new and stack.served_version() == new
    assert stack.promotion_history()[-1] == {"event": "promote", "version": new}


def test_the_worker_killed_in_the_middle_of_train(stack):
    import psutil

    day, run = fault_run(stack, 53)
    stack.wait_task(run, "training.train")
    deadline = time.monotonic() + 60
    # this run's training only: the other Airflow tests run train-local beside the live stack
    while not (training := [p for p in psutil.process_iter(["cmdline"])
                            if {"train-local", run} <= set(p.info["cmdline"] or [])]):
        assert time.monotonic() < deadline, "no training process"
        time.sleep(0.5)
    worker = training[0].parent()  # the task's supervisor, which runs the stage
    for process in [worker, *worker.children(recursive=True)]:
        process.kill()
    assert stack.wait_run(run)["state"] == "success", stack.states(run)
    assert stack.task(run, "training.train")["try_number"] >= 2
    new = stack.xcom(run, "training.register")["version"]
    assert stack.champion() == new and stack.served_version() == new


def test_a_full_data_volume_during_ingest(stack):
    """The partition's curated folder on a one-page (4 KiB) filesystem: storing fails with the stage's
    own line, every retry too, the run fails with an alert, and nothing is half-written or changed."""
    import subprocess

    from tests import support

    champion, served, versions = stack.champion(), stack.served_version(), stack.versions()
    day = next(FAULT_DAYS)
    stack.land(day, stack.promoting_drift(), 54)
    curated = stack.data / "curated" / MODEL / day
    curated.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(curated)], check=True)
    try:
        curated_before = support.tree_snapshot(stack.data / "curated")
        run = stack.trigger({"partition": day})
        assert stack.wait_run(run)["state"] == "failed"
        assert stack.states(run)["data.ingest"] == "failed"
        assert support.tree_snapshot(stack.data / "curated") == curated_before  # no partial parquet
    finally:
        subprocess.run(["umount", str(curated)], check=True)
    alerts = stack.alerts('alertname="AirflowTaskFailed"', 'task_id="data.ingest"')
    assert any("No space left on device" in a["annotations"]["error"] for a in alerts), alerts
    assert (stack.champion(), stack.served_version(), stack.versions()) == (champion, served, versions)


# -- human approval (require_approval) -------------------------------------------------------------------------
# Each run lands a batch on which a challenger wins, asks for approval, and is answered the way an approver
# answers: the REST API's hitlDetails endpoint, which the UI's "Required actions" calls, as the admin user.

APPROVAL_DAYS = iter(["2026-11-09", "2026-11-10", "2026-11-11"])
APPROVAL = "training.approve_promotion"


def approval_run(stack: LiveStack, seed: int, **conf) -> str:
    day = next(APPROVAL_DAYS)
    stack.land(day, stack.promoting_drift(), seed)
    run = stack.trigger({"partition": day, "require_approval": True, **conf})
    stack.wait_task(run, APPROVAL, states=("awaiting_input",), timeout=420)
    stack.wait_parked(run, APPROVAL)  # as any person, answer after the scheduler's next loop
    return run


def hitl_path(run: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{APPROVAL}/-1/hitlDetails"


def run_tags(stack: LiveStack, run_id: str) -> dict[str, str]:
    run = stack_mlflow(stack, "runs/get", run_id=run_id)["run"]
    return {t["key"]: t["value"] for t in run["data"]["tags"]}


def stack_mlflow(stack: LiveStack, path: str, **params) -> dict:
    import httpx

    answer = httpx.get(f"{stack.mlflow}/api/2.0/mlflow/{path}", params=params, auth=stack.mlflow_auth)
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()


def test_an_approved_promotion_records_who_approved(stack):
    champion, versions = stack.champion(), stack.versions()
    run = approval_run(stack, 61)
    detail = stack.get(hitl_path(run)).json()
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert "McNemar p-value" in detail["body"] and "bootstrap 95% CI" in detail["body"]
    assert (stack.champion(), stack.versions()) == (champion, versions)  # nothing moves while it waits
    answer = stack.request("PATCH", hitl_path(run), json={"chosen_options": ["Approve"]})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(run)["state"] == "success", (stack.states(run), stack.task(run, APPROVAL))
    new = stack.xcom(run, "training.register")["version"]
    assert stack.champion() == new and stack.served_version() == new
    version = stack_mlflow(stack, "model-versions/get", name="iris-classifier", version=new)["model_version"]
    assert {t["key"]: t["value"] for t in version["tags"]}["approved_by"] == "admin"
    training = run_tags(stack, stack.xcom(run, "training.train")["challenger_run_id"])
    assert (training["promotion_approval"], training["promotion_approval_by"]) == ("approved", "admin")
    assert stack.xcom(run, "report")["decision"] == "promote"


def test_a_rejected_promotion_keeps_the_champion(stack):
    champion, served, versions = stack.champion(), stack.served_version(), stack.versions()
    run = approval_run(stack, 62)
    answer = stack.request("PATCH", hitl_path(run), json={"chosen_options": ["Reject"]})
    assert answer.status_code == 200, answer.text
    assert stack.wait_run(run)["state"] == "success", (stack.states(run), stack.task(run, APPROVAL))
    states = stack.states(run)
    assert (states["training.promotion_rejected"], states["training.register"], states["deploy"]) == (
        "success", "skipped", "skipped")
    assert (stack.champion(), stack.served_version(), stack.versions()) == (champion, served, versions)
    training = run_tags(stack, stack.xcom(run, "training.train")["challenger_run_id"])
    assert (training["promotion_approval"], training["promotion_approval_by"]) == ("rejected", "admin")
    assert stack.xcom(run, "report")["decision"] == "rejected"


def test_no_answer_in_time_keeps_the_champion(stack):
    champion, versions = stack.champion(), stack.versions()
    run = approval_run(stack, 63, approval_timeout_minutes=0.1)  # the scheduler sweeps every 15 s
    assert stack.wait_run(run, timeout=120)["state"] == "success", stack.states(run)
    assert stack.states(run)["training.promotion_rejected"] == "success"
    assert (stack.champion(), stack.versions()) == (champion, versions)
    training = run_tags(stack, stack.xcom(run, "training.train")["challenger_run_id"])
    assert (training["promotion_approval"], training["promotion_approval_by"]) == (
        "timed_out", "(nobody: the default applied)")
    assert stack.get(hitl_path(run)).json()["chosen_options"] == ["Reject"]


def test_two_models_run_at_once_without_touching_each_other(stack):
    """A second dataset file dropped into the stack's dataset folder becomes a DAG of its own; its run and
    a run of the example's DAG go at the same time, both through training and deploy. Each model keeps to
    its own landing and curated areas, registry entries and served model, and both answer at the one
    router address under their own names. The second is a regression model (tests/datasets/diabetes.yaml:
    ridge, held to an RMSE maximum), answering FP64 numbers; a changed coefficient then retrains and promotes
    its v2. Leaves the second model's DAG and model served."""
    import httpx
    import yaml

    from tests import datasets as test_datasets

    document = {**yaml.safe_load(test_datasets.dataset_path("diabetes").read_text()), "schedule": None}
    second, second_dag = document["model_name"], "continuous_training_diabetes"
    (stack.datasets / "diabetes.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    deadline = time.monotonic() + 240
    while stack.get(f"/api/v2/dags/{second_dag}").status_code != 200:  # the DAG file's next parse finds it
        assert time.monotonic() < deadline, "the DAG processor never serialized the new dataset's DAG"
        time.sleep(3)
    for dag_id in (DAG_ID, second_dag):  # a paused DAG's manual run waits for its unpausing
        assert stack.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200

    partition, iris_before = "2026-11-25", (stack.versions(), stack.champion())
    # the example's champion (if any) fails on its batch: both runs train and deploy
    stack.land(partition, stack.promoting_drift() if iris_before[1] else "none", seed=25)
    stack.land(partition, seed=25, dataset=stack.datasets / "diabetes.yaml", reference="sklearn:diabetes")
    runs = {dag_id: stack.trigger({"partition": partition}, dag_id=dag_id) for dag_id in (DAG_ID, second_dag)}
    for dag_id, run_id in runs.items():
        assert stack.wait_run(run_id, timeout=600, dag_id=dag_id)["state"] == "success", stack.tries(run_id, dag_id)
    # Each run read its own model's batch and area, and registered and served its own model only.
    iris_deploy, second_deploy = (stack.xcom(runs[d], "deploy", dag_id=d) for d in (DAG_ID, second_dag))
    assert (second_deploy["model_name"], second_deploy["version"]) == (second, "1")
    assert iris_deploy["model_name"] == MODEL and iris_deploy["version"] not in iris_before[0]
    assert stack.versions(second) == ["1"] and stack.champion(second) == "1"
    assert stack.versions() == sorted([*iris_before[0], iris_deploy["version"]])
    for model in (MODEL, second):
        landed = [p.name for p in (stack.data / "landing" / model / partition).iterdir()]
        assert "_SUCCESS" in landed and len(landed) == 2, landed
    assert stack.xcom(runs[second_dag], "wait_for_batch", dag_id=second_dag)["partition"] == partition
    assert sorted(p.name for p in (stack.data / "curated" / second).iterdir()) == [partition]
    # Both at the one router address, each under its own name, each answered by its own version.
    assert iris_deploy["endpoint"].rsplit("/v2/", 1)[0] == second_deploy["endpoint"].rsplit("/v2/", 1)[0]
    assert stack.served_version() == iris_deploy["version"] and stack.served_version(second) == "1"
    request = json.loads(test_datasets.in_pipeline_environment("v2-request", "diabetes"))
    answer = httpx.post(f"{stack.serving}/v2/models/{second}/infer", json=request, timeout=10).json()
    output = answer["outputs"][0]
    assert answer["model_name"] == second and output["datatype"] == "FP64" and isinstance(output["data"][0], float)
    assert 0 < output["data"][0] < 400  # a disease-progression score, in the target's range (25-346)

    # A changed coefficient: the regression champion's RMSE goes past the file's maximum, and the real
    # scheduler's run retrains, promotes and serves v2, the decision held to the Wilcoxon rule.
    stack.land("2026-11-26", "coefficient", seed=26, dataset=stack.datasets / "diabetes.yaml",
               reference="sklearn:diabetes", severity=1.0)
    run_id = stack.trigger({"partition": "2026-11-26"}, dag_id=second_dag)
    assert stack.wait_run(run_id, timeout=600, dag_id=second_dag)["state"] == "success", stack.tries(run_id, second_dag)
    detected = stack.xcom(run_id, "detect_degradation", dag_id=second_dag)
    assert detected["direction"] == "lower" and detected["fresh_score"] > document["metric"]["max"], detected
    decision = stack.xcom(run_id, "training.train", dag_id=second_dag)
    assert decision["decision"] == "promote" and decision["paired_test"]["name"] == "wilcoxon", decision
    assert stack.champion(second) == "2" and stack.served_version(second) == "2"
    answer = httpx.post(f"{stack.serving}/v2/models/{second}/infer", json=request, timeout=10).json()
    assert answer["model_version"] == "2" and answer["outputs"][0]["datatype"] == "FP64"


def test_the_alerts_page_in_the_airflow_ui_shows_what_alertmanager_holds(stack, browser, monkeypatch):
    """Debian's Alertmanager has no web UI: a signed-in user opens Browse > Alerts in the Airflow UI and
    reads an alert the project's notifier has just posted to the stack's Alertmanager, markup as text.
    Leaves: the alert AlertsPageCheck, active for five minutes (no other test reads that name)."""
    from types import SimpleNamespace

    from playwright.sync_api import expect

    from mlops.notifications.alertmanager import AlertmanagerNotifier

    monkeypatch.setenv("AIRFLOW_CONN_ALERTMANAGER_DEFAULT", stack.alertmanager)
    run_id = f"manual__alerts_page_{time.time_ns()}"
    AlertmanagerNotifier(alertname="AlertsPageCheck", scope="dag_run", severity="warning",
                         summary="posted <b>for the page</b>", lasts_seconds=300).notify(
        {"dag_run": SimpleNamespace(dag_id=DAG_ID, run_id=run_id)})
    assert stack.alerts('alertname="AlertsPageCheck"', f'run_id="{run_id}"'), "the notifier posted nothing"

    page = signed_in(stack, browser)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Alerts").click()
    page.wait_for_url(f"{stack.api}/plugin/alerts**")
    row = page.frame_locator('iframe[title="Alerts"]').locator("tr", has_text=run_id)
    expect(row).to_contain_text("AlertsPageCheck")
    expect(row).to_contain_text("posted <b>for the page</b>")  # the summary's markup shown, not rendered
    page.close()


# -- a canary with no traffic: inconclusive (canary_inconclusive) ------------------------------------------------
@pytest.fixture
def quiet_canary(stack, tmp_path):
    """A Prometheus where the stack's prometheus_default points, scraping its model servers, to which nobody
    sends a request (the stack's canary is out of time 15 s after it starts, read every 2 s; the options'
    defaults are half an hour and 15 s). It stops afterwards: none answers on prometheus_default again."""
    from tests import support

    with support.prometheus(tmp_path, [], file_sd=support.model_server_targets(stack.data),
                            port=int(stack.env["PROMETHEUS_PORT"])) as prometheus:
        yield prometheus


def test_a_canary_without_traffic_keeps_the_offline_verdict_and_alerts(stack, quiet_canary):
    """A new installation has no traffic: a new champion's canary gets no request by its deadline. As
    `canary_inconclusive` says out of the box (`promote`), the offline verdict stands: the new champion serves
    everything and stays the champion, its canary is recorded as inconclusive (the version's tags, deploy's
    result, the report), and CanaryInconclusive reaches Alertmanager. Leaves: the new champion served."""
    if stack.served_version() is None:  # run alone: a first champion, served (a straight start)
        assert stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
        stack.land("2026-11-13", seed=13)
        first = stack.trigger({"partition": "2026-11-13"})
        assert stack.wait_run(first)["state"] == "success", stack.tries(first)
    champion = stack.champion()
    stack.land("2026-11-14", stack.promoting_drift(), seed=14)
    run = stack.trigger({"partition": "2026-11-14", "canary_percent": 10, "canary_minutes": 0.1})
    assert stack.wait_run(run)["state"] == "success", stack.tries(run)

    new = stack.xcom(run, "training.register")["version"]
    deployed = stack.xcom(run, "deploy")
    assert (deployed["version"], deployed["previous_version"]) == (new, champion), deployed
    assert "rolled_back" not in deployed and stack.states(run)["roll_back_champion"] == "skipped"
    canary = deployed["canary"]
    assert canary["verdict"] == "inconclusive" and canary["evidence"]["canary"]["requests"] == 0, canary
    assert canary["reason"].endswith("< 100 by the deadline; the offline verdict is kept"), canary
    assert stack.champion() == new and stack.served_version() == new
    assert not (stack.data / "serving" / MODEL / "canary" / "mlserving.pid").exists()
    tags = {t["key"]: t["value"] for t in stack_mlflow(stack, "model-versions/get", name=MODEL,
                                                       version=new)["model_version"]["tags"]}
    assert (tags["canary.verdict"], tags["canary.reason"]) == ("inconclusive", canary["reason"])
    report = stack.xcom(run, "report")
    assert (report["decision"], report["canary"], report["champion_version"]) == ("promote", "inconclusive", new)

    [alert] = stack.alerts('alertname="CanaryInconclusive"', f'run_id="{run}"') or [None]
    assert alert and alert["labels"]["severity"] == "warning", alert
    summary = alert["annotations"]["summary"]
    assert summary.startswith("the canary got 0 requests (< 100) over its ") and "offline verdict was kept" in summary
    assert stack.alerts('alertname="CanaryRolledBack"', f'run_id="{run}"') == []


def test_a_finished_run_s_note_says_what_it_did_and_why(stack, browser):
    """"Why did this run branch?" in one place: the report's one-line summary is the run's note (written by the
    scheduler's listener), as the REST API serves it and as the run's page shows it. Run alone, the run trains a
    first champion; after the other tests, its batch is drawn like the champion's training batch (it skips)."""
    from playwright.sync_api import expect

    assert stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    drift = {"none": "concept", "concept": "none"}[stack.promoting_drift()] if stack.champion() else "none"
    stack.land("2026-12-05", drift, seed=35)
    run = stack.trigger({"partition": "2026-12-05"})
    assert stack.wait_run(run)["state"] == "success", stack.tries(run)
    report = stack.xcom(run, "report")
    note = stack.run(run)["note"]
    assert note == report["note"] and note.startswith(report["decision"]), (note, report)
    # why: the retraining reasons as decide_retraining gave them, or the fresh score within its threshold
    assert all(reason in note for reason in report["retraining_reasons"]) and (
        report["retraining_reasons"] or ">= threshold 0.85" in note), note
    assert f"v{report['champion_version']}" in note

    page = signed_in(stack, browser)
    page.goto(f"{stack.api}/dags/{DAG_ID}/runs/{run}")
    expect(page.get_by_text(note, exact=True)).to_be_visible()  # the note's first line, under the run's header
    page.close()
