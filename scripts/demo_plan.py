"""The story `make demo` tells (scripts/demo_story.py): the days it lands, what changes on the last one,
and the request it tells a user to send afterwards. Standard library only, so that the demo (Airflow's
environment) and the test of its story (tests/pipeline/test_demo_plan.py, with the pipeline's simulator and
model) read the same plan.

Day 3 is a sensor recalibration, a drift a user recognises: the same flowers, but the petal-length sensor now
reads 1.6 times what it did. The model trained before then takes most versicolor for virginica (its accuracy on
that day's batch falls to about 0.7, below iris.yaml's 0.85), the readings stay inside the file's plausible
range (so ingest accepts them and detection has to notice), and a model retrained on them answers what a user
expects for a flower measured with the new sensor."""

from __future__ import annotations

import sys

ROWS = 1500
# (partition, drift), landed with seeds 1, 2, 3: two clean days, then the recalibration.
DAYS = [("2026-11-01", "none"), ("2026-11-02", "none"), ("2026-11-03", "recalibration")]
DRIFT_DAY = DAYS[-1][0]
RECALIBRATED, SCALE = "petal_length", 1.6  # the sensor and the factor its readings change by
# Fisher's first setosa and first versicolor (rows 1 and 51 of his table), as the old sensor read them (cm),
# in the order of iris.yaml's features.
TEXTBOOK = {"setosa": [5.1, 3.5, 1.4, 0.2], "versicolor": [7.0, 3.2, 4.7, 1.4]}
# The canary's class-mix limit for the demo ([mlops] canary_max_class_divergence, 0.25 by default; demo.sh
# sets it). The check compares the canary's predicted classes with the version it replaces, taking that one
# as right. After the recalibration it is not: on the new readings it calls most versicolor virginica, so the
# retrained canary, right, differs from it by about a third of the traffic (tests/pipeline/test_demo_plan.py
# measures it), and the default would roll the fix back. 0.45 leaves room for a small window's sampling noise.
CANARY_MAX_CLASS_DIVERGENCE = 0.45


def seed(day: str) -> int:
    return [d for d, _ in DAYS].index(day) + 1


def simulate_args(day: str, drift: str) -> list[str]:
    """The `mlpipeline simulate` options that land `day` (besides --data-root and --dataset)."""
    args = ["--partition", day, "--rows", str(ROWS), "--drift", drift, "--seed", str(seed(day))]
    return args + (["--recalibrate", f"{RECALIBRATED}*{SCALE:g}"] if drift == "recalibration" else [])


def recalibrated(row: list[float], features: list[str]) -> list[float]:
    """`row` (values of `features`) as the recalibrated sensor reads it, to the hundredth as the batches are."""
    return [round(v * SCALE, 2) if name == RECALIBRATED else v for name, v in zip(features, row, strict=True)]


def sensor_words() -> str:
    return RECALIBRATED.replace("_", "-")


def what_changed() -> str:
    """Day 3 in plain words."""
    before = TEXTBOOK["setosa"][2]
    return (f"the {sensor_words()} sensor was recalibrated: its readings are now {SCALE:g}× what they were "
            f"(a {before:g} cm petal reads {before * SCALE:.2f})")


def textbook_request(features: list[str]) -> dict:
    """An Open Inference Protocol v2 request for the textbook flowers as the recalibrated sensor reads them:
    one named input per feature, one row per flower."""
    rows = [recalibrated(row, features) for row in TEXTBOOK.values()]
    return {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
                       for i, name in enumerate(features)]}


if __name__ == "__main__":  # demo.sh reads the canary limit from here, before Airflow starts
    if sys.argv[1:] != ["canary_max_class_divergence"]:
        sys.exit("usage: demo_plan.py canary_max_class_divergence")
    print(CANARY_MAX_CLASS_DIVERGENCE)
