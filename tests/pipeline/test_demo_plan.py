"""The story `make demo` tells (scripts/demo_plan.py), on the pipeline layer: its days landed with the demo's own
`simulate` options, ingested and split by the stages, models fitted as training fits them
(mlpipeline.model.fit), judged against the example dataset file's threshold. The live demo runs the same days
through Airflow (scripts/demo_story.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipeline.dataset import load
from mlpipeline.model import fit, model_inputs
from mlpipeline.simulate import Recalibration, simulate
from mlpipeline.volume import DataVolume
from scripts import demo_plan
from tests.support import EXAMPLE_DATASET

from .helpers import run_cli

DATASET = load(EXAMPLE_DATASET)
FEATURES = list(DATASET.feature_names)


def default_canary_max_class_divergence() -> float:
    """The canary policy's default class-mix limit (plugins/mlops/canary.py: standard library and the dataset
    parser only, so this environment can read it)."""
    import sys

    from tests.support import REPO

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from mlops.canary import CanaryPolicy
    finally:
        sys.path.remove(str(REPO / "plugins"))
    return CanaryPolicy().max_class_divergence


def story(root) -> dict[str, dict[str, pd.DataFrame]]:
    """The demo's days landed with its options; each day's landed batch, and for days 1 and 3 (the ones that
    train in the demo: day 2 keeps the champion) the train, test and fresh sets `split` makes of its window (the day's
    batch, iris.yaml's window last:1) after `ingest`."""
    days = {}
    for day, drift in demo_plan.DAYS:
        given = ["--data-root", root, "--dataset", EXAMPLE_DATASET]
        landed = run_cli("simulate", *given, *demo_plan.simulate_args(day, drift)).json
        days[day] = {"batch": pd.read_csv(landed["path"])}
        if day != demo_plan.DAYS[1][0]:
            run_cli("ingest", *given, "--partition", day)
            run_key = run_cli("split", *given, "--partition", day).json["run_key"]
            run = DataVolume(root, DATASET.model_name).run_dir(run_key)
            days[day] |= {s: pd.read_parquet(run / f"{s}.parquet") for s in ("train", "test", "fresh")}
    return days


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    return story(tmp_path_factory.mktemp("demo-volume"))


def accuracy(model, frame: pd.DataFrame) -> float:
    return float(np.mean(model.predict(model_inputs(frame, DATASET)) == frame[DATASET.label].to_numpy()))


def class_mix(model, frame: pd.DataFrame) -> pd.Series:
    predicted = pd.Series(model.predict(model_inputs(frame, DATASET)))
    return predicted.value_counts(normalize=True).reindex(DATASET.classes, fill_value=0.0)


def test_the_recalibrated_day_is_the_clean_day_with_one_sensor_rescaled_and_ingest_takes_it(days):
    drift_day = demo_plan.DRIFT_DAY
    landed, clean = days[drift_day]["batch"], simulate(DATASET, demo_plan.ROWS, seed=demo_plan.seed(drift_day))
    others = [c for c in DATASET.columns if c != demo_plan.RECALIBRATED]
    assert landed[others].equals(clean[others])
    np.testing.assert_allclose(landed[demo_plan.RECALIBRATED], demo_plan.SCALE * clean[demo_plan.RECALIBRATED],
                               atol=0.001 * (1 + demo_plan.SCALE))  # both rounded to the thousandth
    assert len(days[drift_day]["fresh"]) == demo_plan.ROWS, "ingest took every row: within the plausible range"


def test_on_the_drift_day_the_served_model_falls_below_the_threshold_and_a_retrained_one_answers_as_expected(days):
    first, second, drift_day = (d for d, _ in demo_plan.DAYS)
    threshold = DATASET.metric_threshold
    champion = fit(days[first]["train"], DATASET)  # the demo's v1: day 2 keeps it, so it serves on day 3
    assert accuracy(champion, days[second]["batch"]) >= threshold, "day 2 must not retrain"
    # What detect scores on day 3: the fresh batch. Below the threshold, also for a model that had seen day 2.
    assert accuracy(champion, days[drift_day]["fresh"]) < threshold - 0.05
    both = fit(pd.concat([days[first]["batch"], days[second]["batch"]], ignore_index=True), DATASET)
    assert accuracy(both, days[drift_day]["fresh"]) < threshold - 0.05

    challenger = fit(days[drift_day]["train"], DATASET)
    test = days[drift_day]["test"]
    # training promotes it: it meets the threshold and beats the champion on the same held-out rows by far
    # more than the promotion margin
    assert accuracy(challenger, test) >= threshold and accuracy(challenger, test) > accuracy(champion, test) + 0.15

    # The request the demo tells a user to send: the textbook setosa and versicolor, measured with the new sensor.
    request = demo_plan.textbook_request(FEATURES)
    flowers = pd.DataFrame({i["name"]: i["data"] for i in request["inputs"]})
    assert flowers[demo_plan.RECALIBRATED].tolist() == [round(demo_plan.SCALE * row[FEATURES.index(
        demo_plan.RECALIBRATED)], 2) for row in demo_plan.TEXTBOOK.values()]
    assert challenger.predict(model_inputs(flowers, DATASET)).tolist() == list(demo_plan.TEXTBOOK)
    # ... which is why day 3 matters: the old model takes the recalibrated versicolor for a virginica
    assert champion.predict(model_inputs(flowers, DATASET)).tolist() == ["setosa", "virginica"]


def test_the_demos_canary_limit_lets_the_retrained_model_through_where_the_default_would_not(days):
    """The canary compares the new version's predicted-class mix with the old one's on the same traffic (the
    demo's clients measure with the recalibrated sensor from day 3 on). A recalibrated batch of another seed
    stands in for that traffic."""
    first, _, drift_day = (d for d, _ in demo_plan.DAYS)
    old, new = fit(days[first]["train"], DATASET), fit(days[drift_day]["train"], DATASET)
    traffic = simulate(DATASET, demo_plan.ROWS, "recalibration", seed=len(demo_plan.DAYS) + 1,
                       recalibrations=(Recalibration(demo_plan.RECALIBRATED, demo_plan.SCALE),))
    divergence = 0.5 * float(np.abs(class_mix(old, traffic) - class_mix(new, traffic)).sum())
    assert divergence > default_canary_max_class_divergence()  # why demo.sh sets the limit at all
    # room for the noise of a canary judged on its first ~100 requests (a class share's sd is about 0.05)
    assert divergence < demo_plan.CANARY_MAX_CLASS_DIVERGENCE - 0.1


def test_the_demo_says_what_changed_in_the_units_it_applied():
    words = demo_plan.what_changed()
    before = demo_plan.TEXTBOOK["setosa"][FEATURES.index(demo_plan.RECALIBRATED)]
    assert "petal-length sensor was recalibrated" in words and f"{demo_plan.SCALE:g}×" in words
    assert f"a {before:g} cm petal reads {before * demo_plan.SCALE:.2f}" in words
    assert demo_plan.simulate_args(demo_plan.DRIFT_DAY, "recalibration")[-2:] == [
        "--recalibrate", f"{demo_plan.RECALIBRATED}*{demo_plan.SCALE:g}"]
