"""Reproducible, stratified train/test split of the training window, plus the fresh set.

Stratified on the classes, or for a numeric target on its quantile bins (TARGET_BINS equal-share bins of the
window's target, fewer when the window is small), so both sets cover the target's whole range.

The run's `manifest.json` records what the run was made of: the window's partitions and curated files, their
fingerprint, the dataset file, the classes, each set's rows, class balance and fingerprint, and, when the
partition was pulled from a `sql` or `http` source, what the pull fetched (`pull`, mlpipeline.pull_record),
which training and register tag. A manifest is written once: a run key split again keeps the one it has.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import lineage
from .config import config_hash
from .dataset import Dataset, from_dict
from .errors import PipelineError
from .volume import DataVolume, read_json, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

SETS = ("train", "test", "fresh")


def window_partitions(volume: DataVolume, partition: str, window: str) -> list[str]:
    available = volume.curated_partitions(up_to=partition)
    if partition not in available:
        raise PipelineError(f"partition {partition} has no curated data; run ingest for it first")
    if window == "all":
        return available
    return available[-int(window.split(":", 1)[1]):]


def _read_partitions(volume: DataVolume, partitions: list[str], dataset: Dataset) -> dict[str, pd.DataFrame]:
    return {p: pd.concat([pq.read_table(f, columns=dataset.columns).to_pandas() for f in volume.curated_files(p)],
                         ignore_index=True) for p in partitions}


# Quantile bins a numeric target is stratified on: at most this many, and each with at least
# MIN_ROWS_PER_BIN rows of the window, so every bin can put rows in both sets.
TARGET_BINS = 10
MIN_ROWS_PER_BIN = 8


def describe(frame: pd.DataFrame, dataset: Dataset, classes: list[str]) -> dict:
    out = {"rows": int(len(frame)), "fingerprint": lineage.frame_fingerprint(frame)}
    if dataset.regression:
        target = frame[dataset.label].astype("float64")
        quantiles = target.quantile([0.05, 0.5, 0.95]).tolist() if len(target) else [None] * 3
        out["target"] = {"mean": _number(target.mean()), "std": _number(target.std()),
                         "p05": _number(quantiles[0]), "median": _number(quantiles[1]), "p95": _number(quantiles[2])}
        return out
    counts = frame[dataset.label].value_counts()
    return {**out, "class_balance": {c: int(counts.get(c, 0)) for c in classes}}


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 6)


def target_bins(target: pd.Series) -> np.ndarray:
    """A numeric target's stratification codes: its equal-share quantile bins (of its ranks: tied values may
    fall in two neighbouring bins, which keeps every bin's size whatever the ties)."""
    bins = max(1, min(TARGET_BINS, len(target) // MIN_ROWS_PER_BIN))
    return pd.qcut(target.rank(method="first"), bins, labels=False).to_numpy() if bins > 1 else \
        np.zeros(len(target), dtype=np.int64)


def run_dataset(manifest: dict) -> tuple[Dataset, list[str]]:
    """The dataset a run was split with, and its classes: the declared ones, or those its window held."""
    return from_dict(manifest["dataset"]), list(manifest["classes"])


def split_partition(volume: DataVolume, partition: str, dataset: Dataset, config: dict,
                    run_key: str | None = None, pull: dict | None = None) -> dict:
    partitions = window_partitions(volume, partition, config["window"])
    window_files = [f.name for p in partitions for f in volume.curated_files(p)]
    data_fingerprint = lineage.files_fingerprint(window_files)
    cfg_hash = config_hash({"config": config, "dataset": dataset.fingerprint()})
    run_key = run_key or lineage.run_key(data_fingerprint, cfg_hash)
    run_dir = volume.run_dir(run_key)
    manifest_path = run_dir / "manifest.json"
    if manifest_path.exists():
        existing = read_json(manifest_path)
        if (existing.get("data_fingerprint"), existing.get("config_hash")) != (data_fingerprint, cfg_hash):
            raise PipelineError(f"run key {run_key} already holds a split of other data or config "
                                f"({existing.get('data_fingerprint')}/{existing.get('config_hash')}); "
                                "use a new run key")
        log.info("run %s already split; reusing %s", run_key, manifest_path)
        if pull and existing.get("pull") != pull:  # the manifest is never rewritten
            log.info("run %s keeps the pull record it was split with; this pull (%s) is not recorded", run_key,
                     pull["file"])
        return {**existing, "reused": True}

    log.info("reading %d curated file(s) from %d partition(s) (%s)", len(window_files), len(partitions),
             config["window"])
    by_partition = _read_partitions(volume, partitions, dataset)  # the window always ends with the partition
    window = pd.concat(list(by_partition.values()), ignore_index=True)
    fresh = by_partition[partition]
    test_size = dataset.test_size
    if dataset.regression:
        codes, classes = target_bins(window[dataset.label]), []
        bins, test_rows = int(codes.max()) + 1, round(len(window) * test_size)
        if len(window) < 2 * MIN_ROWS_PER_BIN or min(test_rows, len(window) - test_rows) < max(2, bins):
            raise PipelineError(f"training window too small: {len(window)} rows, test_size {test_size} (each set "
                                f"needs rows of each of the target's {bins} quantile bins); widen the window or "
                                "land more data")
    else:
        counts = window[dataset.label].value_counts()
        test_rows = round(len(window) * test_size)
        if counts.min() < 2 or min(test_rows, len(window) - test_rows) < len(counts):
            raise PipelineError(f"training window too small to stratify: class counts {counts.to_dict()}, "
                                f"test_size {test_size}; widen the window or land more data")
        # Stratified on class codes, not the label strings: the split is the same (codes follow the sorted
        # classes, as the splitter's np.unique would), but sorting 10M strings took 13 of split's 43 s.
        codes = pd.Categorical(window[dataset.label]).codes
        classes = list(dataset.classes) or sorted(counts.index.astype(str))
    from sklearn.model_selection import train_test_split  # here: register and detect load runs without it

    train, test = train_test_split(window, test_size=test_size, random_state=dataset.seed, stratify=codes)
    sets = {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True), "fresh": fresh}
    for name, frame in sets.items():
        write_atomic(run_dir / f"{name}.parquet", lambda tmp, f=frame: f.to_parquet(tmp, index=False))
    manifest = {
        "run_key": run_key,
        "partition": partition,
        "window": config["window"],
        "window_partitions": partitions,
        "window_files": window_files,
        "data_fingerprint": data_fingerprint,
        "config_hash": cfg_hash,
        "code_version": lineage.code_version(),
        "dataset": dataset.as_dict(),
        "dataset_fingerprint": dataset.fingerprint(),
        "classes": classes,
        "sets": {name: describe(frame, dataset, classes) for name, frame in sets.items()},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **({"pull": pull} if pull else {}),  # checked by the caller (mlpipeline.pull_record.parse)
    }
    write_json_atomic(run_dir / "config.json", config)
    write_json_atomic(manifest_path, manifest)
    log.info("run %s: train %d, test %d, fresh %d rows", run_key, len(train), len(test), len(fresh))
    return {**manifest, "reused": False}


def load_set(volume: DataVolume, run_key: str, name: str) -> pd.DataFrame:
    path = volume.run_dir(run_key) / f"{name}.parquet"
    if not path.exists():
        raise PipelineError(f"run {run_key} has no {name} set at {path}; run split first")
    return pd.read_parquet(path)


