"""The bad-file corpus: each entry is (file name, bytes, expected rule or None when accepted)."""

from __future__ import annotations

import gzip

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
