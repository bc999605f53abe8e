"""
# Continuous training

Keeps the `iris-classifier` fresh, one daily data partition at a time (by default the partition is the
run's logical date, so backfills replay past partitions):

1. **wait_for_batch**: waits, in the triggerer, for `landing/<date>/_SUCCESS`; skips the run if no
   batch arrives in time. Every later task works on the partition it reports.
2. **data.ingest / data.split**: validate the batch (bad files are quarantined with a reason),
   then a reproducible stratified split of the training window plus the fresh batch.
3. **detect_degradation**: score the served champion on the fresh batch, measure drift.
4. **decide_retraining** (a BranchPythonOperator): retrain when there is no champion, accuracy is
   below `accuracy_threshold`, the drifted-feature share is above `drift_limit`, or `force_retrain`;
   the task log says which of these held.
5. **training.train**: a Kubeflow Pipelines run (kfp.local on the local target) trains a challenger and
   compares it with the champion; **training.check_decision** (a BranchPythonOperator) sends a promote
   to **training.register**, which registers the challenger and moves the `champion` alias.
6. **deploy**: the champion goes behind the KServe model server (smoke-tested, rolled back on failure).
7. **report**: what the run did (`skipped`, `keep`, `promote`, `already_registered`, `superseded`) and the
   registry's champion, as metrics on the Prometheus Pushgateway.

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
`kubernetes` (Airflow Variable `mlops_target`, read when the DAG is parsed; cluster settings in the
Variable `mlops_kubernetes`, see docs/configuration.md). Task links open the MLflow run, the model
version and the serving endpoint.
"""

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, Param, TaskGroup

from mlops.branching import choose_promotion, choose_retraining
from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.notifications.alerts import batch_late_kwargs, run_failed, run_no_longer_waiting, run_recovered
from mlops.operators.deploy import deploy_task
from mlops.operators.report import ReportOperator, followed_branches
from mlops.operators.stage import stage_task
from mlops.operators.training import training_task
from mlops.sensors.partition import PartitionSensor
from mlops.settings import batch_deadline, task_retries, task_retry_delay

MODEL = "{{ params.model_name }}"
# The partition this run works on: the sensor resolves the Param (or the run's date) and reports it.
PARTITION = "{{ ti.xcom_pull(task_ids='wait_for_batch')['partition'] }}"
RUN_KEY = "{{ ti.xcom_pull(task_ids='data.split')['run_key'] }}"

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
    render_template_as_native_obj=True,
    default_args={
        "retries": task_retries(),
        "retry_delay": task_retry_delay(),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": AlertmanagerNotifier(),
        "on_retry_callback": AlertmanagerNotifier(severity="warning", summary="Airflow task is being retried",
                                                  record_failure=False),
    },
    # The run itself: a failure alerts, the next success resolves it (a run marked failed or successful
    # by hand gets the same from mlops.listeners); a batch still missing long after the run was queued
    # alerts, per run, until the run ends.
    on_failure_callback=[run_failed(), run_no_longer_waiting()],
    on_success_callback=[run_recovered(), run_no_longer_waiting()],
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=batch_deadline(),
                           name="batch_late", callback=AsyncCallback(AlertmanagerNotifier, kwargs=batch_late_kwargs())),
    params={
        "accuracy_threshold": Param(0.85, type="number", minimum=0, maximum=1,
                                    description="Retrain when the champion's fresh-batch accuracy is below this."),
        "drift_limit": Param(0.5, type="number", minimum=0, maximum=1,
                             description="Retrain when more than this share of features has drifted."),
        "force_retrain": Param(False, type="boolean", description="Retrain whatever detection says."),
        "model_name": Param("iris-classifier", type="string", pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$",
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
                                     wait=timedelta(hours=6), retries=0)

    with TaskGroup("data", tooltip="validate, store and split the batch") as data:
        ingest = stage_task(task_id="ingest", stage="ingest", options={"partition": PARTITION})
        split = stage_task(task_id="split", stage="split",
                           options={"partition": PARTITION, "window": "{{ params.training_window }}"})
        ingest >> split

    detect_degradation = stage_task(task_id="detect_degradation", stage="detect",
                           options={"run_key": RUN_KEY, "model_name": MODEL})
    decide_retraining = BranchPythonOperator(
        task_id="decide_retraining", python_callable=choose_retraining,
        op_kwargs={"detect": "{{ ti.xcom_pull(task_ids='detect_degradation') }}", "retrain": "training.train",
                   "keep": "skip"})
    skip = EmptyOperator(task_id="skip")

    with TaskGroup("training", tooltip="KFP training run, then registration on promote") as training:
        train = training_task(task_id="train", run_key=RUN_KEY, model_name=MODEL)
        check_decision = BranchPythonOperator(
            task_id="check_decision", python_callable=choose_promotion,
            op_kwargs={"decision": "{{ ti.xcom_pull(task_ids='training.train') }}", "promote": "training.register",
                       "keep": "training.keep_champion"})
        register = stage_task(task_id="register", stage="register", max_active_tis_per_dag=1,
                              options={"run_key": RUN_KEY, "model_name": MODEL, "dag_id": "{{ dag.dag_id }}",
                                       "dag_run_id": "{{ run_id }}"})
        keep_champion = EmptyOperator(task_id="keep_champion")
        train >> check_decision >> [register, keep_champion]

    deploy = deploy_task(task_id="deploy", model_name=MODEL, max_active_tis_per_dag=1)
    report = ReportOperator(
        task_id="report", model_name=MODEL, trigger_rule="none_failed_min_one_success",
        detect="{{ ti.xcom_pull(task_ids='detect_degradation') }}",
        retrain_branch=followed_branches("decide_retraining"),
        promotion_branch=followed_branches("training.check_decision"),
        register="{{ ti.xcom_pull(task_ids='training.register') }}",
        started_at="{{ ti.xcom_pull(task_ids='wait_for_batch')['started_at'] }}",
    )

    wait_for_batch >> data >> detect_degradation >> decide_retraining >> [skip, train]
    register >> deploy
    [skip, keep_champion, deploy] >> report
