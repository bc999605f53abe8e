"""Prometheus metrics beyond KServe's latency histograms.

Per-request work is kept to a few numpy calls: feature values go into
fixed-bucket counts held in numpy arrays, turned into histograms only when
Prometheus scrapes.
"""

from __future__ import annotations

import collections
import gc
import threading
import time

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

# Iris-scale defaults (cm); --feature-buckets overrides.
DEFAULT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 10.0, 15.0,
                   30.0)

REQUESTS = Counter("mlserving_requests", "Inference requests by model, served version and outcome",
                   ["model", "version", "outcome"])
PREDICTED = Counter("mlserving_predicted_class", "Predicted classes", ["model", "version", "predicted_class"])
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


class FeatureHistograms:
    """Live-traffic value histograms per feature, the input to live drift detection."""

    def __init__(self, model: str, features: tuple[str, ...], buckets=DEFAULT_BUCKETS):
        self.model, self.features = model, features
        self.edges = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros((len(features), self.edges.size + 1), dtype=np.int64)
        self.sums = np.zeros(len(features))
        self.offsets = np.arange(len(features)) * (self.edges.size + 1)  # each feature's slice of the bins
        self.lock = threading.Lock()

    def observe(self, rows: np.ndarray) -> None:
        slots = np.searchsorted(self.edges, rows, side="left")  # le-buckets: value <= edge
        added = np.bincount((slots + self.offsets).ravel(), minlength=self.counts.size).reshape(self.counts.shape)
        with self.lock:
            self.counts += added
            self.sums += rows.sum(axis=0)

    def collect(self):
        family = HistogramMetricFamily("mlserving_feature_value", "Feature values of live traffic",
                                       labels=["model", "feature"])
        with self.lock:
            counts, sums = self.counts.copy(), self.sums.copy()
        labels = [f"{e:g}" for e in self.edges] + ["+Inf"]
        for i, feature in enumerate(self.features):
            cumulative = np.cumsum(counts[i])
            family.add_metric([self.model, feature], list(zip(labels, cumulative.tolist(), strict=True)),
                              sum_value=float(sums[i]))
        yield family


class ModelMetrics:
    """The per-model metric children, cached so a request pays no label lookups."""

    def __init__(self, model: str, buckets=DEFAULT_BUCKETS):
        self.model, self.buckets = model, buckets
        self.histograms: FeatureHistograms | None = None
        self._class_children: dict[tuple[str, str], object] = {}

    def serving(self, version: str, run_id: str, features: tuple[str, ...], previous: str | None) -> None:
        if previous is not None:
            MODEL_INFO.labels(self.model, previous[0], previous[1]).set(0)
        MODEL_INFO.labels(self.model, version, run_id).set(1)
        if self.histograms is None or self.histograms.features != features:
            if self.histograms is not None:
                REGISTRY.unregister(self.histograms)
            self.histograms = FeatureHistograms(self.model, features, self.buckets)
            REGISTRY.register(self.histograms)

    def observe(self, version: str, rows: np.ndarray, predicted: list) -> None:
        self.histograms.observe(rows)
        for cls, count in collections.Counter(predicted).items():  # for a few rows, far cheaper than np.unique
            key = (version, cls)
            child = self._class_children.get(key)
            if child is None:
                child = self._class_children[key] = PREDICTED.labels(self.model, version, str(cls))
            child.inc(count)
