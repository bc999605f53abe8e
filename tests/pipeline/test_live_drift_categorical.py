"""Live drift of categorical features (detect --live-window): the model server's own metrics code
(mlserving.metrics.TrafficMetrics, run in the serving environment) counts the traffic of a model of the
cancer-mixed test dataset (numeric and categorical features, some missing), a real Prometheus scrapes it,
and live_drift compares the category counts over the window with the training reference's.

The categories the server knows are those of the encoder of a model fitted on the reference, as the server
reads them from the champion (categories_ of its OneHotEncoder)."""

from __future__ import annotations

import json
import subprocess
import uuid

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlpipeline.config import engine_settings
from mlpipeline.detect import detect, live_summary
from mlpipeline.drift import feature_drift
from mlpipeline.live_drift import categorical_drift, category_counts, live_drift, query
from mlpipeline.model import fit
from mlpipeline.volume import DataVolume
from tests import datasets, support

from . import helpers
from .helpers import run_cli

SETTINGS = engine_settings()["drift"]
SPEC = datasets.load("cancer-mixed")
NUMERIC = [f.name for f in SPEC.features if f.numeric]
CATEGORICAL = [f.name for f in SPEC.features if not f.numeric]
ROWS = 1500

# The exporter: the server's TrafficMetrics, one per model, each on its own /metrics port (a model server
# serves one model). Commands on stdin, one JSON line each; it answers one line when done.
EXPORTER = """
import json, sys
import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from mlserving.metrics import TrafficMetrics

models = {}
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "serve":
        registry = CollectorRegistry()
        metrics = models[command["model"]] = TrafficMetrics(command["model"])
        registry.register(metrics)
        metrics.use_features(tuple(command["numeric"]), tuple((name, tuple(categories))
                                                              for name, categories in command["categorical"]),
                             version="1")
        server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        print(server.server_port, flush=True)
    else:  # a request: numeric rows (null: missing) and categorical columns (null: missing)
        numeric = np.array([[np.nan if v is None else v for v in row] for row in command["numeric"]],
                           dtype=np.float64).reshape(len(command["numeric"]), command["width"])
        columns = tuple(np.array(column, dtype=object) for column in command["categorical"])
        models[command["model"]].observe("1", ("0", "1"), numeric, np.zeros(len(numeric), dtype=np.intp),
                                         columns or None)
        print("ok", flush=True)
"""


class Exporter:
    def __init__(self):
        self.proc = subprocess.Popen([str(support.SERVING_BIN / "python"), "-c", EXPORTER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.numeric: dict[str, list[str]] = {}

    def ask(self, command: dict) -> str:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"the exporter stopped (exit {self.proc.poll()})"
        return answer

    def serve(self, model: str, numeric: list[str], categorical: dict[str, list[str]]) -> str:
        self.numeric[model] = numeric
        port = self.ask({"op": "serve", "model": model, "numeric": numeric, "categorical": list(categorical.items())})
        return f"127.0.0.1:{port}"

    def requests(self, model: str, frame: pd.DataFrame, rows_per_request: int = 50) -> None:
        """The frame's rows as requests, with the model's features (missing values as null)."""
        def column(name: str) -> list:
            return [None if pd.isna(v) else (float(v) if name in NUMERIC else str(v)) for v in frame[name]]

        numeric = list(zip(*(column(f) for f in self.numeric[model]), strict=True)) or [()] * len(frame)
        categorical = [column(f) for f in CATEGORICAL]
        for start in range(0, len(frame), rows_per_request):
            end = start + rows_per_request
            self.ask({"op": "observe", "model": model, "numeric": [list(r) for r in numeric[start:end]],
                      "width": len(self.numeric[model]), "categorical": [c[start:end] for c in categorical]})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def encoder_categories(model) -> dict[str, list[str]]:
    """Each categorical feature's categories as the model's encoder knows them (what the server reads from
    the champion)."""
    encoder = model.named_steps["prepare"].named_transformers_["categorical"].named_steps["onehot"]
    return {name: [str(c) for c in categories] for name, categories in zip(CATEGORICAL, encoder.categories_,
                                                                          strict=True)}


def known_categories(reference: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of a model fitted on the reference."""
    return encoder_categories(fit(reference, SPEC))


# detect's model: a fresh registered-model name (the tests share one MLflow server, never state)
DETECT_MODEL = f"cancer-detect-{uuid.uuid4().hex[:8]}"
MODELS = {"cancer-same": "mixed", "cancer-shifted": "mixed", "cancer-new": "mixed", "cancer-quiet": "mixed",
          "cancer-categorical": "categorical only", DETECT_MODEL: "mixed"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    reference = datasets.reference_frame("cancer-mixed")
    categories = known_categories(reference)
    assert "__missing__" in categories["smoothness_band"]  # the encoder's fill value: the server counts it as missing
    exporter = Exporter()
    try:
        targets = [exporter.serve(m, NUMERIC if kind == "mixed" else [], categories) for m, kind in MODELS.items()]
        with support.prometheus(tmp_path_factory.mktemp("prometheus"), targets) as url:
            for model in MODELS:  # every label is there from the start, as the server exports them
                assert support.wait_scraped(url, f'mlserving_feature_category_total{{model="{model}"}}', bool)
            yield exporter, url, reference
    finally:
        exporter.close()


def traffic(reference: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Rows drawn from the reference: the training mix."""
    return reference.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)


def send(served, model: str, frame: pd.DataFrame) -> None:
    """Serve the frame and wait until Prometheus has scraped all of it twice (increase() needs two samples)."""
    exporter, url, _ = served
    exporter.requests(model, frame)
    promql = f'sum(increase(mlserving_feature_category_total{{model="{model}",feature="area_band"}}[1m]))'
    result = support.wait_scraped(url, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= 0.9 * len(frame))
    assert result and float(result[0]["value"][1]) >= 0.9 * len(frame), result


def test_the_same_mix_is_not_drift_and_a_category_the_reference_lacks_is_new_by_name(served):
    _, url, reference = served
    send(served, "cancer-same", traffic(reference, ROWS, seed=1))
    report = live_drift(url, "cancer-same", "1m", reference, NUMERIC, SETTINGS, CATEGORICAL, version="1")
    assert report["status"] == "measured"
    assert report["query"] == query("cancer-same", "1m", categorical=True, version="1")
    assert set(report["features"]) == set(NUMERIC + CATEGORICAL) and report["observed"] >= 0.9 * 0.9 * ROWS
    assert report["drifted_features"] == [] and report["new_categories"] == {}, report
    for name in CATEGORICAL:
        entry = report["features"][name]
        assert entry["type"] == "categorical" and entry["chi2_pvalue"] > SETTINGS["ks_alpha"] / 7
        assert entry["psi"] < 0.05
    # the server counts missing values apart: they are not values, as in the reference
    band = report["features"]["smoothness_band"]
    assert band["missing_reference"] == pytest.approx(0.05, abs=0.005) and 0.02 < band["missing_live"] < 0.08
    assert report["features"]["area_band"]["missing_live"] == 0.0

    # a reference sample without a category the model knows (a rare one the sample missed): new, by its name
    without = reference[reference["concavity_grade"] != "very_high"]
    report = live_drift(url, "cancer-same", "1m", without, NUMERIC, SETTINGS, CATEGORICAL, version="1")
    grade = report["features"]["concavity_grade"]
    assert report["new_categories"] == {"concavity_grade": ["very_high"]} and grade["new_categories"] == ["very_high"]
    assert grade["new_category_rows"] > 0.5 * 0.05 * ROWS and "concavity_grade" in report["drifted_features"]


def test_a_shifted_category_mix_is_flagged(served):
    _, url, reference = served
    frame = traffic(reference, ROWS, seed=2)
    # area_band alone: half the tumours "high" (a fifth in training), drawn apart from every other column
    frame["area_band"] = np.random.default_rng(2).choice(["low", "mid", "high"], size=ROWS, p=[0.25, 0.25, 0.5])
    send(served, "cancer-shifted", frame)
    report = live_drift(url, "cancer-shifted", "1m", reference, NUMERIC, SETTINGS, CATEGORICAL, version="1")
    assert report["status"] == "measured" and report["drifted_features"] == ["area_band"], report
    band = report["features"]["area_band"]
    assert band["chi2_pvalue"] < 1e-10 and band["psi"] > 0.2 and band["new_categories"] == []
    assert report["share_drifted"] == pytest.approx(1 / 7) and report["max_psi"] == band["psi"]
    assert live_summary(report) == "1 feature(s) drifted ['area_band']"
    # large counts: the PSI rule decides, as for the numeric features
    psi_rule = live_drift(url, "cancer-shifted", "1m", reference, NUMERIC, {**SETTINGS, "ks_max_rows": 100},
                          CATEGORICAL, version="1")
    assert psi_rule["method"] == "psi" and psi_rule["drifted_features"] == ["area_band"], psi_rule


def test_values_the_model_does_not_know_are_a_new_category(served):
    _, url, reference = served
    frame = traffic(reference, ROWS, seed=3)
    unknown = np.random.default_rng(3).random(ROWS) < 0.1
    frame.loc[unknown, "concavity_grade"] = np.where(np.arange(unknown.sum()) % 2, "extreme", "off the scale")
    send(served, "cancer-new", frame)
    report = live_drift(url, "cancer-new", "1m", reference, NUMERIC, SETTINGS, CATEGORICAL, version="1")
    # the server counts both unknown values as __other__: one new category, whose names it never kept
    grade = report["features"]["concavity_grade"]
    assert report["new_categories"] == {"concavity_grade": ["__other__"]}, report
    # increase() extrapolates a series younger than the window by up to half a scrape interval each side
    assert unknown.sum() * 0.9 <= grade["new_category_rows"] <= unknown.sum() * 1.3
    assert report["drifted_features"] == ["concavity_grade"] and grade["chi2_pvalue"] < 1e-10
    assert live_summary(report) == ("1 feature(s) drifted ['concavity_grade'], new categories "
                                    "{'concavity_grade': ['__other__']}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detect_measures_the_categorical_features_of_the_champions_traffic(served, tmp_path, tracking):
    """detect with a live window: the champion is v1 of a model trained and registered through the stage CLI
    on a simulated batch, in the real MLflow server; detect is run on a second batch, split by the CLI, and
    asked about the champion's traffic, whose area_band mix shifted. The reference is the registry's: the
    champion's training sample."""
    _, url, _ = served
    root, dataset = tmp_path / "volume", datasets.dataset_path("cancer-mixed")
    model = ["--model-name", DETECT_MODEL]
    path = datasets.write_reference("cancer-mixed", tmp_path / "reference.parquet")

    def land_and_split(partition: str, seed: int) -> str:
        return helpers.land_and_split(root, dataset, path, partition, rows=600, seed=seed)

    trained_on = land_and_split("2026-11-01", seed=7)
    assert run_cli("train-local", "--data-root", root, "--run-key", trained_on, *model).json["decision"] == "promote"
    registered = run_cli("register", "--data-root", root, "--run-key", trained_on, *model).json
    assert registered["version"] == "1" and registered["champion_version"] == "1", registered
    run_key = land_and_split("2026-11-02", seed=9)

    client = MlflowClient(tracking)
    champion = client.get_model_version_by_alias(DETECT_MODEL, "champion")
    sample = pd.read_parquet(client.download_artifacts(champion.run_id, "reference/train_sample.parquet",
                                                       str(tmp_path)))
    assert len(sample) == len(pd.read_parquet(DataVolume(root).run_dir(trained_on) / "train.parquet"))
    # the exporter serves the categories the champion's encoder knows, as the model server reads them
    assert encoder_categories(mlflow.sklearn.load_model(f"models:/{DETECT_MODEL}/1")) == \
        known_categories(datasets.reference_frame("cancer-mixed"))

    frame = traffic(sample, ROWS, seed=8)  # the champion's training mix, but for area_band
    frame["area_band"] = np.random.default_rng(8).choice(["low", "mid", "high"], size=ROWS, p=[0.25, 0.25, 0.5])
    send(served, DETECT_MODEL, frame)
    result = detect(DataVolume(root), run_key, DETECT_MODEL, "1m", url)
    assert result["champion"] == {"version": "1", "run_id": champion.run_id}, result
    live = result["live_drift"]
    assert live["status"] == "measured" and live["drifted_features"] == ["area_band"], live
    assert sorted(live["features"]) == sorted(NUMERIC + CATEGORICAL)
    assert live["query"] == query(DETECT_MODEL, "1m", categorical=True, version="1")  # the champion's version
    # compared with the champion's training sample, not the module's reference
    assert live["reference_rows"] == len(sample) != len(datasets.reference_frame("cancer-mixed"))
    assert live["features"]["smoothness_band"]["missing_reference"] == \
        pytest.approx(sample["smoothness_band"].isna().mean(), abs=1e-6)
    assert result["reason"].endswith("; live traffic (1m): 1 feature(s) drifted ['area_band']"), result["reason"]


def test_a_model_with_only_categorical_features_is_measured(served):
    _, url, reference = served
    send(served, "cancer-categorical", traffic(reference, ROWS, seed=4))
    report = live_drift(url, "cancer-categorical", "1m", reference, [], SETTINGS, CATEGORICAL, version="1")
    assert report["query"] == ('sum by (feature, category) (increase(mlserving_feature_category_total'
                               '{model="cancer-categorical"}[1m]))')
    assert report["status"] == "measured" and sorted(report["features"]) == sorted(CATEGORICAL), report
    assert report["drifted_features"] == [] and report["share_drifted"] == 0.0 and report["method"] == "ks"


def test_too_little_traffic_measures_nothing(served):
    _, url, reference = served
    frame = traffic(reference, 300, seed=5)
    frame["smoothness_band"] = None  # every value of a nullable feature missing: none of it observed
    send(served, "cancer-quiet", frame)
    report = live_drift(url, "cancer-quiet", "1m", reference, NUMERIC, SETTINGS, CATEGORICAL, version="1")
    assert report["status"] == "insufficient traffic" and report["observed"] == 0.0, report
    assert report["reason"].startswith("fewer than 100 live values of ['smoothness_band']")
    report = live_drift(url, "cancer-quiet", "1m", reference, [], {**SETTINGS, "live_min_rows": 1000},
                        ["area_band", "compactness_band"], version="1")
    assert report["status"] == "insufficient traffic" and 250 < report["observed"] < 350
    assert "fewer than 1000 live values of ['area_band', 'compactness_band']" in report["reason"]
    report = live_drift(url, "cancer-never-served", "1m", reference, [], SETTINGS, CATEGORICAL, version="1")
    assert report["status"] == "insufficient traffic" and report["reason"] == f"no live values of {CATEGORICAL}"


def test_the_live_statistic_is_the_labelled_batchs_on_the_same_counts():
    """On whole counts, a live categorical entry is the batch's categorical drift of the same values."""
    reference = datasets.reference_frame("cancer-mixed")
    current = traffic(reference, 800, seed=6)
    labels = current["concavity_grade"].fillna("__missing__").value_counts()
    result = [{"metric": {"feature": "concavity_grade", "category": c}, "value": [0, str(n)]}
              for c, n in labels.items()] + [{"metric": {"feature": "concavity_grade", "category": "__other__"},
                                              "value": [0, "0"]}]
    live = categorical_drift(reference["concavity_grade"], category_counts(result)["concavity_grade"], SETTINGS,
                             alpha=SETTINGS["ks_alpha"] / len(SPEC.features))
    batch = feature_drift(reference, current, SPEC, SETTINGS)["concavity_grade"]
    for key in ("chi2", "chi2_pvalue", "psi", "new_categories", "new_category_rows", "drifted"):
        assert live[key] == pytest.approx(batch[key]) if isinstance(batch[key], float) else live[key] == batch[key]


def test_reference_values_the_server_counts_as_other_are_other_on_both_sides():
    """Past its cap on labels a feature, the server counts known categories as __other__: the reference's
    values no live label names are counted as __other__ too, and __other__ is then no new category."""
    reference = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20 + [None] * 10)
    live = pd.Series({"a": 500.0, "b": 300.0, "__other__": 200.0, "__missing__": 100.0})  # "c" past the cap
    same = categorical_drift(reference, live, SETTINGS, alpha=0.01)
    assert same["new_categories"] == [] and same["new_category_rows"] == 0 and not same["drifted"], same
    assert same["psi"] == pytest.approx(0.0, abs=1e-9) and same["observed"] == 1000.0
    assert same["missing_reference"] == pytest.approx(10 / 110) and same["missing_live"] == pytest.approx(100 / 1100)
    # with every category named, live __other__ values are values the reference never had
    named = categorical_drift(reference, pd.Series({**live, "c": 0.0}), SETTINGS, alpha=0.01)
    assert named["new_categories"] == ["__other__"] and named["new_category_rows"] == 200 and named["drifted"]
