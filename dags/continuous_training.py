"""
# Continuous training

Keeps a registered model fresh (the `model_name` Param; by default the one the bundled example dataset
declares), one daily data partition at a time (by default the partition is the run's logical date, so
backfills replay past partitions):

1. **wait_for_batch**: waits, in the triggerer, for `landing/<date>/_SUCCESS`; skips the run if no
   batch arrives in time. Every later task works on the partition it reports.
2. **data.ingest / data.split**: validate the batch (bad files are quarantined with a reason),
   then a reproducible stratified split of the training window plus the fresh batch.
3. **detect_degradation**: score the served champion on the fresh batch, measure drift; with
   `live_drift_window` (and a `prometheus_default` connection) also the drift of the traffic the model
   server answered in that window, from its feature histograms in Prometheus (no labels needed).
4. **decide_retraining** (a BranchPythonOperator): retrain when there is no champion, accuracy is
   below `accuracy_threshold`, the drifted-feature share of the batch or of live traffic is above
   `drift_limit`, or `force_retrain`; the task log and its `reasons` XCom say which of these held.
   Otherwise **no_retraining**.
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
   `canary_minutes`, and Prometheus's view of both versions (errors, p99 latency, predicted-class mix)
   promotes it or rolls it back: a verdict, not a failure (the previous version kept serving), so
   deploy succeeds, `roll_back_champion` moves the alias back and the `CanaryRolledBack` alert fires.
   The verdict and its evidence are on the model version, the task's `canary` XCom and the report.
7. **report**: what the run did (`skipped`, `keep`, `rejected`, `promote`, `rolled_back`,
   `already_registered`, `superseded`) and the registry's champion, as metrics on the Prometheus
   Pushgateway.

**Which partition.** Scheduled runs and backfills process the partition of their logical date. From
the trigger form, set `partition` to `latest` (the newest complete batch) or to a date: a manual run
can then keep the default logical date ("now") and still work on data that exists.

**Re-running a partition.** Clear its run (Grid, the run, *Clear*) or backfill the range again with
*reprocess* (`airflow backfill create ... --reprocess-behavior completed`); triggering the same logical
date again is refused by Airflow (one run per date), so for a manual re-run set `partition` instead.
A re-run reports what happened, not what it decided: registering a run key again moves nothing
(`already_registered`), and a promotion decided against a champion that has changed since is not
applied (`superseded`).

**Concurrency.** Up to four runs at a time, so a run waiting for its batch never blocks a manual one;
`training.register` and `deploy` run one at a time across all runs.

**Alerts** (Alertmanager): a failed or retried task, a failed run (also one marked failed in the UI;
the next successful run resolves it), and a run whose batch is still missing two hours after the run
was queued (`BatchLate`, a deadline alert, until the run ends).

Stages run the `mlpipeline` CLI (see the README): as subprocesses on the `local` target, as pods on
`kubernetes` (`[mlops] target`, read when the DAG is parsed; every setting and connection is in
docs/configuration.md). Task links open the MLflow run, the model version and the serving endpoint.
"""

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, Param, TaskGroup, TriggerRule

from mlops.branch_callables import choose_promotion, choose_retraining
from mlops.hooks.prometheus import prometheus_url
from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.notifications.alerts import batch_late_kwargs, run_failed, run_no_longer_waiting, run_recovered
from mlops.notifications.pushgateway import FailureMetricNotifier
from mlops.operators.approval import APPROVED_BY, PromotionApprovalOperator
from mlops.operators.deploy import ROLLBACK_FROM, ROLLBACK_REASON, ROLLBACK_TO
from mlops.operators.report import ReportOperator
from mlops.sensors.partition import PartitionSensor
from mlops.settings import mlops_settings
from mlops.tasks import deploy_task, stage_task, training_task
from mlpipeline.schema import example_model_name

MODEL = "{{ params.model_name }}"
LINEAGE = {"dag_id": "{{ dag.dag_id }}", "dag_run_id": "{{ run_id }}"}
settings = mlops_settings()

with DAG(
    dag_id="continuous_training",
    description="Validate new data, detect degradation, retrain with KFP, register in MLflow, serve with KServe",
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    # A run waiting for its batch must not hold up a manual one: what must be serial (registering,
    # deploying) is, per task (max_active_tis_per_dag below). Backfills pass --max-active-runs 1, since
    # each day's decision depends on the champion the day before left.
    max_active_runs=4,
    doc_md=__doc__,
    tags=["mlops", "continuous-training"],
    user_defined_macros={"prometheus_url": prometheus_url},
    default_args={
        "retries": settings.task_retries,
        "retry_delay": settings.retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": [AlertmanagerNotifier(), FailureMetricNotifier()],
        "on_retry_callback": AlertmanagerNotifier(severity="warning", summary="Airflow task is being retried"),
    },
    # The run itself: a failure alerts, the next success resolves it (a run marked failed or successful
    # by hand gets the same from mlops.listeners); a batch still missing long after the run was queued
    # alerts, per run, until the run ends.
    on_failure_callback=[run_failed(), run_no_longer_waiting()],
    on_success_callback=[run_recovered(), run_no_longer_waiting()],
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=settings.batch_deadline,
                           name="batch_late", callback=AsyncCallback(AlertmanagerNotifier, kwargs=batch_late_kwargs())),
    params={
        "accuracy_threshold": Param(0.85, type="number", minimum=0, maximum=1,
                                    description="Retrain when the champion's fresh-batch accuracy is below this."),
        "drift_limit": Param(0.5, type="number", minimum=0, maximum=1,
                             description="Retrain when more than this share of features has drifted."),
        "force_retrain": Param(False, type="boolean", description="Retrain whatever detection says."),
        "live_drift_window": Param("1h", type="string", pattern="^([1-9][0-9]*[smhdw])?$",
                                   description="Also measure drift on the traffic the model server answered in "
                                               "this window (Prometheus duration: 30m, 1h, 1d; empty: off). "
                                               "Needs the prometheus_default connection."),
        "require_approval": Param(False, type="boolean",
                                  description="A person approves each promotion (training.approve_promotion) "
                                              "before the champion moves."),
        "approval_timeout_minutes": Param(1440, type="number", exclusiveMinimum=0,
                                          description="With require_approval: how long to wait for an answer "
                                                      "before keeping the champion."),
        "canary_percent": Param(settings.canary_percent, type="integer", minimum=0, maximum=99,
                                description="deploy gives a new champion this share of the requests first, beside "
                                            "the version it replaces, and promotes or rolls it back from its "
                                            "serving metrics in Prometheus (0: a straight swap)."),
        "canary_minutes": Param(settings.canary_minutes, type="number", exclusiveMinimum=0,
                                description="How long a healthy canary is watched before it is promoted."),
        "model_name": Param(example_model_name(), type="string", pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="Registered model name in MLflow."),
        "training_window": Param("last:1", type="string", pattern="^(all|last:[1-9][0-9]*)$",
                                 description="Curated partitions to train on: 'all' or 'last:N'."),
        "partition": Param(None, type=["null", "string"], pattern="^(latest|[0-9]{4}-[0-9]{2}-[0-9]{2})$",
                           description="The data partition to process. Empty: the run's logical date (scheduled "
                                       "runs, backfills). 'latest': the newest complete batch. A date "
                                       "YYYY-MM-DD: that partition, whatever the run's date (re-run a partition "
                                       "from a manual trigger)."),
    },
) as dag:
    wait_for_batch = PartitionSensor(task_id="wait_for_batch", partition="{{ params.partition or ds }}",
                                     timeout=settings.batch_wait.total_seconds(),
                                     poke_interval=settings.batch_poll_seconds, retries=0)

    # Each task takes what it needs from its upstream task's result (XComArgs, resolved when it runs).
    with TaskGroup("data", tooltip="validate, store and split the batch") as data:
        ingest = stage_task(task_id="ingest", stage="ingest", options={"partition": wait_for_batch.output["partition"]})
        split = stage_task(task_id="split", stage="split",
                           options={"partition": ingest.output["partition"], "window": "{{ params.training_window }}"})

    detect_degradation = stage_task(task_id="detect_degradation", stage="detect", options={
        "run_key": split.output["run_key"], "model_name": MODEL,
        "live_window": "{{ params.live_drift_window if prometheus_url() else '' }}",
        "prometheus_url": "{{ prometheus_url() }}"})
    decide_retraining = BranchPythonOperator(
        task_id="decide_retraining", python_callable=choose_retraining,
        op_kwargs={"detect": detect_degradation.output, "retrain": "training.train", "keep": "no_retraining"})
    no_retraining = EmptyOperator(task_id="no_retraining")

    with TaskGroup("training", tooltip="KFP training run, then registration on promote") as training:
        train = training_task(task_id="train", run_key=detect_degradation.output["run_key"], model_name=MODEL)
        check_decision = BranchPythonOperator(
            task_id="check_decision", python_callable=choose_promotion,
            op_kwargs={"decision": train.output, "promote": "training.approve_promotion",
                       "keep": "training.keep_champion"})
        approve_promotion = PromotionApprovalOperator(
            task_id="approve_promotion", decision=train.output, detect=detect_degradation.output, model_name=MODEL,
            approve="training.register", reject="training.promotion_rejected")
        register = stage_task(task_id="register", stage="register", max_active_tis_per_dag=1,
                              options={"run_key": train.output["run_key"], "model_name": MODEL,
                                       "approved_by": approve_promotion.output[APPROVED_BY], **LINEAGE})
        keep_champion = EmptyOperator(task_id="keep_champion")
        promotion_rejected = EmptyOperator(task_id="promotion_rejected")
        check_decision >> [approve_promotion, keep_champion]
        approve_promotion >> [register, promotion_rejected]

    deploy = deploy_task(task_id="deploy", model_name=MODEL, canary_percent="{{ params.canary_percent }}",
                         canary_minutes="{{ params.canary_minutes }}", max_active_tis_per_dag=1)
    # After every deploy that ran (failed on the model, or succeeded with a rolled-back canary), acting
    # only on the plan deploy recorded; an upstream_failed deploy is not skipped either: no plan, it skips.
    roll_back_champion = stage_task(
        task_id="roll_back_champion", stage="rollback", trigger_rule=TriggerRule.NONE_SKIPPED,
        only_with=deploy.output[ROLLBACK_REASON], only_with_reason="deploy recorded no rollback",
        options={"data_root": None, "model_name": MODEL, "to_version": deploy.output[ROLLBACK_TO],
                 "from_version": deploy.output[ROLLBACK_FROM], "reason": deploy.output[ROLLBACK_REASON], **LINEAGE})
    report = ReportOperator(
        task_id="report", model_name=MODEL, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        batch_task=wait_for_batch.task_id, detect_task=detect_degradation.task_id,
        retraining=(decide_retraining.task_id, train.task_id),
        promotion=(check_decision.task_id, approve_promotion.task_id, register.task_id), deploy_task=deploy.task_id)

    decide_retraining >> [no_retraining, train]
    register >> deploy
    [no_retraining, keep_champion, promotion_rejected, deploy, roll_back_champion] >> report
