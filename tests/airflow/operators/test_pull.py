"""PullBatchOperator against a real PostgreSQL (a throwaway cluster of Debian's server) and a real HTTP
server: what lands in landing/<model>/<partition>/, what ingest makes of it, and that a failed pull writes
nothing."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from tests import support
from tests.airflow.conftest import PIPELINE_BIN, connect, data_volume
from tests.airflow.dag_test import dataset_text

MODEL = "pull-test"
QUERY = ("SELECT id, observed_on, region, amount, species FROM batches WHERE observed_on = %(partition)s::date "
         "ORDER BY id")
DATASET = {
    "model_name": MODEL,
    "label": {"column": "species", "task": "classification", "classes": ["a", "b"]},
    "features": [{"name": "region", "type": "categorical"},
                 {"name": "amount", "type": "numeric", "nullable": True, "min": 0, "max": 1000}],
    "drop_columns": ["id", "observed_on"],
    "source": {"kind": "sql", "conn_id": "warehouse", "query": QUERY},
}
ROWS = [  # (id, day, region, amount, species): two partitions, a NULL, a numeric(10,2)
    (1, "2026-11-01", "north", "12.50", "a"),
    (2, "2026-11-01", "south", None, "b"),
    (3, "2026-11-01", "north", "7.25", "b"),
    (4, "2026-11-02", "east", "3.00", "a"),
]


def psql(port: int, sql: str) -> None:
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    subprocess.run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v",
                    "ON_ERROR_STOP=1", "-q", "-c", sql, "postgres"], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> int:
    """A PostgreSQL with a table `batches` holding rows for two partitions; its port."""
    with support.postgres_server(tmp_path_factory.mktemp("warehouse")) as port:
        values = ", ".join(f"({i}, '{d}', '{r}', {a if a else 'NULL'}, '{s}')" for i, d, r, a, s in ROWS)
        psql(port, "CREATE TABLE batches (id integer PRIMARY KEY, observed_on date NOT NULL, region text, "
                   f"amount numeric(10, 2), species text); INSERT INTO batches VALUES {values}")
        yield port


@pytest.fixture
def volume(tmp_path, monkeypatch, warehouse) -> Path:
    root = tmp_path / "volume"
    root.mkdir()
    connect(monkeypatch, mlops_data=data_volume(root), warehouse=json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": warehouse, "login": "postgres",
         "schema": "postgres"}))
    return root


def pull(partition: str, **kwargs):
    from mlops.operators.pull import PullBatchOperator

    args = {"kind": "sql", "conn_id": "warehouse", "query": QUERY, **kwargs}
    return PullBatchOperator(task_id="pull_batch", model_name=MODEL, partition=partition, **args).execute({})


def landed(root: Path, partition: str) -> list[str]:
    folder = root / "landing" / MODEL / partition
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_sql_pull_lands_the_partition_as_json_lines_that_ingest_accepts(volume, tmp_path):
    result = pull("2026-11-01")

    folder = volume / "landing" / MODEL / "2026-11-01"
    assert landed(volume, "2026-11-01") == ["_SUCCESS", result["file"]]
    assert result["file"] == f"pull-{result['sha256'][:16]}.jsonl" and result["rows"] == 3 and result["new"]
    data = (folder / result["file"]).read_bytes()
    assert result["bytes"] == len(data)
    assert [json.loads(line) for line in data.splitlines()] == [
        {"id": 1, "observed_on": "2026-11-01", "region": "north", "amount": 12.5, "species": "a"},
        {"id": 2, "observed_on": "2026-11-01", "region": "south", "amount": None, "species": "b"},
        {"id": 3, "observed_on": "2026-11-01", "region": "north", "amount": 7.25, "species": "b"},
    ]  # only this partition's rows; Decimal as a number, the date as ISO text, NULL as null
    assert result["query"] == QUERY and result["conn_id"] == "warehouse"
    assert not landed(volume, "2026-11-02")

    dataset = tmp_path / "pull-test.yaml"
    dataset.write_text(dataset_text(**DATASET))
    done = subprocess.run([str(PIPELINE_BIN / "mlpipeline"), "ingest", "--data-root", str(volume), "--dataset",
                           str(dataset), "--partition", "2026-11-01"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    curated = list((volume / "curated" / MODEL / "2026-11-01").glob("*.parquet"))
    assert len(curated) == 1, done.stdout + done.stderr
    read = ("import json, sys, pyarrow.parquet as pq; "  # pyarrow is the pipeline's, not Airflow's
            "print(json.dumps(pq.read_table(sys.argv[1]).to_pydict()))")
    table = json.loads(subprocess.run([str(PIPELINE_BIN / "python"), "-c", read, str(curated[0])], check=True,
                                      capture_output=True, text=True, timeout=120).stdout)
    assert table["region"] == ["north", "south", "north"] and table["species"] == ["a", "b", "b"]
    assert table["amount"][0] == 12.5 and table["amount"][1] is None and table["amount"][2] == 7.25


def test_pulling_again_finds_the_same_file(volume):
    first = pull("2026-11-01")
    before = support.tree_snapshot(volume)
    again = pull("2026-11-01")

    assert again["file"] == first["file"] and again["sha256"] == first["sha256"] and not again["new"]
    assert support.tree_snapshot(volume) == before  # one file, the same bytes, no temporary left


def test_changed_rows_add_their_own_file(volume, warehouse):
    first = pull("2026-11-02")
    psql(warehouse, "INSERT INTO batches VALUES (5, '2026-11-02', 'west', 1.5, 'b')")
    try:
        again = pull("2026-11-02")
    finally:
        psql(warehouse, "DELETE FROM batches WHERE id = 5")
    assert again["new"] and again["rows"] == 2
    assert landed(volume, "2026-11-02") == sorted([first["file"], again["file"], "_SUCCESS"])


def test_an_empty_partition_fails_and_writes_nothing(volume):
    from mlops.operators.pull import PullError

    with pytest.raises(PullError, match="partition 2026-11-09: the query returned nothing"):
        pull("2026-11-09")
    assert list(volume.iterdir()) == []  # not even a folder


def test_a_query_error_fails_with_the_database_message(volume):
    from mlops.operators.pull import PullError

    with pytest.raises(PullError, match='relation "no_such_table" does not exist'):
        pull("2026-11-01", query="SELECT * FROM no_such_table WHERE day = %(partition)s")
    assert list(volume.iterdir()) == []  # not even a folder


def test_over_the_size_limit_is_refused(volume):
    from mlops.operators.pull import TooLarge

    with pytest.raises(TooLarge, match="more than 100 bytes"):
        pull("2026-11-01", max_bytes=100)
    assert list(volume.iterdir()) == []  # not even a folder


def test_latest_is_refused(volume):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="a pull needs the date"):
        pull("latest")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def pull_tags(tags: list[dict]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in tags if t["key"].startswith("pull.")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_what_a_sql_pull_fetched_is_tagged_on_the_training_run_and_the_version(volume, warehouse, mlflow_uri):
    """The stages after the pull as the DAG runs them on the local target (split given pull_batch's result as
    --pull), against a real MLflow server: the training run and the registered version carry the pull."""
    import httpx

    from mlops.hooks.stage import StageHook

    day, regions = "2026-11-05", ("north", "south", "east", "west")  # the label follows amount: learnable
    amounts = {i: i * 37 % 1000 for i in range(100, 400)}
    psql(warehouse, "INSERT INTO batches VALUES " + ", ".join(
        f"({i}, '{day}', '{regions[i % 4]}', {a}, '{'a' if a < 500 else 'b'}')" for i, a in amounts.items()))
    try:
        pulled = pull(day)
    finally:
        psql(warehouse, f"DELETE FROM batches WHERE observed_on = '{day}'")
    stages = StageHook(PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": mlflow_uri})
    given = {"data_root": volume, "dataset_content": dataset_text(**DATASET), "dataset_name": MODEL, "partition": day}
    stages.run("ingest", given, on_line=lambda _: None)
    split = stages.run("split", {**given, "pull": pulled}, on_line=lambda _: None)
    lineage = {"data_root": volume, "run_key": split["run_key"], "model_name": MODEL,
               "dag_id": "continuous_training_warehouse", "dag_run_id": "manual__pull"}
    stages.run("train-local", lineage, on_line=lambda _: None)
    registered = stages.run("register", lineage, on_line=lambda _: None)

    expected = {"pull.kind": "sql", "pull.conn_id": "warehouse", "pull.query": QUERY, "pull.rows": "300",
                "pull.bytes": str(pulled["bytes"]), "pull.sha256": pulled["sha256"], "pull.file": pulled["file"]}
    version = httpx.get(f"{mlflow_uri}/api/2.0/mlflow/model-versions/get",
                        params={"name": MODEL, "version": registered["version"]}).json()["model_version"]
    assert pull_tags(version["tags"]) == expected
    run = httpx.get(f"{mlflow_uri}/api/2.0/mlflow/runs/get", params={"run_id": version["run_id"]}).json()["run"]
    assert pull_tags(run["data"]["tags"]) == expected
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["airflow_run_id"] == "manual__pull"


# -- http ------------------------------------------------------------------------------------------------

BATCH = b'{"region":"north","amount":1.5,"species":"a"}\n{"region":"south","amount":null,"species":"b"}\n'


@pytest.fixture
def data_server(tmp_path, monkeypatch):
    """An HTTP server answering /batches/2026-11-01 with a JSONL batch, /big/... and /unsized/... (no
    Content-Length) with a large one, else 404."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/batches/2026-11-01":
                status, body = 200, BATCH
            elif self.path.startswith("/big/"):
                status, body = 200, BATCH * 1000
            elif self.path.startswith("/unsized/"):  # no Content-Length: the body ends when the connection does
                self.send_response(200)
                self.end_headers()
                self.wfile.write(BATCH * 1000)
                return
            else:
                status, body = 404, b"no batch for " + self.path.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tmp_path / "volume"
    root.mkdir()
    connect(monkeypatch, mlops_data=data_volume(root), data_server=json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": server.server_port, "schema": "http"}))
    yield root
    server.shutdown()


def http_pull(partition: str, endpoint: str = "/batches/{partition}", **kwargs):
    from mlops.operators.pull import PullBatchOperator

    return PullBatchOperator(task_id="pull_batch", model_name=MODEL, kind="http", conn_id="data_server",
                             endpoint=endpoint, format="jsonl", partition=partition, **kwargs).execute({})


def test_http_pull_writes_the_body_as_is(data_server):
    result = http_pull("2026-11-01")

    folder = data_server / "landing" / MODEL / "2026-11-01"
    assert (folder / result["file"]).read_bytes() == BATCH and (folder / "_SUCCESS").is_file()
    assert result["endpoint"] == "/batches/2026-11-01" and result["bytes"] == len(BATCH) and result["rows"] is None
    again = http_pull("2026-11-01")
    assert again["file"] == result["file"] and not again["new"] and len(list(folder.iterdir())) == 2


def test_http_error_fails_with_the_status(data_server):
    from mlops.operators.pull import PullError

    with pytest.raises(PullError, match="answered 404 Not Found: no batch for /batches/2026-11-02"):
        http_pull("2026-11-02")
    assert list(data_server.iterdir()) == []


def test_http_answer_over_the_limit_is_refused(data_server):
    from mlops.operators.pull import TooLarge

    with pytest.raises(TooLarge, match="more than 1000"):
        http_pull("2026-11-01", endpoint="/big/{partition}", max_bytes=1000)
    assert list(data_server.iterdir()) == []


def test_http_answer_without_a_length_is_counted_as_it_comes(data_server):
    from mlops.operators.pull import TooLarge

    with pytest.raises(TooLarge, match="more than 1000"):
        http_pull("2026-11-01", endpoint="/unsized/{partition}", max_bytes=1000)
    assert list(data_server.iterdir()) == []
    assert http_pull("2026-11-01", endpoint="/unsized/{partition}")["bytes"] == len(BATCH) * 1000
