"""Each numeric feature's histogram edges come with its model (extra_files/feature_buckets.json, written by the
training stage from the training data): the server counts every feature on its own edges and exports them as
its `le` labels; a file that fails its checks is refused (logged) and the global edges count; --feature-buckets
overrides both. The model is the wine test dataset's (features on scales from 0.1 to over a thousand)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.model_format import FEATURE_BUCKETS_FILE, MAX_FEATURE_BUCKETS_BYTES, MAX_FEATURE_EDGES
from mlserving.loader import load_model_dir
from mlserving.metrics import DEFAULT_BUCKETS, TrafficMetrics, le_label
from tests import datasets

from .conftest import MODEL, REPOSITORY_TOKEN, LiveServer, point

WINE = datasets.load("wine")
FEATURES = tuple(WINE.feature_names)


def wine_rows(scale: dict[str, float] | None = None) -> np.ndarray:
    """The bundled wine data's feature rows (178), a feature scaled where `scale` says."""
    frame = datasets.reference_frame("wine")
    for name, factor in (scale or {}).items():
        frame[name] = frame[name] * factor
    return frame[list(FEATURES)].to_numpy(dtype=np.float64)


def file_edges(folder) -> dict[str, list[float]]:
    return json.loads((folder / FEATURE_BUCKETS_FILE).read_text())


def expected_buckets(edges, values: np.ndarray) -> list[float]:
    """Cumulative le-bucket counts as Prometheus defines them (value <= le), by numpy."""
    per_bin = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)
    return np.cumsum(per_bin).astype(float).tolist()


def exported(text: str, version: str | None = None) -> dict[str, dict[str, float]]:
    """{feature: {le: cumulative count}} of mlserving_feature_value in a /metrics text: the series of
    `version`, or (None) of the one version they must all carry."""
    out: dict[str, dict[str, float]] = {}
    versions = set()
    for family in text_string_to_metric_families(text):
        if family.name == "mlserving_feature_value":
            for sample in family.samples:
                if sample.name == "mlserving_feature_value_bucket" and version in (None, sample.labels["version"]):
                    versions.add(sample.labels["version"])
                    out.setdefault(sample.labels["feature"], {})[sample.labels["le"]] = sample.value
    assert len(versions) <= 1, f"series of versions {versions}"
    return out


def send(url: str, rows: np.ndarray, per_request: int = 50) -> None:
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(rows), per_request):
            chunk = rows[start:start + per_request]
            body = {"inputs": [{"name": name, "shape": [len(chunk)], "datatype": "FP64", "data": chunk[:, j].tolist()}
                               for j, name in enumerate(FEATURES)]}
            answer = client.post(f"{url}/v2/models/{MODEL}/infer", json=body)
            assert answer.status_code == 200, answer.text


def test_the_wine_model_carries_edges_per_feature_from_its_training_data(model_dirs):
    edges = file_edges(model_dirs / "wine")
    assert list(edges) == list(FEATURES)
    loaded = load_model_dir(model_dirs / "wine")
    assert loaded.feature_buckets == {name: tuple(values) for name, values in edges.items()}
    values = datasets.reference_frame("wine")["proline"].to_numpy()
    assert len(edges["proline"]) == 20 and 300 < edges["proline"][0] and edges["proline"][-1] < 1700
    shares = np.bincount(np.searchsorted(edges["proline"], values, side="left")) / len(values)
    assert shares.max() < 0.1  # about a 21st each, where the global 0.1-30 edges put every value in +Inf


def test_the_server_counts_each_feature_on_its_own_edges(model_dirs, tmp_path):
    server = LiveServer(model_dirs / "wine", tmp_path / "server.log")
    try:
        rows = np.vstack([wine_rows(), wine_rows({"proline": 1.5, "magnesium": 0.5})])
        rows[::7, 4] = np.asarray(file_edges(model_dirs / "wine")["magnesium"])[0]  # values on an edge
        send(server.url, rows)
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    buckets, edges = exported(text), file_edges(model_dirs / "wine")
    assert set(buckets) == set(FEATURES)
    for j, name in enumerate(FEATURES):
        labels = [le_label(e) for e in edges[name]] + ["+Inf"]
        assert list(buckets[name]) == labels, name
        assert [float(le) for le in labels[:-1]] == edges[name]  # a label reads back as the very edge
        assert list(buckets[name].values()) == expected_buckets(edges[name], rows[:, j]), name


DEPLOYER = {"Authorization": f"Bearer {REPOSITORY_TOKEN}"}


def retrained(model_dirs, tmp_path, version: str, scale: dict[str, float]) -> Path:
    """The wine model as a later version: its edges those of its training data with features scaled."""
    folder = shutil.copytree(model_dirs / "wine", tmp_path / f"wine-{version}")
    edges = {name: [e * scale.get(name, 1.0) for e in values] for name, values in file_edges(folder).items()}
    (folder / FEATURE_BUCKETS_FILE).write_text(json.dumps(edges))
    (folder / "registry.json").write_text(json.dumps({"name": "wine", "version": version, "run_id": f"run-{version}",
                                                      "model_uri": f"models:/wine/{version}"}))
    return folder


def test_a_swap_to_a_version_with_other_edges_exports_its_own_series_from_zero(model_dirs, tmp_path):
    """Each version's histograms carry its `version` label and its edges: after a swap, the new version's
    series count from zero on its own edges and the old version's are no longer exported, so no query sums
    the buckets of two sets of edges. What the old version counted was exported under its label until then."""
    v2 = retrained(model_dirs, tmp_path, "w2", {"proline": 1.5, "magnesium": 0.5})
    link = tmp_path / "current"
    point(link, model_dirs / "wine")
    server = LiveServer(link, tmp_path / "server.log")
    try:
        before, after = wine_rows(), wine_rows({"proline": 1.5})
        send(server.url, before)
        scraped_v1 = httpx.get(f"{server.url}/metrics").text
        point(link, v2)
        loaded = httpx.post(f"{server.url}/v2/repository/models/{MODEL}/load", timeout=120, headers=DEPLOYER)
        assert loaded.status_code == 200, loaded.text
        scraped_at_swap = httpx.get(f"{server.url}/metrics").text
        send(server.url, after)
        scraped_v2 = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    edges_v1, edges_v2 = file_edges(model_dirs / "wine"), file_edges(v2)
    assert edges_v1["proline"] != edges_v2["proline"] and edges_v1["hue"] == edges_v2["hue"]
    v1 = exported(scraped_v1, "w1")
    assert set(v1) == set(FEATURES)
    for j, name in enumerate(FEATURES):  # v1's traffic, under version="w1", on v1's edges
        assert list(v1[name]) == [le_label(e) for e in edges_v1[name]] + ["+Inf"], name
        assert list(v1[name].values()) == expected_buckets(edges_v1[name], before[:, j]), name
    for text, rows in ((scraped_at_swap, after[:0]), (scraped_v2, after)):
        assert exported(text, "w1") == {}  # v1's series: no longer exported
        v2_series = exported(text, "w2")
        assert set(v2_series) == set(FEATURES)
        for j, name in enumerate(FEATURES):  # from zero, v2's traffic only, on v2's edges
            assert list(v2_series[name]) == [le_label(e) for e in edges_v2[name]] + ["+Inf"], name
            assert list(v2_series[name].values()) == expected_buckets(edges_v2[name], rows[:, j]), name
    # the same feature set, the predicted classes by the version that answered them, across the swap
    assert sum(s.value for f in text_string_to_metric_families(scraped_v2) if f.name == "mlserving_predicted_class"
               for s in f.samples if s.labels["version"] == "w1" and s.name.endswith("_total")) == len(before)


def test_feature_buckets_override_the_models_own_edges(model_dirs, tmp_path):
    server = LiveServer(model_dirs / "wine", tmp_path / "server.log", "--feature-buckets", "1,10,100.5")
    try:
        rows = wine_rows()
        send(server.url, rows)
        buckets = exported(httpx.get(f"{server.url}/metrics").text)
    finally:
        server.stop()
    for j, name in enumerate(FEATURES):
        assert list(buckets[name]) == ["1", "10", "100.5", "+Inf"]
        assert list(buckets[name].values()) == expected_buckets([1, 10, 100.5], rows[:, j])


@pytest.mark.parametrize("flag", ["1,x", "2,1", "1,1", "1,inf", ",".join(map(str, range(MAX_FEATURE_EDGES + 1)))])
def test_feature_buckets_that_are_not_increasing_numbers_stop_the_server(model_dirs, flag):
    done = subprocess.run([str(Path(sys.executable).parent / "mlserving"), "--model-dir", str(model_dirs / "wine"),
                           "--model-name", MODEL, "--http-port", "1", "--feature-buckets", flag],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "argument --feature-buckets" in done.stderr, done.stderr


def test_a_model_without_the_file_keeps_the_global_edges(model_dirs, caplog):
    caplog.set_level(logging.INFO, logger="mlserving.loader")
    assert load_model_dir(model_dirs / "good-v1").feature_buckets is None
    assert f"no {FEATURE_BUCKETS_FILE} (a model logged before per-feature edges)" in caplog.text


def _rewrite(change):
    def apply(path):
        edges = json.loads(path.read_text())
        change(edges)
        path.write_text(json.dumps(edges))
    return apply


def _symlink_file(path):
    elsewhere = path.parent.parent.parent / "elsewhere.json"
    elsewhere.write_text(path.read_text())  # valid edges, but reached through a link
    path.unlink()
    path.symlink_to(elsewhere)


def _symlink_folder(path):
    elsewhere = path.parent.parent.parent / "elsewhere"
    shutil.move(path.parent, elsewhere)
    path.parent.symlink_to(elsewhere)


REFUSED = {
    "not JSON": (lambda p: p.write_text("{'proline': [1, 2]"), "not valid JSON"),
    "a list": (lambda p: p.write_text("[1, 2]"), "a JSON object {feature: [edges]} was expected, got list"),
    "too large": (lambda p: p.write_text(" " * MAX_FEATURE_BUCKETS_BYTES + "{}"),
                  f"more than {MAX_FEATURE_BUCKETS_BYTES}"),
    "a linked file": (_symlink_file, "it or its folder is a link (links are not followed)"),
    "a linked folder": (_symlink_folder, "it or its folder is a link (links are not followed)"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "not a regular file"),
    "a fifo": (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    "a feature missing": (_rewrite(lambda e: e.pop("proline")), "missing: ['proline'], not numeric features: []"),
    "a feature too many": (_rewrite(lambda e: e.update(colour=[1.0])),
                           "missing: [], not numeric features: ['colour']"),
    "NaN": (lambda p: p.write_text(p.read_text().replace("1310.0", "NaN")), "NaN is not a number JSON allows"),
    "a huge number": (_rewrite(lambda e: e["proline"].__setitem__(-1, 1e400)), "Infinity is not a number"),
    "text": (_rewrite(lambda e: e["proline"].__setitem__(0, "352")), "the edges of 'proline' must be finite numbers"),
    "true": (_rewrite(lambda e: e["proline"].__setitem__(0, True)), "the edges of 'proline' must be finite numbers"),
    "not increasing": (_rewrite(lambda e: e["magnesium"].reverse()), "'magnesium' must be strictly increasing"),
    "a repeated edge": (_rewrite(lambda e: e["magnesium"].insert(1, e["magnesium"][0])), "strictly increasing"),
    "no edge": (_rewrite(lambda e: e.update(hue=[])), "the edges of 'hue' must be a list of 1 to 50 numbers, "
                                                      "got list of 0"),
    "too many edges": (_rewrite(lambda e: e.update(hue=list(range(MAX_FEATURE_EDGES + 1)))), "got list of 51"),
    "a feature named twice": (lambda p: p.write_text(p.read_text()[:-1] + ', "hue": [1.0]}'), "named twice: ['hue']"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_file_that_fails_its_checks_is_refused_and_the_model_serves_on_global_edges(model_dirs, tmp_path, caplog,
                                                                                      case):
    folder = shutil.copytree(model_dirs / "wine", tmp_path / "models" / "wine", symlinks=True)
    change, message = REFUSED[case]
    change(folder / FEATURE_BUCKETS_FILE)
    caplog.set_level(logging.WARNING, logger="mlserving.loader")
    loaded = load_model_dir(folder)
    assert loaded.feature_buckets is None and loaded.predict(wine_rows()[:3]).shape == (3,)
    refusal = [r.getMessage() for r in caplog.records if "is refused" in r.getMessage()]
    assert len(refusal) == 1 and refusal[0].startswith(f"{folder.resolve()}: {FEATURE_BUCKETS_FILE} is refused: ")
    assert message in refusal[0] and refusal[0].endswith("counted on the server's global edges"), refusal


def test_a_refused_file_is_served_on_the_global_edges(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs / "wine", tmp_path / "wine")
    (folder / FEATURE_BUCKETS_FILE).write_text("{}")
    server = LiveServer(folder, tmp_path / "server.log")
    try:
        send(server.url, wine_rows())
        buckets = exported(httpx.get(f"{server.url}/metrics").text)
    finally:
        server.stop()
    assert list(buckets["proline"]) == [f"{e:g}" for e in DEFAULT_BUCKETS] + ["+Inf"]
    assert buckets["proline"]["30"] == 0 and buckets["proline"]["+Inf"] == 178
    assert "extra_files/feature_buckets.json is refused: it must name exactly" in (tmp_path / "server.log").read_text()


# TrafficMetrics itself: per-feature edges beside the batching (missing values, large requests, swaps)

EDGES = {"a": (0.5, 1.0), "b": (100.0, 200.0, 300.0, 1e6), "c": (-1.0,)}


@pytest.fixture
def traffic():
    registry = CollectorRegistry()
    metrics = TrafficMetrics("m")
    registry.register(metrics)
    metrics.use_features(tuple(EDGES), edges=EDGES, version="1")
    return metrics, registry


def counted(registry) -> dict[str, dict[str, float]]:
    from prometheus_client import generate_latest

    return exported(generate_latest(registry).decode())


def test_per_feature_edges_count_as_numpy_does_missing_values_apart(traffic):
    metrics, registry = traffic
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(1, 0.5, 5000), rng.normal(200, 80, 5000), rng.normal(0, 2, 5000)])
    rows[::13, 1] = np.nan
    rows[::17, 0] = 1.0  # on an edge
    for start in range(0, 3000, 7):  # small requests (batched), then one larger than a batch
        metrics.observe("1", ("x",), rows[start:start + 7], np.zeros(len(rows[start:start + 7]), dtype=np.intp))
    metrics.observe("1", ("x",), rows[3003:], np.zeros(len(rows) - 3003, dtype=np.intp))
    values = np.vstack([rows[:3003], rows[3003:]])
    buckets = counted(registry)
    for j, (name, edges) in enumerate(EDGES.items()):
        column = values[:, j][~np.isnan(values[:, j])]
        assert list(buckets[name]) == [f"{e:g}" for e in edges] + ["+Inf"]
        assert list(buckets[name].values()) == expected_buckets(edges, column), name
    assert registry.get_sample_value("mlserving_feature_missing_total", {"model": "m", "feature": "b"}) == \
        np.isnan(values[:, 1]).sum()
    served = {"model": "m", "version": "1", "feature": "b"}
    assert registry.get_sample_value("mlserving_feature_value_sum", served) == pytest.approx(np.nansum(values[:, 1]))


def test_new_edges_for_the_same_features_start_the_histograms_afresh(traffic):
    metrics, registry = traffic
    metrics.observe("1", ("x",), np.array([[0.7, 150.0, 0.0]]), np.zeros(1, dtype=np.intp))
    # the same version and edges (the same folder reloaded): kept
    metrics.use_features(tuple(EDGES), edges=EDGES, version="1")
    assert counted(registry)["a"]["1"] == 1
    # new edges under the same version name (an unregistered folder reloaded with another model): afresh
    metrics.use_features(tuple(EDGES), edges={**EDGES, "a": (0.1, 0.7)}, version="1")
    metrics.observe("2", ("x",), np.array([[0.7, 150.0, 0.0]]), np.zeros(1, dtype=np.intp))
    buckets = counted(registry)
    assert buckets["a"] == {"0.1": 0, "0.7": 1, "+Inf": 1} and buckets["b"]["200"] == 1
    metrics.use_features(tuple(EDGES), version="1")  # a model without edges: the global ones
    assert list(counted(registry)["b"]) == [f"{e:g}" for e in DEFAULT_BUCKETS] + ["+Inf"]


def test_an_override_wins_over_a_models_edges():
    metrics = TrafficMetrics("m", buckets=(1.0, 2.0))
    metrics.use_features(tuple(EDGES), edges=EDGES)
    assert all(e.tolist() == [1.0, 2.0] for e in metrics.feature_edges) and metrics.shared_edges is not None


@pytest.mark.parametrize("edge, label", [(0.1, "0.1"), (1.0, "1"), (1310.0, "1310"), (0.1234564, "0.1234564"),
                                         (1234567.0, "1234567.0"), (1e-7, "1e-07")])
def test_an_le_label_reads_back_as_its_edge(edge, label):
    assert le_label(edge) == label and float(le_label(edge)) == edge
