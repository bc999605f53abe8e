"""The floor: the same four stages done directly with numpy/pandas/pyarrow/scikit-learn, no checks.

Run one stage per process (as the real stages are), so both sides pay the same
interpreter and import start-up:  python bare_stages.py STAGE DIR ROWS
The wide dataset's stages (wide_dataset.py), reading the batch files ours ingests:
    python bare_stages.py wide-ingest DIR LANDING_FOLDER | wide-split DIR | wide-train DIR
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import wide_dataset as wide

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = np.array(["setosa", "versicolor", "virginica"], dtype=object)


def simulate(folder: Path, rows: int) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris()
    logs = np.log(iris.data)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, rows)
    out = np.empty((rows, 4))
    for c in range(3):
        mask = labels == c
        out[mask] = rng.multivariate_normal(logs[iris.target == c].mean(0), np.cov(logs[iris.target == c].T),
                                            mask.sum())
    frame = pd.DataFrame(np.round(np.exp(out), 2), columns=FEATURES)
    frame["species"] = CLASSES[labels]
    frame.to_csv(folder / "batch.csv", index=False)


def ingest(folder: Path) -> None:
    pq.write_table(pacsv.read_csv(folder / "batch.csv"), folder / "batch.parquet")


def split(folder: Path) -> None:
    from sklearn.model_selection import train_test_split

    frame = pd.read_parquet(folder / "batch.parquet")
    train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame["species"])
    train.to_parquet(folder / "train.parquet")
    test.to_parquet(folder / "test.parquet")


def train(folder: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(train[FEATURES], train["species"])
    print((model.predict(test[FEATURES]) == test["species"]).mean())


def wide_ingest(folder: Path, landing: Path) -> None:
    empty_is_null = pacsv.ConvertOptions(strings_can_be_null=True)  # an empty category is missing, as in ours
    for index, path in enumerate(sorted(landing.glob("*.csv"))):  # one parquet file per landed file, as ours
        pq.write_table(pacsv.read_csv(path, convert_options=empty_is_null), folder / f"batch-{index:03d}.parquet")


def wide_split(folder: Path) -> None:
    from sklearn.model_selection import train_test_split

    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("batch-*.parquet"))], ignore_index=True)
    train, test = train_test_split(frame, test_size=0.25, random_state=wide.SEED, stratify=frame[wide.LABEL])
    train.to_parquet(folder / "train.parquet")
    test.to_parquet(folder / "test.parquet")


def wide_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The features as the model takes them: None marks a missing category (the imputer's missing_values)
    where pandas reads NaN, in an object column (pandas would infer its str dtype again, NaN for None)."""
    inputs = frame[wide.FEATURES].copy()
    for c in wide.CATEGORICAL:
        inputs[c] = pd.Series(frame[c].to_numpy(dtype=object, na_value=None), index=frame.index, dtype=object)
    return inputs


def wide_train(folder: Path) -> None:
    train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
    model = wide.floor_model().fit(wide_inputs(train), train[wide.LABEL])
    print((model.predict(wide_inputs(test)) == test[wide.LABEL]).mean())


if __name__ == "__main__":
    stage, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"simulate": lambda: simulate(folder, int(sys.argv[3])), "ingest": lambda: ingest(folder),
     "split": lambda: split(folder), "train": lambda: train(folder),
     "wide-ingest": lambda: wide_ingest(folder, Path(sys.argv[3])), "wide-split": lambda: wide_split(folder),
     "wide-train": lambda: wide_train(folder)}[stage]()
