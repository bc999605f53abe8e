"""LocalRouter: Debian's nginx in front of several models' servers on one address, each model's requests
shared between its upstreams by weight, reloaded under load without a failed request, refusing a
configuration it cannot use; two deploys changing two models' routes at once both keep theirs."""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import pytest

from mlops.hooks.serving import ServingHook, ServingUnreachable
from mlops.local_router import LocalRouter, RouterError
from tests import support


def upstream(name: str) -> support.TextServer:
    """A server that answers with its name (a model server's version, for the router)."""
    return support.TextServer(lambda: name, content_type="text/plain")


@pytest.fixture
def router(tmp_path):
    router = LocalRouter(tmp_path / "router", support.free_port())
    yield router
    router.stop()


@pytest.fixture(scope="module")
def upstreams():
    stable, canary = upstream("stable"), upstream("canary")
    yield stable, canary
    stable.shutdown()
    canary.shutdown()


MODEL = "iris-classifier"
URL = "http://127.0.0.1:{port}/v2/models/" + MODEL + "/infer"


def shares(url: str, n: int = 400) -> Counter:
    with httpx.Client() as client:
        return Counter(client.get(url).text for _ in range(n))


def test_requests_are_shared_by_weight(router, upstreams):
    stable, canary = upstreams
    url = URL.format(port=router.listen_port)
    router.route(MODEL, {stable.address: 100, canary.address: 0})
    assert shares(url) == {"stable": 400}
    router.route(MODEL, {stable.address: 90, canary.address: 10})
    split = shares(url)
    assert split["stable"] + split["canary"] == 400 and 20 <= split["canary"] <= 60, split  # nginx's smooth WRR
    router.route(MODEL, {stable.address: 0, canary.address: 100})
    assert shares(url) == {"canary": 400}


def test_reloads_under_load_fail_no_request(router, upstreams):
    """A reload's old worker closes the kept-alive connections it holds idle; a request sent on one at
    that instant gets no answer (a clean close, or a reset when the request was already in the closed
    socket's buffer), and HTTP lets a client send it again on a new connection (RFC 9112 9.3.1), as
    browsers and urllib3 do. That retry is counted; anything else is a failure."""
    stable, canary = upstreams
    url = URL.format(port=router.listen_port)
    router.route(MODEL, {stable.address: 100})
    failures, answered, resent, done = [], Counter(), Counter(), threading.Event()

    def load(keepalive: bool):
        with httpx.Client(headers={} if keepalive else {"Connection": "close"}) as client:
            while not done.is_set():
                try:
                    try:
                        answer = client.get(url, timeout=10)
                    except (httpx.RemoteProtocolError, httpx.ReadError):  # closed unanswered: only kept-alive may be
                        if not keepalive:
                            raise
                        resent["closed while idle"] += 1
                        answer = client.get(url, timeout=10)
                    answered[answer.text if answer.status_code == 200 else answer.status_code] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(keepalive,)) for keepalive in (True, True, False)]
    for thread in threads:
        thread.start()
    try:
        for weights in ({stable.address: 90, canary.address: 10}, {stable.address: 50, canary.address: 50},
                        {stable.address: 100}, {canary.address: 100}, {stable.address: 100}) * 2:
            router.route(MODEL, weights)
            threading.Event().wait(0.3)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert failures == [] and set(answered) <= {"stable", "canary"} and answered["canary"] > 0, (failures, answered)
    assert resent["closed while idle"] <= 20, resent  # at most one per reload (10) and kept-alive client (2)


def test_a_configuration_without_an_upstream_is_refused_and_the_running_one_kept(router, upstreams):
    stable, _ = upstreams
    router.route(MODEL, {stable.address: 100})
    before = router.conf.read_text()
    with pytest.raises(RouterError, match=f"no upstream of {MODEL} with a positive weight"):
        router.route(MODEL, {stable.address: 0})
    with pytest.raises(RouterError, match=r"not a loopback address \(127.0.0.1:<port>\): \['not an address'\]"):
        router.route(MODEL, {"not an address": 1})
    with pytest.raises(RouterError, match="'Iris; rm' is not a model name"):
        router.route("Iris; rm", {stable.address: 100})
    with pytest.raises(RouterError, match="nginx refused the configuration"):
        router.route(MODEL, {"127.0.0.1:99999": 1})  # no such port: nginx's own check
    assert router.conf.read_text() == before and router.routes() == {MODEL: {stable.address: 100}}
    assert httpx.get(URL.format(port=router.listen_port)).text == "stable"


def test_a_missing_nginx_is_named(tmp_path):
    with pytest.raises(RouterError, match="nginx is missing .*make system-deps"):
        LocalRouter(tmp_path, support.free_port(), nginx=str(tmp_path / "no-nginx")).route(MODEL, {"127.0.0.1:1": 1})


def test_nginx_does_not_hold_the_task_process_stdin(router, upstreams):
    """As for the model server (tests/airflow/hooks/test_serving.py): the router outlives the deploy task
    that starts it, so it must not keep the task's supervisor socket open."""
    stable, _ = upstreams
    with support.task_supervisor_socket() as supervisor:
        router.route(MODEL, {stable.address: 100})
    assert httpx.get(URL.format(port=router.listen_port)).text == "stable"
    assert not support.held_open_by_others(supervisor), "nginx holds the task's stdin"



def test_a_model_server_gone_behind_the_router_is_unreachable_not_refusing(router):
    """nginx answers 502 when its upstream does not: nothing is known about the model then, as when the
    server itself does not answer (a deploy retries instead of blaming the version)."""
    gone = support.free_port()
    router.route("iris", {f"127.0.0.1:{gone}": 100})
    hook = ServingHook("iris", base_url=f"http://127.0.0.1:{router.listen_port}", retries=1)
    with pytest.raises(ServingUnreachable, match="did not answer .*HTTP 502"):
        hook.smoke_test("1")


def test_each_model_is_reached_at_its_own_path_on_one_address(router, upstreams):
    """Two models behind one router: a request goes by the model its path names (v2 and KServe's v1),
    never by a prefix of another model's name; any other path is a JSON 404 naming the models served."""
    stable, canary = upstreams
    router.route("wine", {stable.address: 100})
    router.route("wine-v2", {canary.address: 100})  # "wine" is a prefix of its name
    base = f"http://127.0.0.1:{router.listen_port}"
    for path in ("/v2/models/wine", "/v2/models/wine/ready", "/v2/models/wine/infer", "/v1/models/wine:predict"):
        assert httpx.get(base + path).text == "stable", path
    for path in ("/v2/models/wine-v2", "/v2/models/wine-v2/infer", "/v1/models/wine-v2:predict"):
        assert httpx.get(base + path).text == "canary", path
    for path in ("/v2/models/win/infer", "/v2/models/wine-v3/infer", "/v2/repository/models/wine/load", "/"):
        answer = httpx.get(base + path)
        assert answer.status_code == 404, path
        assert answer.json()["error"].endswith('the models served: ["wine", "wine-v2"] (/v2/models/<model>/infer)')
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    # One model's canary share leaves the other's routes as they were.
    router.route("wine", {stable.address: 50, canary.address: 50})
    assert shares(f"{base}/v2/models/wine-v2/infer", 50) == {"canary": 50}
    assert set(shares(f"{base}/v2/models/wine/infer", 50)) == {"stable", "canary"}


def test_two_deploys_changing_routes_at_once_keep_both(tmp_path, upstreams):
    """Two processes (the deploy tasks of two DAGs) route their models at the same time, each through its
    own LocalRouter object: every change is made on the other's latest routes, so neither is lost."""
    stable, canary = upstreams
    port, changes, errors = support.free_port(), 8, []

    def deploy(model: str, address: str):
        own = LocalRouter(tmp_path / "router", port)
        try:
            for i in range(changes):
                own.route(model, {address: 100 - i})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=deploy, args=(model, address))
               for model, address in (("first", stable.address), ("second", canary.address))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    router = LocalRouter(tmp_path / "router", port)
    try:
        assert errors == []
        assert router.routes() == {"first": {stable.address: 100 - changes + 1},
                                   "second": {canary.address: 100 - changes + 1}}
        base = f"http://127.0.0.1:{port}"
        assert (httpx.get(f"{base}/v2/models/first/infer").text, httpx.get(f"{base}/v2/models/second/infer").text) \
            == ("stable", "canary")
        assert json.loads((tmp_path / "router" / "routes" / "first.json").read_text()) == {stable.address: 93}
    finally:
        router.stop()
