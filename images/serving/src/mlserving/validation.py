"""Turn a v2 or v1 request body into a float64 [rows, features] array, or say exactly what is wrong.

Both v2 tensor forms are accepted: one [N, F] tensor (any name that is not a
feature), or one [N] / [N, 1] tensor per named feature. Checks are vectorised:
one numpy conversion per tensor, one finiteness test for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kserve.errors import InvalidInput

FLOAT_TYPES = {"FP16", "FP32", "FP64"}


@dataclass(frozen=True)
class Tensor:
    """An input tensor of a JSON v2 request (the fields KServe's InferInput exposes)."""

    name: str
    shape: list
    datatype: str
    data: object


def tensors_from_json(doc) -> tuple[list[Tensor], str | None]:
    """The inputs and id of a decoded v2 JSON body, checked for the OIP request structure."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput('the body must be a JSON object with an "inputs" list (Open Inference Protocol v2)')
    tensors = []
    for index, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict) or not {"name", "shape", "datatype", "data"} <= set(item):
            raise InvalidInput(f"input {index} needs name, shape, datatype and data")
        if not isinstance(item["name"], str) or not isinstance(item["shape"], list) or \
                not isinstance(item["datatype"], str):
            raise InvalidInput(f"input {index}: name and datatype must be strings and shape a list")
        tensors.append(Tensor(item["name"], item["shape"], item["datatype"].upper(), item["data"]))
    request_id = doc.get("id")
    return tensors, request_id if isinstance(request_id, str) else None


def _numbers(data, what: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what}: data is ragged or not a list of numbers ({exc})") from exc
    if array.dtype.kind not in "fiu":
        raise InvalidInput(f"{what}: data must be numbers, got {array.dtype.kind!r}-typed values "
                           f"such as {array.ravel()[:3].tolist()}")
    return array.astype(np.float64, copy=False)


def _check_batch(rows: np.ndarray, max_rows: int) -> np.ndarray:
    if rows.shape[0] == 0:
        raise InvalidInput("the request holds no rows")
    if rows.shape[0] > max_rows:
        raise InvalidInput(f"the request holds {rows.shape[0]} rows; the limit is {max_rows} per request")
    finite = np.isfinite(rows)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise InvalidInput(f"NaN or infinite values in row(s) {bad[:10].tolist()}; every value must be finite")
    return rows


def _tensor(inp, what: str) -> np.ndarray:
    if inp.datatype not in FLOAT_TYPES:
        raise InvalidInput(f"{what}: datatype {inp.datatype} is not accepted; send FP32 or FP64")
    shape = list(inp.shape or [])
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise InvalidInput(f"{what}: shape {shape} must be non-negative integers")
    values = _numbers(inp.data, what)
    expected = int(np.prod(shape)) if shape else 0
    if values.size != expected:
        raise InvalidInput(f"{what}: shape {shape} needs {expected} values, got {values.size}")
    return values.reshape(shape)


def rows_from_v2(inputs: list, features: tuple[str, ...], max_rows: int) -> np.ndarray:
    f = len(features)
    form_hint = f"send one [N,{f}] FP32/FP64 tensor, or one tensor per feature {list(features)}"
    if not inputs:
        raise InvalidInput(f"the request has no inputs; {form_hint}")
    names = [i.name for i in inputs]
    if len(inputs) == 1 and names[0] not in features:
        tensor = _tensor(inputs[0], f"input {names[0]!r}")
        if tensor.ndim != 2 or tensor.shape[1] != f:
            raise InvalidInput(f"input {names[0]!r} has shape {list(tensor.shape)}; expected [N, {f}] "
                               f"with columns {list(features)}")
        return _check_batch(tensor, max_rows)
    missing = [n for n in features if n not in names]
    unknown = [n for n in names if n not in features]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or duplicated:
        parts = [f"missing inputs {missing}" if missing else "", f"unknown inputs {unknown}" if unknown else "",
                 f"duplicated inputs {duplicated}" if duplicated else ""]
        raise InvalidInput("; ".join(p for p in parts if p) + f"; {form_hint}")
    by_name = {i.name: i for i in inputs}
    columns = []
    for name in features:
        tensor = _tensor(by_name[name], f"input {name!r}")
        if tensor.ndim == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.ndim != 1:
            raise InvalidInput(f"input {name!r} has shape {list(tensor.shape)}; expected [N] or [N, 1]")
        columns.append(tensor)
    lengths = {c.size for c in columns}
    if len(lengths) != 1:
        raise InvalidInput(f"feature inputs have different lengths {sorted(lengths)}; all need the same N")
    return _check_batch(np.column_stack(columns), max_rows)


def rows_from_v1(body, features: tuple[str, ...], max_rows: int) -> np.ndarray:
    f = len(features)
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise InvalidInput(f'a v1 request is {{"instances": [[{f} numbers], ...]}} or a list of objects '
                           f"keyed by {list(features)}")
    instances = body.get("instances", body.get("inputs"))
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of rows')
    if instances and isinstance(instances[0], dict):
        if not all(isinstance(row, dict) for row in instances):
            raise InvalidInput("mixed row forms: every instance must be an object when the first one is")
        keys = set().union(*instances)
        missing, unknown = [n for n in features if n not in keys], sorted(keys - set(features))
        incomplete = [i for i, row in enumerate(instances) if len(row) != f]
        if missing or unknown or incomplete:
            raise InvalidInput(f"instances need exactly the keys {list(features)}; missing {missing}, unknown "
                               f"{unknown}, incomplete rows {incomplete[:10]}")
        rows = _numbers([[row[n] for n in features] for row in instances], "instances")
    else:
        rows = _numbers(instances, "instances") if instances else np.empty((0, f))
    if rows.ndim != 2 or rows.shape[1] != f:
        raise InvalidInput(f"instances have shape {list(rows.shape)}; expected [N, {f}] with columns "
                           f"{list(features)}")
    return _check_batch(rows, max_rows)
