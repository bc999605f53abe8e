"""
# Continuous training

One DAG per dataset file, `continuous_training_<name>` for `datasets/<name>.yaml` (the folder is
`[mlops] datasets_folder`): the file names the registered model this DAG keeps fresh (`model_name`), its
label and features, the estimator, the metric and its bound, the schedule, and the defaults of the
trigger form's Params below. The DAG works one data partition at a time (by default the partition is the
run's logical date, so backfills replay past partitions):

1. **wait_for_batch**: waits, in the triggerer, for `landing/<model_name>/<date>/_SUCCESS`; skips the run
   if no batch arrives in time. Every later task works on the partition it reports. A file whose source is
   `sql` or `http` has **pull_batch** before it, which fetches the date's partition through the source's
   Airflow connection and lands it (`latest` is refused: a pull needs a date).
2. **data.ingest / data.split**: validate the batch against the dataset file (bad files are quarantined
   with a reason), then a reproducible stratified split of the training window plus the fresh batch. Both
   stages are given the file's text as this DAG read it, never a copy from an image.
3. **detect_degradation**: score the served champion on the fresh batch, measure drift; with
   `live_drift_window` (and a `prometheus_default` connection) also the drift of the traffic the model
   server answered in that window, from its feature histograms in Prometheus (no labels needed).
4. **decide_retraining** (a BranchPythonOperator): retrain when there is no champion, the champion's
   score on the batch in the file's metric is past `metric_threshold` (default: the file's bound; below its
   `metric.min` for a metric better higher, accuracy or r2; above its `metric.max` for one better lower,
   rmse, mae or mape), the drifted-feature share of the batch or of live traffic is above `drift_limit`, or
   `force_retrain`; the task log and its `reasons` XCom say which of these held. Otherwise **no_retraining**.
5. **training.train**: a Kubeflow Pipelines run (kfp.local on the local target) trains a challenger and
   compares it with the champion; **training.check_decision** (a BranchPythonOperator) sends a promote
   to **training.approve_promotion**, and on approval to **training.register**, which registers the
   challenger and moves the `champion` alias. With `require_approval` set, approval is a person's: the
   task shows the decision's evidence under *Required actions* and waits for Approve or Reject (no
   answer within `approval_timeout_minutes`: Reject, the champion stays; **training.promotion_rejected**);
   who decided is recorded on the training run and, approved, on the new model version.
6. **deploy**: the champion goes behind the KServe model server (smoke-tested; on failure the previous
   version is served again, the task fails and **roll_back_champion** moves the alias back, recorded).
   With `canary_percent` above 0 a new champion first serves that share of the requests for
   `canary_minutes`, and Prometheus's view of both versions (errors, p99 latency, predicted-class mix or,
   for a regression model, the KS distance of the prediction distributions) promotes it or rolls it back:
   a verdict, not a failure (the previous version kept serving), so deploy succeeds, `roll_back_champion`
   moves the alias back and the `CanaryRolledBack` alert fires. A canary still short of requests at the
   deadline (no traffic) is inconclusive: `canary_inconclusive` = `promote` keeps the offline verdict (the new
   champion serves everything, the verdict is `inconclusive` and `CanaryInconclusive` fires), `rollback` rolls
   it back. The verdict and its evidence are on the model version, the task's `canary` XCom and the report.
7. **report**: what the run did (`skipped`, `keep`, `rejected`, `promote`, `rolled_back`,
   `already_registered`, `superseded`) and the registry's champion, as metrics on the Prometheus
   Pushgateway, and in one line with why (the retraining reasons, the canary's verdict) as the run's note,
   shown on the run's page and in the grid (a note a person wrote is kept).

**Which partition.** Scheduled runs and backfills process the partition of their logical date. From
the trigger form, set `partition` to `latest` (the model's newest complete batch) or to a date: a manual
run can then keep the default logical date ("now") and still work on data that exists.

**Re-running a partition.** Clear its run (Grid, the run, *Clear*) or backfill the range again with
*reprocess* (`airflow backfill create ... --reprocess-behavior completed`); triggering the same logical
date again is refused by Airflow (one run per date), so for a manual re-run set `partition` instead.
A re-run reports what happened, not what it decided: registering a run key again moves nothing
(`already_registered`), and a promotion decided against a champion that has changed since is not
applied (`superseded`).

**Concurrency.** Up to four runs at a time, so a run waiting for its batch never blocks a manual one;
`training.register` and `deploy` run one at a time across all runs of the DAG (its model's).

**Alerts** (Alertmanager): a failed or retried task, a failed run (also one marked failed in the UI;
the next successful run resolves it), and a run whose batch is still missing two hours after the run
was queued (`BatchLate`, a deadline alert, until the run ends).

**A broken dataset file** does not take the other models' DAGs down: it becomes a DAG of its own (the same
id; a sanitized one when the file name cannot be part of an id), tagged `invalid-dataset-file`, that is
never scheduled; its description says what is wrong (the file, the key, what is allowed), and a manual run
fails with that message. The DAG processor logs it too. So does a file naming a model another file has.

Stages run the `mlpipeline` CLI (see the README): as subprocesses on the `local` target, as pods on
`kubernetes` (`[mlops] target`, read when the DAG is parsed; every setting and connection is in
docs/configuration.md). Task links open the MLflow run, the model version and the serving endpoint.
"""

import logging
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, Param, TaskGroup, TriggerRule, literal

from mlops.branch_callables import choose_promotion, choose_retraining
from mlops.canary import INCONCLUSIVE_ACTIONS
from mlops.datasets import INVALID_TAG, DatasetFile, InvalidDatasetFile, read_dataset_files
from mlops.hooks.prometheus import prometheus_url
from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.notifications.alerts import batch_late_kwargs, run_failed, run_no_longer_waiting, run_recovered
from mlops.notifications.pushgateway import FailureMetricNotifier
from mlops.operators.approval import APPROVED_BY, PromotionApprovalOperator
from mlops.operators.deploy import ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO
from mlops.operators.invalid_dataset import InvalidDatasetFileOperator
from mlops.operators.report import ReportOperator
from mlops.sensors.partition import PartitionSensor
from mlops.settings import DRIFT_LIMIT, MlopsSettings, SettingsError, mlops_settings
from mlops.tasks import deploy_task, stage_task, training_task

log = logging.getLogger(__name__)
LINEAGE = {"dag_id": "{{ dag.dag_id }}", "dag_run_id": "{{ run_id }}"}
START = datetime(2026, 11, 1, tzinfo=UTC)
# The schemas two Params share, one object each: Airflow deep-copies a DAG's Params into every task (once per
# operator class in its hierarchy), and a schema object two Params share is copied once, not twice.
# A number's bounds sit under allOf, not at the top: the trigger form's number field clamps what is typed to a
# top-level minimum/maximum (1.5 becomes 1, silently), while a bound it does not read is checked when the run
# is created, which refuses the value with a message naming the Param.
FRACTION = {"type": "number", "allOf": [{"minimum": 0, "maximum": 1}]}
FLAG = {"type": "boolean"}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
# metric_threshold's schema by the metric, as the dataset file bounds it: a classification metric in (0, 1]; r2
# below 1 (and maybe negative); rmse, mae and mape (a fraction, with no upper bound) above 0.
SCORE = {"type": "number", "exclusiveMinimum": 0, "allOf": [{"maximum": 1}]}
THRESHOLD_SCHEMAS = {"r2": {"type": "number", "exclusiveMaximum": 1}, "rmse": POSITIVE, "mae": POSITIVE,
                     "mape": POSITIVE}
# A partition: empty (the run's date), 'latest', or a date that exists (the pattern alone let 2026-13-45 wait
# hours for a folder that cannot be). The date check sits under else, so the form keeps a text field (a
# top-level format: date would make it a date picker, where 'latest' cannot be typed).
PARTITION = {"type": ["null", "string"], "pattern": "^(latest|[0-9]{4}-[0-9]{2}-[0-9]{2})$",
             "if": {"const": "latest"}, "else": {"format": "date"}}


def continuous_training_dag(entry: DatasetFile, settings: MlopsSettings) -> DAG:
    """The whole loop for the model one dataset file declares."""
    dataset = entry.dataset
    model = dataset.model_name
    # The file's text exactly as read, and its name (part of what the dataset's fingerprint covers): ingest
    # and split parse it again. literal(): `options` is a templated field, and a "{{" in the file must reach
    # the stage as written, not be rendered by Jinja.
    dataset_file = {"dataset_content": literal(entry.text), "dataset_name": dataset.name}
    canary = dataset.canary
    # the file's bound: metric.min (retrain below it) for a metric better higher, metric.max (above it) for lower
    at_least, below = ("at least", "below") if dataset.metric_direction == "higher" else ("at most", "above")
    target = settings.target  # which operators the tasks are: read once per parse, not once per task
    with DAG(
        dag_id=entry.dag_id,
        description=dataset.description or f"Continuous training of {model}",
        schedule=dataset.schedule,
        start_date=START,
        catchup=False,
        # A run waiting for its batch must not hold up a manual one: what must be serial (registering,
        # deploying) is, per task (max_active_tis_per_dag below). Backfills pass --max-active-runs 1, since
        # each day's decision depends on the champion the day before left. Airflow allows @continuous one run.
        max_active_runs=1 if dataset.schedule == "@continuous" else 4,
        doc_md=f"**Dataset file** `{entry.path.name}`: model `{model}` ({dataset.task}), {dataset.metric} "
               f"{at_least} {dataset.metric_threshold}, `{dataset.estimator}`.\n\n{__doc__}",
        tags=list(dict.fromkeys(["mlops", "continuous-training", model, *dataset.tags])),
        user_defined_macros={"prometheus_url": prometheus_url},
        # Each DAG is registered by name below, once it is whole (a DAG that fails half-built is not).
        auto_register=False,
        default_args={
            "owner": ", ".join(dataset.owners) or "airflow",
            "retries": settings.task_retries,
            "retry_delay": settings.retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10),
            "on_failure_callback": [AlertmanagerNotifier(), FailureMetricNotifier(model_name=model)],
            "on_retry_callback": AlertmanagerNotifier(severity="warning", summary="Airflow task is being retried"),
        },
        # The run itself: a failure alerts, the next success resolves it (a run marked failed or successful
        # by hand gets the same from mlops.listeners); a batch still missing long after the run was queued
        # alerts, per run, until the run ends.
        on_failure_callback=[run_failed(), run_no_longer_waiting()],
        on_success_callback=[run_recovered(), run_no_longer_waiting()],
        deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=settings.batch_deadline,
                               name="batch_late",
                               callback=AsyncCallback(AlertmanagerNotifier, kwargs=batch_late_kwargs())),
        params={
            "metric_threshold": Param(dataset.metric_threshold,
                                      schema=THRESHOLD_SCHEMAS.get(dataset.metric, SCORE),
                                      description=f"Retrain when the champion's {dataset.metric} on the fresh batch "
                                                  f"is {below} this (the dataset file's metric.{dataset.metric_bound}: "
                                                  f"{dataset.metric_threshold})."),
            "drift_limit": Param(DRIFT_LIMIT, schema=FRACTION,
                                 description="Retrain when more than this share of features has drifted."),
            "force_retrain": Param(False, schema=FLAG, description="Retrain whatever detection says."),
            # null allowed: an empty field means off, and the form marks a Param without "null" as required
            "live_drift_window": Param("1h", type=["null", "string"], pattern="^([1-9][0-9]*[smhdw])?$",
                                       description="Also measure drift on the traffic the model server answered in "
                                                   "this window (Prometheus duration: 30m, 1h, 1d; empty: off). "
                                                   "Needs the prometheus_default connection."),
            "require_approval": Param(False, schema=FLAG,
                                      description="A person approves each promotion (training.approve_promotion) "
                                                  "before the champion moves."),
            "approval_timeout_minutes": Param(1440, schema=POSITIVE,
                                              description="With require_approval: how long to wait for an answer "
                                                          "before keeping the champion."),
            "canary_percent": Param(canary.get("percent", settings.canary_percent),
                                    schema={"type": "integer", "allOf": [{"minimum": 0, "maximum": 99}]},
                                    description="deploy gives a new champion this share of the requests first, "
                                                "beside the version it replaces, and promotes or rolls it back from "
                                                "its serving metrics in Prometheus (0: a straight swap)."),
            "canary_minutes": Param(canary.get("minutes", settings.canary_minutes), schema=POSITIVE,
                                    description="How long a healthy canary is watched before it is promoted."),
            "canary_inconclusive": Param(
                canary.get("inconclusive", settings.canary_inconclusive), type="string",
                enum=list(INCONCLUSIVE_ACTIONS),
                values_display={"promote": "promote: keep the offline verdict, alert CanaryInconclusive",
                                "rollback": "rollback: serve the previous version again"},
                description=f"What a canary does that still has fewer than {settings.canary_min_requests} "
                            f"requests by its deadline, the later of canary_minutes and "
                            f"{settings.canary_deadline_minutes:g} minutes after it started (no traffic): "
                            "'promote' keeps the offline verdict (the new champion serves all the traffic, the "
                            "verdict is recorded as inconclusive and the CanaryInconclusive alert fires); "
                            "'rollback' serves the previous version again and moves the champion back. A canary "
                            "that answered any request with a server error is rolled back either way."),
            "training_window": Param(dataset.window, type="string", pattern="^(all|last:[1-9][0-9]*)$",
                                     description="Curated partitions to train on: 'all' or 'last:N'."),
            "partition": Param(None, schema=PARTITION,
                               description="The data partition to process. Empty: the run's logical date "
                                           "(scheduled runs, backfills). 'latest': the model's newest complete "
                                           "batch. A date YYYY-MM-DD: that partition, whatever the run's date "
                                           "(re-run a partition from a manual trigger)."),
        },
    ) as dag:
        wait_for_batch = PartitionSensor(task_id="wait_for_batch", model_name=model,
                                         partition="{{ params.partition or ds }}",
                                         timeout=settings.batch_wait.total_seconds(),
                                         poke_interval=settings.batch_poll_seconds, retries=0)
        if dataset.source.kind != "files":
            # A sql or http source: the partition is fetched into the landing area first (its _SUCCESS last),
            # so wait_for_batch finds it at once.
            from mlops.operators.pull import PullBatchOperator  # only a sql or http source's DAG has the task

            source = dataset.source
            pull_batch = PullBatchOperator(task_id="pull_batch", model_name=model, kind=source.kind,
                                           conn_id=source.conn_id, query=source.query, endpoint=source.endpoint,
                                           format=source.format, partition="{{ params.partition or ds }}",
                                           max_bytes=settings.pull_max_bytes)
            pull_batch >> wait_for_batch

        # Each task takes what it needs from its upstream task's result (XComArgs, resolved when it runs).
        with TaskGroup("data", tooltip="validate, store and split the batch"):
            ingest = stage_task(task_id="ingest", stage="ingest", target=target, options={
                **dataset_file, "partition": wait_for_batch.output["partition"]})
            split = stage_task(task_id="split", stage="split", target=target, options={
                **dataset_file, "partition": ingest.output["partition"], "window": "{{ params.training_window }}",
                "pull": pull_batch.output if dataset.source.kind != "files" else None})  # lineage: what was pulled

        detect_degradation = stage_task(task_id="detect_degradation", stage="detect", target=target, options={
            "run_key": split.output["run_key"], "model_name": model,
            "live_window": "{{ (params.live_drift_window or '') if prometheus_url() else '' }}",
            "prometheus_url": "{{ prometheus_url() }}"})
        decide_retraining = BranchPythonOperator(
            task_id="decide_retraining", python_callable=choose_retraining,
            op_kwargs={"detect": detect_degradation.output, "metric": dataset.metric,
                       "direction": dataset.metric_direction, "retrain": "training.train", "keep": "no_retraining"})
        no_retraining = EmptyOperator(task_id="no_retraining")

        with TaskGroup("training", tooltip="KFP training run, then registration on promote"):
            train = training_task(task_id="train", run_key=detect_degradation.output["run_key"], model_name=model,
                                  target=target)
            check_decision = BranchPythonOperator(
                task_id="check_decision", python_callable=choose_promotion,
                op_kwargs={"decision": train.output, "promote": "training.approve_promotion",
                           "keep": "training.keep_champion"})
            approve_promotion = PromotionApprovalOperator(
                task_id="approve_promotion", decision=train.output, detect=detect_degradation.output,
                model_name=model, approve="training.register", reject="training.promotion_rejected")
            register = stage_task(task_id="register", stage="register", max_active_tis_per_dag=1, target=target,
                                  options={"run_key": train.output["run_key"], "model_name": model,
                                           "approved_by": approve_promotion.output[APPROVED_BY], **LINEAGE})
            keep_champion = EmptyOperator(task_id="keep_champion")
            promotion_rejected = EmptyOperator(task_id="promotion_rejected")
            check_decision >> [approve_promotion, keep_champion]
            approve_promotion >> [register, promotion_rejected]

        deploy = deploy_task(task_id="deploy", model_name=model, canary_percent="{{ params.canary_percent }}",
                             canary_minutes="{{ params.canary_minutes }}",
                             canary_inconclusive="{{ params.canary_inconclusive }}", regression=dataset.regression,
                             max_active_tis_per_dag=1, target=target)
        # After every deploy that ran (failed on the model, or succeeded with a rolled-back canary), acting
        # only on the plan deploy recorded; an upstream_failed deploy is not skipped either: no plan, it skips.
        roll_back_champion = stage_task(
            task_id="roll_back_champion", stage="rollback", trigger_rule=TriggerRule.NONE_SKIPPED, target=target,
            only_with=deploy.output[ROLLBACK_REASON], only_with_reason="deploy recorded no rollback",
            options={"data_root": None, "model_name": model, "to_version": deploy.output[ROLLBACK_TO],
                     "from_version": deploy.output[ROLLBACK_FROM], "reason": deploy.output[ROLLBACK_REASON],
                     **LINEAGE})
        report = ReportOperator(
            task_id="report", model_name=model, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            batch_task=wait_for_batch.task_id, detect_task=detect_degradation.task_id,
            metric_direction=dataset.metric_direction,
            retraining=(decide_retraining.task_id, train.task_id),
            promotion=(check_decision.task_id, approve_promotion.task_id, register.task_id),
            deploy_task=deploy.task_id)

        decide_retraining >> [no_retraining, train]
        register >> deploy
        [no_retraining, keep_champion, promotion_rejected, deploy, roll_back_champion] >> report
    dag.validate()  # what the DAG bag checks before bagging it (the schedule), checked here, per file
    return dag


def invalid_dataset_dag(entry: InvalidDatasetFile) -> DAG:
    """A dataset file that cannot be used, as a DAG that says why: its description and documentation carry the
    parser's message, it is never scheduled, and its one task fails with the message when run by hand."""
    quoted = "\n".join(f"    {line}" for line in entry.message.splitlines())  # a code block: shown as written
    with DAG(
        dag_id=entry.dag_id,
        description=entry.message,
        schedule=None,
        start_date=START,
        catchup=False,
        doc_md=f"# Invalid dataset file `{entry.path.name}`\n\n{quoted}\n\nThis model has no continuous training "
               "until the file is fixed; the DAG processor's log of `dags/continuous_training.py` shows the same "
               "error. The other dataset files' DAGs are not affected.\n",
        tags=["mlops", INVALID_TAG],
        auto_register=False,
    ) as dag:
        InvalidDatasetFileOperator(task_id="invalid_dataset_file", message=entry.message)
    return dag


def dataset_dag(entry: DatasetFile | InvalidDatasetFile, settings: MlopsSettings) -> DAG:
    """The DAG of one dataset file. A file the parser accepts but Airflow does not (a tag longer than Airflow
    allows, a cron expression its timetable refuses) is an invalid file too, not an import error of the
    whole DAG file."""
    if isinstance(entry, InvalidDatasetFile):
        return invalid_dataset_dag(entry)
    try:
        return continuous_training_dag(entry, settings)
    except SettingsError:  # the deployment's settings, not this file: an import error, as for every DAG
        raise
    except Exception as exc:  # whatever else Airflow refuses is this file's problem alone
        message = f"dataset file {entry.path}: Airflow refuses the DAG built from it: {type(exc).__name__}: {exc}"
        log.error("%s", message)
        return invalid_dataset_dag(InvalidDatasetFile(entry.path, entry.dag_id, message))


# Airflow's dynamic DAG generation: one DAG per dataset file, each a module-level name of this file.
settings = mlops_settings()
for _entry in read_dataset_files(settings.datasets):
    globals()[_entry.dag_id] = dataset_dag(_entry, settings)
