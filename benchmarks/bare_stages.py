"""The floor: the same four stages done directly with numpy/pandas/pyarrow/scikit-learn, no checks.

Run one stage per process (as the real stages are), so both sides pay the same
interpreter and import start-up:  python bare_stages.py STAGE DIR ROWS
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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


if __name__ == "__main__":
    stage, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"simulate": lambda: simulate(folder, int(sys.argv[3])), "ingest": lambda: ingest(folder),
     "split": lambda: split(folder), "train": lambda: train(folder)}[stage]()
