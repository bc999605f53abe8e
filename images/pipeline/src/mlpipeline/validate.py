"""Validate one CSV batch against the dataset schema.

Every rule yields a Violation naming the rule, the columns and the offending
line numbers (1-based, the header is line 1), so a quarantine reason says
exactly what to fix. A file is accepted whole or not at all.

A file is whatever its writer made it: its size, its field lengths and its column count have limits
(Limits), and every text a reason quotes from it is cut short, so one file cannot fill the reason, the
XCom or the log.
"""

from __future__ import annotations

import collections
import csv
import difflib
import io
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .schema import DatasetSchema
from .volume import Limits

UTF8_BOM = b"\xef\xbb\xbf"
MAX_LISTED = 20  # offending rows listed per violation; the count is always exact
OTHER_DELIMITERS = (";", "\t", "|")
MISSING_TOKENS = ["", "nan", "na", "n/a", "null", "none"]  # missing, not "non-numeric": non_finite reports them
MAX_QUOTED = 40  # characters of a value from the file quoted in a message
MAX_MESSAGE = 500  # characters of a violation's message


def quoted(value, limit: int = MAX_QUOTED) -> str:
    """repr of a value from the file, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


@dataclass
class Violation:
    rule: str
    message: str
    columns: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    count: int = 0

    def __post_init__(self):
        self.message = shorten(self.message)
        self.columns = [shorten(c, MAX_QUOTED) for c in self.columns[:MAX_LISTED]]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Validated:
    frame: pd.DataFrame | None
    violations: list[Violation]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _lines(mask: np.ndarray) -> tuple[list[int], int]:
    index = np.flatnonzero(mask)
    return [int(i) + 2 for i in index[:MAX_LISTED]], int(index.size)


def _reject(rule: str, message: str, **extra) -> Validated:
    return Validated(None, [Violation(rule, message, **extra)])


def _check_text(data: bytes) -> Validated | None:
    # isspace/isascii scan without copying: a 10M-row batch is ~290 MB, and strip/decode copied it twice
    if not data or data.isspace():
        return _reject("empty_file", "the file is empty")
    if b"\x00" in data[:65536]:
        return _reject("not_csv", "the file is binary (NUL bytes), not a CSV text file")
    try:
        if not data.isascii():
            data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject("not_csv", f"the file is not UTF-8 text (bad byte at offset {exc.start})")
    return None


def _header_names(header_line: str, limits: Limits) -> list[str] | Validated:
    if header_line.count(",") >= limits.max_columns:
        return _reject("too_many_columns", f"the header has {header_line.count(',') + 1} columns; the limit is "
                       f"{limits.max_columns}", rows=[1], count=1)
    if len(header_line) > limits.max_columns * limits.max_field_bytes:
        return _reject("field_too_long", f"the header line is {len(header_line)} characters long", rows=[1], count=1)
    try:
        names = next(csv.reader([header_line]), [])
    except csv.Error as exc:  # a column name over the csv module's own field limit
        return _reject("field_too_long", f"the header cannot be read: {exc}", rows=[1], count=1)
    too_long = [n for n in names if len(n) > limits.max_field_bytes]
    if too_long:
        return _reject("field_too_long", f"{len(too_long)} column name(s) longer than {limits.max_field_bytes} "
                       f"bytes, such as {quoted(too_long[0])}", rows=[1], count=1)
    return [n.strip() for n in names]


def _check_header(header_line: str, names: list[str], schema: DatasetSchema) -> Validated | None:
    if header_line.lstrip()[:1] in ("{", "[", "<"):
        return _reject("not_csv", "the file looks like JSON, XML or HTML, not a CSV with a header row",
                       rows=[1], count=1)
    expected = schema.columns
    if len(names) == 1:
        found = [d for d in OTHER_DELIMITERS if d in header_line]
        if found:
            return _reject("delimiter", f"the header is split by {found[0]!r}, expected ',' between columns",
                           rows=[1], count=1)
        return _reject("not_csv", f"the first line is not a CSV header with columns {expected}",
                       rows=[1], count=1)
    duplicated = sorted(n for n, seen in collections.Counter(names).items() if seen > 1)
    if duplicated:
        return _reject("columns", f"duplicate column names {duplicated}", columns=duplicated, rows=[1], count=1)
    present, wanted = set(names), set(expected)
    missing = [c for c in expected if c not in present]
    unexpected = [c for c in names if c not in wanted]
    if not missing and not unexpected:
        return None
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if unexpected:
        listed = ", ".join(quoted(u) for u in unexpected[:MAX_LISTED])
        parts.append(f"unexpected columns [{listed}{', ...' if len(unexpected) > MAX_LISTED else ''}]"
                     + (f" ({len(unexpected)} in all)" if len(unexpected) > MAX_LISTED else ""))
    renames = [f"{quoted(u)}->{m[0]!r}" for u in unexpected[:MAX_LISTED]
               if (m := difflib.get_close_matches(u, missing, n=1, cutoff=0.6))]
    if renames:
        parts.append(f"renamed? {', '.join(renames)}")
    return _reject("columns", "; ".join(parts), columns=missing + unexpected, rows=[1], count=1)


def _read(text_bytes: bytes, names: list[str], types: dict) -> tuple[pa.Table, int]:
    bad_rows: list[str] = []

    def on_invalid(row):
        bad_rows.append(row.text)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(text_bytes),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
    )
    return table, len(bad_rows)


def _malformed_lines(data: bytes, width: int) -> list[int]:
    """Line numbers of rows whose field count is wrong (pyarrow does not report them), as far as the csv
    module can read (it stops at a field over its own limit)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(reader, None)
    lines = []
    try:
        for row in reader:
            if row and len(row) != width:
                lines.append(reader.line_num)
    except csv.Error:
        lines.append(reader.line_num)
    return lines


def _long_fields(table: pa.Table, limit: int) -> Violation | None:
    """Text fields over `limit` bytes (a number is never that long: it failed the typed read)."""
    for name in table.column_names:
        column = table[name]
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            continue
        too_long = pc.fill_null(pc.greater(pc.binary_length(column), limit), False).to_numpy(zero_copy_only=False)
        if too_long.any():
            lines, count = _lines(too_long)
            return Violation("field_too_long", f"column {quoted(name)} has {count} value(s) longer than {limit} "
                             "bytes", [name], lines, count)
    return None


def _to_frame(data: bytes, names: list[str], schema: DatasetSchema,
              limits: Limits) -> tuple[pd.DataFrame, int, list[Violation]]:
    """Fast typed read; on a conversion error, re-read as text to find the bad cells."""
    label = schema.label
    try:
        types = {n: (pa.string() if n == label else pa.float64()) for n in names}
        table, bad_count = _read(data, names, types)
        too_long = _long_fields(table, limits.max_field_bytes)
        return table.to_pandas(), bad_count, [too_long] if too_long else []
    except pa.ArrowInvalid:
        pass
    table, bad_count = _read(data, names, {n: pa.string() for n in names})
    too_long = _long_fields(table, limits.max_field_bytes)
    if too_long:
        return pd.DataFrame(), bad_count, [too_long]
    frame = table.to_pandas()
    violations = []
    for column in schema.feature_names:
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce")  # parses inf and nan; the finiteness rule judges them
        not_numeric = (numbers.isna() & ~text.str.lower().isin(MISSING_TOKENS)).to_numpy()
        if not_numeric.any():
            lines, count = _lines(not_numeric)
            samples = ", ".join(quoted(v) for v in sorted(set(frame[column][not_numeric].head(5))))
            violations.append(Violation("non_numeric", f"column {column!r} has non-numeric values such as [{samples}]",
                                        [column], lines, count))
        frame[column] = numbers
    return frame, bad_count, violations


def validate_csv(data: bytes, schema: DatasetSchema, limits: Limits = Limits()) -> Validated:
    notes = []
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
        notes.append("stripped a UTF-8 byte-order mark")
    rejected = _check_text(data)
    if rejected:
        return rejected
    header_line = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    names = _header_names(header_line, limits)
    if isinstance(names, Validated):
        return names
    rejected = _check_header(header_line, names, schema)
    if rejected:
        return rejected
    frame, bad_count, violations = _to_frame(data, names, schema, limits)
    if violations and violations[0].rule == "field_too_long":
        return Validated(None, violations, notes)
    if bad_count:
        lines = _malformed_lines(data, len(names))
        violations.append(Violation("malformed_rows", f"{bad_count} line(s) do not have {len(names)} fields "
                                    "(truncated or mis-delimited)", [], lines[:MAX_LISTED], bad_count))
    if frame.empty and not bad_count:
        return Validated(None, [Violation("no_rows", "the file has a header but no data rows")], notes)
    if violations:
        return Validated(None, violations, notes)
    frame = frame[schema.columns]
    violations += _check_values(frame, schema)
    if violations:
        return Validated(None, violations, notes)
    frame[schema.label] = frame[schema.label].astype(str)
    return Validated(frame.reset_index(drop=True), [], notes)


def _check_values(frame: pd.DataFrame, schema: DatasetSchema) -> list[Violation]:
    violations = []
    for feature in schema.features:
        values = frame[feature.name].to_numpy(dtype="float64", na_value=np.nan)
        non_finite = ~np.isfinite(values)
        if non_finite.any():
            lines, count = _lines(non_finite)
            violations.append(Violation("non_finite", f"column {feature.name!r} has {count} missing, NaN or "
                                        "infinite value(s)", [feature.name], lines, count))
        out = np.isfinite(values) & ((values < feature.min) | (values > feature.max))
        if out.any():
            lines, count = _lines(out)
            violations.append(Violation("out_of_range", f"column {feature.name!r} has {count} value(s) outside "
                                        f"[{feature.min}, {feature.max}] {feature.unit}".rstrip(),
                                        [feature.name], lines, count))
    labels = frame[schema.label]
    unknown = ~labels.isin(schema.classes).to_numpy()
    if unknown.any():
        lines, count = _lines(unknown)
        seen = ", ".join(quoted(v) for v in sorted(set(labels[unknown].astype(str).head(1000)))[:5])
        violations.append(Violation("unknown_label", f"column {schema.label!r} has {count} value(s) outside "
                                    f"{list(schema.classes)}, such as [{seen}]", [schema.label], lines, count))
    duplicated = frame.duplicated().to_numpy()
    share = duplicated.mean()
    if share > schema.max_duplicate_fraction:
        lines, count = _lines(duplicated)
        violations.append(Violation("duplicate_rows", f"{count} of {len(frame)} rows ({share:.1%}) repeat an earlier "
                                    f"row; more than {schema.max_duplicate_fraction:.0%} suggests a double export",
                                    [], lines, count))
    return violations
