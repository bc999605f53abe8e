"""`mlserving` on a real port: KServe's own REST client, and model swaps under load."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import support

from .conftest import MODEL, REPOSITORY_TOKEN, LiveServer, point
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


DEPLOYER = {"Authorization": f"Bearer {REPOSITORY_TOKEN}"}


def load_model(url: str, link, target) -> httpx.Response:
    """Point the served link at `target`, then ask KServe's repository endpoint to load it, as the deployer."""
    point(link, target)
    return httpx.post(f"{url}/v2/repository/models/{MODEL}/load", timeout=120, headers=DEPLOYER)


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
    unknown = httpx.post(f"{live_server}/v2/repository/models/tulip/load", headers=DEPLOYER)
    assert unknown.status_code == 503 and "tulip" in unknown.json()["error"]
    again = httpx.post(f"{live_server}/v2/repository/models/{MODEL}/load", headers=DEPLOYER)  # same link: same version
    assert again.status_code == 200 and served_version(live_server) == "1"


def test_an_inference_caller_can_neither_unload_nor_load_and_readiness_stays_honest(live_server, model_link,
                                                                                   model_dirs):
    point(model_link, model_dirs / "good-v2")
    for headers in ({}, {"Authorization": "Bearer guessed-token-guessed-token"}):
        refused = httpx.post(f"{live_server}/v2/repository/models/{MODEL}/load", headers=headers)
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
    for headers in ({}, DEPLOYER):  # nothing unloads, not even the deployer
        unload = httpx.post(f"{live_server}/v2/repository/models/{MODEL}/unload", headers=headers)
        assert unload.status_code == 403 and "does not unload" in unload.json()["error"]
    assert served_version(live_server) == "1"
    answer = httpx.post(f"{live_server}/v2/models/{MODEL}/infer", json=matrix_request())
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    ready = httpx.get(f"{live_server}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_without_a_token_file_the_repository_endpoints_are_off(model_dirs, tmp_path):
    server = LiveServer(model_dirs / "good-v1", tmp_path / "server.log", repository_token=False)
    try:
        for action in ("load", "unload"):
            answer = httpx.post(f"{server.url}/v2/repository/models/{MODEL}/{action}", headers=DEPLOYER)
            assert answer.status_code == 403, answer.text
        assert "--repository-token-file" in httpx.post(f"{server.url}/v2/repository/models/{MODEL}/load",
                                                       headers=DEPLOYER).json()["error"]
    finally:
        server.stop()


def test_a_token_file_that_is_empty_stops_the_server_with_the_reason(model_dirs, tmp_path):
    (tmp_path / "empty.token").write_text("\n")
    done = subprocess.run([str(Path(sys.executable).parent / "mlserving"), "--model-dir", str(model_dirs / "good-v1"),
                           "--model-name", MODEL, "--http-port", "0", "--repository-token-file",
                           str(tmp_path / "empty.token")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "the token must be at least 16 characters" in done.stderr


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


def _rss_kib(pid: int) -> int:
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))


def _post_raw(url: str, headers: str, chunks) -> bytes:
    """A POST written on a bare socket (the client keeps sending until the server answers or hangs up),
    and whatever the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed while the body was still coming
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        return answer


def test_a_200_mb_body_is_refused_413_and_the_server_memory_stays_bounded(model_dirs, tmp_path):
    server = LiveServer(model_dirs / "good-v1", tmp_path / "server.log")
    try:
        size, piece = 200 * 1024 * 1024, b"[" + b"1.0," * (256 * 1024)
        rss_before = _rss_kib(server.proc.pid)
        declared = _post_raw(server.url, f"Content-Type: application/json\r\nContent-Length: {size}\r\n",
                             (piece for _ in range(size // len(piece))))
        chunked = _post_raw(server.url, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
                            (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(size // len(piece))))
        for answer in (declared, chunked):
            assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
            assert b"larger than this server accepts" in answer
        growth_mib = (_rss_kib(server.proc.pid) - rss_before) / 1024
        assert growth_mib < 50, f"the server grew by {growth_mib:.0f} MiB"
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'mlserving_requests_total{{model="{MODEL}",outcome="client_error",version="1"}} 2.0' in metrics
        assert httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=matrix_request()).status_code == 200
    finally:
        server.stop()
