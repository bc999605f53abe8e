"""The deploy core on the local target (LocalDeployOperator) end to end: a real MLflow registry, the real
pipeline stages, a real mlserving process; and the rollback task the DAG runs when deploy fails."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from mlops.hooks.mlflow import MlflowHook
from mlops.hooks.stage import StageHook
from mlops.local_router import LocalRouter
from mlops.local_serving import ROUTER_FOLDER
from mlops.operators.deploy import CANARY, ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO, LocalDeployOperator
from mlops.operators.stage import StageOperator
from tests import support

from ..conftest import connect
from ..registry_setup import train_and_register

MODEL = "iris-deploy"


class TaskInstance:
    def __init__(self):
        self.xcoms = {}

    def xcom_push(self, key, value):
        self.xcoms[key] = value


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory):
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture
def deploy_env(local_target, registry_uri, monkeypatch):
    url = support.serving_url()
    connect(monkeypatch, mlflow_default=registry_uri, mlserving_default=url)
    stages = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": registry_uri})
    folder = local_target / "serving" / MODEL
    yield stages, url, folder
    support.stop_local_serving(local_target)


def served(url) -> str:
    return httpx.get(f"{url}/v2/models/{MODEL}").json()["parameters"]["registry_version"]


@pytest.mark.timeout(400)
def test_deploy_swap_restore_and_roll_back(deploy_env, local_target):
    stages, url, folder = deploy_env
    deploy = LocalDeployOperator(task_id="deploy", model_name=MODEL)
    with pytest.raises(RuntimeError, match="iris-deploy has no champion to deploy"):
        deploy.execute({"ti": TaskInstance()})  # nothing registered yet: a clear error, and no server started
    assert not (folder / "mlserving.pid").exists()

    assert train_and_register(stages, local_target, MODEL, "2026-11-01", "none", 1)["champion_version"] == "1"
    first = deploy.execute({"ti": TaskInstance()})
    assert first["changed"] and first["version"] == "1" and first["previous_version"] is None
    assert first["smoke_test"]["model_version"] == "1" and served(url) == "1"
    assert (folder / "current").resolve() == (folder / "v1").resolve()  # the server's link names the version
    # The task's links: the registry version in MLflow's UI and the served model's metadata.
    assert deploy.link_urls["MLflow model version"].endswith(f"/#/models/{MODEL}/versions/1")
    assert httpx.get(deploy.link_urls["Serving endpoint"]).json()["parameters"]["registry_version"] == "1"
    assert not deploy.execute({"ti": TaskInstance()})["changed"]  # the same champion is not redeployed

    assert train_and_register(stages, local_target, MODEL, "2026-11-02", "concept", 2)["champion_version"] == "2"
    second = deploy.execute({"ti": TaskInstance()})
    assert second["version"] == "2" and second["previous_version"] == "1" and served(url) == "2"

    # The champion moves to a version whose files are broken: the swap is refused and the server never
    # stops serving v2; the task fails for good (no retry: the model will not improve) with the plan...
    stages.run("rollback", {"model_name": MODEL, "to_version": "1", "from_version": "2",
                            "reason": "test: serve v1 again"})
    for skops in (folder / "v1").glob("*.skops"):
        skops.write_bytes(b"corrupted")
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="deploy of iris-deploy v1 failed: .*not loaded, still serving "
                                                   "version 2"):
        deploy.execute({"ti": ti})
    assert served(url) == "2" and (folder / "current").resolve() == (folder / "v2").resolve()
    assert ti.xcoms[ROLLBACK_TO] == "2" and "deploy of v1 failed" in ti.xcoms[ROLLBACK_REASON]
    # ... which the DAG's roll_back_champion task carries out with the pipeline's rollback stage.
    roll_back = StageOperator(task_id="roll_back_champion", stage="rollback", options={
        "data_root": None, "model_name": MODEL, "to_version": ti.xcoms[ROLLBACK_TO],
        "from_version": ti.xcoms[ROLLBACK_FROM], "reason": ti.xcoms[ROLLBACK_REASON]})
    assert roll_back.execute({})["rolled_back"] is True
    history = stages.run("champion-at", {"model_name": MODEL})
    assert history["champion_version"] == "2"
    assert history["history"][-1]["event"] == "rollback" and "deploy of v1 failed" in history["history"][-1]["reason"]


def test_a_failed_first_deploy_has_nothing_to_roll_back_to(deploy_env, local_target):
    """No version was served: the plan names none, and the rollback stage moves nothing."""
    stages, url, folder = deploy_env
    model = "iris-first"
    train_and_register(stages, local_target, model, "2026-11-03", "none", 3)
    stages.run("fetch-model", {"model_name": model, "version": "1", "into": local_target / "serving" / model})
    for skops in (local_target / "serving" / model / "v1").glob("*.skops"):
        skops.write_bytes(b"corrupted")
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="deploy of iris-first v1 failed"):
        LocalDeployOperator(task_id="deploy", model_name=model).execute({"ti": ti})
    assert ti.xcoms[ROLLBACK_TO] is None
    nothing = StageOperator(task_id="roll_back_champion", stage="rollback", options={
        "data_root": None, "model_name": model, "to_version": None, "reason": ti.xcoms[ROLLBACK_REASON]}).execute({})
    assert nothing["rolled_back"] is False
    assert stages.run("champion-at", {"model_name": model})["champion_version"] == "1"


def test_a_canary_that_does_not_load_never_gets_traffic(deploy_env, local_target):
    """The canary is started and smoke-tested beside the stable server before the router gives it any
    request: a version that fails there is rolled back with the stable server untouched."""
    stages, url, folder = deploy_env
    model = "iris-canary-broken"
    train_and_register(stages, local_target, model, "2026-11-05", "none", 5)
    deploy = LocalDeployOperator(task_id="deploy", model_name=model, canary_percent=10)
    assert "canary" not in deploy.execute({"ti": TaskInstance()})  # nothing served before: a straight start
    train_and_register(stages, local_target, model, "2026-11-06", "concept", 6)
    stages.run("fetch-model", {"model_name": model, "version": "2", "into": local_target / "serving" / model})
    for skops in (local_target / "serving" / model / "v2").glob("*.skops"):
        skops.write_bytes(b"corrupted")
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="deploy of iris-canary-broken v2 failed: the canary did not "
                                                   "start: .*failed to load"):
        deploy.execute({"ti": ti})
    assert ti.xcoms[ROLLBACK_TO] == "1"
    routes = LocalRouter(local_target / "serving" / ROUTER_FOLDER, 0).routes()
    assert list(routes[model].values()) == [100]  # the stable server alone, never the canary
    assert not (local_target / "serving" / model / "canary" / "mlserving.pid").exists()
    answer = httpx.get(f"{url}/v2/models/{model}").json()
    assert answer["parameters"]["registry_version"] == "1"


@pytest.mark.timeout(400)
def test_two_models_are_served_behind_one_router_without_touching_each_other(deploy_env, local_target):
    """Two dataset files' models on one data volume: each deploy starts its own servers on ports of its own
    and adds its route to the one router, so both answer at the mlserving address under their own names;
    the second model's deploys change nothing of the first's (its servers, its link, its answers)."""
    stages, url, folder = deploy_env
    iris, wine = "iris-beside", "wine-beside"
    train_and_register(stages, local_target, iris, "2026-11-07", "none", 7)
    assert LocalDeployOperator(task_id="deploy", model_name=iris).execute({"ti": TaskInstance()})["version"] == "1"
    iris_folder = local_target / "serving" / iris
    before = ((iris_folder / "mlserving.pid").read_text(), (iris_folder / "current").resolve())

    train_and_register(stages, local_target, wine, "2026-11-07", "none", 7, dataset="wine")
    deployed = LocalDeployOperator(task_id="deploy", model_name=wine).execute({"ti": TaskInstance()})
    assert deployed["endpoint"] == f"{url}/v2/models/{wine}/infer"
    train_and_register(stages, local_target, wine, "2026-11-08", "concept", 8, dataset="wine")
    canary = LocalDeployOperator(task_id="deploy", model_name=wine, canary_percent=20, deferrable=True)
    with pytest.raises(TaskDeferred):  # the canary serves a fifth of wine's requests, judged by Prometheus
        canary.execute({"ti": TaskInstance()})
    wine_request = {"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP64",
                                "data": [13.2, 2.8, 2.4, 18.6, 101.0, 2.3, 2.4, 0.3, 1.6, 5.1, 1.0, 3.2, 1050.0]}]}
    iris_request = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64",
                                "data": [5.1, 3.5, 1.4, 0.2]}]}
    versions = Counter(httpx.post(f"{url}/v2/models/{wine}/infer", json=wine_request).json()["model_version"]
                       for _ in range(60))
    assert set(versions) == {"1", "2"}, versions  # wine's canary is behind the router beside wine's v1 ...
    iris_answers = [httpx.post(f"{url}/v2/models/{iris}/infer", json=iris_request).json() for _ in range(20)]
    assert {(a["model_name"], a["model_version"]) for a in iris_answers} == {(iris, "1")}  # ... and iris's as before
    assert ((iris_folder / "mlserving.pid").read_text(), (iris_folder / "current").resolve()) == before
    # Four servers on four ports, every one of them listed for Prometheus.
    targets = json.loads((local_target / "serving" / "targets.json").read_text())
    listed = sorted(t for group in targets for t in group["targets"])
    assert len(set(listed)) == 4 and sum(map(_answers, listed)) == 3  # iris has no canary running
    unknown = httpx.post(f"{url}/v2/models/no-such-model/infer", json=iris_request)
    assert unknown.status_code == 404 and f'"{iris}", "{wine}"' in unknown.json()["error"]


def _answers(target: str) -> bool:
    try:
        return httpx.get(f"http://{target}/v2/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("regression", [True, False])
def test_the_canary_trigger_is_told_the_dataset_file_s_task(regression):
    """A regression model's canary is judged by its prediction distribution, a classifier's by its class mix:
    deploy (given the task by the DAG) hands it to the trigger, which the triggerer rebuilds from its
    serialized form."""
    deploy = LocalDeployOperator(task_id="deploy", model_name="diabetes-canary", canary_minutes=1, deferrable=True,
                                 regression=regression)
    resume = {"version": "2", "previous": {"version": "1"}, "percent": 10, "champion": {"version": "2"}}
    with pytest.raises(TaskDeferred) as deferred:
        deploy._watch_canary({"ti": TaskInstance()}, resume)
    trigger = deferred.value.trigger
    assert trigger.regression is regression and trigger.serialize()[1]["regression"] is regression
    assert trigger.policy["max_prediction_ks"] == 0.25 and deferred.value.method_name == "canary_complete"


@pytest.fixture
def quiet_canary(deploy_env, local_target, monkeypatch, tmp_path):
    """A real Prometheus scraping the deploys' model servers, to which nobody sends a request, and a real
    Alertmanager; a canary's deadline of 6 s, its metrics read every second."""
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "alertmanager").mkdir()
    with support.prometheus(tmp_path / "prometheus", [], file_sd=support.model_server_targets(local_target)) as \
            prometheus, support.alertmanager(tmp_path / "alertmanager") as alertmanager:
        connect(monkeypatch, prometheus_default=prometheus, alertmanager_default=alertmanager)
        monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_DEADLINE_MINUTES", "0.1")
        monkeypatch.setenv("AIRFLOW__MLOPS__CANARY_POLL_SECONDS", "1")
        yield deploy_env, alertmanager


@pytest.mark.timeout(400)
def test_a_canary_without_traffic_keeps_the_offline_verdict_or_rolls_back_as_told(quiet_canary, local_target):
    """No traffic, so the canary is inconclusive at its deadline. `promote` (the option's default): the new
    champion takes all the traffic, its verdict is `inconclusive` on the version, the XCom and the result, and
    CanaryInconclusive says how many requests it got. `rollback`: the version before it serves on and the
    alias is to go back. An unknown value is refused before anything moves."""
    (stages, url, folder), alertmanager = quiet_canary
    model = "iris-quiet-canary"

    def served() -> str:
        return httpx.get(f"{url}/v2/models/{model}").json()["parameters"]["registry_version"]

    def alerts(name: str, run_id: str) -> list[dict]:
        return httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": [
            f'alertname="{name}"', f'run_id="{run_id}"']}).json()

    def deploy(run_id: str, **canary):
        ti = TaskInstance()
        result = LocalDeployOperator(task_id="deploy", model_name=model, canary_percent=10, canary_minutes=0.05,
                                     deferrable=False, **canary).execute(
            {"ti": ti, "dag_run": {"dag_id": "deploy_test", "run_id": run_id}})
        return result, ti.xcoms

    train_and_register(stages, local_target, model, "2026-11-09", "none", 9)
    assert deploy("first")[0]["version"] == "1"
    train_and_register(stages, local_target, model, "2026-11-10", "concept", 10)  # v2, the champion

    with pytest.raises(AirflowFailException, match="canary_inconclusive must be promote or rollback .*, got 'keep'"):
        deploy("refused", canary_inconclusive="keep")
    assert served() == "1" and not (local_target / "serving" / model / "canary" / "mlserving.pid").exists()

    kept, xcoms = deploy("kept")
    canary = kept["canary"]
    assert (kept["version"], kept["previous_version"], kept["changed"]) == ("2", "1", True), kept
    assert "rolled_back" not in kept and ROLLBACK_REASON not in xcoms and xcoms[CANARY] == canary
    assert canary["verdict"] == "inconclusive" and canary["evidence"]["canary"]["requests"] == 0, canary
    assert canary["reason"].startswith("too little canary traffic to judge: 0 requests in the last ")
    assert canary["reason"].endswith(" < 100 by the deadline; the offline verdict is kept")
    assert served() == "2" and not (local_target / "serving" / model / "canary" / "mlserving.pid").exists()
    tags = MlflowHook().model_version_tags(model, "2")
    assert (tags["canary.verdict"], tags["canary.reason"]) == ("inconclusive", canary["reason"])
    [alert] = alerts("CanaryInconclusive", "kept") or [None]
    assert alert and alert["labels"]["severity"] == "warning", alert
    window = canary["evidence"]["window"]
    assert alert["annotations"]["summary"] == (f"the canary got 0 requests (< 100) over its {window} window; the "
                                               "offline verdict was kept and the new champion serves all the traffic")
    assert alert["annotations"]["error"] == f"{model} v2: {canary['reason']}"
    assert alerts("CanaryRolledBack", "kept") == []

    # The champion moved back to v1 by hand: its canary beside v2, with nothing to judge it on, rolled back.
    stages.run("rollback", {"model_name": model, "to_version": "1", "from_version": "2", "reason": "test"})
    rolled, xcoms = deploy("rolled", canary_inconclusive="rollback")
    assert (rolled["version"], rolled["rolled_back"], rolled["changed"]) == ("2", "1", False), rolled
    assert rolled["canary"]["verdict"] == "rollback" and rolled["canary"]["reason"].endswith(
        " < 100, and the deadline has passed")
    assert (xcoms[ROLLBACK_TO], xcoms[ROLLBACK_FROM]) == ("2", "1") and served() == "2"
    assert MlflowHook().model_version_tags(model, "1")["canary.verdict"] == "rollback"
    assert alerts("CanaryInconclusive", "rolled") == [] and len(alerts("CanaryRolledBack", "rolled")) == 1


# -- the backends' interface, and the local supervisor's pid files ------------------------------------------
def _conforms(backend, protocol) -> list[str]:
    """What `backend` lacks of `protocol`: a member, or a method that cannot be called as the core calls it
    (the protocol's own parameters, bound to the backend's signature)."""
    import inspect
    import typing

    # typing.get_protocol_members is Python 3.13's: the members are what the protocol classes declare
    declared = [base for base in protocol.__mro__ if base not in (typing.Protocol, typing.Generic, object)]
    members = {name for base in declared for name in [*vars(base), *base.__dict__.get("__annotations__", {})]
               if not name.startswith("_")}
    lacking = []
    for name in sorted(members):
        if not hasattr(backend, name):
            lacking.append(name)
            continue
        wanted = getattr(protocol, name, None)
        if callable(wanted):
            params = [p for p in inspect.signature(wanted).parameters.values() if p.name != "self"]
            try:
                inspect.signature(getattr(backend, name)).bind(*(object() for _ in params))
            except TypeError as exc:
                lacking.append(f"{name}: {exc}")
    return lacking


def test_both_targets_backends_are_what_the_core_calls(local_target, monkeypatch):
    """The deploy core calls its backend only through the ServingBackend protocols: the local servers and an
    InferenceService each have every member, callable as the core calls it."""
    from mlops.hooks.mlflow import MlflowHook
    from mlops.operators.deploy import CanaryServingBackend
    from mlops.operators.kserve import KServeServingBackend
    from mlops.operators.local_backend import LocalServingBackend

    from ..conftest import cluster_settings

    connect(monkeypatch, mlflow_default="http://127.0.0.1:9", mlserving_default="http://127.0.0.1:18085")
    local = LocalServingBackend(MODEL, "mlflow_default", "mlserving_default")
    kserve = KServeServingBackend(MODEL, cluster_settings(), MlflowHook("mlflow_default"))
    for backend in (local, kserve):
        assert isinstance(backend, CanaryServingBackend) and _conforms(backend, CanaryServingBackend) == [], backend
    assert local.stable.port == 18086 and local.canary.port == 18087  # the models' ports follow the router's


def test_the_local_backend_needs_the_router_port_from_its_connection(local_target, monkeypatch):
    """The port is chosen in one place (scripts/services.sh sets the connection): a connection without one is
    named, not replaced by a port of the code's own."""
    from mlops.hooks.http import ServiceError
    from mlops.operators.local_backend import LocalServingBackend

    connect(monkeypatch, mlflow_default="http://127.0.0.1:9", mlserving_default="http://127.0.0.1")
    with pytest.raises(ServiceError, match="the mlserving_default connection names no port"):
        LocalServingBackend(MODEL, "mlflow_default", "mlserving_default")
    assert not (local_target / "serving" / "ports.json").exists()  # no port given out


def _stand_in_server(tmp_path, server, port: int):
    """A process whose command line is the one the supervisor starts the model server with (`mlserving`, a
    script, run with the folder's link and a port); it only sleeps."""
    import subprocess

    server.mlserving.write_text("#!/bin/sh\nsleep 60\n")
    server.mlserving.chmod(0o755)
    return subprocess.Popen([str(server.mlserving), "--model-dir", str(server.link), "--model-name", MODEL,
                             "--http-port", str(port)], start_new_session=True)


def test_a_pid_file_naming_another_process_is_not_signalled(tmp_path):
    """The pid file outlives its server, and its pid may be anyone's by then: stop signals only this folder's
    own model server and drops a stale pid file."""
    import subprocess

    from mlops.operators.local_backend import SupervisedModelServer

    folder = tmp_path / "serving" / MODEL
    folder.mkdir(parents=True)
    server = SupervisedModelServer(tmp_path / "mlserving", folder, MODEL, 18086)
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    elsewhere = _stand_in_server(tmp_path, server, 18090)  # a model server, but on another port: not this one
    ours = None
    try:
        for other in (unrelated, elsewhere):
            server.pid_file.write_text(str(other.pid))
            server.stop(wait=5)
            assert other.poll() is None and not server.pid_file.exists()
        ours = _stand_in_server(tmp_path, server, 18086)
        server.pid_file.write_text(str(ours.pid))
        server.stop(wait=5)
        assert ours.wait(timeout=5) is not None and not server.pid_file.exists()  # its own server is stopped
    finally:
        for process in (unrelated, elsewhere, ours):
            if process is not None:
                process.kill()
                process.wait()
