"""Prometheus metrics beyond KServe's latency histograms.

A request pays for copying its rows and its answers (a classifier's predicted classes, as positions in its
model's classes; a regressor's predicted numbers) into numpy buffers: they are counted from there in batches
(TrafficMetrics), turned into Prometheus histograms and counters only when Prometheus scrapes. A classifier's
answers are counted by class (mlserving_predicted_class), a regressor's in a histogram on its model's
prediction edges (mlserving_prediction; none without them: loader.prediction_buckets says why).
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

log = logging.getLogger(__name__)

# The category labels of a categorical feature beyond the ones its model knows: any other value, and a
# missing one (null; or the pipeline's own fill value for it, which the model treats the same).
OTHER_CATEGORY, MISSING_CATEGORY = "__other__", "__missing__"
MAX_CATEGORY_LABELS = 1000  # known categories counted by name per feature; the rest count as __other__

# The edges of a numeric feature's histogram, when its model carries none of its own: each model the
# pipeline trains carries edges per feature from its training data (mlpipeline.model_format
# FEATURE_BUCKETS_FILE, read by the loader), and --feature-buckets overrides both for every feature. These,
# on a 0.1-30 scale, serve a model logged before per-feature edges (or whose file was refused); features on
# other scales are resolved coarsely by them.
DEFAULT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 10.0, 15.0,
                   30.0)

REQUESTS = Counter("mlserving_requests", "Inference requests by model, served version and outcome",
                   ["model", "version", "outcome"])
MODEL_INFO = Gauge("mlserving_model_info", "The version being served (1 = active)", ["model", "version", "run_id"])
SWAPS = Counter("mlserving_model_swaps", "Model swap attempts by result", ["model", "result"])
# A collection stops every request in the process: the first suspect for a latency tail.
GC_PAUSES = Histogram("mlserving_gc_pause_seconds", "Garbage collector pauses by generation", ["generation"],
                      buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05))


def time_gc_pauses() -> None:
    """Observe every collection's duration in GC_PAUSES (gc.callbacks run before and after each)."""
    children = [GC_PAUSES.labels(str(generation)) for generation in range(3)]
    started = 0.0

    def callback(phase: str, info: dict) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(callback)


def le_label(edge: float) -> str:
    """An edge as its `le` label: short (%g, as before: "0.1", "1", "30") where that reads back as the same
    float, else the shortest text that does. detect bins the training reference on the edges it reads from
    these labels, so a label must name the very edge the server counted on (a value equal to an edge
    counts in that edge's bucket: one rounded a hair off would move such values to the next one)."""
    short = f"{edge:g}"
    return short if float(short) == edge else repr(edge)


class TrafficMetrics:
    """What live traffic looked like, for one model: each numeric feature's value histogram (the input to live
    drift detection) and count of missing values, each categorical feature's values counted by category, and
    a classifier's predicted classes by served version, or a regressor's predictions in a histogram by served
    version (on the edges its model carries, the same for every version of a model: the canary compares two
    versions' histograms, live drift the served one's with its training predictions).

    The histograms are labelled with the version being served (use_features) and start afresh when it
    changes: each version counts on its own edges (its training data's quantiles), so a version's series are
    its own and a query over a window that spans a swap, or a canary beside the stable version, can read
    one version's edges at a time (`version` in its selector) instead of a sum of two sets of buckets.

    A categorical value is counted under its category when the model knows it (its encoder's categories_,
    up to MAX_CATEGORY_LABELS a feature), else under __other__, or __missing__ when null: the labels are
    the model's, never a client's, so no request can add series.

    The prediction histogram, like the feature ones, is labelled with the version being served and starts
    afresh when it changes; a prediction is counted in it only when the version that made it is the one
    being served (a request in flight at a swap, answered by the old version, is not).

    A request only copies its rows and answers (predicted classes as positions in its model's classes, or
    predicted numbers) into preallocated numpy buffers. They are counted in batches, when the buffers are
    full (FLUSH_ROWS rows) and at every scrape, so numpy's fixed cost per call (several microseconds, more
    than the counting itself for a few rows) is paid once per batch, and a scrape still counts every request
    answered before it.
    - The batch is bounded in rows, not requests: counting it holds up the requests waiting behind it
      (0.1-0.3 ms for 1,024 rows).
    - Nothing waits in Python containers: a request that left a list or a tuple behind would grow the
      garbage collector's count, and its collections, the oldest generation's included (over 100 ms in this
      process), would come back into the latency tail.
    """

    FLUSH_ROWS = 1024

    def __init__(self, model: str, buckets=None):
        """`buckets`: edges for every numeric feature, overriding the model's own (--feature-buckets); None:
        each model's own edges per feature where it has them (use_features), else DEFAULT_BUCKETS."""
        self.model = model
        self.override = buckets is not None
        self.edges = np.asarray(DEFAULT_BUCKETS if buckets is None else buckets, dtype=np.float64)
        self.feature_edges: tuple[np.ndarray, ...] = ()
        self.version = ""  # the version being served: the histograms' `version` label
        self.classes: collections.Counter = collections.Counter()  # (version, class) -> predictions
        self.regression = False  # the served model predicts numbers: no class counts, a prediction histogram
        self._positions = np.empty(self.FLUSH_ROWS, dtype=np.intp)
        self._predictions = np.empty(self.FLUSH_ROWS, dtype=np.float64)
        # (first waiting row, version, its classes or None for a regressor): a new entry when the answering
        # model changes
        self._segments: list[tuple[int, str, tuple[str, ...] | None]] = []
        self._waiting = 0
        self._lock = threading.Lock()
        self._count_features((), ())
        self._count_categories(())
        self._count_predictions(None)

    def use_features(self, features: tuple[str, ...],
                     categorical: tuple[tuple[str, tuple[str, ...]], ...] = (),
                     edges: dict[str, tuple[float, ...]] | None = None, version: str = "", regression: bool = False,
                     prediction_edges: tuple[float, ...] | None = None) -> None:
        """Count values of these numeric features, on `edges` (each feature's own, from its model; None, or
        an override given to the constructor: the same edges for all), under `version` (the version being
        served: the histograms' label), and of these categorical ones by the categories given for each, from
        now on (a new version, feature set or new edges starts its histograms afresh; new categories their
        counts). A `regression` model's predictions are counted on `prediction_edges` (its own; None: not
        counted), a new version or new edges starting that histogram afresh; a classifier's by class."""
        per_feature = tuple(self.edges if self.override or edges is None else np.asarray(edges[f], dtype=np.float64)
                            for f in features)
        with self._lock:
            # The rows waiting in the buffers were served before the swap: counted first, on the old version's
            # edges and under its label. Its series then stop being exported (Prometheus keeps what it
            # scraped): what the old version counted after Prometheus's last scrape of it (at most one
            # scrape interval of its traffic, the batch flushed here included) is never seen.
            self._flush()
            new_version = version != self.version
            if new_version or features != self.features or \
                    not all(map(np.array_equal, per_feature, self.feature_edges)):
                self.version = version
                self._count_features(features, per_feature)
            if categorical != self.categorical:
                self._count_categories(categorical)
            prediction_edges = prediction_edges if regression else None
            same_edges = (prediction_edges is None) == (self.prediction_edges is None) and \
                (prediction_edges is None or np.array_equal(prediction_edges, self.prediction_edges))
            if new_version or regression != self.regression or not same_edges:
                self.regression = regression
                self._count_predictions(prediction_edges)

    def _count_features(self, features: tuple[str, ...], edges: tuple[np.ndarray, ...]) -> None:
        """Bins of every feature in one flat array, each feature's slice (its edges' bins, then the +Inf one)
        starting at its offset. Features that all share one set of edges (the global ones) are binned in one
        searchsorted over the batch (self.shared_edges), others one column at a time. The missing-value
        counters restart too: they carry no version label (a count of values, not of buckets, sums alike
        across versions), and Prometheus's increase() takes a restart from zero for the reset it is."""
        self.features, self.feature_edges = features, edges
        first = edges[0] if edges else self.edges
        self.shared_edges = first if all(e is first or np.array_equal(e, first) for e in edges) else None
        sizes = np.array([e.size + 1 for e in edges], dtype=np.intp)
        self.offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)  # each feature's first bin
        self.counts = np.zeros(int(sizes.sum()), dtype=np.int64)
        self.sums = np.zeros(len(features))
        self.missing = np.zeros(len(features), dtype=np.int64)
        self._rows = np.empty((self.FLUSH_ROWS, len(features)))
        self._has_values = np.zeros(self.FLUSH_ROWS, dtype=bool)

    def _count_categories(self, categorical: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        """One counter slot per (feature, category): each feature's known categories, then __other__ and
        __missing__; a request's values become slot numbers through one dict per feature."""
        self.categorical = categorical
        labels: list[tuple[str, str]] = []
        lookups = []
        for name, categories in categorical:
            known = [c for c in dict.fromkeys(categories) if c not in (OTHER_CATEGORY, MISSING_CATEGORY)]
            if len(known) > MAX_CATEGORY_LABELS:
                log.warning("%s: feature %r has %d categories; the first %d are counted by name, the others as %s",
                            self.model, name, len(known), MAX_CATEGORY_LABELS, OTHER_CATEGORY)
                known = known[:MAX_CATEGORY_LABELS]
            offset = len(labels)
            other, missing = offset + len(known), offset + len(known) + 1
            lookup = {category: offset + i for i, category in enumerate(known)}
            lookup[None] = lookup[MISSING_CATEGORY] = missing
            lookups.append((lookup, other))
            labels += [(name, c) for c in known] + [(name, OTHER_CATEGORY), (name, MISSING_CATEGORY)]
        self.category_labels = tuple(labels)
        self.category_counts = np.zeros(len(labels), dtype=np.int64)
        self._lookups = tuple(lookups)
        self._codes = np.empty((self.FLUSH_ROWS, len(lookups)), dtype=np.intp)

    def _count_predictions(self, edges: tuple[float, ...] | None) -> None:
        """A regressor's prediction histogram on `edges` (its bins, then the +Inf one), from zero; None: no
        histogram (a classifier, or a regressor without edges)."""
        self.prediction_edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.prediction_counts = np.zeros(0 if edges is None else len(edges) + 1, dtype=np.int64)
        self.prediction_sum = 0.0

    def _encode(self, categorical, out: np.ndarray) -> None:
        """Each categorical column's values as counter slots, into `out` ([rows, categorical features])."""
        for j, (lookup, other) in enumerate(self._lookups):
            get = lookup.get
            out[:, j] = [get(value, other) for value in categorical[j]]

    def observe(self, version: str, classes: tuple[str, ...] | None, rows: np.ndarray, answers: np.ndarray,
                categorical=None) -> None:
        """A request's numeric rows (NaN where a value is missing), its categorical columns (one sequence of
        strings and None per categorical feature, or None when it has none) and its answers: a classifier's
        predicted classes, as positions in `classes`, or (`classes` None) a regressor's predicted numbers,
        all finite."""
        n = len(answers)
        with self._lock:  # the feature check too: a swap to other features changes the buffers under the lock
            # A request the model just swapped out answered may have other features: its values fit no histogram.
            # One with the same features is counted in the new version's histograms, on its edges (only the
            # requests in flight at the swap; its predicted classes still count under the version that answered).
            encoded = 0 if categorical is None else len(categorical)
            fits = rows.shape[1] == len(self.features) and encoded == len(self._lookups)
            if self._waiting + n > self.FLUSH_ROWS:
                self._flush()
            if n > self.FLUSH_ROWS:  # more than the buffers hold: counted at once
                codes = None
                if fits and encoded:
                    codes = np.empty((n, encoded), dtype=np.intp)
                    self._encode(categorical, codes)
                self._count(rows if fits else None, [(version, classes, answers)], codes)
                return
            start, end = self._waiting, self._waiting + n
            if fits:
                self._rows[start:end] = rows
                if encoded:
                    self._encode(categorical, self._codes[start:end])
            self._has_values[start:end] = fits
            if classes is None:
                self._predictions[start:end] = answers
            else:
                self._positions[start:end] = answers
            if not self._segments or self._segments[-1][1:] != (version, classes):
                self._segments.append((start, version, classes))
            self._waiting = end

    def _flush(self) -> None:
        """Count the waiting requests (the lock held)."""
        end = self._waiting
        if not end:
            return
        bounds = [start for start, _, _ in self._segments[1:]] + [end]
        # Requests of another feature set are rare (a swap in flight): the usual batch is used in place, not
        # copied through a mask (18 us of a 1,024-row batch).
        rows, codes, fits = self._rows[:end], self._codes[:end], self._has_values[:end]
        every = fits.all()
        self._count(rows if every else rows[fits],
                    [(version, classes, (self._predictions if classes is None else self._positions)[start:stop])
                     for (start, version, classes), stop in zip(self._segments, bounds, strict=True)],
                    (codes if every else codes[fits]) if self._lookups else None)
        self._waiting, self._segments = 0, []

    def _count(self, rows: np.ndarray | None, segments: list[tuple[str, tuple[str, ...] | None, np.ndarray]],
               codes: np.ndarray | None = None) -> None:
        if rows is not None and len(rows):
            # einsum adds the columns in one pass: rows.sum(axis=0) takes 13 us of a 1,024-row batch, this 5 us
            sums = np.einsum("ij->j", rows)
            if self.shared_edges is not None:
                slots = np.searchsorted(self.shared_edges, rows, side="left")  # le-buckets: value <= edge
            else:  # each feature on its own edges: one searchsorted per column (a few us each, per batch)
                slots = np.empty(rows.shape, dtype=np.intp)
                for j, edges in enumerate(self.feature_edges):
                    slots[:, j] = np.searchsorted(edges, rows[:, j], side="left")
            slots += self.offsets
            if np.isnan(sums).any():  # missing values (NaN: only a model that accepts them lets them in)
                # counted apart, not binned: NaN would sort past every edge, into +Inf, and make the sum NaN
                missing = np.isnan(rows)
                self.missing += missing.sum(axis=0)
                slots[missing] = self.counts.size  # one past the last bin, dropped below
                binned = np.bincount(slots.ravel(), minlength=self.counts.size + 1)[:-1]
                sums = np.einsum("ij->j", np.where(missing, 0.0, rows))
            else:
                binned = np.bincount(slots.ravel(), minlength=self.counts.size)
            self.counts += binned
            self.sums += sums
        if codes is not None and codes.size:
            self.category_counts += np.bincount(codes.ravel(), minlength=self.category_counts.size)
        for version, classes, answers in segments:
            if classes is None:  # a regressor's predictions: in the histogram of the version they were made by
                if self.prediction_edges is not None and version == self.version:
                    self.prediction_counts += np.bincount(np.searchsorted(self.prediction_edges, answers, side="left"),
                                                          minlength=self.prediction_counts.size)
                    self.prediction_sum += float(answers.sum())
                continue
            for cls, count in zip(classes, np.bincount(answers, minlength=len(classes)).tolist(), strict=False):
                if count:
                    self.classes[version, cls] += count

    def collect(self):
        with self._lock:
            self._flush()
            counts, sums, classes = self.counts.copy(), self.sums.copy(), dict(self.classes)
            features, edges, offsets, missing = self.features, self.feature_edges, self.offsets, self.missing.tolist()
            version, regression = self.version, self.regression
            category_labels, category_counts = self.category_labels, self.category_counts.tolist()
            prediction_edges, prediction_counts = self.prediction_edges, self.prediction_counts.copy()
            prediction_sum = self.prediction_sum
        values = HistogramMetricFamily("mlserving_feature_value", "Feature values of live traffic by served version "
                                       "(numeric features, on the version's own edges; missing values are in "
                                       "mlserving_feature_missing)", labels=["model", "version", "feature"])
        labels = {}
        for i, feature in enumerate(features):
            key = id(edges[i])
            if key not in labels:  # once per set of edges: features sharing the global edges share their labels
                labels[key] = [le_label(e) for e in edges[i].tolist()] + ["+Inf"]
            cumulative = np.cumsum(counts[offsets[i]:offsets[i] + edges[i].size + 1])
            values.add_metric([self.model, version, feature], list(zip(labels[key], cumulative.tolist(), strict=True)),
                              sum_value=float(sums[i]))
        yield values
        if not regression:
            predicted = CounterMetricFamily("mlserving_predicted_class", "A classification model's predictions by "
                                            "predicted class and the version that made them",
                                            labels=["model", "version", "predicted_class"])
            for (answered_by, cls), count in classes.items():
                predicted.add_metric([self.model, answered_by, cls], count)
            yield predicted
        if prediction_edges is not None:
            prediction = HistogramMetricFamily("mlserving_prediction", "A regression model's predictions by served "
                                               "version, on the edges its model carries (prediction_buckets.json, "
                                               "the same for every version of the model)", labels=["model", "version"])
            labels = [le_label(e) for e in prediction_edges.tolist()] + ["+Inf"]
            prediction.add_metric([self.model, version], list(zip(labels, np.cumsum(prediction_counts).tolist(),
                                                                  strict=True)), sum_value=prediction_sum)
            yield prediction
        categories = CounterMetricFamily(
            "mlserving_feature_category", f"Categorical feature values of live traffic by category: the ones the "
            f"model knows, {OTHER_CATEGORY} for any other, {MISSING_CATEGORY} for a missing value",
            labels=["model", "feature", "category"])
        for (feature, category), count in zip(category_labels, category_counts, strict=True):
            categories.add_metric([self.model, feature, category], count)
        yield categories
        absent = CounterMetricFamily("mlserving_feature_missing", "Missing values (null) of numeric features in "
                                     "live traffic", labels=["model", "feature"])
        for feature, count in zip(features, missing, strict=True):
            absent.add_metric([self.model, feature], count)
        yield absent


class ModelMetrics:
    """One model's metrics: the version it serves (MODEL_INFO) and its live traffic (TrafficMetrics)."""

    def __init__(self, model: str, buckets=None):
        self.model = model
        self.traffic = TrafficMetrics(model, buckets)
        REGISTRY.register(self.traffic)

    def serving(self, version: str, run_id: str, features: tuple[str, ...], previous: tuple[str, str] | None,
                categorical: tuple[tuple[str, tuple[str, ...]], ...] = (),
                edges: dict[str, tuple[float, ...]] | None = None, regression: bool = False,
                prediction_edges: tuple[float, ...] | None = None) -> None:
        """`features`: the numeric features; `categorical`: each categorical feature with its known categories;
        `edges`: each numeric feature's histogram edges from its model (None: the global ones); `regression`:
        the model predicts numbers, counted on `prediction_edges` (its own; None: not counted)."""
        if previous is not None:
            MODEL_INFO.labels(self.model, previous[0], previous[1]).set(0)
        MODEL_INFO.labels(self.model, version, run_id).set(1)
        self.traffic.use_features(features, categorical, edges, version, regression, prediction_edges)

    def observe(self, version: str, classes: tuple[str, ...] | None, rows: np.ndarray, answers: np.ndarray,
                categorical=None) -> None:
        """A classifier's answers as positions in `classes`, a regressor's (`classes` None) as its numbers."""
        self.traffic.observe(version, classes, rows, answers, categorical)
