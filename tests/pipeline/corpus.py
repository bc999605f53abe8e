"""The bad-file corpus: each entry is (file name, bytes, expected rule or None when accepted)."""

from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_breast_cancer, load_wine

from mlpipeline import dataset

HEADER = "sepal_length,sepal_width,petal_length,petal_width,species\n"
ROWS = [
    "5.1,3.5,1.4,0.2,setosa",
    "7.0,3.2,4.7,1.4,versicolor",
    "6.3,3.3,6.0,2.5,virginica",
    "4.9,3.0,1.4,0.2,setosa",
    "6.4,3.2,4.5,1.5,versicolor",
    "5.8,2.7,5.1,1.9,virginica",
]
GOOD = HEADER + "\n".join(ROWS) + "\n"


def _with(row_index: int, row: str) -> str:
    rows = list(ROWS)
    rows[row_index] = row
    return HEADER + "\n".join(rows) + "\n"


def _drop_column(index: int) -> str:
    lines = [HEADER.strip(), *ROWS]
    return "\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != index) for line in lines) + "\n"


BAD_FILES: dict[str, tuple[bytes, str, dict]] = {
    # name: (content, expected rule, expected details: columns and/or line numbers)
    "empty.csv": (b"", "empty_file", {}),
    "blank_lines.csv": (b"\n\n  \n", "empty_file", {}),
    "header_only.csv": (HEADER.encode(), "no_rows", {}),
    "missing_column.csv": (_drop_column(3).encode(), "columns", {"columns": ["petal_width"]}),
    "extra_column.csv": (GOOD.replace("species\n", "species,notes\n").replace("\n5.", ",x\n5.")
                         .encode(), "columns", {"columns": ["notes"]}),
    "renamed_column.csv": (GOOD.replace("sepal_length", "sepal_len").encode(), "columns",
                           {"columns": ["sepal_length", "sepal_len"], "message": "renamed?"}),
    "semicolons.csv": (GOOD.replace(",", ";").encode(), "delimiter", {"message": "';'"}),
    "tabs.csv": (GOOD.replace(",", "\t").encode(), "delimiter", {"message": "'\\t'"}),
    "non_numeric.csv": (_with(2, "6.3,three,6.0,2.5,virginica").encode(), "non_numeric",
                        {"columns": ["sepal_width"], "rows": [4]}),
    "nan.csv": (_with(1, "7.0,NaN,4.7,1.4,versicolor").encode(), "non_finite",
                {"columns": ["sepal_width"], "rows": [3]}),
    "inf.csv": (_with(3, "4.9,3.0,inf,0.2,setosa").encode(), "non_finite",
                {"columns": ["petal_length"], "rows": [5]}),
    "empty_cell.csv": (_with(0, "5.1,,1.4,0.2,setosa").encode(), "non_finite",
                       {"columns": ["sepal_width"], "rows": [2]}),
    "spaced_missing.csv": (_with(2, "6.3, n/a ,6.0,2.5,virginica").encode(), "non_finite",
                           {"columns": ["sepal_width"], "rows": [4]}),
    "huge_number.csv": (_with(1, "7.0,3.2,1e400,1.4,versicolor").encode(), "non_finite",
                        {"columns": ["petal_length"], "rows": [3]}),
    "out_of_range.csv": (_with(4, "640,3.2,4.5,1.5,versicolor").encode(), "out_of_range",
                         {"columns": ["sepal_length"], "rows": [6]}),
    "negative.csv": (_with(5, "5.8,2.7,5.1,-1.9,virginica").encode(), "out_of_range",
                     {"columns": ["petal_width"], "rows": [7]}),
    "unknown_label.csv": (_with(2, "6.3,3.3,6.0,2.5,iris-virginica").encode(), "unknown_label",
                          {"columns": ["species"], "rows": [4]}),
    "duplicates.csv": ((HEADER + "\n".join(ROWS + ROWS) + "\n").encode(), "duplicate_rows", {"rows": [8, 9]}),
    "truncated.csv": (GOOD.rstrip("\n").rsplit(",", 1)[0].rsplit(",", 1)[0].encode(), "malformed_rows", {"rows": [7]}),
    "binary.csv": (gzip.compress(GOOD.encode()), "not_csv", {}),
    "latin1.csv": (_with(0, "5.1,3.5,1.4,0.2,sétosa").encode("latin-1"), "not_csv", {}),
    "json.csv": (b'{"sepal_length": 5.1, "species": "setosa"}\n', "not_csv", {}),
    "png.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not_csv", {}),
}

ACCEPTED_FILES: dict[str, bytes] = {
    "good.csv": GOOD.encode(),
    "bom.csv": b"\xef\xbb\xbf" + GOOD.replace("4.9,3.0", "4.8,3.0").encode(),
    "crlf.csv": GOOD.replace("\n", "\r\n").replace("6.4,3.2", "6.5,3.2").encode(),
    "spaces_around_values.csv": GOOD.replace("6.3,3.3", "6.2, 3.3").replace("7.0,3.2", " 7.1,3.2").encode(),
    "quoted_header.csv": GOOD.replace("species", '"species"').replace("5.8,2.7", "5.7,2.7").encode(),
}


# ---- other datasets, every format ----------------------------------------------------------------------------
# Datasets the validation code was not written for, built from scikit-learn's bundled data: wine (13 numeric
# features, a declared text label, columns to drop), breast cancer (30 numeric features whose names hold
# spaces, an integer label whose classes are learned), and one derived from breast cancer with categorical
# features (one coded "01".."05"), nullable columns with ~5 % of values blanked, and columns to drop.

FORMATS = ("csv", "jsonl", "parquet")
VARIANTS = (("csv", None), ("csv", "gzip"), ("csv", "zstd"), ("jsonl", None), ("jsonl", "gzip"),
            ("jsonl", "zstd"), ("parquet", None))
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
COMPRESSED = {None: "", "gzip": ".gz", "zstd": ".zst"}


@dataclass(frozen=True)
class Case:
    """A dataset file (as a dict) and a good batch of it, as a writer has it (drop columns included)."""
    name: str
    document: dict
    frame: pd.DataFrame
    numeric: str  # a non-nullable numeric feature
    nullable: str  # a nullable feature
    categorical: str | None = None  # a non-nullable categorical feature
    unknown_class: str | None = None  # a label outside the declared classes

    def dataset(self, fmt: str = "csv"):
        return dataset.parse({**self.document, "source": {"format": fmt}}, f"{self.name}.yaml (test)", self.name)


def _wine() -> Case:
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = pd.Series(["barolo", "grignolino", "barbera"]).take(data.target.to_numpy()).to_numpy()
    frame.insert(0, "sample_id", np.arange(len(frame)) + 1000)
    frame["exported_at"] = "2026-11-01T06:00:00Z"
    ranges = {"alcohol": (5.0, 20.0), "malic_acid": (0.0, 10.0), "proline": (100.0, 3000.0)}
    features = [{"name": str(c), "type": "numeric", **dict(zip(("min", "max"), ranges.get(c, ()), strict=False))}
                for c in data.feature_names]
    document = {"model_name": "wine-cultivar", "label": {"column": "cultivar",
                                                         "classes": ["barolo", "grignolino", "barbera"]},
                "features": features, "drop_columns": ["sample_id", "exported_at"]}
    return Case("wine", document, frame, numeric="alcohol", nullable="", unknown_class="merlot")


def _breast_cancer() -> Case:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "diagnosis"})
    features = [{"name": str(c), "type": "numeric"} for c in data.feature_names]
    features[0].update(min=0.0, max=100.0, unit="mm")
    document = {"model_name": "breast-cancer", "label": {"column": "diagnosis"}, "features": features,
                "model": {"estimator": "random_forest"}}
    return Case("breast_cancer", document, frame, numeric="mean radius", nullable="")


def _tumours() -> Case:
    data = load_breast_cancer(as_frame=True)
    source, rng = data.frame, np.random.default_rng(7)
    frame = pd.DataFrame({
        "patient_id": [f"p{i:05d}" for i in range(len(source))],
        "size_band": pd.cut(source["mean radius"], [0, 12, 16, 100], labels=["small", "medium", "large"])
        .astype(object),
        "texture_grade": pd.qcut(source["mean texture"], 5, labels=["01", "02", "03", "04", "05"]).astype(object),
        "smooth": np.where(source["mean smoothness"] > 0.1, "yes", "no").astype(object),
        "mean area": source["mean area"],
        "mean concavity": source["mean concavity"],
        "worst perimeter": source["worst perimeter"],
        "diagnosis": np.where(source["target"] == 1, "benign", "malignant").astype(object),
    })
    for column in ("size_band", "smooth", "mean area", "mean concavity"):  # nullable: ~5 % blanked
        blank = rng.random(len(frame)) < 0.05
        frame.loc[blank, column] = np.nan if frame[column].dtype == "float64" else None
    frame.loc[3, "smooth"] = "maybe"  # a category not declared: accepted, noted
    features = [
        {"name": "size_band", "type": "categorical", "nullable": True, "categories": ["small", "medium", "large"]},
        {"name": "texture_grade", "type": "categorical"},
        {"name": "smooth", "type": "categorical", "nullable": True, "categories": ["yes", "no"]},
        {"name": "mean area", "type": "numeric", "nullable": True, "min": 0.0},
        {"name": "mean concavity", "type": "numeric", "nullable": True},
        {"name": "worst perimeter", "type": "numeric", "min": 0.0, "max": 1000.0},
    ]
    document = {"model_name": "tumour-grade", "label": {"column": "diagnosis", "classes": ["benign", "malignant"]},
                "features": features, "drop_columns": ["patient_id", "scanned_at"],
                "model": {"estimator": "hist_gradient_boosting"}}
    return Case("tumours", document, frame, numeric="worst perimeter", nullable="mean area",
                categorical="texture_grade", unknown_class="cyst")


CASES = {case.name: case for case in (_wine(), _breast_cancer(), _tumours())}


def _json_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def encode(frame: pd.DataFrame, fmt: str, compression: str | None = None) -> bytes:
    """The frame as a file of `fmt`: CSV (missing values empty), JSON lines (null; an infinite number as
    Python writes it), Parquet; then compressed."""
    if fmt == "csv":
        data = frame.to_csv(index=False, lineterminator="\n").encode()
    elif fmt == "jsonl":
        records = frame.astype(object).to_dict("records")
        data = "".join(json.dumps({k: _json_value(v) for k, v in r.items()}) + "\n" for r in records).encode()
    else:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
        data = sink.getvalue()
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return pa.Codec("zstd").compress(data, asbytes=True)
    return data


def file_name(stem: str, fmt: str, compression: str | None = None) -> str:
    return f"{stem}{SUFFIX[fmt]}{COMPRESSED[compression]}"
