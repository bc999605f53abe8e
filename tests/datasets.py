"""Test datasets shared by every layer's tests: dataset files in tests/datasets/ and their reference samples.

Each name is a dataset file's stem: `wine`, `breast-cancer`, `cancer-mixed`, and the regression datasets
`diabetes` and `friedman` (tests/datasets/), and
`iris`, the bundled example (datasets/iris.yaml). A reference sample (rows with the dataset's columns, what
`mlpipeline simulate --reference` draws batches from) is built from scikit-learn's bundled data whenever it
is asked for, the same every time: nothing generated is committed.

- iris, wine, breast-cancer: the bundled dataset, features named as the dataset file names them (what
  `--reference sklearn:<name>` gives too), the label the target's name;
- cancer-mixed: load_breast_cancer with three measurements binned into low/mid/high at the 50th and 80th
  percentiles, mean concavity graded in five at the 40th, 70th, 85th and 95th, and 5 % of three columns
  missing at rows chosen by a hash of the column name and row number;
- diabetes: load_diabetes, the label (progression) the numeric target;
- friedman: make_friedman1's 2,000 rows (noise 1, seed 0), features x0..x9, the label (response) its target.

Only the standard library is imported at module level: pandas, NumPy and scikit-learn when a sample is built.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
EXAMPLE = REPO / "datasets" / "iris.yaml"
NAMES = ("iris", "wine", "breast-cancer", "cancer-mixed", "diabetes", "friedman")
LABELS = {"iris": "species", "wine": "cultivar", "breast-cancer": "diagnosis", "cancer-mixed": "diagnosis",
          "diabetes": "progression", "friedman": "response"}
REGRESSION = ("diabetes", "friedman")
MISSING_SHARE = 0.05


def dataset_path(name: str) -> Path:
    """The dataset file of a test dataset (or of the example, `iris`)."""
    _check(name)
    return EXAMPLE if name == "iris" else DATASETS_DIR / f"{name}.yaml"


def load(name: str):
    """The parsed dataset file (mlpipeline.dataset.Dataset)."""
    from mlpipeline import dataset

    return dataset.load(dataset_path(name))


def reference_frame(name: str):
    """The reference sample of a test dataset, as a pandas DataFrame (a new one each call)."""
    _check(name)
    if name == "cancer-mixed":
        return _cancer_mixed()
    if name == "diabetes":
        return _sklearn_regression("load_diabetes", LABELS[name])
    if name == "friedman":
        return _friedman()
    return _sklearn({"iris": "load_iris", "wine": "load_wine", "breast-cancer": "load_breast_cancer"}[name],
                    LABELS[name])


def write_reference(name: str, path: str | Path) -> Path:
    """Write the reference sample of `name` to `path`: CSV or Parquet, as its suffix says."""
    path = Path(path)
    frame = reference_frame(name)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"write_reference writes .csv or .parquet, not {path.name}")
    return path


def column_name(name: str) -> str:
    """A scikit-learn feature name as the dataset files name it: "sepal length (cm)" -> sepal_length."""
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"\([^)]*\)", "", name).lower()).strip("_")


def _check(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"no test dataset {name!r}; the test datasets are {', '.join(NAMES)}")


def _sklearn(loader: str, label: str):
    import numpy as np
    import pandas as pd
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    frame = pd.DataFrame(bunch.data, columns=[column_name(str(c)) for c in bunch.feature_names])
    frame[label] = np.asarray([str(t) for t in bunch.target_names], dtype=object)[bunch.target]
    return frame


def _sklearn_regression(loader: str, label: str):
    import pandas as pd
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    frame = pd.DataFrame(bunch.data, columns=[column_name(str(c)) for c in bunch.feature_names])
    frame[label] = bunch.target.astype(float)
    return frame


def _friedman():
    import pandas as pd
    from sklearn.datasets import make_friedman1

    features, target = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=0)
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(10)])
    frame["response"] = target
    return frame


def _bands(values, quantiles, names):
    import numpy as np

    edges = np.quantile(values, quantiles)
    return np.asarray(names, dtype=object)[np.searchsorted(edges, values, side="right")]


def _missing_rows(column: str, rows: int) -> list[int]:
    """MISSING_SHARE of the rows, chosen by a hash of the column name and the row number."""
    ranked = sorted(range(rows), key=lambda i: hashlib.sha256(f"{column}:{i}".encode()).digest())
    return sorted(ranked[:round(MISSING_SHARE * rows)])


def _cancer_mixed():
    import numpy as np
    import pandas as pd

    source = _sklearn("load_breast_cancer", "diagnosis")
    bands = ("low", "mid", "high")
    frame = pd.DataFrame({
        "mean_radius": source["mean_radius"],
        "mean_texture": source["mean_texture"],
        "worst_concave_points": source["worst_concave_points"],
        "area_band": _bands(source["mean_area"], [0.5, 0.8], bands),
        "smoothness_band": _bands(source["mean_smoothness"], [0.5, 0.8], bands),
        "compactness_band": _bands(source["mean_compactness"], [0.5, 0.8], bands),
        "concavity_grade": _bands(source["mean_concavity"], [0.4, 0.7, 0.85, 0.95],
                                  ("very_low", "low", "moderate", "high", "very_high")),
        "diagnosis": source["diagnosis"],
    })
    for column in ("mean_radius", "worst_concave_points", "smoothness_band"):
        frame.loc[_missing_rows(column, len(frame)), column] = np.nan
    return frame


def v2_request(name: str, rows: int = 1) -> dict:
    """The first `rows` rows of the reference sample as a v2 inference request: an input per feature, FP64
    for numeric and BYTES for categorical ones, null where a value is missing."""
    spec, frame = load(name), reference_frame(name).head(rows)

    def values(feature) -> list:
        column = frame[feature.name]
        return [None if missing else (float(v) if feature.numeric else str(v))
                for v, missing in zip(column.tolist(), column.isna().tolist(), strict=True)]

    return {"inputs": [{"name": f.name, "shape": [len(frame)], "datatype": "FP64" if f.numeric else "BYTES",
                        "data": values(f)} for f in spec.features]}


def in_pipeline_environment(*args: str) -> str:
    """Run this module's command line (`write-reference NAME PATH`, `v2-request NAME`) with the pipeline
    environment's Python, which has pandas and scikit-learn (the Airflow environment has neither): its
    output."""
    import subprocess

    python = REPO / ".venv" / "pipeline" / "bin" / "python"
    return subprocess.run([str(python), "-m", "tests.datasets", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout


if __name__ == "__main__":
    import json
    import sys

    command, *arguments = sys.argv[1:]
    if command == "write-reference":
        print(write_reference(*arguments))
    elif command == "v2-request":
        print(json.dumps(v2_request(arguments[0])))
    else:
        sys.exit(f"unknown command {command!r}: write-reference NAME PATH | v2-request NAME")
