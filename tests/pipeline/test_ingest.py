"""`mlpipeline ingest`: stored or quarantined, never a changed curated/; the example through the CLI, then
datasets it was not written for, in every format, through ingest_partition."""

from __future__ import annotations

import gzip
import hashlib
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlpipeline.errors import PipelineError
from mlpipeline.ingest import ingest_partition
from mlpipeline.volume import DataVolume, Limits
from tests.support import EXAMPLE_DATASET, tree_snapshot

from .corpus import ACCEPTED_FILES, BAD_FILES, CASES, FORMATS, GOOD, VARIANTS, encode, file_name
from .helpers import run_cli

PARTITION = "2026-11-01"


def land(volume, partition: str, files: dict[str, bytes]) -> None:
    folder = volume.landing(partition)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)


def ingest(volume, partition=PARTITION, check=True, *args, env=None):
    return run_cli("ingest", "--data-root", volume.root, "--partition", partition, "--dataset", EXAMPLE_DATASET,
                   *args, check=check, env=env)


def test_good_file_is_stored_as_content_addressed_parquet(volume, schema):
    land(volume, PARTITION, {"good.csv": GOOD.encode()})
    result = ingest(volume).json
    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    (stored,) = volume.curated_files(PARTITION)
    assert stored.name == hashlib.sha256(GOOD.encode()).hexdigest() + ".parquet"
    table = pq.read_table(stored)
    assert table.column_names == schema.columns and table.num_rows == 6
    assert table.schema.metadata[b"mlpipeline.source_name"] == b"good.csv"
    assert table.schema.metadata[b"mlpipeline.schema"] == schema.fingerprint().encode()
    assert [str(t) for t in table.schema.types] == ["double"] * 4 + ["string"]


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
        assert reason["file"] == f"landing/{volume.model_name}/{PARTITION}/{name}" and reason["rule"] == rule
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
    result = run_cli("ingest", "--data-root", volume.root, "--dataset", EXAMPLE_DATASET, *args, check=False)
    assert result.returncode == 1 and message in result.error_line


def _quarantined(volume, result) -> dict[str, dict]:
    """The run's quarantined files by name, each with the reason file it wrote."""
    found = {}
    for entry in result["quarantined"]:
        reason_file = volume.root / (entry["quarantined"] + ".reason.json")
        found[entry["file"]] = {**entry, "reason": json.loads(reason_file.read_text()),
                                "copy": volume.root / entry["quarantined"]}
    return found


def test_a_link_in_the_landing_area_is_quarantined_unread_and_the_good_file_ingested(volume, tmp_path):
    secret = "AWS_SECRET_ACCESS_KEY=not-for-the-quarantine"
    outside = tmp_path / "outside.csv"
    outside.write_text(GOOD)  # valid data, so following the link would have ingested it
    land(volume, PARTITION, {"good.csv": GOOD.encode()})
    folder = volume.landing(PARTITION)
    (folder / "environ.csv").symlink_to("/proc/self/environ")
    (folder / "outside.csv").symlink_to(outside)
    (folder / "sub").symlink_to(tmp_path, target_is_directory=True)  # a linked folder is not walked either
    result = ingest(volume, env={"AWS_SECRET_ACCESS_KEY": "not-for-the-quarantine"}).json

    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    refused = _quarantined(volume, result)
    assert set(refused) == {"environ.csv", "outside.csv", "sub"}
    for entry in refused.values():
        assert entry["rule"] == "not_a_file" and "symbolic link" in entry["message"]
        assert not entry["copy"].exists()
    assert "'/proc/self/environ'" in refused["environ.csv"]["message"]
    everything = "".join(p.read_text(errors="replace") for p in volume.root.rglob("*") if p.is_file()
                         and p.suffix != ".parquet")
    assert secret not in everything and "not-for-the-quarantine" not in everything


def test_a_link_swapped_in_after_the_walk_is_not_followed(volume, tmp_path):
    from mlpipeline.volume import read_no_follow

    land(volume, PARTITION, {"good.csv": GOOD.encode()})
    folder = volume.landing(PARTITION)
    (folder / "late").mkdir()
    (folder / "late" / "x.csv").symlink_to("/proc/self/environ")
    for path in (folder / "late" / "x.csv", ):
        with pytest.raises(OSError):
            read_no_follow(path, folder, 1 << 20)
    (folder / "real").mkdir()
    (folder / "real" / "x.csv").write_text(GOOD)
    (folder / "linked").symlink_to(folder / "real")  # a linked parent folder is refused too
    with pytest.raises(OSError):
        read_no_follow(folder / "linked" / "x.csv", folder, 1 << 20)
    assert read_no_follow(folder / "real" / "x.csv", folder, 1 << 20) == GOOD.encode()


def _header() -> str:
    return GOOD.splitlines()[0]


def test_files_beyond_the_limits_are_quarantined_each_and_the_good_file_ingested(volume):
    header, row = _header(), GOOD.splitlines()[1]
    cells = row.split(",")
    long_label = ",".join(cells[:-1] + ["x" * 200_000])
    wide_header = header + "," + ",".join(f"extra_{i}" for i in range(20_000))
    land(volume, PARTITION, {
        "good.csv": GOOD.encode(),
        "long-field.csv": f"{header}\n{row}\n{long_label}\n".encode(),
        "long-field-ragged.csv": f"{header}\n{row}\n{long_label},1\n".encode(),  # read by the csv module too
        "wide.csv": f"{wide_header}\n{row}\n".encode(),
        "long-name.csv": f"{header},{'y' * 200_000}\n{row},1\n".encode(),
    })
    with open(volume.landing(PARTITION) / "sparse.csv", "wb") as sparse:  # 2 GB that take no disk
        sparse.write(GOOD.encode())
        sparse.truncate(2 * 1024 ** 3)

    before = time.monotonic()
    result = ingest(volume).json
    took = time.monotonic() - before

    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    refused = _quarantined(volume, result)
    assert {name: entry["rule"] for name, entry in refused.items()} == {
        "long-field.csv": "field_too_long", "long-field-ragged.csv": "malformed_rows",
        "wide.csv": "too_many_columns", "long-name.csv": "field_too_long", "sparse.csv": "file_too_large"}
    assert "limit is 1073741824" in refused["sparse.csv"]["message"] and not refused["sparse.csv"]["copy"].exists()
    assert "20005 columns; the limit is 4096" in refused["wide.csv"]["message"]
    for entry in refused.values():  # no reason quotes the file at length
        assert len(json.dumps(entry["reason"])) < 4000, entry["file"]
    assert took < 60, f"ingest took {took:.0f} s"  # a generous bound: it read 2 GB or went quadratic if over


def test_a_file_no_rule_foresaw_is_quarantined_with_the_error_and_the_others_ingested(volume, schema, monkeypatch):
    from mlpipeline import ingest as ingest_module

    real = ingest_module.validate_batch

    def validate(data, *args):
        if b"boom" in data:
            raise RecursionError("x" * 10_000)
        return real(data, *args)

    monkeypatch.setattr(ingest_module, "validate_batch", validate)
    land(volume, PARTITION, {"good.csv": GOOD.encode(), "odd.csv": GOOD.encode() + b"boom\n"})
    result = ingest_module.ingest_partition(volume, PARTITION, schema)
    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    (odd,) = result["quarantined"]
    assert odd["file"] == "odd.csv" and odd["rule"] == "unreadable" and "RecursionError" in odd["message"]
    assert len(odd["message"]) < 600


def test_the_limits_are_ingest_options(volume):
    land(volume, PARTITION, {"good.csv": GOOD.encode(), "other.csv": GOOD.encode() + GOOD.splitlines()[1].encode()})
    result = ingest(volume, PARTITION, True, "--max-file-bytes", str(len(GOOD))).json
    assert [s["file"] for s in result["stored"]] == ["good.csv"]
    assert result["quarantined"][0]["rule"] == "file_too_large"


# ---- any dataset, any format ---------------------------------------------------------------------------------


def _bad_batches(case, fmt: str) -> dict[str, tuple[bytes, str]]:
    """A partition's worth of bad files of one dataset and format: name -> (bytes, expected rule)."""
    compression = "gzip" if fmt != "parquet" else None
    numeric = case.frame.assign(**{case.numeric: case.frame[case.numeric].where(case.frame.index != 5)})
    infinite = case.frame.assign(**{case.numeric: case.frame[case.numeric].where(case.frame.index != 6, np.inf)})
    label = case.frame[case.dataset().label].astype(object)
    missing_label = case.frame.assign(**{label.name: label.where(label.index != 2, None)})
    files = {
        file_name("missing", fmt, compression): (encode(numeric, fmt, compression), "non_finite"),
        file_name("infinite", fmt): (encode(infinite, fmt), "non_finite"),
        file_name("no-label", fmt): (encode(missing_label, fmt), "missing_values"),
        file_name("extra", fmt): (encode(case.frame.assign(comment="x"), fmt), "columns"),
        "landed.json": (encode(case.frame, fmt), "wrong_format"),
    }
    if case.unknown_class:
        unknown = case.frame.assign(**{label.name: label.where(label.index != 4, case.unknown_class)})
        files[file_name("unknown", fmt)] = (encode(unknown, fmt), "unknown_label")
    if fmt != "parquet":
        good = encode(case.frame, fmt, "gzip")
        files[file_name("truncated", fmt, "gzip")] = (good[:len(good) // 2], "bad_compression")
        files[file_name("bomb", fmt, "zstd")] = (pa.Codec("zstd").compress(b"{" * 30_000_000, asbytes=True),
                                                 "file_too_large")
    return files


@pytest.mark.parametrize("case_name", sorted(CASES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_any_dataset_in_any_format_is_stored_typed_and_bad_files_leave_curated_unchanged(tmp_path, case_name, fmt):
    case = CASES[case_name]
    dataset = case.dataset(fmt)
    volume = DataVolume(tmp_path / "volume", dataset.model_name)
    limits = Limits(max_file_bytes=20_000_000)
    good = {file_name(f"good-{c or 'plain'}", fmt, c): encode(case.frame, fmt, c)
            for f, c in VARIANTS if f == fmt}
    land(volume, PARTITION, good)
    first = ingest_partition(volume, PARTITION, dataset, limits)
    assert sorted(s["file"] for s in first["stored"]) == sorted(good) and not first["quarantined"]
    assert first["curated_rows"] == len(good) * len(case.frame)
    for path in volume.curated_files(PARTITION):
        table = pq.read_table(path)
        assert table.column_names == dataset.columns
        assert [str(t) for t in table.schema.types] == ["double" if f.numeric else "string"
                                                        for f in dataset.features] + ["string"]
        assert table.schema.metadata[b"mlpipeline.schema"] == dataset.fingerprint().encode()
        frame = table.to_pandas()
        assert frame[dataset.label].tolist() == case.frame[dataset.label].astype(str).tolist()
        for feature in dataset.features:
            assert frame[feature.name].isna().sum() == case.frame[feature.name].isna().sum()
    curated_before = tree_snapshot(volume.root / "curated")

    bad = _bad_batches(case, fmt)
    land(volume, PARTITION, {name: content for name, (content, _) in bad.items()})
    second = ingest_partition(volume, PARTITION, dataset, limits)

    assert tree_snapshot(volume.root / "curated") == curated_before
    assert second["stored"] == [] and len(second["already_curated"]) == len(good)
    by_file = {q["file"]: q for q in second["quarantined"]}
    assert {name: q["rule"] for name, q in by_file.items()} == {name: rule for name, (_, rule) in bad.items()}
    assert fmt in by_file["landed.json"]["message"]
    for name, entry in by_file.items():
        copy = volume.root / entry["quarantined"]
        assert copy.read_bytes() == bad[name][0]  # the landed bytes, compressed as they came
        reason = json.loads(copy.with_name(copy.name + ".reason.json").read_text())
        assert reason["file"] == f"landing/{dataset.model_name}/{PARTITION}/{name}"


def test_the_curated_file_is_the_same_whatever_format_the_batch_landed_in(tmp_path):
    case = CASES["tumours"]
    tables = []
    for fmt, compression in VARIANTS:
        dataset = case.dataset(fmt)
        volume = DataVolume(tmp_path / f"{fmt}-{compression}", dataset.model_name)
        land(volume, PARTITION, {file_name("batch", fmt, compression): encode(case.frame, fmt, compression)})
        ingest_partition(volume, PARTITION, dataset)
        (path,) = volume.curated_files(PARTITION)
        tables.append(pq.read_table(path).replace_schema_metadata(None))
    assert all(t.equals(tables[0]) for t in tables[1:]), [t.schema for t in tables]


def test_a_volume_of_another_model_is_refused(tmp_path):
    dataset = CASES["wine"].dataset()
    with pytest.raises(PipelineError, match="opened for model 'breast-cancer'"):
        ingest_partition(DataVolume(tmp_path, "breast-cancer"), PARTITION, dataset)


def test_the_cli_ingests_another_dataset_file(tmp_path):
    case = CASES["breast_cancer"]
    dataset = case.dataset("jsonl")
    (tmp_path / "breast_cancer.yaml").write_text(json.dumps({**case.document, "source": {"format": "jsonl"}}))
    volume = DataVolume(tmp_path / "volume", dataset.model_name)
    land(volume, PARTITION, {"a.jsonl.gz": gzip.compress(encode(case.frame, "jsonl"))})
    result = run_cli("ingest", "--data-root", volume.root, "--partition", PARTITION, "--dataset",
                     tmp_path / "breast_cancer.yaml").json
    assert result["curated_rows"] == len(case.frame) and result["stored"][0]["file"] == "a.jsonl.gz"
    assert hashlib.sha256(gzip.compress(b"")).hexdigest() not in result["stored"][0]["curated"]
