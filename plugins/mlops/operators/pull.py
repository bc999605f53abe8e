"""PullBatchOperator: fetches one partition of a dataset file's `sql` or `http` source into the model's landing
area, `landing/<model_name>/<partition>/`, then drops the `_SUCCESS` marker, so that `wait_for_batch` and
ingest treat it exactly as a landed batch.

- `sql`: the connection's hook (`BaseHook.get_connection(conn_id).get_hook()`, a common-sql `DbApiHook`:
  `postgres` connections need apache-airflow-providers-postgres) runs the query with
  `parameters={"partition": "<date>"}`; the rows are written as JSON lines, keys from the cursor's
  description (`Decimal` -> number, dates and times -> ISO text, `NULL` and `NaN` -> null). Add an
  `ORDER BY` to the query: the same rows in another order are other bytes, so another file.
- `http`: apache-airflow-providers-http's `HttpHook` GETs `endpoint.format(partition=<date>)` on the
  connection and writes the body as it is, in the file's `source.format`; an answer other than 2xx fails
  the task with its status and the start of its body.

Files are named by their content, `pull-<sha256[:16]>.<format>`, written beside as a `.`-temporary (never
read as data) and renamed; `_SUCCESS` last. Pulling a partition again that returns the same rows finds its
file there and writes nothing. A pull that returns other rows (the source changed) adds its own file beside
the earlier one, with a warning naming it: ingest then stores both (curated files are never rewritten); to
replace a partition's data, delete the earlier file first. Nothing is written when the pull fails: no
rows, a query or HTTP error, or more than `max_bytes` (`[mlops] pull_max_bytes`).

The result (XCom) says what was fetched: partition, file, rows (sql), bytes, sha256, the query or the
endpoint, and whether the file is new. The DAG hands it to `split` (`--pull`), which keeps it in the run's
manifest; training and register record it as `pull.*` tags on the MLflow training run and the model version
(mlpipeline.pull_record).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops.landing import LATEST, MARKER, PARTITION, model_landing
from mlops.volume import DATA_CONN_ID, data_root

KINDS = ("sql", "http")
FORMATS = ("csv", "jsonl", "parquet")
CHUNK = 1 << 20
FETCH_ROWS = 10_000


class PullError(RuntimeError):
    """The source could not give the partition (retried as the task's retries say)."""


class TooLarge(AirflowFailException):
    """The partition is over the size limit: retrying cannot help."""


def _json_value(value):
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else float(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"a value of type {type(value).__name__} cannot be written as JSON")


def json_line(columns: Sequence[str], row: Sequence) -> bytes:
    """One row as a JSON line: the same row always gives the same bytes."""
    values = (None if isinstance(v, float) and math.isnan(v) else v for v in row)
    return (json.dumps(dict(zip(columns, values, strict=True)), separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False, default=_json_value) + "\n").encode()


class _BatchFile:
    """A `.`-temporary in the partition's folder, hashed and counted as it is written, refused over the limit."""

    def __init__(self, folder: Path, max_bytes: int, what: str):
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again on discard
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.max_bytes, self.what = folder, max_bytes, what
        self.path = folder / f".pull-{uuid.uuid4().hex}.tmp"
        self.file = open(self.path, "xb")  # noqa: SIM115 - closed in commit() or discard()
        self.sha256, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"{self.what} is more than {self.max_bytes} bytes ([mlops] pull_max_bytes, "
                           "AIRFLOW__MLOPS__PULL_MAX_BYTES): refused, nothing written")
        self.sha256.update(data)
        self.file.write(data)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)
        for folder in self.created:  # deepest first; one that another writer filled meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break

    def commit(self, fmt: str) -> tuple[Path, bool]:
        """The file under its content's name, and whether it is new (False: the same bytes were there)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        target = self.folder / f"pull-{self.sha256.hexdigest()[:16]}.{fmt}"
        if target.is_file() and target.stat().st_size == self.size:
            self.path.unlink()
            return target, False
        os.replace(self.path, target)
        return target, True


class PullBatchOperator(BaseOperator):
    """Pull one partition of a `sql` or `http` source into `landing/<model_name>/<partition>/` (see the
    module's documentation).

    :param model_name: whose landing area receives the batch
    :param kind: `sql` or `http` (the dataset file's `source.kind`)
    :param conn_id: the Airflow connection of the source
    :param partition: (templated) the date YYYY-MM-DD; `latest` is refused
    :param query: sql: the query, with the parameter `%(partition)s`
    :param endpoint: http: the path, with `{partition}`
    :param format: http: what the body is (`csv`, `jsonl`, `parquet`); a sql pull writes `jsonl`
    :param max_bytes: the most a partition may hold; default `[mlops] pull_max_bytes`
    :param data_conn_id: the data volume's connection
    """

    template_fields: Sequence[str] = ("partition",)  # not the query: "{{" in SQL is SQL
    ui_color = "#e0f0ff"

    def __init__(self, *, model_name: str, kind: str, conn_id: str, partition: str, query: str = "",
                 endpoint: str = "", format: str = "jsonl", max_bytes: int | None = None,  # noqa: A002
                 data_conn_id: str = DATA_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if (format if kind == "http" else "jsonl") not in FORMATS or (kind == "sql" and format != "jsonl"):
            raise ValueError(f"format must be one of {', '.join(FORMATS)} (jsonl for sql), got {format!r}")
        self.landing = model_landing(model_name)  # refuses a name that is not one path component
        self.model_name, self.kind, self.conn_id, self.partition = model_name, kind, conn_id, partition
        self.query, self.endpoint, self.format = query, endpoint, format
        self.max_bytes, self.data_conn_id = max_bytes, data_conn_id

    def _partition(self) -> str:
        partition = str(self.partition or "")
        if partition == LATEST:
            raise AirflowFailException("partition 'latest' means the newest batch already landed; a pull needs the "
                                       "date to fetch: set partition to YYYY-MM-DD, or leave it empty for the "
                                       "run's date")
        if not PARTITION.match(partition):
            raise AirflowFailException(f"partition must be a date YYYY-MM-DD, got {partition!r}")
        return partition

    def execute(self, context):
        partition = self._partition()
        if self.max_bytes is None:
            from mlops.settings import mlops_settings

            self.max_bytes = mlops_settings().pull_max_bytes
        folder = data_root(self.data_conn_id) / self.landing / partition
        what = f"{self.kind} source {self.conn_id!r}, partition {partition}"
        batch = _BatchFile(folder, self.max_bytes, what)
        try:
            rows, fetched = self._pull_sql(partition, batch) if self.kind == "sql" else \
                self._pull_http(partition, batch)
            if batch.size == 0:
                raise PullError(f"{what}: {fetched} returned nothing; no batch written")
            target, new = batch.commit(self.format)
        except BaseException:
            batch.discard()
            raise
        earlier = sorted(p.name for p in folder.glob("pull-*") if p != target)
        if new and earlier:
            self.log.warning("%s changed since it was pulled: %s added beside %s, and ingest stores both; delete "
                             "the earlier file to replace its rows", what, target.name, ", ".join(earlier))
        (folder / MARKER).touch()
        digest = batch.sha256.hexdigest()
        result = {"partition": partition, "folder": str(folder), "file": target.name, "new": new,
                  "rows": rows, "bytes": batch.size, "sha256": digest, "kind": self.kind,
                  "conn_id": self.conn_id, **({"query": self.query} if self.kind == "sql" else
                                              {"endpoint": fetched.removeprefix("GET ")})}
        self.log.info("pulled %s%s bytes (sha256 %s) from %s: %s %s", f"{rows} rows, " if rows is not None else "",
                      batch.size, digest, what, target.name, "written" if new else "already there, unchanged")
        return result

    def _pull_sql(self, partition: str, batch: _BatchFile) -> tuple[int, str]:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        hook = BaseHook.get_connection(self.conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(f"connection {self.conn_id!r} gives a {type(hook).__name__}, not a SQL hook "
                                       "(common-sql's DbApiHook): a sql source needs a database connection")
        count = 0

        def write_rows(cursor):
            nonlocal count
            if not cursor.description:
                raise AirflowFailException(f"the query on {self.conn_id!r} returned no rows: it is not a SELECT")
            columns = [d[0] for d in cursor.description]
            if len(set(columns)) < len(columns):
                raise AirflowFailException(f"the query on {self.conn_id!r} returns a column name twice: {columns}")
            while chunk := cursor.fetchmany(FETCH_ROWS):
                for row in chunk:
                    batch.write(json_line(columns, row))
                count += len(chunk)
            return (count,)

        try:
            hook.run(self.query, parameters={"partition": partition}, handler=write_rows)
        except AirflowFailException:
            raise
        except Exception as exc:  # the driver's error: the database's own message
            raise PullError(f"the query on {self.conn_id!r} for partition {partition} failed: "
                            f"{type(exc).__name__}: {str(exc).strip()}") from exc
        return count, "the query"

    def _pull_http(self, partition: str, batch: _BatchFile) -> tuple[None, str]:
        from airflow.providers.http.hooks.http import HttpHook

        endpoint = self.endpoint.format(partition=partition)
        hook = HttpHook(method="GET", http_conn_id=self.conn_id)
        response = hook.run(endpoint, extra_options={"stream": True, "check_response": False})
        with response:
            if not 200 <= response.status_code < 300:
                start = response.raw.read(500, decode_content=True).decode("utf-8", "replace")
                raise PullError(f"GET {endpoint} on {self.conn_id!r} answered {response.status_code} "
                                f"{response.reason}: {start.strip()}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > batch.max_bytes:
                raise TooLarge(f"{batch.what}: GET {endpoint} answers {declared} bytes, more than {batch.max_bytes} "
                               "([mlops] pull_max_bytes, AIRFLOW__MLOPS__PULL_MAX_BYTES): refused, nothing written")
            for chunk in response.iter_content(CHUNK):
                batch.write(chunk)
        return None, f"GET {endpoint}"
