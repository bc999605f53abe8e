"""Read one landed batch, in the dataset's format, into a typed Arrow table.

The dataset's `source.format` picks the reader: CSV (a header row, then one row a line), JSON lines (one
object a line, its keys the columns) or Parquet. CSV and JSON lines may be gzip- or zstd-compressed, as
the file name says (`.csv.gz`, `.jsonl.zst`); Parquet is compressed inside. A file whose name does not
match the format, or whose compressed stream is broken or expands past the size limit, is refused
before any reader sees it.

Every reader returns a Batch: the dataset's columns only (drop_columns gone), numeric features as
float64 (a missing value is NaN), categorical features and the label as text exactly as the file holds
it (an integer label 1 becomes "1", a category "01" stays "01"), or the violations that made the file
unreadable. Judging the values (missing, ranges, classes) is mlpipeline.validate's job.

Every violation names its rule, its columns and the offending lines (1-based; a CSV header is line 1,
a Parquet "line" is its row number), and every text a message quotes from the file is cut short.
"""

from __future__ import annotations

import collections
import csv
import difflib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import PurePath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .volume import Limits

UTF8_BOM = b"\xef\xbb\xbf"
MAX_LISTED = 20  # offending rows listed per violation; the count is always exact
OTHER_DELIMITERS = (";", "\t", "|")
MISSING_TOKENS = ["", "nan", "na", "n/a", "null", "none"]  # compared lower-cased, after trimming spaces
# A numeric cell holding one of these is missing (pyarrow's own list plus the tokens above in any case):
# missing, not "non-numeric", so a nullable feature accepts it and the finiteness rule names it otherwise.
_ARROW_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"]
NUMERIC_NULLS = sorted({*_ARROW_NULLS, *MISSING_TOKENS, *(t.upper() for t in MISSING_TOKENS),
                        *(t.capitalize() for t in MISSING_TOKENS)})
_NUMERIC_NULLS_LOWER = {t.lower() for t in NUMERIC_NULLS}
MAX_QUOTED = 40  # characters of a value from the file quoted in a message
MAX_MESSAGE = 500  # characters of a violation's message

FORMAT_SUFFIXES = {"csv": (".csv",), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet", ".pq")}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
_CHUNK = 1 << 20  # bytes decompressed at a time
_JSON_ROWS = 65536  # rows the careful JSON lines reader converts at a time


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
class Batch:
    """A file read into the dataset's columns (see the module's docstring), or why it could not be."""
    table: pa.Table | None
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_line: int = 2  # the line number of the table's first row
    line_numbers: Callable[[], np.ndarray] | None = None  # each row's line, where rows and lines differ

    def lines(self, mask: np.ndarray) -> tuple[list[int], int]:
        """The line numbers of the first MAX_LISTED rows in `mask`, and how many rows it holds."""
        index = np.flatnonzero(mask)
        if not index.size:
            return [], 0
        listed = index[:MAX_LISTED]
        numbers = self.line_numbers()[listed] if self.line_numbers is not None else listed + self.first_line
        return [int(n) for n in numbers], int(index.size)


def rejected(rule: str, message: str, notes: list[str] | None = None, **extra) -> Batch:
    return Batch(None, [Violation(rule, message, **extra)], list(notes or []))


def _numeric(dataset) -> set[str]:
    """The columns read as float64: numeric features, and a regression label."""
    return {f.name for f in dataset.features if f.numeric} | ({dataset.label} if dataset.regression else set())


# ---- file names and compression ------------------------------------------------------------------------------


def name_format(file_name: str) -> tuple[str | None, str | None]:
    """(format, compression) a file name says: `x.csv.gz` is ("csv", "gzip"); an unknown suffix is None."""
    name = PurePath(file_name).name.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = codec, name[:-len(suffix)]
            break
    fmt = next((f for f, suffixes in FORMAT_SUFFIXES.items() if name.endswith(suffixes)), None)
    return fmt, compression


def check_name(file_name: str, expected: str) -> Violation | None:
    """Why a file of this name is not a batch of the `expected` format, or None."""
    fmt, compression = name_format(file_name)
    name = quoted(PurePath(file_name).name)
    if fmt == expected == "parquet" and compression:
        return Violation("wrong_format", f"the file {name} is a compressed Parquet file: Parquet is compressed "
                                         "inside, land the .parquet file itself")
    if fmt == expected:
        return None
    endings = ", ".join(FORMAT_SUFFIXES[expected])
    if expected != "parquet":
        endings += " (optionally compressed: .gz or .zst after it)"
    suffix = "".join(PurePath(file_name).suffixes[-2:])
    named = (f"its name says {fmt}" if fmt else f"its name ends in {quoted(suffix)}" if suffix
             else "its name has no suffix")
    return Violation("wrong_format", f"the file {name} is not a {expected} file ({named}): the dataset's "
                                     f"source.format is {expected}, so its batches are named *{endings}")


def decompress(data: bytes, codec: str, limit: int) -> bytes | Violation:
    """The decompressed bytes, read a chunk at a time and never more than `limit` + 1 of them: a file that
    expands past the limit (a compression bomb) is refused without being expanded."""
    if not data:
        return data
    if not data.startswith(_MAGIC[codec]):
        what = sniff(data)
        return Violation("bad_compression", f"the file is named as {codec}-compressed but is not"
                                            + (f" (it is {what})" if what else ""))
    stream = pa.CompressedInputStream(pa.BufferReader(data), codec)
    out = io.BytesIO()
    try:
        while chunk := stream.read(min(_CHUNK, limit + 1 - out.tell())):
            out.write(chunk)
            if out.tell() > limit:
                return Violation("file_too_large", f"the file decompresses to more than {limit} bytes "
                                 f"({len(data)} compressed); the limit is {limit}")
    except (OSError, pa.ArrowException) as exc:
        return Violation("bad_compression", f"the {codec} stream is truncated or corrupt: {shorten(str(exc), 200)}")
    return out.getvalue()


def sniff(data: bytes) -> str | None:
    """What a file is, from its first bytes, when that is a compressed stream or a Parquet file."""
    if data.startswith(_MAGIC["gzip"]):
        return "gzip-compressed"
    if data.startswith(_MAGIC["zstd"]):
        return "zstd-compressed"
    if data.startswith(b"PAR1"):
        return "a Parquet file"
    return None


def _without_bom(data: bytes) -> tuple[bytes, list[str]]:
    """A text file's bytes without a UTF-8 byte-order mark, and a note when there was one."""
    if data.startswith(UTF8_BOM):
        return data[len(UTF8_BOM):], ["stripped a UTF-8 byte-order mark"]
    return data, []


def _check_text(data: bytes, rule: str, what: str) -> Batch | None:
    # isspace/isascii scan without copying: a 10M-row batch is ~290 MB, and strip/decode copied it twice
    if not data or data.isspace():
        return rejected("empty_file", "the file is empty")
    if b"\x00" in data[:65536]:
        kind = sniff(data)
        hint = f" (it is {kind}: land it under a name that says so)" if kind else ""
        return rejected(rule, f"the file is binary (NUL bytes), not a {what} text file{hint}")
    try:
        if not data.isascii():
            data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return rejected(rule, f"the file is not UTF-8 text (bad byte at offset {exc.start})")
    return None


# ---- columns -------------------------------------------------------------------------------------------------


def check_columns(names: list[str], dataset, rows: list[int] | None = None) -> Violation | None:
    """Duplicate, missing and unexpected columns (a drop_columns column may be there or not), with
    "renamed?" hints; `rows` are the lines that show the problem."""
    rows = rows or []
    duplicated = sorted(n for n, seen in collections.Counter(names).items() if seen > 1)
    if duplicated:
        return Violation("columns", f"duplicate column names {[quoted(d) for d in duplicated[:MAX_LISTED]]}",
                         duplicated, rows, len(rows))
    expected = dataset.columns
    present, allowed = set(names), {*expected, *dataset.drop_columns}
    missing = [c for c in expected if c not in present]
    unexpected = [c for c in names if c not in allowed]
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
    if unexpected and dataset.drop_columns:
        parts.append(f"columns that may be there and are dropped: {list(dataset.drop_columns)}")
    return Violation("columns", "; ".join(parts), missing + unexpected, rows, len(rows))


def _dropped_note(names: list[str], dataset) -> list[str]:
    dropped = [n for n in names if n in dataset.drop_columns]
    return [f"dropped column(s) {dropped}"] if dropped else []


def _long_fields(table: pa.Table, limit: int, lines: Callable) -> Violation | None:
    """Text fields over `limit` bytes (a number is never that long: it failed the typed read)."""
    for name in table.column_names:
        column = table[name]
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            continue
        too_long = pc.fill_null(pc.greater(pc.binary_length(column), limit), False).to_numpy(zero_copy_only=False)
        if too_long.any():
            rows, count = lines(too_long)
            return Violation("field_too_long", f"column {quoted(name)} has {count} value(s) longer than {limit} "
                             "bytes", [name], rows, count)
    return None


# ---- CSV -----------------------------------------------------------------------------------------------------


def _header_names(header_line: str, limits: Limits) -> list[str] | Batch:
    if header_line.count(",") >= limits.max_columns:
        return rejected("too_many_columns", f"the header has {header_line.count(',') + 1} columns; the limit is "
                        f"{limits.max_columns}", rows=[1], count=1)
    if len(header_line) > limits.max_columns * limits.max_field_bytes:
        return rejected("field_too_long", f"the header line is {len(header_line)} characters long", rows=[1], count=1)
    try:
        names = next(csv.reader([header_line]), [])
    except csv.Error as exc:  # a column name over the csv module's own field limit
        return rejected("field_too_long", f"the header cannot be read: {exc}", rows=[1], count=1)
    too_long = [n for n in names if len(n) > limits.max_field_bytes]
    if too_long:
        return rejected("field_too_long", f"{len(too_long)} column name(s) longer than {limits.max_field_bytes} "
                        f"bytes, such as {quoted(too_long[0])}", rows=[1], count=1)
    return [n.strip() for n in names]


def _check_header(header_line: str, names: list[str], dataset) -> Batch | None:
    if header_line.lstrip()[:1] in ("{", "[", "<"):
        return rejected("not_csv", "the file looks like JSON, XML or HTML, not a CSV with a header row",
                        rows=[1], count=1)
    if len(names) == 1 and len(dataset.columns) > 1:
        found = [d for d in OTHER_DELIMITERS if d in header_line]
        if found:
            return rejected("delimiter", f"the header is split by {found[0]!r}, expected ',' between columns",
                            rows=[1], count=1)
        return rejected("not_csv", f"the first line is not a CSV header with columns {dataset.columns}",
                        rows=[1], count=1)
    problem = check_columns(names, dataset, rows=[1])
    return Batch(None, [problem]) if problem else None


def _read_csv_table(data: bytes, names: list[str], types: dict) -> tuple[pa.Table, int]:
    import pyarrow.csv as pacsv

    bad_rows: list[str] = []

    def on_invalid(row):
        bad_rows.append(row.text)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=types, null_values=NUMERIC_NULLS,
                                             strings_can_be_null=False),
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
                if len(lines) >= MAX_LISTED:
                    break
    except csv.Error:
        lines.append(reader.line_num)
    return lines


def _csv_typed(data: bytes, names: list[str], dataset, limits: Limits, batch: Batch) -> tuple[pa.Table | None, int]:
    """The fast typed read (numeric features as float64, every other column as text); on a conversion
    error, a text read that finds the bad cells. Violations go to `batch`."""
    numeric = _numeric(dataset)
    try:
        table, bad_count = _read_csv_table(data, names, {n: pa.float64() if n in numeric else pa.string()
                                                         for n in names})
    except pa.ArrowInvalid:
        table = None
    if table is not None:
        too_long = _long_fields(table, limits.max_field_bytes, batch.lines)
        batch.violations += [too_long] if too_long else []
        return (None if too_long else table), bad_count
    import pandas as pd

    table, bad_count = _read_csv_table(data, names, {n: pa.string() for n in names})
    too_long = _long_fields(table, limits.max_field_bytes, batch.lines)
    if too_long:
        batch.violations.append(too_long)
        return None, bad_count
    for name in [n for n in names if n in numeric]:
        raw = table[name].to_pandas()
        text = raw.str.strip()
        numbers = pd.to_numeric(text, errors="coerce")  # parses inf and nan; the finiteness rule judges them
        not_numeric = (numbers.isna() & ~text.str.lower().isin(_NUMERIC_NULLS_LOWER)).to_numpy()
        if not_numeric.any():
            rows, count = batch.lines(not_numeric)
            samples = ", ".join(quoted(v) for v in sorted(set(raw[not_numeric].head(5))))
            batch.violations.append(Violation("non_numeric", f"column {name!r} has non-numeric values such as "
                                              f"[{samples}]", [name], rows, count))
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(numbers.to_numpy(dtype="float64", na_value=np.nan), pa.float64()))
    return table, bad_count


def read_csv(data: bytes, dataset, limits: Limits = Limits()) -> Batch:
    data, notes = _without_bom(data)
    problem = _check_text(data, "not_csv", "CSV")
    if problem:
        return problem
    header_line = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    names = _header_names(header_line, limits)
    if isinstance(names, Batch):
        return names
    problem = _check_header(header_line, names, dataset)
    if problem:
        return problem
    batch = Batch(None, [], notes, first_line=2)
    table, bad_count = _csv_typed(data, names, dataset, limits, batch)
    if batch.violations and batch.violations[0].rule == "field_too_long":
        return batch
    if bad_count:
        lines = _malformed_lines(data, len(names))
        batch.violations.append(Violation("malformed_rows", f"{bad_count} line(s) do not have {len(names)} fields "
                                          "(truncated or mis-delimited)", [], lines[:MAX_LISTED], bad_count))
    if table is not None and table.num_rows == 0 and not bad_count:
        return rejected("no_rows", "the file has a header but no data rows", notes)
    if batch.violations:
        return batch
    batch.table = table.select(dataset.columns)
    batch.notes += _dropped_note(names, dataset)
    return batch


# ---- JSON lines ----------------------------------------------------------------------------------------------


def _json_line_numbers(data: bytes) -> Callable[[], np.ndarray]:
    """Each row's line number (blank lines hold no row), computed when a violation first needs it."""
    cache: list[np.ndarray] = []

    def numbers() -> np.ndarray:
        if not cache:
            cache.append(np.fromiter((i for i, line in enumerate(io.BytesIO(data), 1) if line.strip()),
                                     dtype=np.int64))
        return cache[0]
    return numbers


def _text_type(kind: pa.DataType) -> bool:
    """A column a categorical feature or the label may come from: text, integers or booleans (or nulls)."""
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind))


def _number_type(kind: pa.DataType) -> bool:
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            or pa.types.is_null(kind))


def _as_text(column) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_string(column.type):
        return column
    return pc.cast(column, pa.string())  # integers print as written, booleans as true/false


def _jsonl_fast(data: bytes, dataset, limits: Limits) -> Batch | None:
    """pyarrow's reader, every type inferred; None when the file needs the careful reader (a line pyarrow
    cannot parse, a key whose values change type, a category held as a float or a date)."""
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(block_size=16 << 20))
    except (pa.ArrowException, ValueError):
        return None
    batch = Batch(None, first_line=1, line_numbers=_json_line_numbers(data))
    names = table.column_names
    if len(names) > limits.max_columns:
        return rejected("too_many_columns", f"the objects have {len(names)} distinct keys; the limit is "
                        f"{limits.max_columns}")
    allowed = {*dataset.columns, *dataset.drop_columns}
    numeric = _numeric(dataset)
    unexpected_rows = np.zeros(table.num_rows, dtype=bool)
    for name in names:
        if name not in allowed:
            unexpected_rows |= table[name].is_valid().to_numpy(zero_copy_only=False)
    problem = check_columns(names, dataset, batch.lines(unexpected_rows)[0])
    if problem:
        problem.count = int(unexpected_rows.sum()) or problem.count
        return Batch(None, [problem])
    columns = []
    for name in dataset.columns:
        column = table[name]
        if name in numeric:
            if not _number_type(column.type):
                return None
            columns.append(pc.cast(column, pa.float64()))
        else:
            if not _text_type(column.type):
                return None
            columns.append(_as_text(column))
    batch.table = pa.table(columns, names=dataset.columns)
    batch.notes += _dropped_note(names, dataset)
    too_long = _long_fields(batch.table, limits.max_field_bytes, batch.lines)
    if too_long:
        batch.violations.append(too_long)
        batch.table = None
    return batch


class _Problems:
    """Offending lines per (rule, column), counted exactly, the first MAX_LISTED kept, with samples."""

    def __init__(self):
        self.found: dict[tuple[str, str], list] = {}

    def add(self, rule: str, column: str, line: int, value) -> None:
        entry = self.found.setdefault((rule, column), [[], 0, []])
        if len(entry[0]) < MAX_LISTED:
            entry[0].append(line)
        entry[1] += 1
        if len(entry[2]) < 5 and quoted(value) not in entry[2]:
            entry[2].append(quoted(value))

    def violations(self, describe: Callable[[str, str], str]) -> list[Violation]:
        return [Violation(rule, f"column {column!r} has {count} {describe(rule, column)}, such as "
                                f"[{', '.join(samples)}]", [column], lines, count)
                for (rule, column), (lines, count, samples) in self.found.items()]


def _json_number(value, column: str, line: int, problems: _Problems) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.add("non_numeric", column, line, value)
        return float("nan")
    if isinstance(value, str):
        if value.strip().lower() not in _NUMERIC_NULLS_LOWER:
            problems.add("non_numeric", column, line, value)
        return float("nan")
    try:
        return float(value)
    except OverflowError:  # an integer beyond a float's range
        return float("inf") if value > 0 else float("-inf")


def _json_text(value, column: str, line: int, problems: _Problems) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    problems.add("column_type", column, line, value)
    return None


def _jsonl_careful(data: bytes, dataset, limits: Limits) -> Batch:
    """Line by line with the json module: exact line numbers for every bad line and value."""
    numeric = _numeric(dataset)
    wanted = dataset.columns
    allowed = {*wanted, *dataset.drop_columns}
    seen: set[str] = set()
    unexpected: dict[str, None] = {}
    unexpected_lines: list[int] = []
    unexpected_count = 0
    bad_lines: list[int] = []
    bad_count, first_error = 0, ""
    problems = _Problems()
    values: dict[str, list] = {n: [] for n in wanted}
    chunks: dict[str, list[pa.Array]] = {n: [] for n in wanted}
    row_lines: list[int] = []

    def flush():
        for name in wanted:
            chunks[name].append(pa.array(values[name], pa.float64() if name in numeric else pa.string()))
            values[name].clear()

    for line_number, line in enumerate(io.BytesIO(data), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"a JSON {type(obj).__name__}, not an object")
        except (ValueError, RecursionError) as exc:
            bad_count += 1
            if len(bad_lines) < MAX_LISTED:
                bad_lines.append(line_number)
            if not first_error:
                where = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                first_error = f"line {line_number}{where}: {getattr(exc, 'msg', None) or exc}"
            continue
        seen.update(k for k in obj if k in allowed)
        strays = [k for k in obj if k not in allowed]
        if strays:
            unexpected.update(dict.fromkeys(strays))
            unexpected_count += 1
            if len(unexpected_lines) < MAX_LISTED:
                unexpected_lines.append(line_number)
            if len(unexpected) + len(seen) > limits.max_columns:
                return rejected("too_many_columns", f"the objects have more than {limits.max_columns} distinct "
                                f"keys by line {line_number}; the limit is {limits.max_columns}",
                                rows=[line_number], count=1)
        for name in wanted:
            convert = _json_number if name in numeric else _json_text
            values[name].append(convert(obj.get(name), name, line_number, problems))
        row_lines.append(line_number)
        if len(row_lines) % _JSON_ROWS == 0:
            flush()
    flush()
    violations = []
    names = [*(n for n in wanted if n in seen), *unexpected]
    problem = check_columns(names, dataset, unexpected_lines)
    if problem:
        problem.count = unexpected_count or problem.count
        violations.append(problem)
    if bad_count:
        violations.append(Violation("malformed_rows", f"{bad_count} line(s) are not JSON objects (first: "
                                    f"{shorten(first_error, 200)})", [], bad_lines, bad_count))
    violations += problems.violations(lambda rule, column: "value(s) that are not JSON numbers"
                                      if rule == "non_numeric" else "value(s) that are neither text nor integers")
    if not row_lines and not violations:
        return rejected("no_rows", "the file has no objects")
    lines = np.asarray(row_lines, dtype=np.int64)
    batch = Batch(None, violations, _dropped_note(list(seen), dataset), line_numbers=lambda: lines)
    if violations:
        return batch
    batch.table = pa.table([pa.chunked_array(chunks[n], pa.float64() if n in numeric else pa.string())
                            for n in wanted], names=wanted)
    too_long = _long_fields(batch.table, limits.max_field_bytes, batch.lines)
    if too_long:
        return Batch(None, [too_long])
    return batch


def read_jsonl(data: bytes, dataset, limits: Limits = Limits()) -> Batch:
    data, notes = _without_bom(data)
    problem = _check_text(data, "not_jsonl", "JSON lines")
    if problem:
        return problem
    start = data.lstrip()[:1]
    if start != b"{":
        hint = " (it starts with '[': a JSON array, not JSON lines)" if start == b"[" else ""
        return rejected("not_jsonl", f"the file does not start with a JSON object: JSON lines hold one object "
                        f"per line{hint}", rows=[1], count=1)
    batch = _jsonl_fast(data, dataset, limits) or _jsonl_careful(data, dataset, limits)
    batch.notes = notes + batch.notes
    return batch


# ---- Parquet -------------------------------------------------------------------------------------------------


def _index_columns(schema: pa.Schema) -> set[str]:
    """Columns pandas stored its index in (`__index_level_0__`): not data."""
    try:
        return {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    except (ValueError, TypeError):
        return set()


def _parquet_type_problem(name: str, kind: pa.DataType, numeric: bool) -> Violation | None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if numeric and not _number_type(kind):
        return Violation("column_type", f"column {name!r} is {kind} in the file; a numeric feature or a "
                                        "regression label needs an integer or floating-point column", [name])
    if not numeric and not _text_type(kind):
        return Violation("column_type", f"column {name!r} is {kind} in the file; a categorical feature or the "
                                        "label needs a text or integer column", [name])
    return None


def read_parquet(data: bytes, dataset, limits: Limits = Limits()) -> Batch:
    import pyarrow.parquet as pq

    if not data:
        return rejected("empty_file", "the file is empty")
    if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        what = sniff(data)
        return rejected("not_parquet", "the file is not a Parquet file (no PAR1 marker at both ends)"
                        + (f"; it is {what}" if what else ""))
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        return rejected("not_parquet", f"the Parquet footer cannot be read: {shorten(str(exc), 200)}")
    if len(schema.names) > limits.max_columns:
        return rejected("too_many_columns", f"the file has {len(schema.names)} columns; the limit is "
                        f"{limits.max_columns}")
    index_columns = _index_columns(schema)
    names = [n for n in schema.names if n not in index_columns]
    problem = check_columns(names, dataset)
    if problem:
        return Batch(None, [problem])
    numeric = _numeric(dataset)
    violations = [v for n in dataset.columns
                  if (v := _parquet_type_problem(n, schema.field(n).type, n in numeric))]
    if violations:
        return Batch(None, violations)
    # The footer's sizes bound what reading may take: the pages' uncompressed bytes, and one value a row
    # (8 bytes a number, at least 1 a text), which a run of nulls or a dictionary can make from nothing.
    metadata = parquet.metadata
    wanted = set(dataset.columns)
    paged = sum(group.column(c).total_uncompressed_size for g in range(metadata.num_row_groups)
                for group in [metadata.row_group(g)] for c in range(group.num_columns)
                if group.column(c).path_in_schema in wanted)
    per_row = sum(8 if n in numeric else 1 for n in dataset.columns)
    for size, what in ((paged, "uncompressed pages"), (metadata.num_rows * per_row, f"{metadata.num_rows} rows")):
        if size > limits.max_file_bytes:
            return rejected("file_too_large", f"the file's {what} take {size} bytes decoded; the limit is "
                                              f"{limits.max_file_bytes}")
    text_columns = [n for n in dataset.columns if n not in numeric]
    try:  # text kept dictionary-encoded where the file has it so, until its decoded size is known
        table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text_columns).read(
            columns=dataset.columns, use_threads=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return rejected("not_parquet", f"the Parquet data cannot be read: {shorten(str(exc), 200)}")
    text_bytes = 0
    for name in text_columns:  # a dictionary's values repeated per row: what decoding will take
        for chunk in table[name].chunks:
            if pa.types.is_dictionary(chunk.type) and len(chunk):
                lengths = pc.binary_length(chunk.dictionary) if _is_text(chunk.dictionary.type) else None
                if lengths is not None:
                    text_bytes += pc.sum(pc.take(pc.fill_null(lengths, 0), chunk.indices)).as_py() or 0
            elif _is_text(chunk.type):
                text_bytes += pc.sum(pc.binary_length(chunk)).as_py() or 0
    if metadata.num_rows * per_row + text_bytes > limits.max_file_bytes:
        return rejected("file_too_large", f"the file's data takes {metadata.num_rows * per_row + text_bytes} "
                                          f"bytes decoded; the limit is {limits.max_file_bytes}")
    columns = []
    for name in dataset.columns:
        column = table[name]
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        columns.append(pc.cast(column, pa.float64()) if name in numeric else _as_text(column))
    batch = Batch(pa.table(columns, names=dataset.columns), first_line=1,
                  notes=_dropped_note(names, dataset))
    if batch.table.num_rows == 0:
        return rejected("no_rows", "the file has no rows")
    too_long = _long_fields(batch.table, limits.max_field_bytes, batch.lines)
    if too_long:
        return Batch(None, [too_long])
    return batch


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


READERS: dict[str, Callable[[bytes, object, Limits], Batch]] = {
    "csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}
