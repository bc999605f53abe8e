"""`mlpipeline split`: reproducible, stratified, windowed, with a manifest."""

from __future__ import annotations

import pandas as pd
import pytest

from mlpipeline.config import run_config
from mlpipeline.errors import PipelineError
from mlpipeline.ingest import ingest_partition
from mlpipeline.simulate import simulate, to_csv_bytes
from mlpipeline.split import split_partition
from tests.support import EXAMPLE_DATASET, tree_snapshot

from .helpers import run_cli

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture
def three_days(volume, schema):
    for i, day in enumerate(DAYS):
        folder = volume.landing(day)
        folder.mkdir(parents=True)
        (folder / "batch.csv").write_bytes(to_csv_bytes(simulate(schema, 300 * (i + 1), seed=i)))
        ingest_partition(volume, day, schema)
    return volume


def test_split_writes_sets_and_manifest(three_days, schema):
    result = run_cli("split", "--data-root", three_days.root, "--partition", DAYS[2], "--window", "all",
                     "--dataset", EXAMPLE_DATASET).json
    run_dir = three_days.run_dir(result["run_key"])
    assert {p.name for p in run_dir.iterdir()} >= {"train.parquet", "test.parquet", "fresh.parquet",
                                                   "manifest.json", "config.json"}
    sets = result["sets"]
    assert sets["train"]["rows"] + sets["test"]["rows"] == 1800
    assert sets["fresh"]["rows"] == 900
    assert result["window_partitions"] == DAYS
    for name in ("train", "test"):
        balance = sets[name]["class_balance"]
        assert max(balance.values()) - min(balance.values()) <= 1
    assert sets["test"]["rows"] == 450


def test_split_is_reproducible_and_the_run_key_is_derived(three_days, schema):
    config = run_config(schema, "last:2")
    first = split_partition(three_days, DAYS[2], schema, config)
    other_root = three_days.root.parent / "copy"
    import shutil

    shutil.copytree(three_days.root / "curated", other_root / "curated")
    from mlpipeline.volume import DataVolume

    second = split_partition(DataVolume(other_root, schema.model_name), DAYS[2], schema, config)
    assert first["run_key"] == second["run_key"] and first["run_key"].startswith("rk-")
    assert first["sets"] == second["sets"]
    for name in ("train", "test"):
        here = three_days.run_dir(first["run_key"]) / f"{name}.parquet"
        there = DataVolume(other_root, schema.model_name).run_dir(first["run_key"]) / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(here), pd.read_parquet(there))
    # Another window is other data, hence another run key.
    assert split_partition(three_days, DAYS[2], schema, run_config(schema, "all"))["run_key"] != first["run_key"]


def test_the_split_is_scikit_learns_stratified_split_of_the_window(three_days, schema):
    """split stratifies on class codes for speed; the rows must be those stratifying on the labels picks."""
    from sklearn.model_selection import train_test_split

    config = run_config(schema, "all")
    result = split_partition(three_days, DAYS[2], schema, config)
    window = pd.concat([pd.read_parquet(f) for day in DAYS for f in three_days.curated_files(day)],
                       ignore_index=True)
    expected = train_test_split(window, test_size=schema.test_size,
                                random_state=schema.seed, stratify=window[schema.label])
    for name, frame in zip(("train", "test"), expected, strict=True):
        written = pd.read_parquet(three_days.run_dir(result["run_key"]) / f"{name}.parquet")
        pd.testing.assert_frame_equal(written, frame.reset_index(drop=True))


def test_window_last_n_uses_only_recent_partitions(three_days, schema):
    result = split_partition(three_days, DAYS[1], schema, run_config(schema, "last:1"))
    assert result["window_partitions"] == [DAYS[1]]
    assert result["sets"]["train"]["rows"] + result["sets"]["test"]["rows"] == 600
    assert result["sets"]["fresh"]["rows"] == 600


def test_rerun_with_same_key_is_a_no_op(three_days, schema):
    config = run_config(schema)
    first = split_partition(three_days, DAYS[2], schema, config, run_key="manual-1")
    before = tree_snapshot(three_days.run_dir("manual-1"))
    again = split_partition(three_days, DAYS[2], schema, config, run_key="manual-1")
    assert again["reused"] and again["data_fingerprint"] == first["data_fingerprint"]
    assert tree_snapshot(three_days.run_dir("manual-1")) == before


def test_reusing_a_run_key_for_other_data_is_refused_and_changes_nothing(three_days, schema):
    split_partition(three_days, DAYS[2], schema, run_config(schema), run_key="manual-2")
    before = tree_snapshot(three_days.run_dir("manual-2"))
    with pytest.raises(PipelineError, match="already holds a split of other data"):
        split_partition(three_days, DAYS[1], schema, run_config(schema), run_key="manual-2")
    assert tree_snapshot(three_days.run_dir("manual-2")) == before


@pytest.mark.parametrize("args, message", [
    (["--partition", "2026-12-01"], "partition 2026-12-01 has no curated data"),
    (["--partition", DAYS[0], "--window", "last:0"], "training window must be 'all' or 'last:N'"),
    (["--partition", DAYS[0], "--run-key", "../../etc"], "run key must be"),
])
def test_bad_arguments_fail_with_one_line(three_days, args, message):
    before = tree_snapshot(three_days.root)
    result = run_cli("split", "--data-root", three_days.root, *args, "--dataset", EXAMPLE_DATASET, check=False)
    assert result.returncode == 1 and message in result.error_line
    assert tree_snapshot(three_days.root) == before


def test_too_little_data_to_stratify_is_explained(volume, schema):
    folder = volume.landing(DAYS[0])
    folder.mkdir(parents=True)
    (folder / "tiny.csv").write_text("sepal_length,sepal_width,petal_length,petal_width,species\n"
                                     "5.1,3.5,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n6.3,3.3,6.0,2.5,virginica\n")
    ingest_partition(volume, DAYS[0], schema)
    with pytest.raises(PipelineError, match="too small to stratify"):
        split_partition(volume, DAYS[0], schema, run_config(schema))


def _regression_volume(tmp_path, rows: int):
    from mlpipeline.volume import DataVolume
    from tests import datasets

    spec = datasets.load("diabetes")
    volume = DataVolume(tmp_path / "regression", spec.model_name)
    folder = volume.landing(DAYS[0])
    folder.mkdir(parents=True)
    (folder / "batch.csv").write_bytes(to_csv_bytes(datasets.reference_frame("diabetes").head(rows)))
    assert ingest_partition(volume, DAYS[0], spec)["curated_rows"] == rows
    return volume, spec


def test_a_numeric_target_is_split_on_its_quantile_bins_reproducibly(tmp_path):
    import numpy as np

    volume, spec = _regression_volume(tmp_path, 442)
    config = run_config(spec, "last:1")
    result = split_partition(volume, DAYS[0], spec, config)
    assert result["classes"] == [] and "class_balance" not in result["sets"]["train"]
    train = pd.read_parquet(volume.run_dir(result["run_key"]) / "train.parquet")[spec.label]
    test = pd.read_parquet(volume.run_dir(result["run_key"]) / "test.parquet")[spec.label]
    assert train.dtype == "float64" and len(train) + len(test) == 442
    # every tenth of the target's range holds its share of the test set (+-1 row), which a random split
    # misses by several rows at this size
    deciles = np.quantile(pd.concat([train, test]), np.linspace(0, 1, 11)[1:-1])
    shares = np.bincount(np.searchsorted(deciles, test, side="right"), minlength=10)
    assert shares.max() - shares.min() <= 2, shares
    assert result["sets"]["test"]["target"]["median"] == pytest.approx(float(test.median()))
    again = split_partition(volume, DAYS[0], spec, config, run_key="rk-again")
    assert again["sets"]["test"]["fingerprint"] == result["sets"]["test"]["fingerprint"]


def test_a_regression_window_too_small_to_split_is_refused(tmp_path):
    volume, spec = _regression_volume(tmp_path, 12)
    with pytest.raises(PipelineError, match="training window too small: 12 rows"):
        split_partition(volume, DAYS[0], spec, run_config(spec, "last:1"))
    assert not any(volume.run_dir("x").parent.glob("*/manifest.json"))
