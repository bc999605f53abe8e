"""The KServe model: validated v1/v2 inference on the active model, and atomic swaps.

Each request takes one reference to the active model at its start and uses it to
the end, so a swap (a single attribute assignment, after the new model has
loaded and passed a test prediction) never changes a request in flight.

A model whose inputs are all numeric and accept no missing value takes the float-array path (rows_from_v2,
the benchmarked one); any other (categorical features, missing values) a Batch (batch_from_v2), which its
LoadedModel turns into the DataFrame the model was fitted on.

A classifier answers with its predicted labels (a BYTES tensor; v1: the labels), a regressor with its predicted
numbers (an FP64 tensor; v1: the numbers), in the one output, named "predictions" for either kind (KServe's
own sklearn server, too, names the two kinds' outputs alike: kserve.utils.get_predict_response's "output-0",
with the datatype of the numpy answer, FP64 for a regressor). A regressor's prediction that is not a finite
number (NaN, infinity: JSON has no such number) fails the request as a server error naming the rows, never an
answer of null.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from kserve import Model
from kserve.errors import InferenceError
from kserve.logging import trace_logger
from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from .loader import LoadedModel, ModelLoadError, load_model_dir
from .metrics import SWAPS, ModelMetrics
from .validation import MAX_STRING_BYTES, Batch, InputSpec, batch_from_v1, batch_from_v2, rows_from_v1, rows_from_v2

log = logging.getLogger(__name__)

# uuid.uuid4() reads the kernel's entropy pool, a system call on every request that brings no id. A generator
# seeded from it once per process makes the same random version-4 ids (one process per server: ONE_WORKER).
_request_ids = random.Random(os.urandom(32))


# The most text one value of a request can take: a float64 in JSON (17 significant digits, sign, point and
# exponent: 24 characters) with its separator and spaces, plus its feature's name and quotes where a v1 row
# repeats the name for every value. ENVELOPE_BYTES covers the rest (names, shapes, datatypes, the id).
VALUE_BYTES, ENVELOPE_BYTES = 32, 64 * 1024
# A categorical value: at most MAX_STRING_BYTES of UTF-8, each byte at worst a six-character escape (\u00XX) in
# JSON, with its quotes and separator (its binary form, a 4-byte length and the bytes, is shorter).
STRING_VALUE_BYTES = 6 * MAX_STRING_BYTES + 4


def row_bytes(spec: InputSpec) -> int:
    """The most text one row of a request can take (ENVELOPE_BYTES aside)."""
    name = max((len(f) + 3 for f in spec.features), default=0)
    return sum((STRING_VALUE_BYTES if categorical else VALUE_BYTES) + name for categorical in spec.categorical) \
        or VALUE_BYTES


def _ms(start: float, end: float) -> float:
    """A latency in milliseconds as KServe's latency log line gives it (kserve.model.get_latency_ms)."""
    return round((end - start) * 1000, 9)


def new_request_id() -> str:
    return str(uuid.UUID(int=_request_ids.getrandbits(128), version=4))


class RegistryModel(Model):
    def __init__(self, name: str, model_dir: str | Path, max_rows: int = 10_000, buckets=None):
        """`buckets`: histogram edges for every numeric feature, over each model's own (--feature-buckets)."""
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_rows = max_rows
        self.metrics = ModelMetrics(name, buckets)
        self._active: LoadedModel | None = None
        self._row_bytes = VALUE_BYTES
        # KServe's own latency histograms, which its Model.__call__ records on its route
        self._preprocess_timer = PRE_HIST_TIME.labels(**get_labels(name))
        self._predict_timer = PREDICT_HIST_TIME.labels(**get_labels(name))
        self._postprocess_timer = POST_HIST_TIME.labels(**get_labels(name))
        self._swap_lock = threading.Lock()

    @property
    def active(self) -> LoadedModel:
        return self._active

    @property
    def max_body_bytes(self) -> int:
        """The largest body a request within max_rows can need, in any accepted form: larger ones are refused
        before they are parsed (routes.py)."""
        return self.max_rows * self._row_bytes + ENVELOPE_BYTES

    def load(self) -> bool:
        self._activate(load_model_dir(self.model_dir))
        self.ready = True
        return True

    def swap(self, model_dir: str | Path | None = None) -> dict:
        """Load `model_dir` (default: the model's own directory, following a link to the version it names
        now) beside the active model, test it, then switch; on failure keep serving the old one."""
        target = Path(model_dir or self.model_dir).resolve()
        with self._swap_lock:
            previous = self._active
            try:
                candidate = load_model_dir(target)
            except ModelLoadError as exc:
                SWAPS.labels(self.name, "rejected").inc()
                raise ModelLoadError(f"not loaded, still serving version {previous.version}: {exc}") from None
            self._activate(candidate)
            SWAPS.labels(self.name, "swapped").inc()
        log.info("%s: now serving version %s from %s (was %s)", self.name, candidate.version, target,
                 previous.version if previous else None)
        return {"name": self.name, "version": candidate.version, "run_id": candidate.run_id,
                "source": candidate.source, "previous_version": previous.version if previous else None}

    def _activate(self, model: LoadedModel) -> None:
        previous = self._active
        spec = model.spec
        self.metrics.serving(model.version, model.run_id, spec.numeric_names,
                             (previous.version, previous.run_id) if previous else None,
                             tuple((name, model.categories.get(name, ())) for name in spec.categorical_names),
                             model.feature_buckets, model.regression, model.prediction_buckets)
        self._row_bytes = row_bytes(spec)
        self._active = model

    def _predictions(self, active: LoadedModel, rows: np.ndarray | Batch) -> list:
        """The predicted labels (a classifier) or numbers (a regressor), counted in the traffic metrics."""
        try:
            answers = active.predictor(rows)
        except Exception as exc:
            log.exception("%s v%s failed to predict", self.name, active.version)
            raise InferenceError(f"model {self.name} version {active.version} failed to predict: {exc}") from exc
        # the metrics take a classifier's positions in its classes, a regressor's numbers (classes None)
        classes = None if active.regression else active.classes
        if classes is None:
            self._check_finite(active, answers)
        if type(rows) is Batch:
            self.metrics.observe(active.version, classes, rows.numeric, answers, rows.categorical)
        else:
            self.metrics.observe(active.version, classes, rows, answers)
        return answers.tolist() if classes is None else active.class_values[answers].tolist()

    def _check_finite(self, active: LoadedModel, predictions: np.ndarray) -> None:
        """A regressor's predictions must all be finite numbers: JSON has no NaN or infinity (orjson would
        write null), and a client must not mistake one for an answer. One reduction in the usual case, as the
        inputs' check (a sum is finite when every value is, or it overflowed: look then)."""
        if math.isfinite(predictions.sum()) or (finite := np.isfinite(predictions)).all():
            return
        rows = np.flatnonzero(~finite)
        log.error("%s v%s predicted %d non-finite value(s), in row(s) %s", self.name, active.version, rows.size,
                  rows[:10].tolist())
        raise InferenceError(f"model {self.name} version {active.version} predicted a value that is not a finite "
                             f"number (NaN or infinity) for row(s) {rows[:10].tolist()} of the request; no answer "
                             "is sent for it")

    def _v2_rows(self, active: LoadedModel, tensors: list) -> np.ndarray | Batch:
        if active.spec.plain:
            return rows_from_v2(tensors, active.features, self.max_rows)
        return batch_from_v2(tensors, active.spec, self.max_rows)

    def infer_v2(self, tensors: list, request_id: str | None, started: float | None = None,
                 trace_id: str = "N.A.") -> dict:
        """The v2 fast path (routes.py): decoded tensors in, OIP response dict out, no pydantic round trips.

        It records what KServe's Model.__call__ (kserve/model.py) records around our predict on its route:
        request_preprocess_seconds (here: decoding the body, from `started`), request_predict_seconds (checking
        the request and predicting; a refused request too, as the histogram's timer observes on its way out
        of an exception), request_postprocess_seconds (an answer only), and with KServe's
        --enable_latency_logging (ModelServer sets enable_latency_logging on its models) its log line, named
        by the request's x-request-id header (`trace_id`)."""
        active = self._active
        decoded = time.perf_counter()  # not the histograms' time() context manager: it costs twice as much
        self._preprocess_timer.observe(decoded - (started or decoded))
        try:
            predictions = self._predictions(active, self._v2_rows(active, tensors))
        finally:
            predicted = time.perf_counter()
            self._predict_timer.observe(predicted - decoded)
        document = self._v2_response(active, predictions, request_id)
        done = time.perf_counter()
        self._postprocess_timer.observe(done - predicted)
        if self.enable_latency_logging is True:  # KServe's own test, and its line, word for word
            trace_logger.info(f"requestId: {trace_id}, preprocess_ms: {_ms(started or decoded, decoded)}, "
                              f"explain_ms: 0, predict_ms: {_ms(decoded, predicted)}, "
                              f"postprocess_ms: {_ms(predicted, done)}")
        return document

    def predict(self, payload, headers=None):
        """KServe's path (v1 REST, and v2 when called through KServe's data plane)."""
        active = self._active
        if isinstance(payload, InferRequest):
            rows = self._v2_rows(active, payload.inputs)
            doc = self._v2_response(active, self._predictions(active, rows), payload.id)
            # KServe encodes binary outputs when the response says the request asked for them (as its
            # own get_predict_response passes them on); InferResponse.from_rest would drop that.
            outputs = [InferOutput(name=o["name"], shape=o["shape"], datatype=o["datatype"], data=o["data"],
                                   parameters=o.get("parameters")) for o in doc["outputs"]]
            return InferResponse(response_id=doc["id"], model_name=doc["model_name"],
                                 model_version=doc["model_version"], parameters=doc["parameters"],
                                 infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        if active.spec.plain:
            rows = rows_from_v1(payload, active.features, self.max_rows)
        else:
            rows = batch_from_v1(payload, active.spec, self.max_rows)
        return {"predictions": self._predictions(active, rows), "model_version": active.version}

    def _v2_response(self, active: LoadedModel, predictions: list, request_id: str | None) -> dict:
        """The one v2 answer: predicted labels as a BYTES tensor (a regressor's numbers as an FP64 one), the
        version that answered, its run id (`parameters` must be an object per the OIP spec, where KServe's own
        would send null)."""
        # Each output names its content type as MLServer's codecs do ("np": numbers, "str": text), never no
        # parameters: KServe's route sends an output without them as "parameters": null (its pydantic
        # ResponseOutput), which the OIP schema does not allow, where the fast path would leave the field out.
        output = {"name": "predictions", "shape": [len(predictions)], "datatype": "FP64",
                  "parameters": {"content_type": "np"}, "data": predictions} \
            if active.regression else {"name": "predictions", "shape": [len(predictions)], "datatype": "BYTES",
                                       "parameters": {"content_type": "str"}, "data": predictions}
        return {"model_name": self.name, "model_version": active.version, "id": request_id or new_request_id(),
                "parameters": {"run_id": active.run_id}, "outputs": [output]}

    def get_input_types(self) -> list[dict]:
        """One [N] tensor per feature: FP64 for a numeric one (FP16 and FP32 are accepted too), BYTES for a
        categorical one."""
        spec = self._active.spec
        return [{"name": f, "datatype": "BYTES" if categorical else "FP64", "shape": [-1]}
                for f, categorical in zip(spec.features, spec.categorical, strict=True)]

    def get_output_types(self) -> list[dict]:
        """One [N] tensor: the predicted labels (BYTES), or a regressor's predicted numbers (FP64)."""
        return [{"name": "predictions", "datatype": "FP64" if self._active.regression else "BYTES", "shape": [-1]}]

    def metadata(self) -> dict:
        active = self._active
        spec = active.spec
        parameters = {"registry_version": active.version, "run_id": active.run_id, "model_uri": active.model_uri,
                      **({"task": "regression"} if active.regression else {"classes": list(active.classes)}),
                      "nullable_inputs": [f for f, n in zip(spec.features, spec.nullable, strict=True) if n]}
        if not spec.categorical_names:  # one matrix can carry only numbers
            parameters["matrix_input"] = f"[N,{len(active.features)}] FP32/FP64, columns in input order"
        return {
            "name": self.name,
            "versions": [active.version],
            "platform": "sklearn_mlflow",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": parameters,
        }
