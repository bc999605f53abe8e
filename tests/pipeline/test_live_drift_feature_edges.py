"""Live drift on features of any scale: the training stage computes each numeric feature's histogram edges from
its training data and logs them with the model (model_format.FEATURE_BUCKETS_FILE); the registered version
carries them; the model server (`mlserving`, on a real port, serving the version as the local deploy fetches
it) counts live values on them; a real Prometheus scrapes it; `detect` compares the champion's training
sample binned on the same edges. The wine test dataset: proline runs from 300 to 1700, where the server's
global 0.1-30 edges put every value in +Inf, so a shift of it was invisible."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipeline.config import engine_settings
from mlpipeline.detect import detect
from mlpipeline.live_drift import binned_drift, live_drift, query, reference_bins
from mlpipeline.model_format import FEATURE_BUCKETS_FILE, read_feature_buckets
from mlpipeline.model_registry import Registry
from mlpipeline.training import FEATURE_BUCKET_EDGES, feature_bucket_edges
from mlpipeline.volume import DataVolume
from tests import datasets, support

from . import helpers
from .helpers import run_cli

SETTINGS = engine_settings()["drift"]
WINE = datasets.load("wine")
FEATURES = WINE.feature_names
# The server's global edges (mlserving.metrics.DEFAULT_BUCKETS; the server's package is not installed here)
GLOBAL_EDGES = np.array([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 10.0,
                         15.0, 30.0])


def quantile_edges(values: np.ndarray) -> list[float]:
    """The edges as the training stage defines them, by numpy: the k/21 quantiles of the non-missing values
    (observed values), repeated ones merged."""
    values = values[~np.isnan(values)]
    probabilities = np.arange(1, FEATURE_BUCKET_EDGES + 1) / (FEATURE_BUCKET_EDGES + 1)
    return sorted(set(np.quantile(values, probabilities, method="inverted_cdf").tolist()))


def test_edges_are_equal_share_quantiles_of_the_training_values():
    spec = datasets.load("cancer-mixed")
    frame = datasets.reference_frame("cancer-mixed")
    frame["mean_texture"] = 7.0  # constant: one edge
    frame.loc[::2, "worst_concave_points"] = 0.0  # half the values at one point: merged quantiles
    edges = feature_bucket_edges(frame, spec)
    assert list(edges) == [f.name for f in spec.features if f.numeric]  # categorical features have none
    assert edges["mean_texture"] == [7.0]
    radius = frame["mean_radius"].to_numpy()
    assert edges["mean_radius"] == quantile_edges(radius) and len(edges["mean_radius"]) == FEATURE_BUCKET_EDGES
    shares = np.bincount(np.searchsorted(edges["mean_radius"], radius[~np.isnan(radius)], side="left")) / \
        (~np.isnan(radius)).sum()
    assert shares.min() > 0.03 and shares.max() < 0.07  # a 21st each (ties aside)
    concave = edges["worst_concave_points"]
    assert concave[0] == 0.0 and len(concave) < FEATURE_BUCKET_EDGES and np.all(np.diff(concave) > 0)


def post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def send(server: str, model: str, frame: pd.DataFrame, per_request: int = 50) -> None:
    for start in range(0, len(frame), per_request):
        chunk = frame.iloc[start:start + per_request]
        post(f"http://{server}/v2/models/{model}/infer",
             {"inputs": [{"name": name, "shape": [len(chunk)], "datatype": "FP64", "data": chunk[name].tolist()}
                         for name in FEATURES]})


def wait_counted(url: str, model: str, rows: int) -> None:
    """Until Prometheus has scraped the served rows twice (increase() needs two samples of them)."""
    promql = f'sum(increase(mlserving_feature_value_count{{model="{model}",feature="proline"}}[1m]))'
    result = support.wait_scraped(url, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= 0.9 * rows)
    assert result and float(result[0]["value"][1]) >= 0.9 * rows, result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_proline_shift_is_measured_and_found_on_the_edges_the_model_carries(tmp_path, tracking):
    root, dataset = tmp_path / "volume", datasets.dataset_path("wine")
    model = f"wine-edges-{uuid.uuid4().hex[:8]}"
    reference = datasets.write_reference("wine", tmp_path / "reference.parquet")

    def land_and_split(partition: str, seed: int) -> str:
        return helpers.land_and_split(root, dataset, reference, partition, rows=900, seed=seed)

    trained_on = land_and_split("2026-11-01", seed=1)
    assert run_cli("train-local", "--data-root", root, "--run-key", trained_on, "--model-name", model
                   ).json["decision"] == "promote"
    assert run_cli("register", "--data-root", root, "--run-key", trained_on, "--model-name", model
                   ).json["champion_version"] == "1"

    # The registered version carries the edges, computed from its training set, in its own folder.
    registry = Registry(model)
    champion = registry.champion()
    folder = registry.download(champion, tmp_path / "served" / model)  # as the local deploy fetches it
    train = pd.read_parquet(DataVolume(root).run_dir(trained_on) / "train.parquet")
    written = json.loads((folder / FEATURE_BUCKETS_FILE).read_text())
    assert written == {name: quantile_edges(train[name].to_numpy(dtype=float)) for name in FEATURES}
    assert read_feature_buckets(folder, tuple(FEATURES)) == {k: tuple(v) for k, v in written.items()}
    assert "extra_files/feature_buckets.json" in (folder / "MLmodel").read_text()  # MLflow lists it
    assert 250 < written["proline"][0] < written["proline"][-1] < 1700

    sample = registry.reference_sample(champion)  # what detect compares with: the champion's training sample
    traffic = sample.sample(n=1500, replace=True, random_state=2).reset_index(drop=True)
    shifted = traffic.assign(proline=traffic["proline"] * 1.3)
    # On the global edges both land whole in +Inf: the shift that could not be seen
    blind = binned_drift(reference_bins(sample["proline"].to_numpy(), GLOBAL_EDGES),
                         reference_bins(shifted["proline"].to_numpy(), GLOBAL_EDGES), SETTINGS, alpha=0.01)
    assert blind["ks_statistic"] == 0.0 and not blind["drifted"]

    same_name = f"{model}-same"
    with model_servers(folder, [model, same_name], tmp_path) as servers:
        (tmp_path / "prometheus").mkdir()
        with support.prometheus(tmp_path / "prometheus", list(servers.values())) as url:
            for name in servers:  # every series is there before the traffic, as from the server's start
                assert support.wait_scraped(url, f'mlserving_feature_value_count{{model="{name}"}}', bool)
            send(servers[model], model, shifted)
            send(servers[same_name], same_name, traffic)
            wait_counted(url, model, len(shifted))
            wait_counted(url, same_name, len(traffic))

            # the champion's own name, through detect on a later batch: proline, and proline alone, drifted
            run_key = land_and_split("2026-11-02", seed=3)
            result = detect(DataVolume(root), run_key, model, "1m", url)
            live = result["live_drift"]
            assert live["status"] == "measured" and live["query"] == query(model, "1m", version="1"), live
            assert live["drifted_features"] == ["proline"], live
            assert live["reference_rows"] == len(sample) and live["observed"] >= 0.9 * len(shifted)
            assert live["features"]["proline"]["ks_statistic"] > 0.2

            unshifted = live_drift(url, same_name, "1m", sample, FEATURES, SETTINGS, version="1")
            assert unshifted["status"] == "measured" and unshifted["drifted_features"] == [], unshifted
            assert unshifted["features"]["proline"]["psi"] < 0.1

            # what Prometheus answered are the model's edges: live drift binned the reference on them
            asked = urllib.parse.urlencode({"query": query(same_name, "1m", version="1")})
            answered = json.load(urllib.request.urlopen(f"{url}/api/v1/query?{asked}", timeout=10))
            les = sorted(float(s["metric"]["le"]) for s in answered["data"]["result"]
                         if s["metric"]["feature"] == "proline")
            assert les[:-1] == written["proline"] and les[-1] == float("inf")


@contextlib.contextmanager
def model_servers(folder: Path, names: list[str], tmp_path: Path):
    """`mlserving` serving `folder` under each name, on its own port: {name: host:port}."""
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in names:
            port = support.free_port()
            argv = [str(support.SERVING_BIN / "mlserving"), "--model-dir", str(folder), "--model-name", name,
                    "--http-port", str(port), "--quiet-access-log"]
            stack.enter_context(support.daemon(argv, f"http://127.0.0.1:{port}/v2/health/ready",
                                               tmp_path / f"{name}.log", seconds=120))
            servers[name] = f"127.0.0.1:{port}"
        yield servers
