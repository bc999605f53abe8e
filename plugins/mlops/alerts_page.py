"""The active alerts page: what Alertmanager holds now, as one server-rendered HTML page in the Airflow UI's
navigation (Browse > Alerts). Debian's Alertmanager ships no web UI, and Prometheus's alerts page shows only
its own rules' alerts, not the ones the notifiers post (AirflowTaskFailed, AirflowDagRunFailed, BatchLate,
CanaryRolledBack).

The API server serves it as the `mlops` plugin's FastAPI app (plugins/mlops_plugin.py). Airflow does not
authenticate a plugin's app (a mounted app inherits none of the core API's dependencies), so the page asks
the auth manager itself, with Airflow's own dependency: a signed-in user who may view the website (the UI's
session cookie, or a bearer token). It changes nothing: one GET of Alertmanager's API v2 through the
`alertmanager_default` connection the notifiers use, one attempt with a short timeout (a person is
waiting), at most MAX_BYTES read. Every label and annotation is HTML-escaped, and the page's
Content-Security-Policy allows no script at all, so a hostile label can neither run nor load anything.
"""

from __future__ import annotations

import datetime as dt
import html
import json

import httpx
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from mlops.hooks.alertmanager import AlertmanagerHook
from mlops.hooks.http import ServiceError

MAX_BYTES = 2 * 1024 * 1024  # thousands of alerts; more than that is not a page anyone reads
TIMEOUT_SECONDS = 5
REFRESH_SECONDS = 30
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}  # then any other severity, then none
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class Unavailable(Exception):
    """Alertmanager could not be read; the message says where and why."""


def fetch_alerts(hook: AlertmanagerHook) -> list[dict]:
    """The alerts Alertmanager holds now (firing, silenced or inhibited; its API leaves out resolved ones)."""
    try:
        base, headers = hook.base_url, hook.headers()
    except ServiceError as exc:  # the connection is not defined
        raise Unavailable(str(exc)) from None
    where = f"Alertmanager at {base}"
    body = bytearray()
    try:
        # Streamed, so that an oversized answer is cut off at the limit instead of read into memory.
        with httpx.stream("GET", f"{base}/api/v2/alerts", headers=headers, timeout=TIMEOUT_SECONDS) as response:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise Unavailable(f"{where} answered more than {MAX_BYTES:,} bytes of alerts; read them "
                                      "through its API (GET /api/v2/alerts with a filter)")
    except httpx.HTTPError as exc:
        raise Unavailable(f"{where} cannot be reached: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise Unavailable(f"{where} answered HTTP {response.status_code}: {bytes(body[:300]).decode(errors='replace')}")
    try:
        alerts = json.loads(body)
    except ValueError:
        alerts = None
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise Unavailable(f"{where} answered something that is not a list of alerts")
    return alerts


def _text(value) -> str:
    return html.escape("" if value is None else str(value))


def _since(starts_at, now: dt.datetime) -> str:
    """When an alert started, in UTC, and how long ago (the raw value when it is not a timestamp)."""
    try:
        started = dt.datetime.fromisoformat(str(starts_at)).astimezone(dt.UTC)
    except ValueError:
        return _text(starts_at)
    minutes = max(0, int((now - started).total_seconds() // 60))
    ago = f"{minutes} min" if minutes < 120 else f"{minutes // 60} h" if minutes < 2880 else f"{minutes // 1440} d"
    return f"{started:%Y-%m-%d %H:%M} UTC ({ago} ago)"


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _sort_key(alert: dict) -> tuple:
    severity = _mapping(alert.get("labels")).get("severity")
    rank = SEVERITY_ORDER.get(severity, len(SEVERITY_ORDER) if severity else len(SEVERITY_ORDER) + 1)
    return rank, str(alert.get("startsAt", ""))


def _row(alert: dict, now: dt.datetime) -> str:
    labels, notes = _mapping(alert.get("labels")), _mapping(alert.get("annotations"))
    state = _mapping(alert.get("status")).get("state", "")
    others = "".join(f"<li>{_text(k)}={_text(v)}</li>" for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))
                     if k not in ("alertname", "severity"))
    # The notifiers put the task's error beside the summary; the summary alone says only "task failed".
    detail = f'<div class="detail">{_text(notes["error"])}</div>' if notes.get("error") else ""
    suppressed = f' <span class="state">({_text(state)})</span>' if state and state != "active" else ""
    return (f'<tr><td class="severity {_text(labels.get("severity", ""))}">{_text(labels.get("severity", ""))}</td>'
            f'<td class="name">{_text(labels.get("alertname", ""))}{suppressed}</td>'
            f'<td>{_text(notes.get("summary") or notes.get("description") or "")}{detail}</td>'
            f'<td class="since">{_since(alert.get("startsAt"), now)}</td><td><ul>{others}</ul></td></tr>')


STYLE = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }
body { margin: 1rem 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
.source { color: GrayText; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .4rem .6rem; border-bottom: 1px solid #8884; }
ul { list-style: none; margin: 0; padding: 0; font-family: ui-monospace, monospace; font-size: 12px; }
.name { font-weight: 600; } .since { white-space: nowrap; } .state, .detail { color: GrayText; }
.detail { font-size: 12px; white-space: pre-wrap; max-height: 6em; overflow: auto; }
.severity { font-weight: 600; text-transform: uppercase; font-size: 12px; }
.critical { color: #d32f2f; } .warning { color: #ed6c02; }
.empty { font-size: 1.1rem; } .error { color: #d32f2f; font-weight: 600; }
"""


def render(alerts: list[dict] | None, source: str, now: dt.datetime, problem: str | None = None) -> str:
    """The page: the alerts, most severe first and oldest first within a severity; or that there are none;
    or why Alertmanager could not be read."""
    if problem is not None:
        content = f'<p class="error" role="alert">Cannot show the alerts: {_text(problem)}</p>'
    elif not alerts:
        content = '<p class="empty">No active alerts.</p>'
    else:
        rows = "".join(_row(a, now) for a in sorted(alerts, key=_sort_key))
        content = ("<table><thead><tr><th>Severity</th><th>Alert</th><th>Summary</th><th>Since</th><th>Labels</th>"
                   f"</tr></thead><tbody>{rows}</tbody></table>")
    # Silenced and inhibited alerts count too: they are listed, marked (suppressed).
    held = len(alerts or [])
    count = "" if problem is not None else f"{held} alert{'' if held == 1 else 's'}, "
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><title>Active alerts</title>'
            f"<style>{STYLE}</style></head><body><h1>Active alerts</h1>"
            f'<p class="source">From {_text(source)}: {count}read {now:%Y-%m-%d %H:%M:%S} UTC, '
            f"again every {REFRESH_SECONDS} s.</p>{content}</body></html>")


app = FastAPI(title="mlops: active alerts", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/alerts", response_class=HTMLResponse, dependencies=[Depends(requires_access_view(AccessView.WEBSITE))])
def alerts_page() -> HTMLResponse:
    """Sync on purpose: FastAPI runs it in a worker thread, where the connection lookup may block."""
    hook, now = AlertmanagerHook(), dt.datetime.now(dt.UTC)
    source = f"Alertmanager (connection {hook.conn_id})"
    try:
        page, status = render(fetch_alerts(hook), source, now), 200
    except Unavailable as exc:
        page, status = render(None, source, now, problem=str(exc)), 502  # a gateway whose upstream failed
    return HTMLResponse(page, status_code=status, headers=HEADERS)
