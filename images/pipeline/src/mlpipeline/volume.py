"""The data volume: layout, partition names and atomic, no-clobber writes.

landing/<model>/<partition>/...     incoming batches (never modified here)
quarantine/<model>/<partition>/...  rejected batches, each with <name>.reason.json
curated/<model>/<partition>/<sha256>.parquet   validated batches, content-addressed, immutable
runs/<run_key>/...                  one run's split, reports and stage results

<model> is the dataset file's model_name: each model has its own batches (run keys already differ per
dataset, since the dataset's fingerprint is part of them).

Files whose name starts with "." or "_" are in-progress temporaries or markers
(such as _SUCCESS) and are never treated as data.

Whoever can write to landing/ is not trusted: it is walked and read without following symbolic links
(a link to /proc/self/environ would otherwise copy the stage's environment into quarantine/), and only
regular files are read, each under a size limit checked before reading.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Limits:
    """What one landed file may hold. Defaults: a file of up to 1 GiB (10 million rows of five short
    columns take about 290 MB), fields of up to 64 KiB (the csv module's own limit is 128 KiB), 4,096 columns."""
    max_file_bytes: int = 1 << 30
    max_field_bytes: int = 64 * 1024
    max_columns: int = 4096


@dataclass(frozen=True)
class LandedFile:
    """An entry of a landing partition: a regular file to read, or something never read (`refused` says
    what it is)."""
    path: Path
    refused: str | None = None


class FileTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the file holds {size} bytes; the limit is {limit}")


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISBLK(mode) or stat.S_ISCHR(mode) else "not a regular file")


def _walk_landing(folder: Path) -> list[LandedFile]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith((".", "_")):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                found.append(LandedFile(path, f"a symbolic link (to {os.readlink(path)!r}); the landing area is "
                                              "read without following links: land the file itself"))
            elif entry.is_dir(follow_symlinks=False):
                found.extend(_walk_landing(path))
            elif entry.is_file(follow_symlinks=False):
                found.append(LandedFile(path))
            else:
                found.append(LandedFile(path, f"{_kind(entry.stat(follow_symlinks=False).st_mode)}, not a file"))
    return found


def read_no_follow(path: Path, top: Path, limit: int) -> bytes:
    """The bytes of `path` (under `top`), opened one component at a time without following a link, checked
    to be a regular file of at most `limit` bytes before anything is read. A link swapped in after the walk
    fails with ELOOP (OSError), a larger file with FileTooLarge."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(top, flags | os.O_DIRECTORY)
    try:
        for part in path.relative_to(top).parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        inner = os.open(path.name, flags | os.O_NONBLOCK, dir_fd=descriptor)  # O_NONBLOCK: a FIFO does not hang
        os.close(descriptor)
        descriptor = inner
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{path.name} is {_kind(status.st_mode)}")
        if status.st_size > limit:
            raise FileTooLarge(status.st_size, limit)
        with os.fdopen(descriptor, "rb", closefd=True) as handle:
            descriptor = -1
            data = handle.read(limit + 1)
        if len(data) > limit:  # it grew after fstat
            raise FileTooLarge(len(data), limit)
        return data
    finally:
        if descriptor >= 0:
            os.close(descriptor)


# A model name names its InferenceService too: a DNS-1035 label of at most 45 characters.
MODEL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$")


def model_area(area: str, model_name: str | None) -> Path:
    """A model's landing, quarantine or curated area, relative to the volume's root: the one layout the stages
    and the Airflow side (the batch sensor, the pull) both use. The name becomes a path component, so it is
    checked here."""
    if model_name is None:
        raise PipelineError(f"the {area} area is per model: give the dataset (its model_name)")
    if not MODEL_NAME.match(model_name):
        raise PipelineError(f"model name must be lower-case letters, digits and '-', got {model_name!r}")
    return Path(area) / model_name


class DataVolume:
    """The volume's layout; `model_name` (a dataset's) is needed for its batches, not for a run's folder."""

    def __init__(self, root: str | Path, model_name: str | None = None):
        self.root = Path(root)
        if model_name is not None:
            model_area("landing", model_name)  # a name that is not one path component is refused at once
        self.model_name = model_name

    def _area(self, area: str, partition: str) -> Path:
        return self.root / model_area(area, self.model_name) / check_partition(partition)

    def landing(self, partition: str) -> Path:
        return self._area("landing", partition)

    def quarantine(self, partition: str) -> Path:
        return self._area("quarantine", partition)

    def curated(self, partition: str) -> Path:
        return self._area("curated", partition)

    def run_dir(self, run_key: str) -> Path:
        return self.root / "runs" / check_run_key(run_key)

    def landing_files(self, partition: str) -> list[LandedFile]:
        """Every entry of the partition's landing folder that is not a marker or temporary, links and other
        non-files included (LandedFile.refused), without following a link anywhere."""
        folder = self.landing(partition)
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            raise PipelineError(f"no landing folder for partition {partition}: {folder} does not exist") from None
        if not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
            raise PipelineError(f"landing folder {folder} is {what}; the landing area is read without following links")
        return sorted(_walk_landing(folder), key=lambda f: f.path)

    def curated_partitions(self, up_to: str | None = None) -> list[str]:
        base = self.curated("2000-01-01").parent
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
