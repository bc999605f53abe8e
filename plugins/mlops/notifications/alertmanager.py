"""AlertmanagerNotifier: a task failure or retry, a failed (or recovered) DAG run, or a missed deadline
becomes an Alertmanager alert (API v2, `POST /api/v2/alerts`), and a log line.

What one alert stands for is its `scope`, which picks its grouping labels (Airflow's callback contexts
cannot tell: a DAG-run callback's context carries the run's last task instance too):
- `task`: one alert per task and run (`dag_id`, `task_id`, `run_id`): the task callbacks
  (`on_failure_callback`, `on_retry_callback` in default_args), `AirflowTaskFailed`.
- `dag`: one alert per DAG (`dag_id`): the DAG's `on_failure_callback` (also a run a user marks failed in
  the UI), `AirflowDagRunFailed`; the DAG's `on_success_callback` posts it with `resolve=True`.
- `dag_run`: one alert per run (`dag_id`, `run_id`): the batch deadline (`BatchLate`, posted by a
  `DeadlineAlert`'s AsyncCallback in the triggerer, awaited, with the DAG run in the context the scheduler
  sends), which lasts `lasts_seconds` unless the run's end resolves it first.

`resolve=True` posts the alert with `endsAt` now, which resolves it. A DAG-scope alert notes when its run
ended (`run_ended_at`): Airflow runs a DAG's success callback in the DAG processor, seconds after the
run ended, so a success may be reported after a later run failed; such a late success leaves the
later failure active (it reads the active alert back first). The alert goes through
AlertmanagerHook (connection `alertmanager_default`); a failure to post is logged, never raised.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import BaseNotifier

from mlops.hooks.alertmanager import AlertmanagerHook
from mlops.hooks.http import ServiceError

log = logging.getLogger(__name__)
SCOPES = ("task", "dag", "dag_run")


def _ended_at(dag_run) -> dt.datetime:
    """When a run ended: its end_date (a datetime in callbacks, ISO text in a JSON context), or now."""
    value = dag_run.get("end_date") if isinstance(dag_run, dict) else getattr(dag_run, "end_date", None)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return dt.datetime.now(dt.UTC)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _attr(obj, name: str) -> str:
    """A field of a task instance or DAG run, as an object (callbacks) or a dict (deadline context)."""
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return "" if value is None else str(value)


class AlertmanagerNotifier(BaseNotifier):
    template_fields = ("summary",)

    def __init__(self, *, alertmanager_conn_id: str = AlertmanagerHook.default_conn_name, severity: str = "critical",
                 summary: str = "Airflow task failed", alertname: str | None = None, scope: str = "task",
                 resolve: bool = False, lasts_seconds: float | None = None, context=None):
        """alertname: defaults to AirflowTaskFailed (scope task) and AirflowDagRunFailed (scope dag).
        lasts_seconds: how long a posted alert stays active without being resolved (None: Alertmanager's
        resolve_timeout, 5 minutes by default)."""
        super().__init__(context=context)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if alertname is None and scope == "dag_run":
            raise ValueError("an alert of scope dag_run needs an alertname")
        self.alertmanager_conn_id = alertmanager_conn_id
        self.severity, self.summary, self.scope, self.resolve = severity, summary, scope, resolve
        self.alertname = alertname or ("AirflowTaskFailed" if scope == "task" else "AirflowDagRunFailed")
        self.lasts_seconds = lasts_seconds

    def render_template_fields(self, context, jinja_env=None) -> None:
        # dag.test() hands DAG-run callbacks the scheduler's SerializedDAG, which has no template
        # environment; the DAG processor, which runs them in a deployment, hands the DAG itself.
        if jinja_env is None and not hasattr(context.get("dag"), "get_template_env"):
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

    def alert(self, context) -> dict:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run") or {}
        error = context.get("exception") or context.get("reason")
        now = dt.datetime.now(dt.UTC)
        dag_id = _attr(ti, "dag_id") or _attr(dag_run, "dag_id") or _attr(context.get("dag"), "dag_id")
        run_id = (_attr(dag_run, "run_id") or _attr(dag_run, "dag_run_id") or _attr(ti, "run_id")
                  or str(context.get("run_id") or ""))
        labels = {"alertname": self.alertname, "severity": self.severity, "dag_id": dag_id}
        annotations = {"summary": self.summary, "run_id": run_id, "error": str(error)[:2000] if error else ""}
        if self.scope == "task":
            labels.update(task_id=_attr(ti, "task_id"), run_id=run_id)
            annotations.update(try_number=_attr(ti, "try_number"), log_url=_attr(ti, "log_url"))
        elif self.scope == "dag_run":
            labels["run_id"] = run_id
        else:
            annotations["run_ended_at"] = _ended_at(dag_run).isoformat()
        if context.get("deadline"):
            annotations["deadline"] = _attr(context["deadline"], "deadline_time")
        alert = {"labels": labels, "annotations": annotations, "startsAt": now.isoformat()}
        if self.resolve:
            alert["endsAt"] = now.isoformat()
        elif self.lasts_seconds:
            alert["endsAt"] = (now + dt.timedelta(seconds=self.lasts_seconds)).isoformat()
        return alert

    def _log(self, alert: dict) -> None:
        labels, notes = alert["labels"], alert["annotations"]
        where = ".".join(filter(None, [labels["dag_id"], labels.get("task_id")]))
        if self.resolve:
            log.info("RESOLVED %s: %s run %s", labels["alertname"], where, notes["run_id"])
            return
        log.error("ALERT %s: %s run %s try %s: %s", labels["alertname"], where, notes["run_id"],
                  notes.get("try_number", "-"), notes["error"])

    def _failed_later(self, hook: AlertmanagerHook, alert: dict) -> dict | None:
        """An active alert of this DAG whose run ended after the run this resolve reports on."""
        labels = alert["labels"]
        ended = dt.datetime.fromisoformat(alert["annotations"]["run_ended_at"])
        try:
            active = hook.active_alerts(f'alertname="{labels["alertname"]}"', f'dag_id="{labels["dag_id"]}"')
        except ServiceError as exc:
            log.warning("could not read the active alerts, resolving anyway: %s", exc)
            return None
        for other in active:
            noted = other.get("annotations", {}).get("run_ended_at")
            if noted and dt.datetime.fromisoformat(noted) > ended:
                return other
        return None

    def notify(self, context) -> None:
        alert = self.alert(context)
        hook = AlertmanagerHook(self.alertmanager_conn_id)
        if self.resolve and self.scope == "dag" and (later := self._failed_later(hook, alert)):
            log.info("kept %s: run %s failed after run %s ended", alert["labels"]["alertname"],
                     later["annotations"].get("run_id"), alert["annotations"]["run_id"])
            return
        self._log(alert)
        try:
            hook.post_alerts([alert])
        except ServiceError as exc:  # alerting must never mask the task's own failure
            log.error("could not post the alert: %s", exc)

    async def async_notify(self, context) -> None:
        """For deadline alerts, in the triggerer."""
        alert = self.alert(context)
        self._log(alert)
        try:
            await AlertmanagerHook(self.alertmanager_conn_id).async_post_alerts([alert])
        except ServiceError as exc:
            log.error("could not post the alert: %s", exc)
