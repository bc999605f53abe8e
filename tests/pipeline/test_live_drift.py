"""Live drift (detect --live-window): the model server's feature histograms, as a real Prometheus scrapes
them and answers `increase()` over its HTTP API, against a training reference on the same bucket edges."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from mlpipeline.config import engine_settings
from mlpipeline.errors import PipelineError
from mlpipeline.live_drift import (
    binned_drift,
    bins_from_buckets,
    check_window,
    fetch_buckets,
    live_drift,
    live_prediction_drift,
    prediction_query,
    query,
    reference_bins,
)
from tests import support

from .helpers import run_cli

EDGES = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
FEATURES = ["a", "b"]
SETTINGS = engine_settings()["drift"]
MODEL = "iris-live"


PREDICTION_EDGES = np.linspace(50.0, 300.0, 20)  # a regression model's, shared by its versions


def exposition(counts: dict[str, np.ndarray], predictions: np.ndarray | None = None) -> str:
    """The text format the model server answers /metrics with (le-buckets, cumulative; version 1 served),
    with a regression model's prediction histogram when `predictions` (counts per bucket) is given."""
    lines = []
    if predictions is not None:
        lines.append("# TYPE mlserving_prediction histogram")
        labels = f'model="{MODEL}",version="1"'
        for le, total in zip([f"{e:g}" for e in PREDICTION_EDGES] + ["+Inf"], np.cumsum(predictions), strict=True):
            lines.append(f'mlserving_prediction_bucket{{{labels},le="{le}"}} {total}')
        lines.append(f"mlserving_prediction_count{{{labels}}} {predictions.sum()}")
        lines.append(f"mlserving_prediction_sum{{{labels}}} 0")
    lines.append("# TYPE mlserving_feature_value histogram")
    for feature, per_bin in counts.items():
        labels = f'feature="{feature}",model="{MODEL}",version="1"'
        for le, total in zip([f"{e:g}" for e in EDGES] + ["+Inf"], np.cumsum(per_bin), strict=True):
            lines.append(f'mlserving_feature_value_bucket{{{labels},le="{le}"}} {total}')
        lines.append(f"mlserving_feature_value_count{{{labels}}} {per_bin.sum()}")
        lines.append(f"mlserving_feature_value_sum{{{labels}}} 0")
    return "\n".join(lines) + "\n"


class Exporter:
    """An HTTP /metrics whose histogram counts the test moves, as traffic moves the model server's."""

    def __init__(self):
        self.counts = {f: np.zeros(EDGES.size + 1, dtype=np.int64) for f in FEATURES}
        self.predictions = np.zeros(PREDICTION_EDGES.size + 1, dtype=np.int64)
        self.server = support.TextServer(lambda: exposition(self.counts, self.predictions))
        self.target = self.server.address

    def serve(self, values: dict[str, np.ndarray], predictions: np.ndarray | None = None) -> None:
        for feature, column in values.items():
            self.counts[feature] = self.counts[feature] + reference_bins(column, EDGES).astype(np.int64)
        if predictions is not None:
            self.predictions = self.predictions + reference_bins(predictions, PREDICTION_EDGES).astype(np.int64)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    exporter = Exporter()
    with support.prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.target]) as url:
        # the series exist before any traffic, as the model server's do from its start (increase() does
        # not count a series' first sample as growth)
        assert support.wait_scraped(url, f'mlserving_feature_value_count{{model="{MODEL}"}}', bool)
        yield exporter, url
    exporter.server.shutdown()


def reference(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(3.0, 0.8, rows), "b": rng.normal(5.5, 0.6, rows)})


def served(rows: int, seed: int, shift_b: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(3.0, 0.8, rows), "b": rng.normal(5.5 + shift_b, 0.6, rows)}


def wait_for(url: str, total: float) -> None:
    """Until Prometheus has scraped the latest counts twice (increase() needs two samples of them)."""
    promql = f'sum(increase(mlserving_feature_value_count{{model="{MODEL}",feature="a"}}[1m]))'
    result = support.wait_scraped(url, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= 0.9 * total)
    assert result and float(result[0]["value"][1]) >= 0.9 * total, result


def wait_for_predictions(url: str, total: float) -> None:
    """Until Prometheus has scraped the latest prediction counts twice."""
    promql = f'sum(increase(mlserving_prediction_count{{model="{MODEL}"}}[1m]))'
    result = support.wait_scraped(url, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= 0.9 * total)
    assert result and float(result[0]["value"][1]) >= 0.9 * total, result


def test_a_value_on_an_edge_counts_in_that_edges_bucket():
    assert reference_bins(np.array([0.5, 0.50001, 8.0, 9.0]), EDGES).tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_buckets_become_bins_and_extrapolation_noise_is_clipped():
    result = [{"metric": {"feature": "a", "le": le}, "value": [0, v]}
              for le, v in (("1", "10"), ("+Inf", "30.5"), ("0.5", "4"), ("2", "9.9"))]
    edges, counts = bins_from_buckets(result)["a"]
    assert edges.tolist() == [0.5, 1.0, 2.0] and counts.tolist() == pytest.approx([4, 6, 0, 20.5])
    with pytest.raises(PipelineError, match='no le="\\+Inf" bucket'):
        bins_from_buckets(result[:1])


def test_the_binned_statistics_tell_a_shift_from_the_same_distribution():
    ref = reference_bins(reference()["b"].to_numpy(), EDGES)
    same = binned_drift(ref, reference_bins(served(3000, 1)["b"], EDGES), SETTINGS, alpha=0.005)
    shifted = binned_drift(ref, reference_bins(served(3000, 1, shift_b=1.0)["b"], EDGES), SETTINGS, alpha=0.005)
    assert not same["drifted"] and same["psi"] < 0.05 and same["ks_pvalue"] > 0.005
    assert shifted["drifted"] and shifted["ks_statistic"] > 0.4 and shifted["psi"] > 1.0


@pytest.mark.parametrize("window", ["1h", "30m", "7d"])
def test_a_window_is_a_prometheus_duration(window):
    assert check_window(window) == window


@pytest.mark.parametrize("window", ["1 h", "0h", "1hour", "h", "-1h", "1h; drop"])
def test_a_window_that_is_not_a_duration_is_refused(window):
    with pytest.raises(PipelineError, match="is not a Prometheus duration"):
        check_window(window)


def test_live_traffic_shifted_on_one_feature_is_found_through_prometheus(scraped):
    exporter, url = scraped
    before = float(exporter.counts["a"].sum())
    exporter.serve(served(1500, 2, shift_b=1.0))
    wait_for(url, before + 1500)
    report = live_drift(url, MODEL, "1m", reference(), FEATURES, SETTINGS, version="1")
    assert report["status"] == "measured" and report["query"] == query(MODEL, "1m", version="1")
    assert report["drifted_features"] == ["b"] and report["share_drifted"] == 0.5
    assert report["observed"] >= 1000 and report["method"] == "ks"
    assert report["features"]["b"]["ks_statistic"] > 0.4 and report["features"]["a"]["ks_pvalue"] > 0.005


def test_a_regression_models_live_predictions_are_compared_with_its_predictions_on_the_reference(scraped):
    """The champion's predictions on its training sample against what its server predicted in the window,
    on the edges the server counts them on: the same distribution is steady, a shifted one drifted."""
    exporter, url = scraped
    on_reference = np.random.default_rng(7).normal(150.0, 40.0, 2000)
    rng = np.random.default_rng(8)
    exporter.serve({}, predictions=rng.normal(150.0, 40.0, 1500))
    wait_for_predictions(url, 1500)
    steady = live_prediction_drift(url, MODEL, "1m", on_reference, SETTINGS, version="1")
    assert steady["status"] == "measured", steady
    assert steady["query"] == prediction_query(MODEL, "1m", version="1")
    assert not steady["drifted"] and steady["observed"] >= 1000, steady
    exporter.serve({}, predictions=rng.normal(200.0, 40.0, 3000))  # a shift of 1.25 sd
    wait_for_predictions(url, 4500)  # the window holds both: two thirds of it shifted
    shifted = live_prediction_drift(url, MODEL, "1m", on_reference, SETTINGS, version="1")
    assert shifted["status"] == "measured" and shifted["drifted"] and shifted["ks_statistic"] > 0.2, shifted
    unserved = live_prediction_drift(url, MODEL, "1m", on_reference, SETTINGS, version="7")
    assert unserved["status"] == "unavailable" and "no mlserving_prediction_bucket series" in unserved["error"]


def test_too_little_traffic_measures_nothing(scraped):
    _, url = scraped
    report = live_drift(url, "iris-never-served", "1m", reference(), FEATURES, SETTINGS, version="1")
    assert report["status"] == "insufficient traffic" and "no live values of ['a', 'b']" in report["reason"]
    report = live_drift(url, MODEL, "1m", reference(), FEATURES, {**SETTINGS, "live_min_rows": 10**9}, version="1")
    assert report["status"] == "insufficient traffic" and "fewer than 1000000000" in report["reason"]


def test_a_prometheus_that_cannot_be_asked_is_reported_not_fatal(scraped):
    _, url = scraped
    down = f"http://127.0.0.1:{support.free_port()}"
    report = live_drift(down, MODEL, "1m", reference(), FEATURES, SETTINGS, version="1")
    assert report["status"] == "unavailable" and f"Prometheus at {down} did not answer" in report["error"]
    report = live_drift(url + "/nothing-here", MODEL, "1m", reference(), FEATURES, SETTINGS, version="1")
    assert report["status"] == "unavailable" and "refused the query: HTTP 404" in report["error"]


@pytest.mark.parametrize("args, message", [
    (["--live-window", "1 hour", "--prometheus-url", "http://prometheus:9090"],
     "'1 hour' is not a Prometheus duration"),
    (["--live-window", "1h"], "--live-window needs --prometheus-url"),
])
def test_detect_refuses_a_live_window_it_cannot_use_before_touching_anything(volume, args, message):
    volume.root.mkdir(parents=True)
    result = run_cli("detect", "--data-root", volume.root, "--run-key", "rk-1", "--model-name", MODEL, *args,
                     check=False)
    assert result.returncode == 1 and message in result.error_line
    assert support.tree_snapshot(volume.root) == {}


# The model server's own metrics code (mlserving.metrics.TrafficMetrics, run in the serving environment) for
# one model through a hot swap: it serves a version on its edges ("serve"; again: a swap) and counts
# requests' rows ("observe"). Commands on stdin, one JSON line each; one answer line each.
SWAPPING_EXPORTER = """
import json, sys
import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from mlserving.metrics import TrafficMetrics

registry = CollectorRegistry()
metrics = TrafficMetrics(sys.argv[1])
registry.register(metrics)
server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
print(server.server_port, flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "serve":
        edges = command["edges"]
        metrics.use_features(tuple(edges), edges=edges, version=command["version"])
    else:
        rows = np.array(command["rows"], dtype=np.float64)
        metrics.observe(command["version"], ("x",), rows, np.zeros(len(rows), dtype=np.intp))
    print("ok", flush=True)
"""
TWO_VERSIONS = "iris-two-versions"
# v2's edges, from other training data: some values shared with v1's (1, 5, 6), most not
EDGES_V2 = np.array([1.0, 2.5, 3.5, 4.5, 5.0, 5.5, 6.0, 6.5, 7.5, 9.0])


class SwappingExporter:
    def __init__(self, model: str):
        self.proc = subprocess.Popen([str(support.SERVING_BIN / "python"), "-c", SWAPPING_EXPORTER, model],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.target = f"127.0.0.1:{self.proc.stdout.readline().strip()}"
        self.version = ""

    def ask(self, command: dict) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok", f"the exporter stopped (exit {self.proc.poll()})"

    def serve(self, version: str, edges: np.ndarray) -> None:
        self.version = version
        self.ask({"op": "serve", "version": version, "edges": {f: edges.tolist() for f in FEATURES}})

    def requests(self, values: dict[str, np.ndarray], rows_per_request: int = 50) -> None:
        rows = np.column_stack([values[f] for f in FEATURES])
        for start in range(0, len(rows), rows_per_request):
            self.ask({"op": "observe", "version": self.version, "rows": rows[start:start + rows_per_request].tolist()})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_a_window_spanning_a_swap_measures_the_champion_versions_traffic_alone(tmp_path):
    """v1 served the training mix, then a hot swap to v2 (its own edges) served traffic with b shifted, both
    within the window. The server labels each version's histograms with it; live drift asked about v1 reads
    v1's buckets alone (no drift), about v2 v2's alone (b drifted). Summed, the two versions' series would
    be one histogram on the union of both sets of edges, the shared ones counting both versions' values."""
    exporter = SwappingExporter(TWO_VERSIONS)
    try:
        exporter.serve("1", EDGES)
        with support.prometheus(tmp_path, [exporter.target]) as url:
            def counted(version: str, rows: int) -> None:
                """Until Prometheus has scraped the version's rows twice (and its series before them)."""
                promql = (f'sum(increase(mlserving_feature_value_count{{model="{TWO_VERSIONS}",version="{version}",'
                          f'feature="a"}}[1m]))')
                result = support.wait_scraped(url, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= rows)
                assert result and float(result[0]["value"][1]) >= rows, (version, result)

            counted("1", 0)  # every series is there before the traffic, as from the server's start
            exporter.requests(served(1500, 4))  # v1: the training mix
            counted("1", 0.9 * 1500)
            exporter.serve("2", EDGES_V2)  # the swap: v2's series from zero, v1's no longer exported
            counted("2", 0)
            exporter.requests(served(1500, 5, shift_b=1.0))  # v2: b shifted
            counted("2", 0.9 * 1500)

            # the window holds both versions' series: unfiltered, one feature's buckets are both sets of edges
            mixed = fetch_buckets(url, f'sum by (feature, le) (increase(mlserving_feature_value_bucket'
                                       f'{{model="{TWO_VERSIONS}"}}[1m]))')
            assert bins_from_buckets(mixed)["b"][0].tolist() == sorted(set(EDGES.tolist()) | set(EDGES_V2.tolist()))

            first = live_drift(url, TWO_VERSIONS, "1m", reference(), FEATURES, SETTINGS, version="1")
            second = live_drift(url, TWO_VERSIONS, "1m", reference(), FEATURES, SETTINGS, version="2")
            never = live_drift(url, TWO_VERSIONS, "1m", reference(), FEATURES, SETTINGS, version="3")
    finally:
        exporter.close()
    assert first["status"] == "measured" and first["query"] == query(TWO_VERSIONS, "1m", version="1")
    assert 'version="1"' in first["query"]
    # v1's traffic alone: the training mix, v2's shifted values not in it
    assert first["drifted_features"] == [] and 0.9 * 1500 <= first["observed"] <= 1.3 * 1500, first
    assert first["features"]["b"]["ks_pvalue"] > 0.005
    # v2's traffic alone, on v2's edges: b drifted, a not
    assert second["status"] == "measured" and second["query"] == query(TWO_VERSIONS, "1m", version="2")
    assert second["drifted_features"] == ["b"] and 0.9 * 1500 <= second["observed"] <= 1.3 * 1500, second
    assert second["features"]["b"]["ks_statistic"] > 0.4
    assert never["status"] == "insufficient traffic" and "no live values of ['a', 'b']" in never["reason"]
