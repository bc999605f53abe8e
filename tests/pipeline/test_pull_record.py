"""What a pull fetched, as lineage (mlpipeline.pull_record): `split --pull` checks the pull_batch result before it
writes anything and keeps it in the manifest; train and register turn it into `pull.*` tags."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from mlpipeline import dataset, pull_record
from mlpipeline.errors import PipelineError
from mlpipeline.register import _lineage_tags
from tests.support import EXAMPLE_DATASET, tree_snapshot

from .helpers import run_cli

DAY = "2026-11-01"
QUERY = "SELECT * FROM iris WHERE day = %(partition)s ORDER BY id"
SHA = hashlib.sha256(b"rows").hexdigest()
SQL = {"kind": "sql", "conn_id": "warehouse", "query": QUERY}
HTTP = {"kind": "http", "conn_id": "data_server", "endpoint": "/batches/{partition}.csv", "format": "csv"}


def source_dataset(source: dict) -> dataset.Dataset:
    document = {**yaml.safe_load(EXAMPLE_DATASET.read_text()), "source": source}
    return dataset.parse_text(yaml.safe_dump(document), "iris.yaml", "iris")


def result(**changes) -> dict:
    """pull_batch's result for a sql pull of DAY, as the DAG hands it on."""
    record = {"partition": DAY, "folder": f"/data/landing/iris-classifier/{DAY}", "file": f"pull-{SHA[:16]}.jsonl",
              "new": True, "rows": 900, "bytes": 45_678, "sha256": SHA, "kind": "sql", "conn_id": "warehouse",
              "query": QUERY}
    return {k: v for k, v in {**record, **changes}.items() if v is not ...}


def http_result(**changes) -> dict:
    return result(**{"kind": "http", "conn_id": "data_server", "rows": None, "query": ...,
                     "endpoint": f"/batches/{DAY}.csv", "file": f"pull-{SHA[:16]}.csv", **changes})


def test_a_sql_pull_s_record_and_its_tags():
    record = pull_record.parse(json.dumps(result()), source_dataset(SQL).source, DAY)
    assert record == {"kind": "sql", "conn_id": "warehouse", "partition": DAY, "file": f"pull-{SHA[:16]}.jsonl",
                      "sha256": SHA, "bytes": 45_678, "rows": 900, "query": QUERY}  # not the worker's folder
    assert pull_record.tags(record) == {
        "pull.kind": "sql", "pull.conn_id": "warehouse", "pull.file": f"pull-{SHA[:16]}.jsonl", "pull.sha256": SHA,
        "pull.bytes": "45678", "pull.rows": "900", "pull.query": QUERY}


def test_an_http_pull_s_tags_name_the_endpoint_and_no_rows():
    record = pull_record.parse(json.dumps(http_result()), source_dataset(HTTP).source, DAY)
    assert pull_record.tags(record) == {
        "pull.kind": "http", "pull.conn_id": "data_server", "pull.file": f"pull-{SHA[:16]}.csv", "pull.sha256": SHA,
        "pull.bytes": "45678", "pull.endpoint": f"/batches/{DAY}.csv"}


def test_no_pull_no_tags():
    assert pull_record.tags(None) == {}


def test_a_long_query_is_cut_in_its_tag_and_says_so():
    query = "SELECT * FROM iris WHERE day = %(partition)s AND id IN (" + ",".join(map(str, range(5000))) + ")"
    record = pull_record.parse(json.dumps(result(query=query)), source_dataset({**SQL, "query": query}).source, DAY)
    assert record["query"] == query  # the record keeps it whole
    tag = pull_record.tags(record)["pull.query"]
    assert len(tag) <= pull_record.MAX_TAG_TEXT and query.startswith(tag.split(" ... [truncated")[0])
    assert tag.endswith(f"[truncated: {len(query)} characters, the first {len(tag.split(' ... [')[0])} shown]")


def test_the_version_s_lineage_tags_carry_the_pull_and_a_landed_partition_s_do_not():
    from mlpipeline.contracts import TrainingDecision

    decision = TrainingDecision(run_key="rk-1", decision="promote", reason="no champion", challenger_run_id="r",
                                challenger_model_uri="models:/m-1", challenger_accuracy=0.9,
                                challenger_metrics={"accuracy": 0.9, "macro_f1": 0.9})
    manifest = {"data_fingerprint": "f", "partition": DAY, "window": "all", "config_hash": "c",
                "code_version": "1", "dataset_fingerprint": "d"}
    landed = _lineage_tags("rk-1", manifest, decision, {})
    assert not [k for k in landed if k.startswith("pull.")]
    pulled = _lineage_tags("rk-1", {**manifest, "pull": pull_record.checked(result())}, decision, {})
    assert pulled == {**landed, **pull_record.tags(pull_record.checked(result()))}
    with pytest.raises(PipelineError, match=r"the run's pull record \(manifest.json\): sha256 must be"):
        _lineage_tags("rk-1", {**manifest, "pull": {**pull_record.checked(result()), "sha256": "x"}}, decision, {})


@pytest.mark.parametrize("text, source, message", [
    ("{not json", SQL, "is not JSON"),
    ("[1, 2]", SQL, "must be a JSON object (the pull_batch task's result), got list"),
    (json.dumps(result(extra="x")), SQL, "has keys a pull result does not have: ['extra']"),
    (json.dumps(result(kind="ftp")), SQL, "kind must be one of sql, http, got 'ftp'"),
    (json.dumps(result(sha256=...)), SQL, "a sql pull's record needs sha256"),
    (json.dumps(result(rows=None)), SQL, "a sql pull's record needs rows"),
    (json.dumps(result(sha256="A" * 64)), SQL, "sha256 must be 64 lower-case hex digits"),
    (json.dumps(result(file="pull-0000000000000000.jsonl")), SQL, "file must be pull-<the sha256's first 16"),
    (json.dumps(result(file="../../etc/passwd")), SQL, "file must be pull-"),
    (json.dumps(result(rows=True)), SQL, "rows must be a positive whole number, got True"),
    (json.dumps(result(bytes=0)), SQL, "bytes must be a positive whole number, got 0"),
    (json.dumps(result(bytes="12")), SQL, "bytes must be a positive whole number, got '12'"),
    (json.dumps(result(partition="2026-02-30")), SQL, "partition must be a date YYYY-MM-DD"),
    (json.dumps(result(partition="2026-11-02")), SQL, "is of partition 2026-11-02, not 2026-11-01"),
    (json.dumps(result(conn_id="other")), SQL, "is of a sql pull from 'other'; the dataset file's source is sql "
                                               "from 'warehouse'"),
    (json.dumps(result(conn_id="a b")), SQL, "conn_id must be 1-250 letters"),
    (json.dumps(result(query="SELECT 1")), SQL, "its query is not the dataset file's source.query"),
    (json.dumps(result(endpoint="/x")), SQL, "a sql pull has no endpoint"),
    (json.dumps(result()), HTTP, "is of a sql pull from 'warehouse'; the dataset file's source is http"),
    (json.dumps(result()), {"format": "csv"}, "the dataset file's source.kind is files: nothing is pulled"),
    (json.dumps(http_result(rows=3)), HTTP, "a http pull has no rows"),
    (json.dumps(http_result(endpoint="/batches/2026-11-02.csv")), HTTP, "its endpoint '/batches/2026-11-02.csv' is "
                                                                       "not the dataset file's source.endpoint"),
    (json.dumps(http_result(file=f"pull-{SHA[:16]}.jsonl")), HTTP, "is not of the dataset file's format csv"),
    (json.dumps(result(query="x" * (pull_record.MAX_TEXT + 1))), SQL,
     f"query is {pull_record.MAX_TEXT + 1} characters; the limit is {pull_record.MAX_TEXT}"),
    (" " * (pull_record.MAX_RECORD_CHARS + 1), SQL,
     f"is {pull_record.MAX_RECORD_CHARS + 1} characters; the limit is {pull_record.MAX_RECORD_CHARS}"),
    ("[" * 100_000, SQL, "is not JSON"),
])
def test_a_bad_record_is_refused_with_what_is_wrong(text, source, message):
    with pytest.raises(PipelineError) as refused:
        pull_record.parse(text, source_dataset(source).source, DAY)
    assert message in str(refused.value) and str(refused.value).startswith("--pull (the pull_batch task's result)")


# -- through the CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def sql_dataset(tmp_path, volume):
    """The example as a sql-source dataset file, its partition DAY landed (as the pull lands it) and ingested."""
    path = tmp_path / "iris.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(EXAMPLE_DATASET.read_text()), "source": SQL}))
    root = volume.root
    run_cli("simulate", "--data-root", root, "--partition", DAY, "--rows", 300, "--seed", 1, "--dataset", path)
    run_cli("ingest", "--data-root", root, "--partition", DAY, "--dataset", path)
    return path


def test_split_keeps_the_pull_in_the_manifest(volume, sql_dataset):
    split = run_cli("split", "--data-root", volume.root, "--partition", DAY, "--dataset", sql_dataset,
                    "--pull", json.dumps(result())).json
    manifest = json.loads((volume.run_dir(split["run_key"]) / "manifest.json").read_text())
    assert manifest["pull"] == split["pull"] == pull_record.checked(result())
    # Split again with another pull of the same data: the run's manifest is not rewritten.
    before = tree_snapshot(volume.root / "runs")
    other = result(sha256="f" * 64, file=f"pull-{'f' * 16}.jsonl")
    again = run_cli("split", "--data-root", volume.root, "--partition", DAY, "--dataset", sql_dataset,
                    "--pull", json.dumps(other))
    assert again.json["reused"] and again.json["pull"] == manifest["pull"] and "keeps the pull record" in again.stderr
    assert tree_snapshot(volume.root / "runs") == before


@pytest.mark.parametrize("pull, message", [
    (json.dumps(result(partition="2026-11-02")), "is of partition 2026-11-02, not 2026-11-01"),
    (json.dumps(result(bytes=-1)), "bytes must be a positive whole number"),
    (json.dumps(result(folder=["x"] * 25_000)), "characters; the limit is 122880"),  # < 128 KiB: one argument
])
def test_a_bad_or_oversized_pull_fails_split_with_one_line_and_writes_nothing(volume, sql_dataset, pull, message):
    before = tree_snapshot(volume.root)
    failed = run_cli("split", "--data-root", volume.root, "--partition", DAY, "--dataset", sql_dataset,
                     "--pull", pull, check=False)
    assert failed.returncode == 1 and message in failed.error_line
    assert failed.error_line.startswith("mlpipeline split: error: --pull (the pull_batch task's result)")
    assert tree_snapshot(volume.root) == before and not (volume.root / "runs").exists()
