"""The parse-cost baseline: the smallest real DAG (one EmptyOperator), what any DAG file pays."""

from datetime import UTC, datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(dag_id="trivial", schedule="@daily", start_date=datetime(2026, 11, 1, tzinfo=UTC)):
    EmptyOperator(task_id="noop")
