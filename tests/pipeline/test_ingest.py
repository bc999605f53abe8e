"""`mlpipeline ingest` through the CLI: stored or quarantined, never a changed curated/."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.support import tree_snapshot

from .corpus import ACCEPTED_FILES, BAD_FILES, GOOD
from .helpers import run_cli

PARTITION = "2026-11-01"


def land(volume, partition: str, files: dict[str, bytes]) -> None:
    folder = volume.landing(partition)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)


def ingest(volume, partition=PARTITION, check=True):
    return run_cli("ingest", "--data-root", volume.root, "--partition", partition, check=check)


def test_good_file_is_stored_as_content_addressed_parquet(volume, schema):
    land(volume, PARTITION, {"good.csv": GOOD.encode()})
    result = ingest(volume).json
    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    (stored,) = volume.curated_files(PARTITION)
    import hashlib
    assert stored.name == hashlib.sha256(GOOD.encode()).hexdigest() + ".parquet"
    table = pq.read_table(stored)
    assert table.column_names == schema.columns and table.num_rows == 6
    assert table.schema.metadata[b"mlpipeline.source_name"] == b"good.csv"


def test_every_bad_file_is_quarantined_with_its_reason_and_curated_is_unchanged(volume):
    land(volume, PARTITION, {"good.csv": GOOD.encode()})
    ingest(volume)
    curated_before = tree_snapshot(volume.root / "curated")
    land(volume, PARTITION, {name: content for name, (content, _, _) in BAD_FILES.items()})

    result = ingest(volume).json  # exits 0: the partition still has usable data

    assert tree_snapshot(volume.root / "curated") == curated_before
    by_file = {q["file"]: q for q in result["quarantined"]}
    assert set(by_file) == set(BAD_FILES)
    for name, (content, rule, details) in BAD_FILES.items():
        assert by_file[name]["rule"] == rule, (name, by_file[name])
        copy = volume.root / by_file[name]["quarantined"]
        assert copy.read_bytes() == content
        reason = json.loads(copy.with_name(copy.name + ".reason.json").read_text())
        assert reason["file"] == f"landing/{PARTITION}/{name}" and reason["rule"] == rule
        assert reason["violations"][0]["message"]
        for line in details.get("rows", []):
            assert line in reason["violations"][0]["rows"]
        for column in details.get("columns", []):
            assert column in reason["violations"][0]["columns"]
    # Landing files are the source of truth and stay where they were.
    assert all((volume.landing(PARTITION) / name).exists() for name in BAD_FILES)


def test_reingesting_is_a_no_op(volume):
    land(volume, PARTITION, {**ACCEPTED_FILES, "bad.csv": BAD_FILES["nan.csv"][0]})
    first = ingest(volume).json
    before = tree_snapshot(volume.root / "curated"), tree_snapshot(volume.root / "quarantine")
    second = ingest(volume).json
    assert len(first["stored"]) == len(ACCEPTED_FILES) and second["stored"] == []
    assert {a["file"] for a in second["already_curated"]} == set(ACCEPTED_FILES)
    assert (tree_snapshot(volume.root / "curated"), tree_snapshot(volume.root / "quarantine")) == before


def test_same_bytes_under_another_name_map_to_the_same_file(volume):
    land(volume, PARTITION, {"a.csv": GOOD.encode(), "copy-of-a.csv": GOOD.encode()})
    result = ingest(volume).json
    assert result["curated_files"] == 1 and result["curated_rows"] == 6


def test_partition_with_no_usable_data_fails_with_one_line(volume):
    land(volume, PARTITION, {"empty.csv": b"", "semi.csv": BAD_FILES["semicolons.csv"][0]})
    result = ingest(volume, check=False)
    assert result.returncode == 1 and result.stdout == ""
    line = result.error_line
    assert "yielded no usable data" in line and "empty.csv: empty_file" in line and "semi.csv: delimiter" in line
    assert not (volume.root / "curated").exists()
    assert len(list(volume.quarantine(PARTITION).glob("*.reason.json"))) == 2


def test_markers_and_temporaries_are_not_data(volume):
    land(volume, PARTITION, {"good.csv": GOOD.encode(), "_SUCCESS": b"", ".good.csv.tmp": b"half-writ"})
    result = ingest(volume).json
    assert result["files"] == 1 and result["quarantined"] == []


@pytest.mark.parametrize("args, message", [
    (["--partition", "2026-13-01"], "partition must be a date YYYY-MM-DD"),
    (["--partition", "../etc"], "partition must be a date YYYY-MM-DD"),
    (["--partition", "2026-11-30"], "no landing folder for partition 2026-11-30"),
])
def test_bad_arguments_fail_with_one_line(volume, args, message):
    volume.root.mkdir(parents=True)
    result = run_cli("ingest", "--data-root", volume.root, *args, check=False)
    assert result.returncode == 1 and message in result.error_line
