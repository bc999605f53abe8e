"""The wide benchmark dataset: 100 features (80 numeric, 20 categorical of 3 to 50 categories), 5 % of every
feature's values missing, a three-class label; its dataset file, its batches and the floor's model.

Imported by pipeline_stages.py (the dataset file, the batches) and bare_stages.py (the floor's model), so
it imports numpy and pyarrow only, never mlpipeline: the floor stays bare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

NAME = "wide-bench"  # the dataset file's stem and its model_name
NUMERIC = [f"num_{i:02d}" for i in range(80)]
# category counts spread from a few to 50: 3, 5, 8, ... 50
CATEGORICAL = {f"cat_{i:02d}": int(n) for i, n in enumerate(np.linspace(3, 50, 20).round())}
FEATURES = [*NUMERIC, *CATEGORICAL]
LABEL = "label"
CLASSES = ["a", "b", "c"]
MISSING = 0.05
SEED = 42  # the dataset file's split.seed: mlpipeline sets it as the estimator's random_state
MISSING_CATEGORY = "__missing__"  # mlpipeline.model.MISSING_CATEGORY
# One landed file holds at most this many rows (~610 MB of CSV): ingest refuses a file over 1 GiB
# (mlpipeline.volume.Limits), so a bigger batch lands as several files, as a real export would.
ROWS_PER_FILE = 1_000_000
SCHEMA = pa.schema([*((n, pa.float64()) for n in NUMERIC), *((n, pa.string()) for n in CATEGORICAL),
                    (LABEL, pa.string())])


def categories(name: str) -> list[str]:
    return [f"{name[-2:]}v{k}" for k in range(CATEGORICAL[name])]


def dataset_yaml() -> str:
    """The dataset file: every feature nullable (5 % missing), numeric ones with a plausible range,
    categorical ones with their categories declared."""
    lines = [f"model_name: {NAME}",
             f"label: {{column: {LABEL}, task: classification, classes: [{', '.join(CLASSES)}]}}", "features:"]
    lines += [f"  - {{name: {n}, type: numeric, nullable: true, min: -1000, max: 1000}}" for n in NUMERIC]
    lines += [f"  - {{name: {n}, type: categorical, nullable: true, categories: [{', '.join(categories(n))}]}}"
              for n in CATEGORICAL]
    lines += ["source: {format: csv}", "model: {estimator: hist_gradient_boosting}",
              "metric: {name: accuracy, min: 0.5}", f"split: {{test_size: 0.25, seed: {SEED}}}", "window: last:1"]
    return "\n".join(lines) + "\n"


def _block(rows: int, rng: np.random.Generator) -> pa.Table:
    """`rows` rows whose label depends on 10 numeric and 5 categorical features (a learnable signal)."""
    numeric = np.round(rng.normal(0, 10, (rows, len(NUMERIC))), 2)
    codes = {n: rng.integers(0, k, rows) for n, k in CATEGORICAL.items()}
    weights = np.random.default_rng(7).normal(0, 1, (10, len(CLASSES)))  # fixed: every block the same concept
    scores = numeric[:, :10] @ weights / 10 + rng.normal(0, 1, (rows, len(CLASSES)))
    for j, name in enumerate(list(CATEGORICAL)[:5]):
        scores[np.arange(rows), j % len(CLASSES)] += (codes[name] % 3 == 0) * 1.5
    label = np.asarray(CLASSES)[scores.argmax(1)]
    columns = {n: pa.array(numeric[:, i], mask=rng.random(rows) < MISSING) for i, n in enumerate(NUMERIC)}
    for name, code in codes.items():  # a dictionary array cast to text: no Python string per value
        indices = pa.array(code.astype(np.int32), mask=rng.random(rows) < MISSING)
        columns[name] = pa.DictionaryArray.from_arrays(indices, pa.array(categories(name))).cast(pa.string())
    columns[LABEL] = pa.array(label)
    return pa.table(columns)


def write_batches(folder: Path, rows: int, seed: int = 0) -> list[Path]:
    """The batch as CSV files of at most ROWS_PER_FILE rows (a missing value is an empty field) and the
    _SUCCESS marker, in `folder` (a landing partition)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, paths = np.random.default_rng(seed), []
    for index, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        path = folder / f"batch-{index:03d}.csv"
        with pacsv.CSVWriter(path, SCHEMA) as writer:
            for block in range(start, min(rows, start + ROWS_PER_FILE), 100_000):  # bounded memory
                writer.write_table(_block(min(100_000, rows - block, start + ROWS_PER_FILE - block), rng))
        paths.append(path)
    (folder / "_SUCCESS").write_bytes(b"")
    return paths


def floor_model():
    """The model mlpipeline.model.build_model makes of this dataset file, built with plain scikit-learn:
    numeric features median-imputed (no scaling: the estimator needs none), categorical ones imputed with
    a constant and one-hot encoded into a dense matrix, then the estimator with the split's seed.
    pipeline_stages.py checks it is identical (every parameter) to mlpipeline's before measuring."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prepare = ColumnTransformer([
        ("numeric", Pipeline([("impute", SimpleImputer(strategy="median"))]), NUMERIC),
        ("categorical", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY,
                                                           missing_values=None)),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]), list(CATEGORICAL)),
    ], sparse_threshold=0)
    return Pipeline([("prepare", prepare), ("clf", HistGradientBoostingClassifier(random_state=SEED))])
