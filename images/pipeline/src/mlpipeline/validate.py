"""Validate one landed batch against the dataset file.

The dataset's `source.format` picks the reader (mlpipeline.readers: CSV, JSON lines or Parquet, the first
two optionally gzip- or zstd-compressed), which yields the dataset's columns typed: numeric features as
float64, categorical features and a classification label as text, a regression label as float64. The rules
here then judge the values:

- a missing value (an empty field, a missing-value token such as NA, a JSON or Parquet null) is allowed
  in a `nullable` feature and refused elsewhere (`non_finite` for a numeric feature, `missing_values` for
  a categorical one); the label is never missing (nor, for regression, NaN); an infinite number is always
  refused;
- a numeric value outside a declared min/max is refused (`out_of_range`);
- with `classes` declared, another label is refused (`unknown_label`); without, any label is accepted;
- a dataset held to MAPE refuses a target of (almost) zero, where MAPE is undefined (`zero_target`);
- a category outside a declared `categories` list is accepted (training and serving handle it, drift
  counts it) and noted in Validated.notes;
- more exact duplicate rows than `max_duplicate_fraction` are refused (`duplicate_rows`).

Every rule yields a Violation naming the rule, the columns and the offending line numbers (1-based, a
CSV header is line 1), so a quarantine reason says exactly what to fix. A file is accepted whole or not
at all.

A file is whatever its writer made it: its size (decompressed too), its field lengths and its column
count have limits (Limits), and every text a reason quotes from it is cut short, so one file cannot fill
the reason, the XCom or the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import readers
from .readers import MAX_LISTED, MISSING_TOKENS, Batch, Violation, quoted, shorten  # noqa: F401 (the API)
from .volume import Limits


@dataclass
class Validated:
    frame: pd.DataFrame | None
    violations: list[Violation]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def validate_batch(data: bytes, file_name: str, dataset, limits: Limits = Limits()) -> Validated:
    """Validate a landed file: its name must say the dataset's format (and its compression, if any)."""
    fmt = dataset.source.format
    problem = readers.check_name(file_name, fmt)
    if problem:
        return Validated(None, [problem])
    notes = []
    _, compression = readers.name_format(file_name)
    if compression:
        size = len(data)
        data = readers.decompress(data, compression, limits.max_file_bytes)
        if isinstance(data, Violation):
            return Validated(None, [data])
        notes.append(f"{compression}: {size} bytes decompressed to {len(data)}")
    return _validated(readers.READERS[fmt](data, dataset, limits), dataset, notes)


def validate_csv(data: bytes, dataset, limits: Limits = Limits()) -> Validated:
    """Validate uncompressed CSV bytes (whatever the dataset's declared format)."""
    return _validated(readers.read_csv(data, dataset, limits), dataset)


def _validated(batch: Batch, dataset, notes: list[str] | None = None) -> Validated:
    notes = [*(notes or []), *batch.notes]
    if batch.violations or batch.table is None:
        return Validated(None, batch.violations or [Violation("unreadable", "the file yielded no table")], notes)
    table = _normalise_text(batch.table, dataset)
    violations, value_notes = _check_values(table, batch, dataset)
    notes += value_notes
    frame = table.to_pandas()
    duplicated = _duplicates(frame, batch, dataset)
    violations += [duplicated] if duplicated else []
    if violations:
        return Validated(None, violations, notes)
    return Validated(frame, [], notes)


def _missing_tokens(feature) -> list[str]:
    """The tokens that mean "missing" in a categorical column, less any the feature declares a category."""
    declared = {c.strip().lower() for c in feature.categories}
    return [t for t in MISSING_TOKENS if t not in declared]


def _normalise_text(table: pa.Table, dataset) -> pa.Table:
    """Text columns trimmed; an empty text is missing (null), and in a categorical feature so is a
    missing-value token (unless it is a declared category)."""
    for feature in [*dataset.features, *([] if dataset.regression else [None])]:
        if feature is not None and feature.numeric:
            continue
        name = dataset.label if feature is None else feature.name
        column = pc.utf8_trim_whitespace(table[name])
        if feature is None:
            missing = pc.equal(column, "")
        else:
            missing = pc.is_in(pc.utf8_lower(column), value_set=pa.array(_missing_tokens(feature), pa.string()))
        column = pc.if_else(pc.fill_null(missing, True), pa.scalar(None, pa.string()), column)
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def _mask(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _samples(column, mask: np.ndarray) -> str:
    index = np.flatnonzero(mask)[:1000]
    values = pc.take(column, pa.array(index, pa.int64())).to_pylist()
    return ", ".join(quoted(v) for v in sorted(set(values))[:5])


def _range(feature) -> str:
    low = "-inf" if feature.min is None else feature.min
    high = "inf" if feature.max is None else feature.max
    return f"[{low}, {high}] {feature.unit}".rstrip()


def _check_values(table: pa.Table, batch: Batch, dataset) -> tuple[list[Violation], list[str]]:
    violations, notes = [], []
    target = dataset.numeric_target
    for feature in [*dataset.features, *([target] if target else [])]:
        name, column = feature.name, table[feature.name]
        if feature.numeric:
            values = column.to_numpy()
            missing, infinite = np.isnan(values), np.isinf(values)
            bad = infinite if feature.nullable else missing | infinite
            if bad.any():
                lines, count = batch.lines(bad)
                if feature.nullable:
                    message = (f"column {name!r} has {count} infinite value(s); the feature is nullable (a value "
                               "may be missing) but a number is never infinite")
                else:
                    parts = ", ".join(f"{n} {what}" for n, what in (
                        (int(missing.sum()), "missing (empty, NaN or a missing-value token)"),
                        (int(infinite.sum()), "infinite")) if n)
                    message = (f"column {name!r} has {count} missing, NaN or infinite value(s) ({parts}); "
                               + ("the label is never missing" if feature is target else
                                  "the feature is not nullable"))
                violations.append(Violation("non_finite", message, [name], lines, count))
            with np.errstate(invalid="ignore"):
                out = np.zeros(values.shape, dtype=bool)
                if feature.min is not None:
                    out |= values < feature.min
                if feature.max is not None:
                    out |= values > feature.max
            out &= np.isfinite(values)
            if out.any():
                lines, count = batch.lines(out)
                violations.append(Violation("out_of_range", f"column {name!r} has {count} value(s) outside "
                                            f"{_range(feature)}", [name], lines, count))
            continue
        missing = _mask(column.is_null())
        if missing.any() and not feature.nullable:
            lines, count = batch.lines(missing)
            violations.append(Violation("missing_values", f"column {name!r} has {count} missing value(s) (empty, "
                                        f"null or one of {MISSING_TOKENS[1:]}: declare the category if it is "
                                        "one); the feature is not nullable", [name], lines, count))
        if feature.categories:
            unseen = ~_mask(pc.is_in(column, value_set=pa.array(feature.categories, pa.string()))) & ~missing
            if unseen.any():
                notes.append(shorten(f"column {name!r}: {int(unseen.sum())} row(s) with a category not declared, "
                                     f"such as [{_samples(column, unseen)}]"))
    if target:
        return violations + _zero_targets(table[target.name].to_numpy(), batch, dataset), notes
    labels = table[dataset.label]
    missing = _mask(labels.is_null())
    if missing.any():
        lines, count = batch.lines(missing)
        violations.append(Violation("missing_values", f"column {dataset.label!r} (the label) has {count} missing "
                                    "value(s)", [dataset.label], lines, count))
    if dataset.classes:
        unknown = ~_mask(pc.is_in(labels, value_set=pa.array(dataset.classes, pa.string()))) & ~missing
        if unknown.any():
            lines, count = batch.lines(unknown)
            violations.append(Violation("unknown_label", f"column {dataset.label!r} has {count} value(s) outside "
                                        f"{list(dataset.classes)}, such as [{_samples(labels, unknown)}]",
                                        [dataset.label], lines, count))
    return violations, notes


def _zero_targets(values: np.ndarray, batch: Batch, dataset) -> list[Violation]:
    """A dataset held to MAPE divides by the target: a target of (almost) zero makes it undefined, so such a
    batch is refused here, by line, rather than failing a training later."""
    if dataset.metric != "mape":
        return []
    with np.errstate(invalid="ignore"):
        zero = np.abs(values) < np.finfo(np.float64).eps
    if not zero.any():
        return []
    lines, count = batch.lines(zero)
    return [Violation("zero_target", f"column {dataset.label!r} (the label) is 0 in {count} row(s): the dataset's "
                      "metric, mape, divides by it; choose rmse, mae or r2 for a target that can be 0",
                      [dataset.label], lines, count)]


def _duplicates(frame: pd.DataFrame, batch: Batch, dataset) -> Violation | None:
    duplicated = frame.duplicated().to_numpy()
    share = duplicated.mean()
    if share <= dataset.max_duplicate_fraction:
        return None
    lines, count = batch.lines(duplicated)
    return Violation("duplicate_rows", f"{count} of {len(frame)} rows ({share:.1%}) repeat an earlier row; more "
                     f"than {dataset.max_duplicate_fraction:.0%} suggests a double export", [], lines, count)
