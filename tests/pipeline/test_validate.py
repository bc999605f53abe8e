"""Validation rules, one bad file at a time, and properties of accepted data: the example (iris, CSV), then
datasets it was not written for in every format (tests/pipeline/corpus.py builds them)."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipeline.simulate import to_csv_bytes
from mlpipeline.validate import validate_batch, validate_csv
from mlpipeline.volume import Limits

from .corpus import ACCEPTED_FILES, BAD_FILES, CASES, FORMATS, VARIANTS, encode, file_name


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


# ---- any dataset, any format ---------------------------------------------------------------------------------

FIRST_LINE = {"csv": 2, "jsonl": 1, "parquet": 1}  # the line (Parquet: row number) of the first data row
EVERY_VARIANT = [pytest.param(case, fmt, compression, id=f"{case}-{fmt}{'-' + compression if compression else ''}")
                 for case in CASES for fmt, compression in VARIANTS]


def _validate(case, frame, fmt, compression=None, limits=Limits()):
    return validate_batch(encode(frame, fmt, compression), file_name("batch", fmt, compression), case.dataset(fmt),
                          limits)


def _rules(result) -> dict:
    assert not result.ok and result.frame is None
    return {v.rule: v for v in result.violations}


@pytest.mark.parametrize("case_name, fmt, compression", EVERY_VARIANT)
def test_a_good_batch_is_accepted_with_the_declared_types(case_name, fmt, compression):
    case = CASES[case_name]
    dataset = case.dataset(fmt)
    result = _validate(case, case.frame, fmt, compression)
    assert result.ok, [v.as_dict() for v in result.violations]
    frame, source = result.frame, case.frame
    assert list(frame.columns) == dataset.columns and len(frame) == len(source)
    for feature in dataset.features:
        got, want = frame[feature.name], source[feature.name]
        if feature.numeric:
            assert got.dtype == "float64", feature.name
            np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(dtype="float64"))
        else:
            assert pd.api.types.is_string_dtype(got.dtype), (feature.name, got.dtype)
            assert got.isna().tolist() == want.isna().tolist()
            assert got[got.notna()].tolist() == want[want.notna()].tolist()
    label = frame[dataset.label]
    assert pd.api.types.is_string_dtype(label.dtype)
    assert label.tolist() == source[dataset.label].astype(str).tolist()  # an integer label 1 is the text "1"
    if compression:
        assert any(n.startswith(f"{compression}: ") for n in result.notes)


def test_categories_stay_text_and_unseen_ones_are_noted_not_refused():
    case = CASES["tumours"]
    for fmt in FORMATS:
        result = _validate(case, case.frame, fmt)
        assert result.ok
        assert sorted(result.frame["texture_grade"].unique()) == ["01", "02", "03", "04", "05"]
        assert result.frame["smooth"].isna().sum() == case.frame["smooth"].isna().sum() > 10
        assert any("'smooth': 1 row(s) with a category not declared, such as ['maybe']" in n for n in result.notes)
        assert any("dropped column(s) ['patient_id']" in n for n in result.notes)
    without = case.frame.drop(columns="patient_id")  # a drop column may be absent
    assert _validate(case, without, "csv").ok


def _bad(case, change):
    frame = case.frame.copy()
    for column in frame.columns:
        if frame[column].dtype != "float64":
            frame[column] = frame[column].astype(object)
    change(frame)
    return frame


def _set(row, column, value):
    def change(frame):
        frame.loc[row, column] = value
    return change


BAD_VALUES = {
    # kind: (which case's columns, change, expected rule, the row and column it names)
    "missing_numeric": (lambda c: c.numeric, np.nan, "non_finite", 5),
    "infinite_numeric": (lambda c: c.numeric, np.inf, "non_finite", 7),
    "infinite_nullable": (lambda c: c.nullable, -np.inf, "non_finite", 8),
    "missing_categorical": (lambda c: c.categorical, None, "missing_values", 9),
    "missing_label": (lambda c: c.dataset().label, None, "missing_values", 4),
    "unknown_class": (lambda c: c.dataset().label, lambda c: c.unknown_class, "unknown_label", 3),
}


def _bad_value_params():
    for kind, (column, _, _, _) in BAD_VALUES.items():
        for case in CASES.values():
            if not column(case) or (kind == "unknown_class" and not case.unknown_class):
                continue
            for fmt, compression in VARIANTS:
                yield pytest.param(kind, case.name, fmt, compression,
                                   id=f"{kind}-{case.name}-{fmt}{'-' + compression if compression else ''}")


@pytest.mark.parametrize("kind, case_name, fmt, compression", list(_bad_value_params()))
def test_a_bad_value_is_refused_naming_rule_column_and_line(kind, case_name, fmt, compression):
    case = CASES[case_name]
    column_of, value, rule, row = BAD_VALUES[kind]
    column = column_of(case)
    value = value(case) if callable(value) else value
    result = _validate(case, _bad(case, _set(row, column, value)), fmt, compression)
    violation = _rules(result)[rule]
    assert violation.columns == [column] and violation.rows == [row + FIRST_LINE[fmt]] and violation.count == 1
    if kind == "missing_numeric":
        assert "missing" in violation.message and "not nullable" in violation.message
    if kind.startswith("infinite"):
        assert "infinite" in violation.message


def test_a_missing_value_in_a_nullable_feature_is_stored_as_missing():
    case = CASES["tumours"]
    frame = _bad(case, _set(10, "mean area", None))
    frame.loc[11, "size_band"] = "  "  # blank
    frame.loc[12, "size_band"] = "N/A"  # a missing-value token
    for fmt in FORMATS:
        result = _validate(case, frame, fmt)
        assert result.ok, [v.as_dict() for v in result.violations]
        assert np.isnan(result.frame.loc[10, "mean area"])
        assert result.frame.loc[11:12, "size_band"].isna().all()


def test_undeclared_classes_accept_any_label_but_never_a_missing_one():
    case = CASES["breast_cancer"]
    frame = _bad(case, _set(2, "diagnosis", 7))
    assert _validate(case, frame, "jsonl").frame["diagnosis"].iloc[2] == "7"
    frame.loc[3, "diagnosis"] = "  "
    (violation,) = _rules(_validate(case, frame, "csv")).values()
    assert violation.rule == "missing_values" and violation.rows == [5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_column_not_in_the_dataset_is_refused_with_a_hint(fmt):
    case = CASES["wine"]
    frame = case.frame.assign(notes="x").rename(columns={"alcohol": "alcohol_pct"})
    violation = _rules(_validate(case, frame, fmt))["columns"]
    assert {"alcohol", "alcohol_pct", "notes"} <= set(violation.columns)
    assert "renamed? 'alcohol_pct'->'alcohol'" in violation.message
    assert "dropped: ['sample_id', 'exported_at']" in violation.message


def test_every_rule_is_reported_at_once_with_its_lines():
    case = CASES["wine"]
    frame = _bad(case, _set(0, "alcohol", 50.0))
    frame.loc[1, "cultivar"] = "merlot"
    frame.loc[2, "ash"] = np.nan
    for fmt in FORMATS:
        rules = _rules(_validate(case, frame, fmt))
        first = FIRST_LINE[fmt]
        assert (rules["out_of_range"].rows, rules["unknown_label"].rows, rules["non_finite"].rows) == (
            [first], [first + 1], [first + 2])
        assert "outside [5.0, 20.0]" in rules["out_of_range"].message


@pytest.mark.parametrize("fmt, landed_as", [("csv", "batch.json"), ("csv", "batch.parquet"), ("csv", "batch"),
                                            ("jsonl", "batch.csv"), ("jsonl", "batch.jsonl.bz2"),
                                            ("parquet", "batch.csv.gz"), ("parquet", "batch.parquet.gz")])
def test_a_file_named_for_another_format_is_refused_naming_the_expected_one(fmt, landed_as):
    case = CASES["wine"]
    result = validate_batch(encode(case.frame, fmt), landed_as, case.dataset(fmt))
    (violation,) = _rules(result).values()
    assert violation.rule == "wrong_format" and fmt in violation.message and landed_as in violation.message


@pytest.mark.parametrize("fmt, compression", [(f, c) for f, c in VARIANTS if c])
def test_a_truncated_or_mislabelled_compressed_file_is_refused(fmt, compression):
    case = CASES["tumours"]
    data = encode(case.frame, fmt, compression)
    for broken in (data[:len(data) // 2], data[:-6], encode(case.frame, fmt)):
        result = validate_batch(broken, file_name("batch", fmt, compression), case.dataset(fmt))
        (violation,) = _rules(result).values()
        assert violation.rule == "bad_compression" and compression in violation.message


@pytest.mark.parametrize("fmt, compression", [(f, c) for f, c in VARIANTS if c])
def test_a_compression_bomb_is_refused_without_being_expanded(fmt, compression):
    case = CASES["wine"]
    good = encode(case.frame, fmt)
    bomb = good + good.splitlines(keepends=True)[-1] * 400_000  # ~40 MB of one repeated row
    packed = gzip.compress(bomb) if compression == "gzip" else pa.Codec("zstd").compress(bomb, asbytes=True)
    assert len(packed) < 1_000_000
    limits = Limits(max_file_bytes=2_000_000)
    (violation,) = _rules(validate_batch(packed, file_name("bomb", fmt, compression), case.dataset(fmt),
                                         limits)).values()
    assert violation.rule == "file_too_large" and "more than 2000000 bytes" in violation.message
    assert validate_batch(encode(case.frame, fmt, compression), file_name("ok", fmt, compression),
                          case.dataset(fmt), limits).ok


def test_a_parquet_file_that_decodes_past_the_limit_is_refused_before_decoding():
    case = CASES["tumours"]
    dataset, rows = case.dataset("parquet"), 200_000
    columns = {}
    for feature in dataset.features:
        columns[feature.name] = (pa.array(np.ones(rows)) if feature.numeric else pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["x" * 1000])))
    columns["diagnosis"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), ["benign"])
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    assert len(sink.getvalue()) < 100_000  # 200 MB of text once decoded
    (violation,) = _rules(validate_batch(sink.getvalue(), "bomb.parquet", dataset,
                                         Limits(max_file_bytes=10_000_000))).values()
    assert violation.rule == "file_too_large" and "decoded" in violation.message
    nulls = pa.table({n: pa.nulls(2_000_000, pa.float64() if n in ("mean area", "mean concavity", "worst perimeter")
                                  else pa.string()) for n in dataset.columns})  # 2M rows of nothing
    sink = io.BytesIO()
    pq.write_table(nulls, sink)
    assert len(sink.getvalue()) < 100_000
    (violation,) = _rules(validate_batch(sink.getvalue(), "nulls.parquet", dataset,
                                         Limits(max_file_bytes=10_000_000))).values()
    assert violation.rule == "file_too_large" and "2000000 rows" in violation.message


def test_parquet_column_types_are_checked():
    case = CASES["breast_cancer"]
    frame = case.frame.assign(**{"mean radius": case.frame["mean radius"].astype(str)})
    (violation,) = _rules(_validate(case, frame, "parquet")).values()
    assert violation.rule == "column_type" and violation.columns == ["mean radius"]
    assert "numeric feature" in violation.message
    wine = CASES["wine"]
    frame = wine.frame.assign(cultivar=1.5)
    (violation,) = _rules(_validate(wine, frame, "parquet")).values()
    assert violation.rule == "column_type" and violation.columns == ["cultivar"]


def test_parquet_ints_become_text_and_a_pandas_index_is_not_a_column():
    case = CASES["tumours"]
    frame = case.frame.sample(frac=0.5, random_state=0)  # not a RangeIndex: pandas writes __index_level_0__
    sink = io.BytesIO()
    frame.to_parquet(sink)
    assert "__index_level_0__" in pq.read_schema(io.BytesIO(sink.getvalue())).names
    result = validate_batch(sink.getvalue(), "b.parquet", case.dataset("parquet"))
    assert result.ok and len(result.frame) == len(frame)


@pytest.mark.parametrize("content, rule, line", [
    (b'{"a": 1}\n{not json\n', "columns", None),
    (b"[1, 2]\n", "not_jsonl", 1),
    (b"", "empty_file", None),
    (b"\n \n", "empty_file", None),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not_jsonl", None),
    (gzip.compress(b'{"a": 1}\n'), "not_jsonl", None),
])
def test_a_file_that_is_not_json_lines_is_refused(content, rule, line):
    result = validate_batch(content, "b.jsonl", CASES["wine"].dataset("jsonl"))
    assert result.violations[0].rule == rule, [v.as_dict() for v in result.violations]
    if line:
        assert result.violations[0].rows == [line]


def _jsonl_lines(case, frame=None) -> list[str]:
    return encode(case.frame if frame is None else frame, "jsonl").decode().splitlines()


def test_a_bad_json_line_is_reported_with_its_line_number():
    case = CASES["wine"]
    lines = _jsonl_lines(case)
    lines[3] = lines[3][:-10]  # cut short
    lines[6] = "[1, 2, 3]"
    content = ("\n".join(lines) + "\n").encode()
    violation = _rules(validate_batch(content, "b.jsonl", case.dataset("jsonl")))["malformed_rows"]
    assert violation.rows == [4, 7] and violation.count == 2 and "line 4" in violation.message


def test_json_line_numbers_count_blank_lines():
    case = CASES["wine"]
    lines = _jsonl_lines(case, _bad(case, _set(20, "alcohol", 99.0)))
    content = ("\n\n" + "\n".join(lines[:10]) + "\n   \n" + "\n".join(lines[10:]) + "\n").encode()
    violation = _rules(validate_batch(content, "b.jsonl", case.dataset("jsonl")))["out_of_range"]
    assert violation.rows == [20 + 1 + 3]


def test_json_values_of_the_wrong_type_are_reported_per_line():
    case = CASES["tumours"]
    lines = [json.loads(line) for line in _jsonl_lines(case)]
    lines[2]["worst perimeter"] = "152.5"  # a number as text
    lines[4]["texture_grade"] = 2.5  # a float category
    lines[5]["texture_grade"] = {"grade": 2}
    lines[6]["mean area"] = "NA"  # a missing-value token: missing, and the feature is nullable
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    rules = _rules(validate_batch(content, "b.jsonl", case.dataset("jsonl")))
    assert rules["non_numeric"].rows == [3] and rules["non_numeric"].columns == ["worst perimeter"]
    assert rules["column_type"].rows == [5, 6] and rules["column_type"].count == 2
    assert set(rules) == {"non_numeric", "column_type"}


def test_json_categories_mixing_text_and_integers_are_all_text():
    case = CASES["tumours"]
    lines = [json.loads(line) for line in _jsonl_lines(case)]
    lines[1]["texture_grade"] = 7
    lines[2]["smooth"] = True
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    result = validate_batch(content, "b.jsonl", case.dataset("jsonl"))
    assert result.ok, [v.as_dict() for v in result.violations]
    assert result.frame.loc[1, "texture_grade"] == "7" and result.frame.loc[2, "smooth"] == "true"
    assert result.frame.loc[3, "texture_grade"] == case.frame.loc[3, "texture_grade"]


def test_a_compressed_csv_named_plain_says_what_it_is():
    case = CASES["wine"]
    (violation,) = _rules(validate_batch(encode(case.frame, "csv", "gzip"), "b.csv", case.dataset())).values()
    assert violation.rule == "not_csv" and "gzip-compressed" in violation.message
