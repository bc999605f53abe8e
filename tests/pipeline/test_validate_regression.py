"""A regression label is a number: read as float64 in every format, never missing, never text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipeline import dataset
from mlpipeline.ingest import curated_schema
from mlpipeline.validate import validate_batch

from .corpus import encode, file_name

FIRST_LINE = {"csv": 2, "jsonl": 1, "parquet": 1}


def regression(fmt: str) -> dataset.Dataset:
    return dataset.parse({"model_name": "houses", "label": {"column": "price", "task": "regression"},
                          "features": [{"name": "rooms", "type": "numeric"},
                                       {"name": "district", "type": "categorical", "nullable": True}],
                          "source": {"format": fmt}}, "test", "houses")


def houses(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rooms = rng.integers(1, 8, rows).astype(float)
    return pd.DataFrame({"rooms": rooms, "district": rng.choice(["north", "south", None], rows),
                         "price": 50_000 * rooms + rng.normal(0, 10_000, rows)})


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_regression_label_is_read_as_a_number_in_every_format(fmt):
    frame = houses()
    frame["price"] = frame["price"].round(2)
    frame.loc[0, "price"] = 120000  # an integer in the file is the number it says
    result = validate_batch(encode(frame, fmt), file_name("batch", fmt), regression(fmt))
    assert result.ok, [v.as_dict() for v in result.violations]
    assert result.frame["price"].dtype == "float64"
    np.testing.assert_allclose(result.frame["price"].to_numpy(), frame["price"].to_numpy())
    assert curated_schema(regression(fmt)).field("price").type == "double"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("value, rule", [(np.nan, "non_finite"), (np.inf, "non_finite"), ("high", "text")])
def test_a_missing_infinite_or_text_label_is_refused_naming_the_label_and_line(fmt, value, rule):
    frame = houses().astype({"price": object})
    frame.loc[5, "price"] = value
    if rule == "text" and fmt == "parquet":  # Parquet holds one type per column: a text column
        frame["price"] = frame["price"].astype(str)
    result = validate_batch(encode(frame, fmt), file_name("batch", fmt), regression(fmt))
    assert not result.ok and result.frame is None
    violation = result.violations[0]
    assert violation.columns == ["price"]
    if rule == "text" and fmt == "parquet":  # the whole column is text in the file
        assert violation.rule == "column_type" and "regression label needs an integer or floating-point" in \
            violation.message
        return
    assert violation.rows == [5 + FIRST_LINE[fmt]] and violation.count == 1
    if rule == "text":
        assert violation.rule == "non_numeric" and "'high'" in violation.message
    else:
        assert violation.rule == "non_finite" and "the label is never missing" in violation.message


def test_a_zero_target_is_refused_only_where_the_metric_divides_by_it():
    frame = houses()
    frame.loc[[3, 7], "price"] = 0.0
    mape = dataset.parse({**regression("csv").as_dict(), "metric": {"name": "mape", "max": 0.2}}, "test", "houses")
    refused = validate_batch(encode(frame, "csv"), "batch.csv", mape)
    assert not refused.ok and refused.frame is None
    [violation] = refused.violations
    assert violation.rule == "zero_target" and violation.rows == [5, 9] and violation.count == 2
    assert "mape, divides by it" in violation.message
    assert validate_batch(encode(frame, "csv"), "batch.csv", regression("csv")).ok  # r2: a zero is a value
