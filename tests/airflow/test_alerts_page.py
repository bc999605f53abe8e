"""The Airflow UI's Alerts page (plugins/mlops/alerts_page.py) as Airflow's own API server serves it (the
real app, its auth manager and the plugin's mount) over a real Alertmanager: who may read it, what it
shows, that nothing in an alert becomes markup, and what it says when Alertmanager cannot be read."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import httpx
import pytest

from mlops.notifications.alertmanager import AlertmanagerNotifier
from tests import support

from .conftest import REPO, connect

# Every element the page itself writes: an alert that brought one more would be markup, not text.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "p", "table", "thead", "tbody", "tr", "th",
             "td", "ul", "li", "div", "span"}


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's API server app in this process, with this repository's plugins."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app("core"))
    yield client
    purge_cached_app()


@pytest.fixture(scope="module")
def viewer(api) -> dict[str, str]:
    """The UI's session cookie of a signed-in user with the least role, viewer."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return {"_token": api.app.state.auth_manager.generate_jwt(SimpleAuthManagerUser(username="ann", role="viewer"))}


@pytest.fixture(scope="module")
def page_path(api, viewer) -> str:
    """Where the UI's navigation entry frames the page: the plugin's external view's href, which the UI
    resolves against Airflow's base URL (/ here)."""
    plugins = api.get("/api/v2/plugins", cookies=viewer).json()["plugins"]
    [view] = [v for p in plugins for v in p["external_views"] if v["url_route"] == "alerts"]
    assert view["category"] == "browse" and not view["href"].startswith("/")
    return "/" + view["href"]


@pytest.fixture
def alertmanager(tmp_path, monkeypatch) -> str:
    """An Alertmanager of the test's own, empty, as the `alertmanager_default` connection."""
    with support.alertmanager(tmp_path) as url:
        connect(monkeypatch, alertmanager_default=url)
        yield url


def post(alertmanager: str, *alerts: dict) -> None:
    httpx.post(f"{alertmanager}/api/v2/alerts", json=list(alerts)).raise_for_status()


def alert(name: str, severity: str = "warning", summary: str = "", **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {"summary": summary}}


class Markup(HTMLParser):
    """The elements and attributes a page's HTML really has."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.attributes = set(), set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes |= {name for name, _ in attrs}


def test_only_a_signed_in_user_reads_the_page(api, viewer, page_path, alertmanager):
    """Airflow does not authenticate a plugin's app; the page does, with Airflow's own check."""
    post(alertmanager, alert("OnlyForSignedInUsers"))
    anonymous = api.get(page_path)
    assert anonymous.status_code == 401 and "OnlyForSignedInUsers" not in anonymous.text
    forged = api.get(page_path, cookies={"_token": "not-a-token"})
    assert forged.status_code in (401, 403) and "OnlyForSignedInUsers" not in forged.text
    signed_in = api.get(page_path, cookies=viewer)
    assert signed_in.status_code == 200 and "OnlyForSignedInUsers" in signed_in.text


def test_it_shows_what_the_notifiers_and_rules_post_most_severe_first(api, viewer, page_path, alertmanager):
    """A task failure as the notifier posts it (severity, name, summary, the error, labels, since when)
    beside a rule's warning."""
    post(alertmanager, alert("FeatureDriftHigh", "warning", "60% of features drifted for iris", model="iris"))
    ti = SimpleNamespace(dag_id="continuous_training_iris", task_id="data.ingest", run_id="manual__1", try_number=1,
                         log_url="")
    AlertmanagerNotifier(summary="Airflow task failed").notify(
        {"ti": ti, "dag_run": SimpleNamespace(run_id="manual__1"), "exception": ValueError("no rows")})
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "2 alerts," in text and "No active alerts" not in text
    assert text.index("AirflowTaskFailed") < text.index("FeatureDriftHigh")  # critical before warning
    for shown in (">critical<", "Airflow task failed", "no rows", "task_id=data.ingest",
                  "dag_id=continuous_training_iris", ">warning<", "60% of features drifted for iris", "model=iris",
                  f"{dt.datetime.now(dt.UTC):%Y-%m-%d} "):
        assert shown in text, shown


def test_a_silenced_alert_is_listed_marked_not_hidden(api, viewer, page_path, alertmanager):
    post(alertmanager, alert("Silenced"))
    now = dt.datetime.now(dt.UTC)
    silence = {"matchers": [{"name": "alertname", "value": "Silenced", "isRegex": False}], "startsAt": now.isoformat(),
               "endsAt": (now + dt.timedelta(hours=1)).isoformat(), "createdBy": "test", "comment": "known"}
    httpx.post(f"{alertmanager}/api/v2/silences", json=silence).raise_for_status()
    assert 'Silenced <span class="state">(suppressed)</span>' in api.get(page_path, cookies=viewer).text


def test_nothing_in_an_alert_becomes_markup(api, viewer, page_path, alertmanager):
    hostile = {"labels": {"alertname": "Hostile", "severity": '"><img src=x onerror=alert(1)>',
                          "dag_id": "<script>alert(2)</script>"},
               "annotations": {"summary": "<iframe src=//evil.example></iframe>",
                               "error": "</td></tr></table><form action=//evil.example><input name=x>"}}
    post(alertmanager, hostile)
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 200 and "Hostile" in page.text
    markup = Markup(page.text)
    assert markup.tags <= PAGE_TAGS, markup.tags - PAGE_TAGS
    assert not {a for a in markup.attributes if a.startswith("on")} and not markup.attributes & {"src", "href"}
    assert "dag_id=&lt;script&gt;alert(2)&lt;/script&gt;" in page.text  # shown as text, whole
    # and should an alert ever get through, the browser runs no script and loads nothing for the page
    assert page.headers["content-security-policy"].startswith("default-src 'none';")


def test_no_alerts_says_so_and_a_resolved_one_is_gone(api, viewer, page_path, alertmanager):
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 200 and "No active alerts." in page.text and "<table" not in page.text
    resolved = {**alert("OverAlready"), "endsAt": dt.datetime.now(dt.UTC).isoformat()}
    post(alertmanager, resolved)
    page = api.get(page_path, cookies=viewer)
    assert "No active alerts." in page.text and "OverAlready" not in page.text


def test_an_alertmanager_that_cannot_be_read_is_named_not_taken_for_no_alerts(api, viewer, page_path, monkeypatch):
    down = f"http://127.0.0.1:{support.free_port()}"
    connect(monkeypatch, alertmanager_default=down)
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 502 and "No active alerts" not in page.text
    assert f"Alertmanager at {down} cannot be reached: ConnectError" in page.text
    monkeypatch.delenv("AIRFLOW_CONN_ALERTMANAGER_DEFAULT")
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 502 and "connection &#x27;alertmanager_default&#x27; is not defined" in page.text


def test_an_answer_past_the_size_limit_is_refused_not_shown_in_part(api, viewer, page_path, alertmanager, monkeypatch):
    from mlops import alerts_page

    monkeypatch.setattr(alerts_page, "MAX_BYTES", 2000)
    post(alertmanager, *(alert(f"Many{i}", summary="x" * 300) for i in range(8)))
    page = api.get(page_path, cookies=viewer)
    assert page.status_code == 502 and "answered more than 2,000 bytes of alerts" in page.text
    assert "Many0" not in page.text


def test_loading_the_plugin_leaves_the_page_unimported():
    """Every Airflow process loads the plugin, each task process too; only the API server serves the page."""
    page_modules = "{'fastapi', 'airflow.api_fastapi.core_api.security', 'mlops.alerts_page'}"
    code = ("import sys; sys.path.insert(0, 'plugins'); import mlops_plugin; "
            f"print(sorted({page_modules} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
