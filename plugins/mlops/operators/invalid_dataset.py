"""InvalidDatasetFileOperator: the only task of a broken dataset file's DAG. It fails at once with the
parser's message, so that a run triggered by hand shows in its log why the model has no pipeline."""

from __future__ import annotations

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException


class InvalidDatasetFileOperator(BaseOperator):
    # No template fields: the message quotes the file, whose text may hold "{{" that Jinja must not render.
    template_fields = ()
    ui_color = "#f8d7da"

    def __init__(self, *, message: str, **kwargs):
        kwargs.setdefault("retries", 0)  # a retry cannot fix the file
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context):
        raise AirflowFailException(self.message)
