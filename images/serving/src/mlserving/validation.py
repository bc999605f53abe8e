"""Turn a v2 or v1 request body into what the model takes, or say exactly what is wrong.

A model's inputs are the columns of its MLmodel signature (InputSpec). When they are all numeric and none
accepts a missing value, a request becomes a float64 [rows, features] array (rows_from_v2,
rows_from_v1): both v2 tensor forms are accepted, one [N, F] tensor (any name that is not a feature) or one
[N] / [N, 1] tensor per named feature, and the checks are vectorised: one numpy conversion per tensor (one
for all of them in the common well-formed case), one finiteness test for the batch.

Otherwise (categorical columns, or numeric ones that accept a missing value) a request becomes a Batch
(batch_from_v2, batch_from_v1): the numeric columns as one float64 array with NaN where a value is
missing, each categorical column as an object array of strings and None. Numeric features take FP16/FP32/
FP64 tensors, categorical ones BYTES tensors (JSON: a list of strings; the binary extension: KServe's
encoding, each value after its 4-byte little-endian length, decoded by KServe's deserialize_bytes_tensor);
null is a missing value where the model accepts one (that encoding has no null: a missing categorical value
goes in a JSON request; a missing number is NaN in binary FP data). A categorical value is at most
MAX_STRING_BYTES of UTF-8. The Batch becomes the model's DataFrame (InputSpec.frame) with the signature's
columns.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import deserialize_bytes_tensor

FLOAT_TYPES = {"FP16", "FP32", "FP64"}
MAX_DIMENSION = 2**31 - 1
# MLflow column types (mlflow.types.DataType) a model's inputs may have: numbers, and text (categorical).
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
STRING_TYPES = frozenset({"string"})
MAX_STRING_BYTES = 1024  # one categorical value, UTF-8 encoded: a category is a name, not a document


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us per tensor per request
class Tensor:
    """An input tensor of a JSON v2 request (the fields KServe's InferInput exposes)."""

    name: str
    shape: list
    datatype: str
    data: object


class InputSpec:
    """A model's inputs: the signature's columns in order, which are categorical (MLflow type `string`:
    BYTES tensors) and which accept a missing value (null; NaN in binary numeric data).

    `plain` when every column is numeric and none accepts a missing value: requests then take the float
    array path, whose speed is benchmarked."""

    def __init__(self, features: tuple[str, ...], categorical: tuple[bool, ...], nullable: tuple[bool, ...]):
        self.features, self.categorical, self.nullable = features, categorical, nullable
        self.index = {name: i for i, name in enumerate(features)}
        self.numeric_names = tuple(f for f, c in zip(features, categorical, strict=True) if not c)
        self.categorical_names = tuple(f for f, c in zip(features, categorical, strict=True) if c)
        self.numeric_nullable = np.array([n for n, c in zip(nullable, categorical, strict=True) if not c], dtype=bool)
        self.nullable_names = tuple(f for f, n, c in zip(features, nullable, categorical, strict=True) if n and not c)
        self.plain = not any(categorical) and not any(nullable)
        # Each feature's place: (name, categorical, its index among the numeric or the categorical columns)
        numeric_at, categorical_at = iter(range(len(features))), iter(range(len(features)))
        self.places = tuple((name, c, next(categorical_at) if c else next(numeric_at))
                            for name, c in zip(features, categorical, strict=True))

    @classmethod
    def numeric(cls, features: tuple[str, ...]) -> InputSpec:
        return cls(features, (False,) * len(features), (False,) * len(features))

    def expects(self, name: str) -> str:
        """What a feature's tensor must be, for messages."""
        if self.categorical[self.index[name]]:
            return "send BYTES: a list of strings (null for a missing value)"
        missing = " (null for a missing value)" if self.nullable[self.index[name]] else ""
        return f"send FP32 or FP64 numbers{missing}"

    def form_hint(self) -> str:
        if self.plain:
            return (f"send one [N,{len(self.features)}] FP32/FP64 tensor, or one tensor per feature "
                    f"{list(self.features)}")
        parts = [f"numeric {list(self.numeric_names)} as FP32/FP64" if self.numeric_names else "",
                 f"categorical {list(self.categorical_names)} as BYTES" if self.categorical_names else ""]
        matrix = "" if self.categorical_names else f", or one [N,{len(self.features)}] FP32/FP64 tensor"
        return f"send one [N] tensor per feature: {' and '.join(p for p in parts if p)}{matrix}"

    def frame(self, batch: Batch):
        """The batch as the DataFrame the model was fitted on: the signature's columns, float64 and object."""
        import pandas as pd

        columns = {name: pd.Series(batch.categorical[i], dtype=object, copy=False) if categorical
                   else batch.numeric[:, i] for name, categorical, i in self.places}
        return pd.DataFrame(columns, columns=list(self.features))

    def array(self, batch: Batch) -> np.ndarray:
        """The batch as one array in signature order, for a model fitted without column names."""
        if not self.categorical_names:
            return batch.numeric
        rows = np.empty((len(batch), len(self.features)), dtype=object)
        for column, (_, categorical, i) in enumerate(self.places):
            rows[:, column] = batch.categorical[i] if categorical else batch.numeric[:, i]
        return rows


@dataclass(slots=True)
class Batch:
    """A checked request for a model whose inputs are not plain numbers (InputSpec.plain is false)."""

    numeric: np.ndarray  # float64 [N, numeric features], NaN where a value is missing
    categorical: tuple[np.ndarray, ...]  # one object [N] array per categorical feature: str, None if missing

    def __len__(self) -> int:
        return self.numeric.shape[0]


# The values a `parameters` object may hold in KServe's pydantic model (v2_datamodels.Parameters: StrictFloat,
# StrictInt, StrictBool or str): an object of exactly these reaches the model as it came.
PARAMETER_TYPES = (float, int, bool, str)


@dataclass(slots=True)
class DecodedRequest:
    """A v2 request, JSON or binary, decoded and checked (json_request, tensors_from_binary): its inputs and id,
    and whether the fast path may answer it (`plain`). It is not plain when KServe's route makes more of it
    than the model's answer: outputs named (KServe's InferResponse.to_rest picks them), binary outputs asked
    for (it encodes them), FP16 data in JSON (InferRequest.from_inference_request refuses it with its own
    message), or a binary request with a tensor's data in its JSON header."""

    tensors: list[Tensor]
    request_id: str | None
    plain: bool


def _parameters(value, what: str) -> dict:
    """A `parameters` field as KServe takes it: absent, or an object of numbers, booleans and strings."""
    if value is None:
        return {}
    if type(value) is not dict or any(type(v) not in PARAMETER_TYPES for v in value.values()):
        raise InvalidInput(f"{what}: parameters must be an object of numbers, booleans and strings, got "
                           f"{_short(value)}")
    return value


def _envelope(doc) -> tuple[str | None, dict, list]:
    """A request's id, parameters and requested outputs, checked as KServe's InferenceRequest takes them (its
    pydantic model answers anything else 422 with its own words; its binary decoding fails on it with a 500)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput('the body must be a JSON object with an "inputs" list (Open Inference Protocol v2)')
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput(f"id must be a string, got {_short(request_id)}")
    outputs = doc.get("outputs")
    if outputs is None:
        outputs = []
    elif type(outputs) is not list or not all(type(o) is dict and type(o.get("name")) is str for o in outputs):
        raise InvalidInput("outputs must be a list of objects, each with a name (a string)")
    for index, output in enumerate(outputs):
        _parameters(output.get("parameters"), f"output {index}")
    return request_id, _parameters(doc.get("parameters"), "the request"), outputs


def tensors_from_json(doc, binary: bool = False) -> list[Tensor]:
    """The inputs of a decoded v2 body, each checked for the OIP tensor structure as KServe's RequestInput takes
    it without changing it (a shape of exact integers: pydantic would make 2.0 or true into 2 or 1; data a list,
    or for a binary request the decoded values)."""
    tensors = []
    for index, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict) or "name" not in item or "shape" not in item or "datatype" not in item \
                or "data" not in item:
            raise InvalidInput(f"input {index} needs name, shape, datatype and data")
        shape, data = item["shape"], item["data"]
        if type(item["name"]) is not str or type(shape) is not list or type(item["datatype"]) is not str:
            raise InvalidInput(f"input {index}: name and datatype must be strings and shape a list")
        if any(type(d) is not int for d in shape):
            raise InvalidInput(f"input {index}: shape {shape} must be integers from 0 to {MAX_DIMENSION}"[:300])
        if type(data) is not list and not binary:
            raise InvalidInput(f"input {index}: data must be a list (nested as its shape, or flat), got "
                               f"{_short(data)}")
        _parameters(item.get("parameters"), f"input {index}")
        tensors.append(Tensor(item["name"], shape, item["datatype"].upper(), data))
    return tensors


def json_request(doc) -> DecodedRequest:
    """A decoded v2 JSON body, checked whole (_envelope, tensors_from_json)."""
    request_id, parameters, outputs = _envelope(doc)
    tensors = tensors_from_json(doc)
    fp16 = any(item["datatype"] == "FP16" and item["data"] for item in doc["inputs"])
    return DecodedRequest(tensors, request_id, plain=not (outputs or parameters.get("binary_data_output") or fp16))


# The binary tensor data extension (KServe's and Triton's): little-endian, row-major, no padding.
BINARY_DTYPES = {"FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


def tensors_from_binary(body: bytes, header_length: str) -> DecodedRequest:
    """A request in the binary tensor data extension (a JSON header of `Inference-Header-Content-Length` bytes,
    then the data of each input that has a `binary_data_size` parameter, in input order), checked whole: what
    KServe's InferRequest.from_bytes and InferInput.as_numpy would fail on with a KeyError, TypeError or
    numpy error (a 500) is refused here with what is wrong (a binary input's shape must be non-negative
    integers that its values fill exactly, as their reshape needs; `id` a string; `parameters` objects;
    `outputs` objects with a name; an input gives its data inline or as binary data, not both)."""
    try:
        json_length = int(header_length)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be a number of bytes, "
                           f"got {header_length!r}") from None
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length is {json_length}, but the body holds {len(body)} bytes")
    try:
        doc = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON header: {exc}") from None
    request_id, request_parameters, outputs = _envelope(doc)
    offset, inline = json_length, False
    for index, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict):
            raise InvalidInput(f"input {index} needs name, shape, datatype and data")
        size = _parameters(item.get("parameters"), f"input {index}").get("binary_data_size")
        if size is None:
            inline = True
            continue
        if "data" in item:
            raise InvalidInput(f"input {index} has both data and binary_data_size; send its values one way")
        datatype = str(item.get("datatype", "")).upper()
        if datatype == "BYTES":
            if type(size) is not int or size < 0 or offset + size > len(body):
                raise InvalidInput(f"input {index}: binary_data_size {size!r} is not a number of bytes within "
                                   f"the {len(body) - offset} bytes left")
            values = _binary_strings(body[offset:offset + size], index)
        else:
            dtype = BINARY_DTYPES.get(datatype)
            if dtype is None:
                raise InvalidInput(f"input {index}: datatype {item.get('datatype')} is not accepted; send FP32 or "
                                   "FP64 (BYTES for a categorical feature)")
            if type(size) is not int or size < 0 or size % dtype.itemsize or offset + size > len(body):
                raise InvalidInput(f"input {index}: binary_data_size {size!r} is not a whole number of "
                                   f"{item['datatype']} values within the {len(body) - offset} bytes left")
            values = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset)
        shape = item.get("shape")
        if not isinstance(shape, list) or any(type(d) is not int or not 0 <= d <= MAX_DIMENSION for d in shape) \
                or math.prod(shape) != len(values):
            raise InvalidInput(f"input {index}: shape {shape!r} does not hold its {len(values)} binary values "
                               f"(it must be integers from 0 to {MAX_DIMENSION} whose product is the count)")
        item["data"] = values
        offset += size
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes follow the last binary input; each needs binary_data_size")
    tensors = tensors_from_json(doc, binary=True)
    return DecodedRequest(tensors, request_id,
                          plain=not (inline or outputs or request_parameters.get("binary_data_output")))


def _binary_strings(data: bytes, index: int) -> list:
    """A BYTES input's binary data as text, decoded by KServe's own deserialize_bytes_tensor."""
    try:
        values = deserialize_bytes_tensor(data)
    except struct.error:
        raise InvalidInput(f"input {index}: its {len(data)} bytes of BYTES data are not a sequence of values "
                           "each after its 4-byte little-endian length") from None
    try:
        return [value.decode("utf-8") for value in values.tolist()]
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input {index}: a BYTES value is not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None


def _numbers(data, what: str, allow_null: bool = False) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what}: data is ragged or not a list of numbers ({exc})") from exc
    if array.dtype.kind in "fiu":
        return array.astype(np.float64, copy=False)
    if allow_null and array.dtype.kind == "O":  # null among the numbers (or Python ints beyond int64)
        flat = array.ravel().tolist()
        bad = next((v for v in flat if v is not None and type(v) is not float and type(v) is not int), flat)
        if bad is flat:
            try:
                return np.array([math.nan if v is None else v for v in flat], dtype=np.float64).reshape(array.shape)
            except OverflowError:
                raise InvalidInput(f"{what}: a number is beyond float64's range") from None
        raise InvalidInput(f"{what}: data must be numbers or null (a missing value), got {bad!r}"[:300])
    null = " or null (a missing value)" if allow_null else ""
    raise InvalidInput(f"{what}: data must be numbers{null}, got {array.dtype.kind!r}-typed values "
                       f"such as {array.ravel()[:3].tolist()}"[:300])


def _check_batch(rows: np.ndarray, max_rows: int, features: tuple[str, ...],
                 nullable: np.ndarray | None = None) -> np.ndarray:
    """The rows if their count is within limits and every value finite, or NaN (a missing value) where
    `nullable` (one flag per column) accepts it."""
    if rows.shape[0] == 0:
        raise InvalidInput("the request holds no rows")
    if rows.shape[0] > max_rows:
        raise InvalidInput(f"the request holds {rows.shape[0]} rows; the limit is {max_rows} per request")
    # One reduction in the usual case: a sum is finite when every value is (or it overflowed; look then)
    if not math.isfinite(rows.sum()) and not (finite := np.isfinite(rows)).all():
        if nullable is not None and nullable.any():
            finite |= np.isnan(rows) & nullable
            if finite.all():
                return rows
        bad_rows = np.flatnonzero(~finite.all(axis=1))[:10].tolist()
        bad_features = [features[j] for j in np.flatnonzero(~finite.all(axis=0))[:10]]
        accepted = [f for f, n in zip(features, nullable, strict=True) if n] if nullable is not None else []
        where = f" (missing values, null or NaN, are accepted for {accepted})" if accepted else ""
        raise InvalidInput(f"NaN or infinite values in row(s) {bad_rows} of feature(s) {bad_features}; every "
                           f"value must be finite{where}")
    return rows


def _shape(inp, what: str) -> list:
    shape = list(inp.shape or [])
    # type, not isinstance: JSON's true is no dimension; and none beyond what numpy can index
    if any(type(d) is not int or not 0 <= d <= MAX_DIMENSION for d in shape):
        raise InvalidInput(f"{what}: shape {shape} must be integers from 0 to {MAX_DIMENSION}")
    if not shape:
        raise InvalidInput(f"{what}: shape [] is a scalar; a request needs rows ([N, features] or [N])")
    return shape


def _tensor(inp, what: str, allow_null: bool = False, expects: str = "send FP32 or FP64") -> np.ndarray:
    if inp.datatype not in FLOAT_TYPES:
        raise InvalidInput(f"{what}: datatype {inp.datatype} is not accepted; {expects}")
    shape = _shape(inp, what)
    values = _numbers(inp.data, what, allow_null)
    expected = math.prod(shape)
    if values.size != expected:
        raise InvalidInput(f"{what}: shape {shape} needs {expected} values, got {values.size}")
    return values.reshape(shape)


def _string_values(values: list, what: str) -> np.ndarray:
    """Checked categorical values: each a string of at most MAX_STRING_BYTES, or None (missing)."""
    for row, value in enumerate(values):
        if value is None:
            continue
        if type(value) is not str:
            raise InvalidInput(f"{what}: value {row} is {_short(value)}; a categorical feature takes strings "
                               "(null for a missing value)")
        # At most 4 UTF-8 bytes a character: only a long string needs encoding to be measured
        if len(value) > MAX_STRING_BYTES // 4 and \
                (size := len(value.encode("utf-8", "surrogatepass"))) > MAX_STRING_BYTES:
            raise InvalidInput(f"{what}: value {row} is {size} bytes long; the limit is {MAX_STRING_BYTES} bytes "
                               "(UTF-8) per value")
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _short(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _strings(inp, what: str, max_rows: int, expects: str) -> np.ndarray:
    """A BYTES tensor of shape [N] or [N, 1] as an object array of strings and None."""
    if inp.datatype != "BYTES":
        raise InvalidInput(f"{what}: datatype {inp.datatype} is not accepted; {expects}")
    shape = _shape(inp, what)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"{what} has shape {shape}; expected [N] or [N, 1]")
    if shape[0] > max_rows:
        raise InvalidInput(f"the request holds {shape[0]} rows; the limit is {max_rows} per request")
    data = inp.data
    if not isinstance(data, list):
        raise InvalidInput(f"{what}: data must be a list of strings, got {_short(data)}")
    if data and all(type(v) is list for v in data):  # nested as its shape ([["a"], ["b"]] for [N, 1])
        data = [v for row in data for v in row]
    if len(data) != shape[0]:
        raise InvalidInput(f"{what}: shape {shape} needs {shape[0]} values, got {len(data)}")
    return _string_values(data, what)


def _lengths_differ(lengths: dict[str, int]) -> InvalidInput | None:
    """The error for feature inputs of different lengths, naming the ones that differ from the most common."""
    if len(set(lengths.values())) == 1:
        return None
    usual = Counter(lengths.values()).most_common(1)[0][0]
    odd = [f"{name!r} has {n}" for name, n in lengths.items() if n != usual][:10]
    return InvalidInput(f"feature inputs have different lengths: {', '.join(odd)} values, the others {usual}; "
                        "all need the same N")


def _feature_columns(inputs: list, features: tuple[str, ...]) -> np.ndarray | None:
    """The usual request in one numpy conversion: each feature once, as an FP tensor of shape [N] with N
    values, all of them JSON lists or all arrays the binary extension decoded. None when anything differs,
    and the checks of rows_from_v2 say what."""
    if len(inputs) != len(features):
        return None
    by_name = {i.name: i for i in inputs}
    if by_name.keys() != set(features):
        return None
    ordered = [by_name[name] for name in features]
    n = ordered[0].shape[0] if isinstance(ordered[0].shape, list) and len(ordered[0].shape) == 1 else None
    if type(n) is not int:
        return None
    kind = type(ordered[0].data)
    if kind is not list and kind is not np.ndarray:
        return None
    for tensor in ordered:
        if tensor.datatype not in FLOAT_TYPES or tensor.shape != [n] or type(tensor.data) is not kind \
                or len(tensor.data) != n:
            return None
    if kind is np.ndarray:  # binary: typed by BINARY_DTYPES already, one dimension each
        rows = np.empty((n, len(ordered)))  # column by column: np.column_stack costs ~25 us for 4 columns
        for index, tensor in enumerate(ordered):
            rows[:, index] = tensor.data
        return rows
    try:
        columns = np.asarray([tensor.data for tensor in ordered])
    except (ValueError, TypeError):
        return None
    if columns.ndim != 2 or columns.dtype.kind not in "fiu":
        return None
    return np.ascontiguousarray(columns.T, dtype=np.float64)


def rows_from_v2(inputs: list, features: tuple[str, ...], max_rows: int) -> np.ndarray:
    f = len(features)
    columns = _feature_columns(inputs, features)
    if columns is not None:
        return _check_batch(columns, max_rows, features)
    form_hint = f"send one [N,{f}] FP32/FP64 tensor, or one tensor per feature {list(features)}"
    if not inputs:
        raise InvalidInput(f"the request has no inputs; {form_hint}")
    names = [i.name for i in inputs]
    if len(inputs) == 1 and names[0] not in features:
        tensor = _tensor(inputs[0], f"input {names[0]!r}")
        if tensor.ndim != 2 or tensor.shape[1] != f:
            raise InvalidInput(f"input {names[0]!r} has shape {list(tensor.shape)}; expected [N, {f}] "
                               f"with columns {list(features)}")
        return _check_batch(tensor, max_rows, features)
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
    if (error := _lengths_differ({name: c.size for name, c in zip(features, columns, strict=True)})) is not None:
        raise error
    return _check_batch(np.column_stack(columns), max_rows, features)


def _v1_instances(body, usage: str) -> list:
    """The `instances` (or `inputs`) list of a v1 request; `usage` says what a v1 request is, for the error."""
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise InvalidInput(usage)
    instances = body.get("instances", body.get("inputs"))
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of rows')
    return instances


def _keyed_rows(instances: list, features: tuple[str, ...]) -> list[list]:
    """Instances given as objects keyed by feature, as lists of their values in `features` order."""
    if not all(isinstance(row, dict) for row in instances):
        raise InvalidInput("mixed row forms: every instance must be an object when the first one is")
    keys = set().union(*instances)
    missing, unknown = [n for n in features if n not in keys], sorted(keys - set(features))
    incomplete = [i for i, row in enumerate(instances) if len(row) != len(features)]
    if missing or unknown or incomplete:
        raise InvalidInput(f"instances need exactly the keys {list(features)}; missing {missing}, unknown "
                           f"{unknown}, incomplete rows {incomplete[:10]}")
    return [[row[n] for n in features] for row in instances]


def rows_from_v1(body, features: tuple[str, ...], max_rows: int) -> np.ndarray:
    f = len(features)
    instances = _v1_instances(body, f'a v1 request is {{"instances": [[{f} numbers], ...]}} or a list of objects '
                                    f"keyed by {list(features)}")
    if instances and isinstance(instances[0], dict):
        rows = _numbers(_keyed_rows(instances, features), "instances")
    else:
        rows = _numbers(instances, "instances") if instances else np.empty((0, f))
    if rows.ndim != 2 or rows.shape[1] != f:
        raise InvalidInput(f"instances have shape {list(rows.shape)}; expected [N, {f}] with columns "
                           f"{list(features)}")
    return _check_batch(rows, max_rows, features)


def _missing_unknown_duplicated(names: list[str], spec: InputSpec) -> None:
    missing = [n for n in spec.features if n not in names]
    unknown = [n for n in names if n not in spec.index]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or duplicated:
        parts = [f"missing inputs {missing}" if missing else "", f"unknown inputs {unknown}" if unknown else "",
                 f"duplicated inputs {duplicated}" if duplicated else ""]
        raise InvalidInput("; ".join(p for p in parts if p) + f"; {spec.form_hint()}")


def batch_from_v2(inputs: list, spec: InputSpec, max_rows: int) -> Batch:
    """A v2 request for a model whose inputs are not plain numbers: one tensor per feature, typed as its
    signature column is (or, when every feature is numeric, one [N, F] FP tensor)."""
    if not inputs:
        raise InvalidInput(f"the request has no inputs; {spec.form_hint()}")
    names = [i.name for i in inputs]
    if len(inputs) == 1 and names[0] not in spec.index:
        if spec.categorical_names:
            raise InvalidInput(f"input {names[0]!r} is not a feature, and one tensor cannot hold both numbers and "
                               f"the categorical features {list(spec.categorical_names)}; {spec.form_hint()}")
        f = len(spec.features)
        tensor = _tensor(inputs[0], f"input {names[0]!r}", allow_null=True)
        if tensor.ndim != 2 or tensor.shape[1] != f:
            raise InvalidInput(f"input {names[0]!r} has shape {list(tensor.shape)}; expected [N, {f}] "
                               f"with columns {list(spec.features)}")
        return Batch(_check_batch(tensor, max_rows, spec.features, spec.numeric_nullable), ())
    _missing_unknown_duplicated(names, spec)
    by_name = {i.name: i for i in inputs}
    numeric, categorical, lengths = [], [], {}
    for name, is_categorical, _ in spec.places:
        what = f"input {name!r} ({'categorical' if is_categorical else 'numeric'})"
        if is_categorical:
            column = _strings(by_name[name], what, max_rows, spec.expects(name))
            categorical.append(column)
        else:
            column = _tensor(by_name[name], what, spec.nullable[spec.index[name]], spec.expects(name))
            if column.ndim == 2 and column.shape[1] == 1:
                column = column[:, 0]
            if column.ndim != 1:
                raise InvalidInput(f"input {name!r} has shape {list(column.shape)}; expected [N] or [N, 1]")
            numeric.append(column)
        lengths[name] = len(column)
    if (error := _lengths_differ(lengths)) is not None:
        raise error
    rows = np.column_stack(numeric) if numeric else np.empty((next(iter(lengths.values())), 0))
    return Batch(_check_batch(rows, max_rows, spec.numeric_names, spec.numeric_nullable), tuple(categorical))


def batch_from_v1(body, spec: InputSpec, max_rows: int) -> Batch:
    """A v1 request for a model whose inputs are not plain numbers: instances as objects keyed by feature, or
    as lists of values in signature order."""
    f = len(spec.features)
    instances = _v1_instances(body, f'a v1 request is {{"instances": [...]}}: objects keyed by '
                                    f"{list(spec.features)}, or lists of {f} values in that order (strings for "
                                    f"{list(spec.categorical_names)})")
    if not instances:
        raise InvalidInput("the request holds no rows")
    if len(instances) > max_rows:
        raise InvalidInput(f"the request holds {len(instances)} rows; the limit is {max_rows} per request")
    if isinstance(instances[0], dict):
        instances = _keyed_rows(instances, spec.features)
    else:
        ragged = [i for i, row in enumerate(instances) if not isinstance(row, list) or len(row) != f]
        if ragged:
            raise InvalidInput(f"instances {ragged[:10]} are not lists of {f} values; each row holds "
                               f"{list(spec.features)} in that order")
    columns = {name: [row[i] for row in instances] for i, name in enumerate(spec.features)}
    numeric, categorical = [], []
    for name, is_categorical, _ in spec.places:
        what = f"instances' {name!r} ({'categorical' if is_categorical else 'numeric'})"
        if is_categorical:
            categorical.append(_string_values(columns[name], what))
            continue
        column = _numbers(columns[name], what, spec.nullable[spec.index[name]])
        if column.ndim != 1:
            raise InvalidInput(f"{what}: each row needs one number, got {list(column.shape)} values")
        numeric.append(column)
    rows = np.column_stack(numeric) if numeric else np.empty((len(instances), 0))
    return Batch(_check_batch(rows, max_rows, spec.numeric_names, spec.numeric_nullable), tuple(categorical))
