"""`mlserving` on a real port: KServe's own REST client, and model swaps under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import support

from .conftest import MODEL, LiveServer, point
from .test_endpoints import ROWS, matrix_request


def test_kserve_rest_client_talks_to_it(live_server):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            assert await client.is_server_live(live_server)
            assert await client.is_server_ready(live_server)
            assert await client.is_model_ready(live_server, MODEL)
            tensor = InferInput(name="features", shape=[3, 4], datatype="FP64")
            tensor.set_data_from_numpy(np.asarray(ROWS, dtype=np.float64))
            response = await client.infer(live_server, InferRequest(model_name=MODEL, infer_inputs=[tensor]),
                                          model_name=MODEL)
            return response
        finally:
            await client.close()

    response = asyncio.run(run())
    # KServe's client does not parse model_version back; the run id travels in parameters.
    assert response.parameters["run_id"] == "run-1"
    assert response.outputs[0].data == ["setosa", "versicolor", "virginica"]


class Load(threading.Thread):
    """A client sending requests back to back (bounded in count and time), recording every answer."""

    def __init__(self, url: str, seconds: float = 60, max_requests: int = 20_000):
        super().__init__(daemon=True)
        self.url, self.deadline, self.max_requests = url, time.monotonic() + seconds, max_requests
        self.stop = threading.Event()
        self.answers: list[tuple[int, str | None]] = []

    def run(self):
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline and len(self.answers) < self.max_requests:
                try:
                    r = client.post(f"{self.url}/v2/models/{MODEL}/infer", json=matrix_request())
                    self.answers.append((r.status_code, r.json().get("model_version")))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))


def wait_for_answers(load: Load, count: int, seconds: float = 30) -> None:
    """Until the load has `count` answers; fails if the load thread stopped or time ran out first."""
    deadline = time.monotonic() + seconds
    while len(load.answers) < count:
        assert load.is_alive(), f"the load stopped after {len(load.answers)} answers: {load.answers[-3:]}"
        assert time.monotonic() < deadline, f"{len(load.answers)} of {count} answers after {seconds} s"
        time.sleep(0.05)


def load_model(url: str, link, target) -> httpx.Response:
    """Point the served link at `target`, then ask KServe's repository endpoint to load it."""
    point(link, target)
    return httpx.post(f"{url}/v2/repository/models/{MODEL}/load", timeout=120)


def served_version(url: str) -> str:
    return httpx.get(f"{url}/v2/models/{MODEL}").json()["parameters"]["registry_version"]


def test_swaps_under_load_drop_nothing(live_server, model_link, model_dirs):
    load = Load(live_server)
    load.start()
    wait_for_answers(load, 20)

    good = load_model(live_server, model_link, model_dirs / "good-v2")
    assert good.status_code == 200 and good.json() == {"name": MODEL, "load": True}, good.text
    assert served_version(live_server) == "2"
    served_after_good = len(load.answers)
    wait_for_answers(load, served_after_good + 20)

    for broken in ("corrupt", "wrong-features", "does-not-exist"):
        refused = load_model(live_server, model_link, model_dirs / broken)
        assert refused.status_code == 503, refused.text  # KServe's ModelNotReady, with our reason
        assert "not loaded, still serving version 2" in refused.json()["error"], refused.text
        assert served_version(live_server) == "2"
    served_after_broken = len(load.answers)
    wait_for_answers(load, served_after_broken + 20)
    load.stop.set()
    load.join(timeout=30)
    assert not load.is_alive(), "the load thread did not stop"

    statuses = {status for status, _ in load.answers}
    assert statuses == {200}, [a for a in load.answers if a[0] != 200][:5]
    versions = [v for _, v in load.answers]
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}  # one clean switch, never back
    # The drifted model answers differently on the same rows: the swap really took effect.
    answer = httpx.post(f"{live_server}/v2/models/{MODEL}/infer", json=matrix_request()).json()
    assert answer["model_version"] == "2" and answer["outputs"][0]["data"] != ["setosa", "versicolor", "virginica"]
    metrics = httpx.get(f"{live_server}/metrics").text
    assert f'mlserving_model_swaps_total{{model="{MODEL}",result="rejected"}} 3.0' in metrics
    assert f'mlserving_model_info{{model="{MODEL}",run_id="run-2",version="2"}} 1.0' in metrics
    assert f'mlserving_model_info{{model="{MODEL}",run_id="run-1",version="1"}} 0.0' in metrics


def test_the_load_endpoint_is_kserves_own(live_server, model_link, model_dirs):
    unknown = httpx.post(f"{live_server}/v2/repository/models/tulip/load")
    assert unknown.status_code == 503 and "tulip" in unknown.json()["error"]
    again = httpx.post(f"{live_server}/v2/repository/models/{MODEL}/load")  # the link unchanged: same version
    assert again.status_code == 200 and served_version(live_server) == "1"


def test_garbage_collector_pauses_are_exported(live_server):
    """Every collection's pause, by generation, timed from the server's start: what a latency tail is
    checked against first (benchmarks/serving_profile.py reads it)."""
    text = httpx.get(f"{live_server}/metrics").text
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("mlserving_gc_pause_seconds")}
    counts = {name.split('"')[1]: value for name, value in series.items() if "_count{" in name}
    assert set(counts) == {"0", "1", "2"} and counts["0"] > 0  # start-up alone collects
    assert 0 < series['mlserving_gc_pause_seconds_sum{generation="0"}'] < counts["0"]  # each well under a second


def test_more_than_one_worker_is_refused_with_the_reason(model_dirs):
    """KServe's --workers 2 used to end in a pickling TypeError; it would also split swaps and metrics."""
    port = support.free_port()
    started = subprocess.run([str(Path(sys.executable).parent / "mlserving"), "--model-dir",
                              str(model_dirs / "good-v1"), "--model-name", MODEL, "--http-port", str(port),
                              "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert started.returncode == 2, started.stderr
    assert "--workers 2: this server runs one worker per process" in started.stderr
    assert "Scale with replicas of the InferenceService" in started.stderr
    assert "Traceback" not in started.stderr
    with pytest.raises(httpx.ConnectError):  # nothing was left listening
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)


@pytest.mark.parametrize(("flag", "loop"), [((), "uvloop"), (("--event-loop", "asyncio"), "asyncio")])
def test_the_event_loop_flag_is_honoured_with_one_worker(model_dirs, tmp_path, flag, loop):
    """KServe's --event-loop (default auto: uvloop when installed) reaches uvicorn only with several workers;
    mlserving runs one, and applies the choice itself."""
    server = LiveServer(model_dirs / "good-v1", tmp_path / "server.log", *flag)
    try:
        answer = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=matrix_request())
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"] == ["setosa", "versicolor", "virginica"]
    finally:
        server.stop()
    assert f"mlserving: event loop {loop}" in server.log.read_text()
