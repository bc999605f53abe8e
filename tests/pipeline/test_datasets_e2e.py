"""Any dataset, end to end through the stage CLI: datasets that are not iris, that the code was not tuned for
(wine: numeric, three classes; cancer-mixed: two classes, categorical features and missing values; friedman:
a numeric target, hist gradient boosting held to an R² minimum; tests/datasets/; breast-cancer, all-numeric
with two classes, adds no path wine and cancer-mixed do not take; diabetes runs through dag.test()), each landed
in its own format, trained with its own estimator and held to its own metric, with kfp.local training
against a real MLflow server.

The loop for each: a first model is promoted; a clean batch leaves the champion (its score on the fresh
batch stays on the right side of the file's threshold); a drifted batch (a concept change, or a regression's
changed coefficient) takes it past; retraining promotes a challenger that beats it on the same test set. The
numbers go to the test's output (`-s`), for the record.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tests import datasets
from tests.support import tree_snapshot

from .helpers import run_cli

pytestmark = pytest.mark.slow

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["wine", "cancer-mixed", "friedman"])
def test_a_dataset_file_and_its_batches_are_all_a_model_needs(tmp_path, tracking, name):
    spec = datasets.load(name)
    reference = datasets.write_reference(name, tmp_path / "reference.parquet")
    root = tmp_path / "volume"
    model = ["--model-name", spec.model_name + "-" + tmp_path.name[-8:].lower().replace("_", "-")]
    given = ["--dataset", datasets.dataset_path(name)]

    def land_and_split(day: str, seed: int, drift: str = "none", severity: float = 0.0) -> dict:
        landed = run_cli("simulate", "--data-root", root, "--partition", day, "--rows", 900, "--seed", seed,
                         "--drift", drift, "--severity", severity, "--reference", reference, *given).json
        assert landed["path"].endswith({"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[spec.source.format])
        ingested = run_cli("ingest", "--data-root", root, "--partition", day, *given).json
        assert ingested["quarantined"] == [] and ingested["curated_rows"] == 900
        return run_cli("split", "--data-root", root, "--partition", day, *given).json

    def cycle(day: str, seed: int, **drift) -> tuple[dict, dict | None]:
        run_key = land_and_split(day, seed, **drift)["run_key"]
        detected = run_cli("detect", "--data-root", root, "--run-key", run_key, *model).json
        trained = None
        if detected["champion"] is None or spec.metric_fails(detected["fresh_score"]):
            trained = run_cli("train-local", "--data-root", root, "--run-key", run_key, *model).json
            if trained["decision"] == "promote":
                run_cli("register", "--data-root", root, "--run-key", run_key, *model)
        return detected, trained

    first, trained1 = cycle(DAYS[0], seed=1)
    assert first["champion"] is None and trained1["decision"] == "promote" and trained1["metric"] == spec.metric
    assert not spec.metric_fails(trained1["challenger_score"])

    clean, retrained = cycle(DAYS[1], seed=2)
    assert clean["champion"]["version"] == "1" and retrained is None, clean["reason"]
    assert not spec.metric_fails(clean["fresh_score"]) and clean["metric"] == spec.metric

    drift = {"drift": "coefficient", "severity": 1.0} if spec.regression else {"drift": "concept", "severity": 0.5}
    drifted, trained3 = cycle(DAYS[2], seed=3, **drift)
    assert spec.metric_fails(drifted["fresh_score"]), drifted["reason"]
    assert trained3["decision"] == "promote", trained3["reason"]
    assert trained3["champion_version"] == "1" and trained3["improvement"] > 0

    client = MlflowClient(tracking)
    champion = client.get_model_version_by_alias(model[1], "champion")
    assert champion.version == "2" and champion.tags["metric"] == spec.metric
    assert champion.tags["dataset_fingerprint"] == spec.fingerprint()
    # The model's signature names and types the columns as the dataset file declares them.
    from mlflow.models import get_model_info

    inputs = {c.name: c.type.name for c in get_model_info(f"models:/{model[1]}/2").signature.inputs.inputs}
    assert inputs == {f.name: "double" if f.numeric else "string" for f in spec.features}
    print(json.dumps({"dataset": name, "rows_per_batch": 900, "numeric": sum(f.numeric for f in spec.features),
                      "categorical": sum(not f.numeric for f in spec.features), "estimator": spec.estimator,
                      "metric": spec.metric, "v1_test": trained1["challenger_score"],
                      "v1_on_clean_batch": clean["fresh_score"], "v1_on_drifted_batch": drifted["fresh_score"],
                      "v2_test": trained3["challenger_score"]}))


def test_a_batch_for_one_model_never_reaches_another(tmp_path):
    """Two dataset files, one data volume: each model's batches, curated data and quarantine are its own."""
    root = tmp_path / "volume"
    for name in ("wine", "iris"):
        run_cli("simulate", "--data-root", root, "--partition", DAYS[0], "--rows", 200, "--seed", 1,
                "--dataset", datasets.dataset_path(name))
    before = tree_snapshot(root / "landing" / datasets.load("iris").model_name)
    wine = run_cli("ingest", "--data-root", root, "--partition", DAYS[0], "--dataset",
                   datasets.dataset_path("wine")).json
    assert wine["curated_rows"] == 200 and wine["quarantined"] == []
    assert tree_snapshot(root / "landing" / datasets.load("iris").model_name) == before
    assert not (root / "curated" / datasets.load("iris").model_name).exists()
