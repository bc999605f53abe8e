"""The one module Airflow's plugin manager loads from this folder (.airflowignore keeps it out of
mlops/, which is imported as a package): it registers the DAG-run listener (alerts for states set by hand,
and the report's summary as the run's note), and the active alerts page (mlops/alerts_page.py) with its
entry in the UI's navigation (Browse > Alerts)."""

from airflow.plugins_manager import AirflowPlugin

from mlops import listeners

ALERTS_PREFIX = "/mlops"  # where the API server mounts the page's app


async def alerts_app(scope, receive, send):
    """The alerts page's FastAPI app, imported at its first request. Every Airflow process loads this
    plugin (each task process too, for the listener), but only the API server serves the page, and its
    imports (Airflow's API security) would cost each task process half a second."""
    from mlops.alerts_page import app

    await app(scope, receive, send)


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    listeners = [listeners]
    fastapi_apps = [{"app": alerts_app, "url_prefix": ALERTS_PREFIX, "name": "Active alerts"}]
    # Shown in the UI at /plugin/alerts, the page in an iframe. The href has no leading slash: the UI
    # resolves it against Airflow's base URL, so the page is found behind a path prefix too.
    external_views = [{"name": "Alerts", "href": f"{ALERTS_PREFIX.lstrip('/')}/alerts", "url_route": "alerts",
                       "category": "browse"}]
