"""Ingest one landing partition: validate each file, store or quarantine it.

Good files become curated/<model>/<partition>/<sha256 of the source bytes>.parquet,
so the same bytes always map to the same file and re-ingesting is a no-op. Bad
files are copied to quarantine/<model>/<partition>/ with a JSON reason. Nothing in
curated/ is ever rewritten.

Whatever format a batch landed in (the dataset's source.format: CSV, JSON lines, Parquet, compressed or
not), the curated file holds the dataset's columns typed the same way: numeric features float64,
categorical features and a class label text, a regression label float64 (a missing value is null), so
split and training read one shape.

Each file is its own failure boundary: whatever one file does to the reader (a link, a size over the
limit, an error no rule foresaw) quarantines that file with the reason, and the others are ingested.
Entries that are not read (links, FIFOs, files over the size limit) get the reason alone, no copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PipelineError
from .readers import check_name
from .validate import Validated, Violation, shorten, validate_batch
from .volume import (
    DataVolume,
    FileTooLarge,
    LandedFile,
    Limits,
    read_no_follow,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
)

log = logging.getLogger(__name__)


def curated_schema(dataset) -> pa.Schema:
    """The curated files' columns: the dataset's, numeric features (and a regression label) float64, the
    others text."""
    return pa.schema([(f.name, pa.float64() if f.numeric else pa.string()) for f in dataset.features]
                     + [(dataset.label, pa.float64() if dataset.regression else pa.string())])


def _store_curated(target: Path, frame, dataset, source: Path, digest: str, partition: str) -> bool:
    table = pa.Table.from_pandas(frame[dataset.columns], schema=curated_schema(dataset), preserve_index=False)
    table = table.replace_schema_metadata({
        "mlpipeline.source_name": source.name,
        "mlpipeline.source_sha256": digest,
        "mlpipeline.partition": partition,
        "mlpipeline.schema": dataset.fingerprint(),
        "mlpipeline.model_name": dataset.model_name,
    })
    return write_atomic(target, lambda tmp: pq.write_table(table, tmp, compression="zstd"), overwrite=False)


def _quarantine(volume: DataVolume, partition: str, source: Path, data: bytes | None, digest: str | None,
                result: Validated) -> Path:
    """A copy of the file's bytes (when they were read) and its reason, in quarantine/<partition>/."""
    folder = volume.quarantine(partition)
    target = folder / (f"{digest[:12]}-{source.name}" if digest else f"unread-{source.name}")
    if data is not None:
        write_bytes_atomic(target, data, overwrite=False)
    first = result.violations[0]
    reason = {
        "file": str(source.relative_to(volume.root)),
        "source_sha256": digest,
        "partition": partition,
        "rule": first.rule,
        "message": first.message,
        "violations": [v.as_dict() for v in result.violations],
        "notes": result.notes,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    reason_path = target.with_name(target.name + ".reason.json")
    if not reason_path.exists():
        write_json_atomic(reason_path, reason)
    return target


def _unread(rule: str, message: str) -> Validated:
    return Validated(None, [Violation(rule, message)])


def _read(landed: LandedFile, folder: Path, limits: Limits) -> bytes | Validated:
    """The file's bytes, or why they were not read."""
    if landed.refused:
        return _unread("not_a_file", landed.refused)
    try:
        return read_no_follow(landed.path, folder, limits.max_file_bytes)
    except FileTooLarge as exc:
        return _unread("file_too_large", str(exc))
    except OSError as exc:  # ELOOP: a link swapped in after the walk; EACCES; gone meanwhile
        return _unread("unreadable", f"the file cannot be opened without following links: "
                                     f"{exc.strerror or exc}")


def _validated(data: bytes, source: Path, dataset, limits: Limits) -> Validated:
    try:
        return validate_batch(data, source.name, dataset, limits)
    except Exception as exc:  # a file no rule foresaw: quarantined with the error, the others still ingested
        log.exception("validating a file failed")
        return _unread("unreadable", shorten(f"the file could not be validated: {type(exc).__name__}: {exc}"))


def ingest_partition(volume: DataVolume, partition: str, schema, limits: Limits = Limits()) -> dict:
    """Ingest landing/<model>/<partition>/ of `volume` (a DataVolume of the dataset's model) against
    `schema`, the parsed dataset file (mlpipeline.dataset.Dataset)."""
    dataset = schema
    if volume.model_name != dataset.model_name:
        raise PipelineError(f"the data volume is opened for model {volume.model_name!r}, the dataset file "
                            f"declares {dataset.model_name!r}")
    entries = volume.landing_files(partition)
    folder, curated_dir = volume.landing(partition), volume.curated(partition)
    stored, already, quarantined = [], [], []

    def refuse(index: int, source: Path, data: bytes | None, digest: str | None, result: Validated) -> None:
        where = _quarantine(volume, partition, source, data, digest, result)
        first = result.violations[0]
        quarantined.append({"file": source.name, "rule": first.rule, "message": first.message,
                            "quarantined": str(where.relative_to(volume.root))})
        log.warning("[%d/%d] %s: quarantined (%s: %s)", index, len(entries), source.name, first.rule, first.message)

    for index, landed in enumerate(entries, 1):
        source = landed.path
        data = _read(landed, folder, limits)
        if isinstance(data, Validated):
            refuse(index, source, None, None, data)
            continue
        digest = hashlib.sha256(data).hexdigest()
        misnamed = check_name(source.name, dataset.source.format)
        if misnamed:  # before the look-up: the same bytes under a name of another format are not that batch
            refuse(index, source, data, digest, Validated(None, [misnamed]))
            continue
        target = curated_dir / f"{digest}.parquet"
        if target.exists():
            already.append({"file": source.name, "curated": target.name})
            log.info("[%d/%d] %s: already curated as %s", index, len(entries), source.name, target.name)
            continue
        result = _validated(data, source, dataset, limits)
        if not result.ok:
            refuse(index, source, data, digest, result)
            continue
        _store_curated(target, result.frame, dataset, source, digest, partition)
        stored.append({"file": source.name, "curated": target.name, "rows": len(result.frame),
                       "notes": result.notes})
        log.info("[%d/%d] %s: stored %d rows as %s", index, len(entries), source.name, len(result.frame), target.name)
    curated_files = volume.curated_files(partition)
    summary = {
        "partition": partition,
        "files": len(entries),
        "stored": stored,
        "already_curated": already,
        "quarantined": quarantined,
        "curated_files": len(curated_files),
        "curated_rows": sum(pq.ParquetFile(p).metadata.num_rows for p in curated_files),
    }
    if not curated_files:
        reasons = "; ".join(f"{q['file']}: {q['rule']}" for q in quarantined) or "no data files"
        raise PipelineError(f"partition {partition} yielded no usable data ({reasons}); "
                            f"see {volume.quarantine(partition)}")
    return summary
