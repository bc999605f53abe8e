"""What a pull fetched, as lineage: the DAG's `pull_batch` result checked, kept in the run's manifest, tagged.

A dataset file whose `source.kind` is `sql` or `http` has its partition fetched by the DAG's `pull_batch` task
(plugins/mlops/operators/pull.py), which returns what it fetched. The DAG hands that result to `split` as
`--pull JSON`; split checks it (`parse`: a JSON object of at most MAX_RECORD_CHARS characters, only the keys
the task returns, each of its type and within its size, of split's partition and of the dataset file's source)
before it writes anything, and keeps it in the run's `manifest.json` as `pull`. Training tags the MLflow
training run with it and `register` the model version (`tags`), beside the other lineage tags:

    pull.kind       sql | http               pull.file     pull-<sha256[:16]>.<format>, in landing/<model>/<partition>/
    pull.conn_id    the Airflow connection   pull.sha256   of the file's bytes
    pull.rows       sql: the rows fetched    pull.bytes    the file's size
    pull.query      sql: the query           pull.endpoint http: the path requested (the partition filled in)

Only the run's own partition's pull is recorded (the others of its training window were pulled, or landed, by
their own runs). A partition landed as files has no record and no such tags. A query or endpoint longer than
MAX_TAG_TEXT characters (MLflow limits tag values) is cut and ends with a note saying how long it was; the
manifest keeps the dataset file whole. The record is data: no value in it decides what runs, and a record
read back from the manifest is checked again before it becomes tags. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from .errors import PipelineError

KINDS = ("sql", "http")
# Every key of pull_batch's result; `folder` (a path on the Airflow worker) and `new` are not recorded.
KEYS = frozenset({"partition", "folder", "file", "new", "rows", "bytes", "sha256", "kind", "conn_id", "query",
                  "endpoint"})
RECORDED = ("kind", "conn_id", "partition", "file", "sha256", "bytes", "rows", "query", "endpoint")
# The record arrives as one command-line argument, which Linux caps at 128 KiB (a dataset file is capped there
# too, mlops.datasets.MAX_ARGUMENT_BYTES): a query or endpoint of the file's up to 100 KiB, the record to 120 KiB.
MAX_TEXT = 100 * 1024
MAX_RECORD_CHARS = 120 * 1024
MAX_TAG_TEXT = 4000  # within MLflow's limits on run (8000) and model version tag values
TAG_PREFIX = "pull."

_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")  # as the dataset file allows
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^pull-([0-9a-f]{16})\.(csv|jsonl|parquet)$")
_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_COUNT = 1 << 62


def _count(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _MAX_COUNT:
        raise PipelineError(f"{where}: {key} must be a positive whole number, got {_shown(value)}")
    return value


def _text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(f"{where}: {key} must be non-empty text, got {_shown(value)}")
    if len(value) > MAX_TEXT:
        raise PipelineError(f"{where}: {key} is {len(value)} characters; the limit is {MAX_TEXT}")
    return value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def checked(record, where: str = "the pull record") -> dict:
    """The recorded part of a pull_batch result, every value checked; PipelineError names what is wrong."""
    if not isinstance(record, dict):
        raise PipelineError(f"{where} must be a JSON object (the pull_batch task's result), got "
                            f"{type(record).__name__}")
    if unknown := sorted(str(k) for k in set(record) - KEYS):
        raise PipelineError(f"{where} has keys a pull result does not have: {_shown(unknown)}; allowed: "
                            f"{', '.join(sorted(KEYS))}")
    kind = record.get("kind")
    if kind not in KINDS:
        raise PipelineError(f"{where}: kind must be one of {', '.join(KINDS)}, got {_shown(kind)}")
    text_key, other = ("query", "endpoint") if kind == "sql" else ("endpoint", "query")
    required = ("partition", "file", "sha256", "bytes", "conn_id", text_key, *(("rows",) if kind == "sql" else ()))
    if missing := [k for k in required if record.get(k) is None]:
        raise PipelineError(f"{where}: a {kind} pull's record needs {', '.join(missing)}")
    if record.get(other) is not None or (kind == "http" and record.get("rows") is not None):
        raise PipelineError(f"{where}: a {kind} pull has no {other if record.get(other) is not None else 'rows'}")
    partition = record["partition"]
    if not isinstance(partition, str) or not _PARTITION.match(partition) or not _is_date(partition):
        raise PipelineError(f"{where}: partition must be a date YYYY-MM-DD, got {_shown(partition)}")
    if not isinstance(record["conn_id"], str) or not _CONN_ID.match(record["conn_id"]):
        raise PipelineError(f"{where}: conn_id must be 1-250 letters, digits, '_', '.' or '-', got "
                            f"{_shown(record['conn_id'])}")
    sha256 = record["sha256"]
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise PipelineError(f"{where}: sha256 must be 64 lower-case hex digits, got {_shown(sha256)}")
    name = record["file"]
    named = _FILE.match(name) if isinstance(name, str) else None
    if not named or named[1] != sha256[:16]:
        raise PipelineError(f"{where}: file must be pull-<the sha256's first 16 digits>.<csv|jsonl|parquet>, got "
                            f"{_shown(name)}")
    _count(record["bytes"], where, "bytes")
    if kind == "sql":
        _count(record["rows"], where, "rows")
    _text(record[text_key], where, text_key)
    if kind == "http" and not record["endpoint"].startswith("/"):
        raise PipelineError(f"{where}: endpoint must be a path starting with '/', got {_shown(record['endpoint'])}")
    return {k: record[k] for k in RECORDED if record.get(k) is not None}


def _is_date(text: str) -> bool:
    try:
        return dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def parse(text: str, source, partition: str) -> dict:
    """`--pull`: the pull_batch result as JSON text, checked, and checked to be the pull of `partition` from the
    dataset file's `source` (its kind, connection, query or endpoint, and format)."""
    where = "--pull (the pull_batch task's result)"
    if len(text) > MAX_RECORD_CHARS:
        raise PipelineError(f"{where} is {len(text)} characters; the limit is {MAX_RECORD_CHARS}")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PipelineError(f"{where} is not JSON: {_shown(str(exc))}") from None
    record = checked(record, where)
    if source.kind not in KINDS:
        raise PipelineError(f"{where}: the dataset file's source.kind is {source.kind}: nothing is pulled for it")
    if record["kind"] != source.kind or record["conn_id"] != source.conn_id:
        raise PipelineError(f"{where} is of a {record['kind']} pull from {record['conn_id']!r}; the dataset file's "
                            f"source is {source.kind} from {source.conn_id!r}")
    if record["partition"] != partition:
        raise PipelineError(f"{where} is of partition {record['partition']}, not {partition}")
    if source.kind == "sql" and record["query"] != source.query:
        raise PipelineError(f"{where}: its query is not the dataset file's source.query")
    if source.kind == "http" and record["endpoint"] != _endpoint(source.endpoint, partition):
        raise PipelineError(f"{where}: its endpoint {_shown(record['endpoint'])} is not the dataset file's "
                            f"source.endpoint for partition {partition}")
    fmt = "jsonl" if source.kind == "sql" else source.format
    if not record["file"].endswith(f".{fmt}"):
        raise PipelineError(f"{where}: its file {record['file']} is not of the dataset file's format {fmt}")
    return record


def _endpoint(template: str, partition: str) -> str | None:
    """The path pull_batch requests for the partition (it fills the template in the same way)."""
    try:
        return template.format(partition=partition)
    except (ValueError, KeyError, IndexError, AttributeError):
        return None


def _bounded(text: str) -> str:
    if len(text) <= MAX_TAG_TEXT:
        return text
    note = " ... [truncated: {total} characters, the first {kept} shown]"
    kept = MAX_TAG_TEXT - len(note.format(total=len(text), kept=MAX_TAG_TEXT))
    return text[:kept] + note.format(total=len(text), kept=kept)


def tags(record) -> dict[str, str]:
    """The lineage tags of a run's pull record (the manifest's `pull`; None: nothing was pulled, no tags)."""
    if record is None:
        return {}
    record = checked(record, "the run's pull record (manifest.json)")
    return {f"{TAG_PREFIX}{k}": _bounded(str(v)) for k, v in record.items() if k != "partition"}
