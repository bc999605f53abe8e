"""Prometheus metrics beyond KServe's latency histograms.

Per-request work is kept to a few numpy calls: feature values go into
fixed-bucket counts held in numpy arrays, turned into histograms only when
Prometheus scrapes.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily

# Iris-scale defaults (cm); --feature-buckets overrides.
DEFAULT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 10.0, 15.0,
                   30.0)

REQUESTS = Counter("mlserving_requests", "Inference requests by model, served version and outcome",
                   ["model", "version", "outcome"])
PREDICTED = Counter("mlserving_predicted_class", "Predicted classes", ["model", "version", "predicted_class"])
MODEL_INFO = Gauge("mlserving_model_info", "The version being served (1 = active)", ["model", "version", "run_id"])
SWAPS = Counter("mlserving_model_swaps", "Model swap attempts by result", ["model", "result"])


class FeatureHistograms:
    """Live-traffic value histograms per feature, the input to live drift detection."""

    def __init__(self, model: str, features: tuple[str, ...], buckets=DEFAULT_BUCKETS):
        self.model, self.features = model, features
        self.edges = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros((len(features), self.edges.size + 1), dtype=np.int64)
        self.sums = np.zeros(len(features))
        self.lock = threading.Lock()

    def observe(self, rows: np.ndarray) -> None:
        slots = np.searchsorted(self.edges, rows, side="left")  # le-buckets: value <= edge
        offsets = np.arange(rows.shape[1]) * (self.edges.size + 1)
        added = np.bincount((slots + offsets).ravel(), minlength=self.counts.size).reshape(self.counts.shape)
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

    def observe(self, version: str, rows: np.ndarray, predicted: np.ndarray) -> None:
        self.histograms.observe(rows)
        classes, counts = np.unique(predicted, return_counts=True)
        for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
            key = (version, cls)
            child = self._class_children.get(key)
            if child is None:
                child = self._class_children[key] = PREDICTED.labels(self.model, version, str(cls))
            child.inc(count)
