"""LocalRouter: Debian's nginx sharing requests between two upstreams by weight, reloaded under load
without a failed request, refusing a configuration it cannot use."""

from __future__ import annotations

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


def shares(url: str, n: int = 400) -> Counter:
    with httpx.Client() as client:
        return Counter(client.get(url).text for _ in range(n))


def test_requests_are_shared_by_weight(router, upstreams):
    stable, canary = upstreams
    url = f"http://127.0.0.1:{router.listen_port}/"
    router.route({stable.address: 100, canary.address: 0})
    assert shares(url) == {"stable": 400}
    router.route({stable.address: 90, canary.address: 10})
    split = shares(url)
    assert split["stable"] + split["canary"] == 400 and 20 <= split["canary"] <= 60, split  # nginx's smooth WRR
    router.route({stable.address: 0, canary.address: 100})
    assert shares(url) == {"canary": 400}


def test_reloads_under_load_fail_no_request(router, upstreams):
    """A reload's old worker closes the kept-alive connections it holds idle; a request sent on one at
    that instant gets no answer (a clean close, or a reset when the request was already in the closed
    socket's buffer), and HTTP lets a client send it again on a new connection (RFC 9112 9.3.1), as
    browsers and urllib3 do. That retry is counted; anything else is a failure."""
    stable, canary = upstreams
    url = f"http://127.0.0.1:{router.listen_port}/"
    router.route({stable.address: 100})
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
            router.route(weights)
            threading.Event().wait(0.3)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert failures == [] and set(answered) <= {"stable", "canary"} and answered["canary"] > 0, (failures, answered)
    assert resent["closed while idle"] <= 20, resent  # at most one per reload (10) and kept-alive client (2)


def test_a_configuration_without_an_upstream_is_refused_and_the_running_one_kept(router, upstreams):
    stable, _ = upstreams
    router.route({stable.address: 100})
    before = router.conf.read_text()
    with pytest.raises(RouterError, match="no upstream with a positive weight"):
        router.route({stable.address: 0})
    with pytest.raises(RouterError, match="nginx refused the configuration"):
        router.route({"not an address": 1})
    assert router.conf.read_text() == before
    assert httpx.get(f"http://127.0.0.1:{router.listen_port}/").text == "stable"


def test_a_missing_nginx_is_named(tmp_path):
    with pytest.raises(RouterError, match="nginx is missing .*make system-deps"):
        LocalRouter(tmp_path, support.free_port(), nginx=str(tmp_path / "no-nginx")).route({"127.0.0.1:1": 1})


def test_nginx_does_not_hold_the_task_process_stdin(router, upstreams):
    """As for the model server (tests/airflow/hooks/test_serving.py): the router outlives the deploy task
    that starts it, so it must not keep the task's supervisor socket open."""
    stable, _ = upstreams
    with support.task_supervisor_socket() as supervisor:
        router.route({stable.address: 100})
    assert httpx.get(f"http://127.0.0.1:{router.listen_port}/").text == "stable"
    assert not support.held_open_by_others(supervisor), "nginx holds the task's stdin"



def test_a_model_server_gone_behind_the_router_is_unreachable_not_refusing(router):
    """nginx answers 502 when its upstream does not: nothing is known about the model then, as when the
    server itself does not answer (a deploy retries instead of blaming the version)."""
    gone = support.free_port()
    router.route({f"127.0.0.1:{gone}": 100})
    hook = ServingHook("iris", base_url=f"http://127.0.0.1:{router.listen_port}", retries=1)
    with pytest.raises(ServingUnreachable, match="did not answer .*HTTP 502"):
        hook.smoke_test("1")
