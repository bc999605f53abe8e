"""The data volume: layout, partition names and atomic, no-clobber writes.

landing/<partition>/...     incoming batches (never modified here)
quarantine/<partition>/...  rejected batches, each with <name>.reason.json
curated/<partition>/<sha256>.parquet   validated batches, content-addressed, immutable
runs/<run_key>/...          one run's split, reports and stage results

Files whose name starts with "." or "_" are in-progress temporaries or markers
(such as _SUCCESS) and are never treated as data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import PipelineError

_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_partition(partition: str) -> str:
    try:
        parsed = dt.date.fromisoformat(partition)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.isoformat() != partition:
        raise PipelineError(f"partition must be a date YYYY-MM-DD, got {partition!r}")
    return partition


def check_run_key(run_key: str) -> str:
    if not _RUN_KEY.match(run_key or ""):
        raise PipelineError(f"run key must be 1-128 letters, digits, '.', '_' or '-', got {run_key!r}")
    return run_key


def is_data_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith((".", "_"))


class DataVolume:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def landing(self, partition: str) -> Path:
        return self.root / "landing" / check_partition(partition)

    def quarantine(self, partition: str) -> Path:
        return self.root / "quarantine" / check_partition(partition)

    def curated(self, partition: str) -> Path:
        return self.root / "curated" / check_partition(partition)

    def run_dir(self, run_key: str) -> Path:
        return self.root / "runs" / check_run_key(run_key)

    def landing_files(self, partition: str) -> list[Path]:
        folder = self.landing(partition)
        if not folder.is_dir():
            raise PipelineError(f"no landing folder for partition {partition}: {folder} does not exist")
        return sorted(p for p in folder.rglob("*") if is_data_file(p) and not _hidden_parent(p, folder))

    def curated_partitions(self, up_to: str | None = None) -> list[str]:
        base = self.root / "curated"
        if not base.is_dir():
            return []
        names = sorted(p.name for p in base.iterdir() if p.is_dir() and _is_partition(p.name))
        return [n for n in names if up_to is None or n <= up_to]

    def curated_files(self, partition: str) -> list[Path]:
        folder = self.curated(partition)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if is_data_file(p))


def _is_partition(name: str) -> bool:
    try:
        return dt.date.fromisoformat(name).isoformat() == name
    except ValueError:
        return False


def _hidden_parent(path: Path, top: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(top).parts[:-1])


def _temp_beside(target: Path) -> tuple[int, Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    return fd, Path(name)


def write_atomic(target: Path, write, *, overwrite: bool = True) -> bool:
    """Write via write(tmp_path) to a temporary beside target, fsync, then publish.

    Readers see either no file or the complete file. With overwrite=False an
    existing target is left untouched (hard-link publishing cannot clobber)
    and False is returned.
    """
    fd, tmp = _temp_beside(target)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, target)
            return True
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes, *, overwrite: bool = True) -> bool:
    return write_atomic(target, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def write_json_atomic(target: Path, obj, *, overwrite: bool = True) -> bool:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(target, text.encode(), overwrite=overwrite)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PipelineError(f"missing {path}: run the earlier stage first") from exc
    except json.JSONDecodeError as exc:
        raise PipelineError(f"corrupt JSON in {path}: {exc.msg} at line {exc.lineno}") from exc


def load_run(volume: DataVolume, run_key: str) -> tuple[dict, dict]:
    """The run's manifest and the config it was split with."""
    run_dir = volume.run_dir(run_key)
    if not run_dir.is_dir():
        raise PipelineError(f"unknown run key {run_key}: {run_dir} does not exist; run split first")
    return read_json(run_dir / "manifest.json"), read_json(run_dir / "config.json")
