"""Atomic publishing on the data volume: readers never see a half-written file."""

from __future__ import annotations

import pytest

from mlpipeline.volume import write_atomic, write_bytes_atomic


def test_a_writer_that_fails_midway_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "curated" / "x.parquet"

    def half_write(tmp):
        tmp.write_bytes(b"PAR1 half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_write)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_no_clobber_publish_keeps_the_existing_file(tmp_path):
    target = tmp_path / "a.bin"
    assert write_bytes_atomic(target, b"first", overwrite=False)
    assert not write_bytes_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_overwrite_replaces_whole(tmp_path):
    target = tmp_path / "m.json"
    write_bytes_atomic(target, b"old")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
