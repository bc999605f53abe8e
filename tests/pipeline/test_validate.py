"""Validation rules, one bad file at a time, and properties of accepted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipeline.simulate import to_csv_bytes
from mlpipeline.validate import validate_csv

from .corpus import ACCEPTED_FILES, BAD_FILES


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_rejected_with_the_right_rule(name, schema):
    content, rule, details = BAD_FILES[name]
    result = validate_csv(content, schema)
    assert not result.ok and result.frame is None
    first = result.violations[0]
    assert first.rule == rule, [v.as_dict() for v in result.violations]
    for column in details.get("columns", []):
        assert column in first.columns
    for line in details.get("rows", []):
        assert line in first.rows
    if "message" in details:
        assert details["message"] in first.message
    assert first.message and first.count >= 0


@pytest.mark.parametrize("name", sorted(ACCEPTED_FILES))
def test_benign_variants_are_accepted(name, schema):
    result = validate_csv(ACCEPTED_FILES[name], schema)
    assert result.ok, [v.as_dict() for v in result.violations]
    assert list(result.frame.columns) == schema.columns
    assert len(result.frame) == 6
    assert result.frame[schema.feature_names].dtypes.eq("float64").all()


def test_bom_is_noted(schema):
    assert "stripped a UTF-8 byte-order mark" in validate_csv(ACCEPTED_FILES["bom.csv"], schema).notes


def test_all_violations_are_reported_with_exact_counts(schema):
    rows = ["5.1,3.5,1.4,0.2,setosa", "99,3.5,1.4,0.2,setosa", "5.1,3.5,1.4,0.2,rose", "98,3.1,1.4,0.2,lily"]
    content = ("sepal_length,sepal_width,petal_length,petal_width,species\n" + "\n".join(rows)).encode()
    rules = {v.rule: v for v in validate_csv(content, schema).violations}
    assert rules["out_of_range"].rows == [3, 5] and rules["out_of_range"].count == 2
    assert rules["unknown_label"].rows == [4, 5] and "rose" in rules["unknown_label"].message


def test_listed_rows_are_capped_but_count_is_exact(schema):
    rows = ["5.1,3.5,1.4,0.2,unknown"] * 50 + [f"5.{i % 10},3.{i // 10},1.4,0.2,setosa" for i in range(100)]
    content = ("sepal_length,sepal_width,petal_length,petal_width,species\n" + "\n".join(rows)).encode()
    label = next(v for v in validate_csv(content, schema).violations if v.rule == "unknown_label")
    assert label.count == 50 and len(label.rows) == 20


finite = st.floats(min_value=0.1, max_value=29.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(finite, finite, finite, finite, st.sampled_from(["setosa", "versicolor", "virginica"])),
                min_size=1, max_size=60, unique=True))
def test_any_in_range_frame_round_trips(schema, rows):
    frame = pd.DataFrame(rows, columns=schema.columns)
    frame[schema.feature_names] = frame[schema.feature_names].round(2)
    frame = frame.drop_duplicates(ignore_index=True)
    result = validate_csv(to_csv_bytes(frame), schema)
    assert result.ok, [v.as_dict() for v in result.violations]
    np.testing.assert_allclose(result.frame[schema.feature_names].to_numpy(), frame[schema.feature_names].to_numpy())
    assert result.frame[schema.label].tolist() == frame[schema.label].tolist()
