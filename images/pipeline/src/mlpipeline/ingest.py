"""Ingest one landing partition: validate each file, store or quarantine it.

Good files become curated/<partition>/<sha256 of the source bytes>.parquet, so
the same bytes always map to the same file and re-ingesting is a no-op. Bad
files are copied to quarantine/<partition>/ with a JSON reason. Nothing in
curated/ is ever rewritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PipelineError
from .schema import DatasetSchema
from .validate import validate_csv
from .volume import DataVolume, write_atomic, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)


def _store_curated(target: Path, frame, schema: DatasetSchema, source: Path, digest: str, partition: str) -> bool:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({
        "mlpipeline.source_name": source.name,
        "mlpipeline.source_sha256": digest,
        "mlpipeline.partition": partition,
        "mlpipeline.schema": schema.fingerprint(),
    })
    return write_atomic(target, lambda tmp: pq.write_table(table, tmp, compression="zstd"), overwrite=False)


def _quarantine(volume: DataVolume, partition: str, source: Path, data: bytes, digest: str, result) -> Path:
    folder = volume.quarantine(partition)
    target = folder / f"{digest[:12]}-{source.name}"
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


def ingest_partition(volume: DataVolume, partition: str, schema: DatasetSchema) -> dict:
    files = volume.landing_files(partition)
    curated_dir = volume.curated(partition)
    stored, already, quarantined = [], [], []
    for index, source in enumerate(files, 1):
        data = source.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        target = curated_dir / f"{digest}.parquet"
        if target.exists():
            already.append({"file": source.name, "curated": target.name})
            log.info("[%d/%d] %s: already curated as %s", index, len(files), source.name, target.name)
            continue
        result = validate_csv(data, schema)
        if not result.ok:
            where = _quarantine(volume, partition, source, data, digest, result)
            first = result.violations[0]
            quarantined.append({"file": source.name, "rule": first.rule, "message": first.message,
                                "quarantined": str(where.relative_to(volume.root))})
            log.warning("[%d/%d] %s: quarantined (%s: %s)", index, len(files), source.name, first.rule, first.message)
            continue
        _store_curated(target, result.frame, schema, source, digest, partition)
        stored.append({"file": source.name, "curated": target.name, "rows": len(result.frame),
                       "notes": result.notes})
        log.info("[%d/%d] %s: stored %d rows as %s", index, len(files), source.name, len(result.frame), target.name)
    curated_files = volume.curated_files(partition)
    summary = {
        "partition": partition,
        "files": len(files),
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
