"""Labelled batch simulator: a per-class log-normal generator fitted on iris.

Each class is a multivariate normal over log(features) fitted on sklearn's
bundled iris, so samples are positive and keep iris's correlations.
- covariate: feature distributions shift, labels still follow the original
  P(class | features) (drawn from the fitted generator's posterior);
- concept: features as before, but a `severity` share of labels is rotated to
  another class, so a model trained on the original data loses accuracy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.datasets import load_iris

from .errors import PipelineError
from .schema import DatasetSchema

DRIFT_KINDS = ("none", "covariate", "concept")
MIN_ROWS, MAX_ROWS = 1, 10_000_000  # 10M: the benchmark's largest size, 2.4 GiB peak


@dataclass(frozen=True)
class ClassGenerator:
    means: np.ndarray  # (classes, features), log space
    chols: np.ndarray  # (classes, features, features), Cholesky factors of the covariances

    @classmethod
    def fit_iris(cls, n_features: int) -> ClassGenerator:
        iris = load_iris()
        logs = np.log(iris.data)
        if n_features != logs.shape[1]:
            raise PipelineError(f"the iris generator makes 4 features; the schema has {n_features}")
        means = np.stack([logs[iris.target == c].mean(axis=0) for c in range(3)])
        covs = np.stack([np.cov(logs[iris.target == c], rowvar=False) + 1e-6 * np.eye(4) for c in range(3)])
        return cls(means, np.linalg.cholesky(covs))

    @property
    def pooled_std(self) -> np.ndarray:
        return np.sqrt(np.einsum("cij,cij->cj", self.chols, self.chols).mean(axis=0))

    def sample(self, labels: np.ndarray, rng: np.random.Generator, shift: np.ndarray | None = None) -> np.ndarray:
        noise = rng.standard_normal((labels.size, self.means.shape[1]))
        logs = self.means[labels] + np.einsum("nij,nj->ni", self.chols[labels], noise)
        return logs + shift if shift is not None else logs

    def posterior_labels(self, logs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw labels from the original generator's P(class | x), equal priors."""
        loglik = np.empty((logs.shape[0], self.means.shape[0]))
        for c, (mean, chol) in enumerate(zip(self.means, self.chols, strict=True)):
            z = np.linalg.solve(chol, (logs - mean).T)
            loglik[:, c] = -0.5 * (z * z).sum(axis=0) - np.log(np.diag(chol)).sum()
        post = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        return (rng.random(logs.shape[0])[:, None] > post.cumsum(axis=1)).sum(axis=1).clip(max=post.shape[1] - 1)


def simulate(schema: DatasetSchema, rows: int, drift: str = "none", severity: float = 1.0,
             seed: int = 0) -> pd.DataFrame:
    if not MIN_ROWS <= rows <= MAX_ROWS:
        raise PipelineError(f"--rows must be between {MIN_ROWS} and {MAX_ROWS:,}, got {rows}")
    if drift not in DRIFT_KINDS:
        raise PipelineError(f"--drift must be one of {', '.join(DRIFT_KINDS)}, got {drift!r}")
    if not np.isfinite(severity) or severity < 0 or (drift == "concept" and severity > 1):
        raise PipelineError(f"--severity must be >= 0 (and <= 1 for concept drift: the share of rotated labels), "
                            f"got {severity}")
    generator = ClassGenerator.fit_iris(len(schema.features))
    rng = np.random.default_rng(seed)
    n_classes = len(schema.classes)
    labels = rng.permutation(np.arange(rows) % n_classes)
    if drift == "covariate":
        # Shift every feature up by `severity` pooled standard deviations (log space).
        logs = generator.sample(labels, rng, shift=severity * generator.pooled_std)
        labels = generator.posterior_labels(logs, rng)
    else:
        logs = generator.sample(labels, rng)
        if drift == "concept":
            rotate = rng.random(rows) < severity
            labels = np.where(rotate, (labels + 1) % n_classes, labels)
    lows = np.array([f.min for f in schema.features])
    highs = np.array([f.max for f in schema.features])
    values = np.clip(np.round(np.exp(logs), 2), lows, highs)
    frame = pd.DataFrame(values, columns=schema.feature_names)
    frame[schema.label] = np.asarray(schema.classes, dtype=object)[labels]
    return frame


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), sink,
                    write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return (",".join(frame.columns) + "\n").encode() + sink.getvalue().to_pybytes()


def batch_name(rows: int, drift: str, severity: float, seed: int, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()[:8]
    return f"batch-{rows}r-{drift}-{severity:g}-s{seed}-{digest}.csv"
