"""The dataset files the DAG file turns into DAGs, one `continuous_training_<name>` DAG per file.

Each file is read once (without following a link, within the parser's size limit) and parsed by
`mlpipeline.dataset`, the same parser the stages run; the text is kept exactly as read, since the stages
are given that text and parse it again. A file that cannot be used becomes an InvalidDatasetFile carrying
the reason (the parser's message: the file, the key, what is allowed), so that it gets a DAG of its own
that shows the reason, and the other files' DAGs still load: Airflow 3.3 has no way for one DAG file to
report an import error for one of its DAGs and still load the others (apache/airflow#53971).

Beside the parser's own checks, a file is refused here when its DAG id or its model is already another
file's (two DAGs moving one model's champion would undo each other's work; the first file in name order
keeps it), and when it is too long to be one command-line argument of a stage.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mlpipeline.dataset import DATASET_NAME, Dataset, DatasetFileError, dataset_files, parse_text, read_text

log = logging.getLogger(__name__)

DAG_ID_PREFIX = "continuous_training_"
INVALID_TAG = "invalid-dataset-file"  # the tag of the DAG a broken file becomes
# A stage gets the file's text as one argument (`--dataset-content`); Linux refuses a single argument longer
# than MAX_ARG_STRLEN (32 pages: 131072 bytes with its closing NUL) with E2BIG, in a subprocess and in a
# pod's container alike. Refused when the DAG is parsed, not when a run's ingest cannot start.
MAX_ARGUMENT_BYTES = 32 * 4096 - 1
_NOT_IN_DAG_ID = re.compile(r"[^a-z0-9_.-]+")
_MAX_DAG_ID = 250  # Airflow's limit on a DAG id


@dataclass(frozen=True)
class DatasetFile:
    """A dataset file its DAG runs on."""

    path: Path
    dag_id: str
    text: str  # exactly as read: the stages parse this text again
    dataset: Dataset


@dataclass(frozen=True)
class InvalidDatasetFile:
    """A dataset file that cannot be used, and why (the message names the file, the key, what is allowed)."""

    path: Path
    dag_id: str
    message: str


def dag_id(name: str) -> str:
    """The DAG id of the dataset file named `name` (its stem, as the parser checked it)."""
    return f"{DAG_ID_PREFIX}{name}"


def invalid_dag_id(path: Path, taken: set[str]) -> str:
    """A DAG id for a file that cannot be used: `continuous_training_<stem>` when the stem is a valid name
    and that id is free; else one made of the whole file name (a valid file's DAG id never holds a '.'),
    with a hash of it if that is taken too or had to be cut."""
    if DATASET_NAME.match(path.stem) and dag_id(path.stem) not in taken:
        return dag_id(path.stem)
    sanitized = _NOT_IN_DAG_ID.sub("_", path.name.lower())
    candidate = dag_id(sanitized)
    if candidate in taken or len(candidate) > _MAX_DAG_ID:
        digest = hashlib.sha256(path.name.encode()).hexdigest()[:8]
        candidate = f"{candidate[:_MAX_DAG_ID - 9]}_{digest}"
    return candidate


def _read(path: Path) -> tuple[str, Dataset]:
    """The file's text and what it declares, from one read (mlpipeline.dataset.load's rules)."""
    text = read_text(path)
    dataset = parse_text(text, str(path), path.stem)
    size = len(text.encode())
    if size > MAX_ARGUMENT_BYTES:
        raise DatasetFileError(f"dataset file {path}: {size} bytes; a stage is given the file as one "
                               f"command-line argument, which Linux limits to {MAX_ARGUMENT_BYTES} bytes")
    return text, dataset


def read_dataset_files(folder: Path) -> list[DatasetFile | InvalidDatasetFile]:
    """Every dataset file of `folder`, in name order, each either usable or the reason it is not (logged as
    an error: the DAG processor's log of the DAG file shows it)."""
    entries: list[DatasetFile | InvalidDatasetFile] = []
    taken: set[str] = set()
    models: dict[str, Path] = {}
    for path in dataset_files(folder):
        try:
            text, dataset = _read(path)
            if dag_id(dataset.name) in taken:
                raise DatasetFileError(f"dataset file {path}: its DAG id {dag_id(dataset.name)} is another dataset "
                                       f"file's already (one file per name: {path.stem}.yaml or {path.stem}.yml)")
            if dataset.model_name in models:
                raise DatasetFileError(f"dataset file {path}: key 'model_name': {dataset.model_name!r} is declared by "
                                       f"{models[dataset.model_name]} already; each model has one dataset file")
        except DatasetFileError as exc:
            entry = InvalidDatasetFile(path, invalid_dag_id(path, taken), str(exc))
            log.error("%s (until the file is fixed, its DAG %s shows this error and cannot run)", entry.message,
                      entry.dag_id)
        else:
            entry = DatasetFile(path, dag_id(dataset.name), text, dataset)
            models[dataset.model_name] = path
        taken.add(entry.dag_id)
        entries.append(entry)
    if not entries:
        log.warning("no dataset files (*.yaml, *.yml) in %s ([mlops] datasets_folder): no continuous training "
                    "DAGs; add datasets/<name>.yaml to train a model", folder)
    return entries
