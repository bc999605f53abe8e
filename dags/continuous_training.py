"""
# Continuous training

Keeps the `iris-classifier` fresh, one daily data partition at a time (the partition is the run's
logical date, so backfills replay past partitions):

1. **wait_for_batch**: waits, in the triggerer, for `landing/<date>/_SUCCESS`; skips the run if no
   batch arrives in time.
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
7. **report**: pipeline metrics to the Prometheus Pushgateway.

Failures and retries alert through Alertmanager. Stages run the `mlpipeline` CLI (see the README):
as subprocesses on the `local` target, as pods on `kubernetes` (Airflow Variable `mlops_target`,
read when the DAG is parsed; cluster settings in the Variable `mlops_kubernetes`, see
docs/configuration.md). Task links open the MLflow run, the model version and the serving endpoint.
"""

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, Param, TaskGroup

from mlops.branching import choose_promotion, choose_retraining
from mlops.notifications.alertmanager import AlertmanagerNotifier
from mlops.operators.deploy import deploy_task
from mlops.operators.report import ReportOperator
from mlops.operators.stage import stage_task
from mlops.operators.training import training_task
from mlops.sensors.partition import PartitionSensor
from mlops.settings import task_retries

MODEL = "{{ params.model_name }}"
RUN_KEY = "{{ ti.xcom_pull(task_ids='data.split')['run_key'] }}"

with DAG(
    dag_id="continuous_training",
    description="Validate new data, detect degradation, retrain with KFP, register in MLflow, serve with KServe",
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mlops", "continuous-training"],
    render_template_as_native_obj=True,
    default_args={
        "retries": task_retries(),
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": AlertmanagerNotifier(),
        "on_retry_callback": AlertmanagerNotifier(severity="warning", summary="Airflow task is being retried",
                                                  record_failure=False),
    },
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
    },
) as dag:
    wait_for_batch = PartitionSensor(task_id="wait_for_batch", partition="{{ ds }}", wait=timedelta(hours=6),
                                     retries=0)

    with TaskGroup("data", tooltip="validate, store and split the batch") as data:
        ingest = stage_task(task_id="ingest", stage="ingest", options={"partition": "{{ ds }}"})
        split = stage_task(task_id="split", stage="split",
                              options={"partition": "{{ ds }}", "window": "{{ params.training_window }}"})
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
        register = stage_task(task_id="register", stage="register",
                                 options={"run_key": RUN_KEY, "model_name": MODEL, "dag_id": "{{ dag.dag_id }}",
                                          "dag_run_id": "{{ run_id }}"})
        keep_champion = EmptyOperator(task_id="keep_champion")
        train >> check_decision >> [register, keep_champion]

    deploy = deploy_task(task_id="deploy", model_name=MODEL)
    report = ReportOperator(
        task_id="report", model_name=MODEL, trigger_rule="none_failed_min_one_success",
        detect="{{ ti.xcom_pull(task_ids='detect_degradation') }}",
        train="{{ ti.xcom_pull(task_ids='training.train') }}",
        deploy="{{ ti.xcom_pull(task_ids='deploy') }}",
        started_at="{{ ti.xcom_pull(task_ids='wait_for_batch')['started_at'] }}",
    )

    wait_for_batch >> data >> detect_degradation >> decide_retraining >> [skip, train]
    register >> deploy
    [skip, keep_champion, deploy] >> report
