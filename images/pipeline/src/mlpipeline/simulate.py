"""Labelled batch simulator for any dataset: a smoothed bootstrap of a reference sample, with drift.

The reference is a sample of rows holding the dataset's columns (its features and label; other columns
are ignored): a CSV or Parquet file, or one of the tables bundled with scikit-learn, `sklearn:<name>` for
its `load_<name>` (`sklearn_references(task)` lists them), whose columns are named as a dataset file names
them (`column_name`: parenthesised units dropped, lower-case, every run of other characters an underscore,
so "mean concave points" is `mean_concave_points` and "alcohol (% vol)" `alcohol`) and whose label is the
target. A table with named classes (target_names) is a classification reference, its label the class's
name; one without, whose target is one number per row (load_diabetes), a regression reference. Besides
the loaders, `sklearn:friedman1` is make_friedman1's FRIEDMAN1 rows (seeded), features x0..x9: a regression
reference whose target is a known nonlinear function of x0..x4. A dataset is given its own task's tables
only; without a reference, the one of them that has every declared feature is used; a dataset no bundled
one fits needs a reference. A regression label must hold numbers; a classification label that holds numbers
with fractions (a numeric target) is refused unless the dataset declares its classes.

A batch row is a reference row drawn with replacement (seeded): for a classification label, as many of each
class as the class's share of the reference says (so the class mix is exactly the reference's, up to
rounding); for a regression label, each row with the same probability (covariate drift below changes that).
Then:
- numeric features get Gaussian jitter of JITTER x the feature's spread (its within-class standard deviation
  pooled over the classes, in the reference: the overall one would blur well-separated classes; for a
  regression label the overall one), are rounded two decimals finer than the reference's values (so that
  even 10 million rows drawn from 150 hold few exact duplicates, which ingest takes for a double export)
  and are clipped into the declared [min, max];
- missing values travel with their rows, so each nullable feature keeps the reference's missing rate (a
  feature not declared nullable must have no missing value in the reference);
- labels travel with their rows; a regression target stays the reference's number (a float).

Drift is applied after that draw, and the same seed draws the same rows and jitter whatever the drift, so a
drifted batch differs from the clean batch of its seed by the drift alone (but for regression's covariate
drift, which draws other rows with the same jitter). A classification label's drifts:
- covariate: every numeric feature shifted up by `severity` pooled within-class standard deviations (labels
  stay with their rows); every categorical feature's frequencies tilted towards its rarest categories by
  min(severity, 1): at 1 the rarest category is as frequent as the commonest was, the order reversed (the
  fewest values needed are changed);
- concept: the label of a `severity` share of rows (0-1) replaced by the next class of a fixed cyclic
  permutation of the classes (class i's by class i+1's, the last's by the first's). The rows are those that
  score highest along a fixed direction of the feature space (`_concept_score`): a region, the same in every
  batch, so the feature->label relation changes (a model trained on drifted batches learns the new one)
  rather than just getting noisier;
- label_noise: the label of a `severity` share of rows (0-1), chosen at random, replaced by another class
  drawn at random: noise, which no model learns.

Either task's recalibration (`Recalibration`): named numeric features are read by a recalibrated sensor: each
of their values x becomes scale x + offset (after the jitter, before rounding and clipping), every other column
and the label as they were (`severity` does not apply). The rows are the same things measured in new units, so
what a model learnt about that feature's scale is wrong until it is retrained on the new readings.

A regression label's drifts act through one numeric feature j, `drift_feature`: the one whose reference
values correlate most with the target (absolute Pearson correlation; the first declared of equals), the same
in every batch. With z_j = (x_j - mean_j) / sd_j (the reference's mean and standard deviation of j; a
missing x_j counts 0), sd_y the reference target's standard deviation and s the severity (>= 0):
- covariate: P(x) shifts, P(y|x) does not: reference row i is drawn with probability proportional to
  exp(s z_j(i)) (its z_j before jitter) and keeps its target. For a normal x_j this moves its mean up by s
  standard deviations (exponential tilting of N(0, 1) gives N(s, 1)); the target moves only as far as it
  follows x_j;
- coefficient: y' = y + s sd_y z_j (z_j of the batch row): the slope of y on x_j grows by s sd_y / sd_j, so
  the relation changes (a model trained on drifted batches learns it; an older one's error grows);
- heteroscedastic: y' = y + e with e ~ N(0, (s sd_y |z_j|)^2) (seeded): noise whose scale grows with |z_j|,
  zero on average.
A drifted target is rounded two decimals finer than the reference's, as the features are.

The classes are the dataset's `label.classes` or, when it leaves them out, the reference's labels in order.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .dataset import Dataset
from .errors import PipelineError

RECALIBRATION = "recalibration"  # either task's: named numeric features' readings rescaled (`Recalibration`)
DRIFT_KINDS = {"classification": ("none", "covariate", "concept", "label_noise", RECALIBRATION),  # per label.task
               "regression": ("none", "covariate", "coefficient", "heteroscedastic", RECALIBRATION)}
# The regression drifts that act through the one feature `drift_feature` picks.
THROUGH_DRIFT_FEATURE = ("covariate", "coefficient", "heteroscedastic")
MIN_ROWS, MAX_ROWS = 1, 10_000_000  # 10M: the benchmark's largest size
JITTER = 0.1  # numeric jitter: this share of the feature's pooled standard deviation (its variance grows by 1 %)
EXTRA_DECIMALS = 2  # numeric values are written this many decimals finer than the reference's (see _decimals)
MAX_DECIMALS = 9  # values needing more decimals than this are not rounded
SKLEARN_PREFIX = "sklearn:"
# sklearn:friedman1, generated: make_friedman1's ten features (x0..x9), N(0, 1) noise, a fixed seed (the same
# rows in every run, as tests/datasets.py's friedman sample).
FRIEDMAN1 = {"n_samples": 2000, "n_features": 10, "noise": 1.0, "random_state": 0}
FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
READABLE = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
# What follows the column's name in a --recalibrate text: *SCALE, +OFFSET or -OFFSET, or both in that order.
_FORMULA = rf"\s*(?:\*\s*(?P<scale>[+-]?{_NUMBER}))?\s*(?:(?P<sign>[+-])\s*(?P<offset>{_NUMBER}))?\s*$"


# ---- the reference -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A reference sample checked against a dataset: its columns as arrays, labels as class codes (a
    regression label: the target as float64, and no classes)."""

    source: str  # where it came from: a path or sklearn:<name>
    rows: int
    numeric: dict[str, np.ndarray]  # float64, NaN where missing
    categorical: dict[str, tuple[np.ndarray, tuple[str, ...]]]  # int32 codes (-1: missing), categories
    labels: np.ndarray  # int codes into classes; regression: the target, float64
    classes: tuple[str, ...]  # regression: empty


def column_name(name: str) -> str:
    """A scikit-learn feature name as a dataset file names it: "alcohol (% vol)" -> alcohol."""
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"\([^)]*\)", "", name).lower()).strip("_")


@functools.cache
def _bundled() -> dict[str, object]:
    """scikit-learn's bundled labelled tables, each loaded once: every `load_<name>` that needs no argument
    and no download and gives named features with named classes (classification) or, without classes, one
    number per row (regression), sklearn.datasets deciding which exist; and friedman1, generated."""
    import inspect

    import sklearn.datasets
    from sklearn.utils import Bunch

    found = {}
    for attribute in sorted(dir(sklearn.datasets)):
        loader = getattr(sklearn.datasets, attribute)
        if not attribute.startswith("load_") or not callable(loader):
            continue
        required = [p for p in inspect.signature(loader).parameters.values()
                    if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            continue
        try:
            bunch = loader()
        except Exception:  # a loader that needs an optional package (images): not a table
            continue
        if not all(hasattr(bunch, field) for field in ("data", "feature_names", "target")) \
                or np.ndim(bunch.target) != 1:  # one label per row (linnerud's targets are three measures)
            continue
        if hasattr(bunch, "target_names") or np.issubdtype(np.asarray(bunch.target).dtype, np.number):
            found[attribute[len("load_"):]] = bunch
    data, target = sklearn.datasets.make_friedman1(**FRIEDMAN1)
    found["friedman1"] = Bunch(data=data, target=target, feature_names=[f"x{i}" for i in range(data.shape[1])])
    return dict(sorted(found.items()))


def _task(bunch) -> str:
    """A bundled table's task: classification when its classes are named, else regression."""
    return "classification" if hasattr(bunch, "target_names") else "regression"


def sklearn_references(task: str = "classification") -> list[str]:
    """The --reference values naming a table bundled with scikit-learn for a `task` label."""
    return [SKLEARN_PREFIX + name for name, bunch in _bundled().items() if _task(bunch) == task]


def sklearn_frame(name: str, label: str, task: str = "classification") -> pd.DataFrame:
    """A bundled scikit-learn dataset as a reference for a `task` label: its features renamed by
    `column_name`, its label (column `label`) the target's names (classification) or the target (regression)."""
    bunch = _bundled().get(name)
    where = f"--reference {SKLEARN_PREFIX}{name}"
    usable = f"{', '.join(sklearn_references(task))} or a CSV or Parquet file"
    if bunch is None:
        raise PipelineError(f"{where}: no such bundled dataset; use {usable}")
    if _task(bunch) != task:
        what = "named classes" if _task(bunch) == "classification" else "a numeric target, no classes"
        raise PipelineError(f"{where}: a {_task(bunch)} table ({what}), but the dataset's label is {task}; use "
                            f"{usable}")
    frame = pd.DataFrame(bunch.data, columns=[column_name(str(c)) for c in bunch.feature_names])
    if task == "regression":
        frame[label] = np.asarray(bunch.target, dtype=np.float64)
    else:
        frame[label] = np.asarray([str(t) for t in bunch.target_names], dtype=object)[bunch.target]
    return frame


def default_reference(dataset: Dataset) -> str:
    """The bundled scikit-learn dataset for the dataset's task that has every feature `dataset` declares, as a
    --reference."""
    for name, bunch in _bundled().items():
        if _task(bunch) == dataset.task \
                and set(dataset.feature_names) <= {column_name(str(c)) for c in bunch.feature_names}:
            return SKLEARN_PREFIX + name
    raise PipelineError(f"dataset {dataset.name!r} needs --reference: a CSV or Parquet sample with its columns "
                        f"({_listed(dataset.columns)}); no bundled scikit-learn dataset "
                        f"({', '.join(sklearn_references(dataset.task))}) has its features")


def read_reference(spec: str | Path, dataset: Dataset) -> pd.DataFrame:
    """The rows `spec` names: sklearn:<name>, or a .csv or .parquet file."""
    text = str(spec)
    if text.startswith(SKLEARN_PREFIX):
        return sklearn_frame(text[len(SKLEARN_PREFIX):], dataset.label, dataset.task)
    path = Path(spec)
    kind = READABLE.get(path.suffix.lower())
    if kind is None:
        raise PipelineError(f"--reference {text}: not a .csv or .parquet file (nor {SKLEARN_PREFIX}<name>)")
    if not path.exists():
        raise PipelineError(f"--reference {text}: the file does not exist")
    if not path.is_file():
        raise PipelineError(f"--reference {text}: not a file")
    text_columns = {f.name: "str" for f in dataset.features if not f.numeric} | {dataset.label: "str"}
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=text_columns, low_memory=False)
    except Exception as exc:  # the reader's own errors: pyarrow's, pandas' parser's, a decoding error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"--reference {text}: cannot read it as {kind.upper()}: {first}") from None


def prepare_reference(frame: pd.DataFrame, dataset: Dataset, source: str) -> Reference:
    """`frame`'s declared columns checked against `dataset` and held as arrays."""
    where = f"--reference {source}"
    missing = [c for c in dataset.columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{where} lacks the dataset's column(s) {_listed(missing)} (it has "
                            f"{_listed([str(c) for c in frame.columns])})")
    if len(frame) == 0:
        raise PipelineError(f"{where} holds no rows")
    numeric, categorical = {}, {}
    for feature in dataset.features:
        column = frame[feature.name]
        absent = column.isna().to_numpy()
        if absent.any() and not feature.nullable:
            raise PipelineError(f"{where}: column {feature.name!r} has {int(absent.sum())} missing value(s) but "
                                "the dataset does not declare it nullable")
        if feature.numeric:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(values) & ~absent
            if bad.any():
                raise PipelineError(f"{where}: numeric column {feature.name!r} holds non-numbers such as "
                                    f"{_short(column[bad].iloc[0])}")
            if np.isinf(values).any():
                raise PipelineError(f"{where}: numeric column {feature.name!r} holds infinite values")
            numeric[feature.name] = values
        else:
            codes, categories = _codes(column)
            categorical[feature.name] = (codes, categories)
    label = frame[dataset.label]
    if label.isna().any():
        raise PipelineError(f"{where}: the label column {dataset.label!r} has {int(label.isna().sum())} "
                            "missing value(s)")
    values = pd.to_numeric(label, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if dataset.regression:
        if np.isnan(values).any():
            raise PipelineError(f"{where}: the label {dataset.label!r} of a regression dataset must hold numbers; "
                                f"it holds such as {_short(label[np.isnan(values)].iloc[0])}")
        if np.isinf(values).any():
            raise PipelineError(f"{where}: the label {dataset.label!r} holds infinite values")
        return Reference(source, len(frame), numeric, categorical, values, ())
    fractions = values != np.round(values)  # False where not a number
    if not dataset.classes and not np.isnan(values).any() and fractions.any():
        raise PipelineError(f"{where}: the label {dataset.label!r} holds numbers with fractions (such as "
                            f"{_short(float(values[fractions][0]))}): a numeric target, but the "
                            "dataset's label is classification (declare label.task: regression, or "
                            "label.classes if these numbers are classes)")
    texts = label.map(_text)
    found = sorted(set(texts))
    classes = dataset.classes or tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise PipelineError(f"{where}: label(s) {_listed(unknown)} are not among the dataset's classes "
                            f"{_listed(classes)}")
    if len(classes) < 2:
        raise PipelineError(f"{where}: the label {dataset.label!r} holds one class ({classes[0]!r}); a "
                            "classifier needs at least 2")
    labels = pd.Categorical(texts, categories=list(classes)).codes.astype(np.int64)
    return Reference(source, len(frame), numeric, categorical, labels, tuple(classes))


def load_reference(spec: str | Path | None, dataset: Dataset) -> Reference:
    """The reference `spec` names (default: `default_reference`), checked against `dataset`."""
    source = str(spec) if spec not in (None, "") else default_reference(dataset)
    return prepare_reference(read_reference(source, dataset), dataset, source)


def _codes(column: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    texts = column.map(_text, na_action="ignore")
    categorical = pd.Categorical(texts, categories=sorted(texts.dropna().unique()))
    return categorical.codes.astype(np.int32), tuple(str(c) for c in categorical.categories)


def _text(value) -> str:
    """A label or category as text; a whole number read as a float (1.0) is written as the number (1)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _listed(names) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


# ---- recalibration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recalibration:
    """A recalibrated sensor: its readings of the numeric feature `column` become scale x + offset."""

    column: str
    scale: float = 1.0
    offset: float = 0.0

    def __str__(self) -> str:  # as --recalibrate takes it: COLUMN*1.6, COLUMN+0.5, COLUMN*1.1-0.2
        scale = f"*{self.scale:g}" if self.scale != 1 else ""
        offset = f"{self.offset:+g}" if self.offset or not scale else ""
        return f"{self.column}{scale}{offset}"


def parse_recalibration(text: str, dataset: Dataset) -> Recalibration:
    """A --recalibrate text, COLUMN*SCALE, COLUMN+OFFSET, COLUMN-OFFSET or COLUMN*SCALE+OFFSET, checked against
    `dataset`. A column's name may hold any character, so the text is matched against the dataset's own column
    names first (the longest that fits), and only then split where the formula starts."""
    where = f"--recalibrate {text!r}"
    for name in sorted(dataset.columns, key=len, reverse=True):
        found = re.match(_FORMULA, text[len(name):]) if text.startswith(name) else None
        if found and (found["scale"] or found["offset"]):
            break
    else:
        found = re.match(rf"(?P<name>.+?){_FORMULA}", text)  # a name the dataset does not have
        if not found or not (found["scale"] or found["offset"]):
            raise PipelineError(f"{where}: not COLUMN*SCALE, COLUMN+OFFSET or COLUMN*SCALE+OFFSET (e.g. "
                                f"{_first_numeric(dataset)}*1.6)")
        name = found["name"].strip()
    offset = float(found["offset"] or 0) * (-1 if found["sign"] == "-" else 1)
    recalibration = Recalibration(name, float(found["scale"] or 1), offset)
    check_recalibrations([recalibration], dataset, where)
    return recalibration


def check_recalibrations(recalibrations, dataset: Dataset, where: str = "--recalibrate") -> None:
    """Each recalibration names a numeric feature of `dataset` (once) and maps it by a finite, non-zero scale
    and a finite offset."""
    numeric = _listed(f.name for f in dataset.features if f.numeric) or "none"
    seen = set()
    for recalibration in recalibrations:
        column = recalibration.column
        if column == dataset.label:
            raise PipelineError(f"{where}: {column!r} is the label; a recalibration changes what a feature's sensor "
                                f"reads (numeric features: {numeric})")
        if column not in dataset.feature_names:
            raise PipelineError(f"{where}: dataset {dataset.name!r} has no column {column!r} (numeric features: "
                                f"{numeric})")
        if column not in {f.name for f in dataset.features if f.numeric}:
            raise PipelineError(f"{where}: {column!r} is a categorical feature; a recalibration rescales numeric "
                                f"readings (numeric features: {numeric})")
        if column in seen:
            raise PipelineError(f"{where}: {column!r} is recalibrated twice; give it one SCALE and OFFSET")
        seen.add(column)
        if not np.isfinite(recalibration.scale) or recalibration.scale == 0:
            raise PipelineError(f"{where}: the scale of {column!r} must be a finite number other than 0, got "
                                f"{recalibration.scale:g}")
        if not np.isfinite(recalibration.offset):
            raise PipelineError(f"{where}: the offset of {column!r} must be finite, got {recalibration.offset:g}")


def _first_numeric(dataset: Dataset) -> str:
    return next((f.name for f in dataset.features if f.numeric), "COLUMN")


# ---- drawing -------------------------------------------------------------------------------------------------


def check_parameters(rows: int, drift: str, severity: float, task: str = "classification") -> None:
    """The batch's size, drift and severity, for a `task` label (each task has its drifts)."""
    if not MIN_ROWS <= rows <= MAX_ROWS:
        raise PipelineError(f"--rows must be between {MIN_ROWS} and {MAX_ROWS:,}, got {rows}")
    if drift not in DRIFT_KINDS[task]:
        others = "; ".join(f"a {t} label's: {', '.join(kinds)}" for t, kinds in DRIFT_KINDS.items() if t != task)
        raise PipelineError(f"--drift must be one of {', '.join(DRIFT_KINDS[task])}, got {drift!r} (the drifts "
                            f"of a {task} label; {others})")
    if not np.isfinite(severity) or severity < 0 or (drift in ("concept", "label_noise") and severity > 1):
        raise PipelineError(f"--severity must be >= 0 (and <= 1 for concept and label_noise drift: the share of "
                            f"rows whose label changes), got {severity}")


def check_drift_recalibrations(drift: str, recalibrations, dataset: Dataset) -> None:
    """Recalibrations go with the recalibration drift, and it needs at least one: each of them checked."""
    if drift == RECALIBRATION and not recalibrations:
        raise PipelineError(f"--drift {RECALIBRATION} needs at least one --recalibrate COLUMN*SCALE[+OFFSET] (e.g. "
                            f"{_first_numeric(dataset)}*1.6)")
    if drift != RECALIBRATION and recalibrations:
        raise PipelineError(f"--recalibrate applies to --drift {RECALIBRATION} only, not {drift!r}")
    check_recalibrations(recalibrations, dataset)


def simulate(dataset: Dataset, rows: int, drift: str = "none", severity: float = 1.0, seed: int = 0,
             reference: Reference | pd.DataFrame | str | Path | None = None,
             recalibrations: tuple[Recalibration, ...] = ()) -> pd.DataFrame:
    """`rows` rows with the dataset's columns drawn from `reference` (a Reference, a frame, a --reference
    text; default: `default_reference`), drifted as `drift` says (`recalibrations`: the recalibration
    drift's)."""
    check_parameters(rows, drift, severity, dataset.task)
    check_drift_recalibrations(drift, recalibrations, dataset)
    if isinstance(reference, pd.DataFrame):
        reference = prepare_reference(reference, dataset, "(frame)")
    elif not isinstance(reference, Reference):
        reference = load_reference(reference, dataset)
    if dataset.regression == bool(reference.classes):
        raise PipelineError(f"--reference {reference.source} was checked against a dataset of another task; "
                            f"the dataset's label is {dataset.task}")
    draw, jitter, drifting = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    if dataset.regression:
        j = drift_feature(dataset, reference) if drift in THROUGH_DRIFT_FEATURE else None
        weights = np.ones(reference.rows)
        if drift == "covariate":
            z = _standardized(reference.numeric[j], reference.numeric[j])
            weights = np.exp(severity * (z - z.max()))  # exp(s z_j), scaled so that the largest is 1
        picked = draw.choice(reference.rows, size=rows, p=weights / weights.sum())
        groups = np.zeros(reference.rows, np.int64)  # no classes: the spread is the overall one
    else:
        picked = _draw_rows(reference.labels, len(reference.classes), rows, draw)
        groups = reference.labels
    labels = reference.labels[picked]
    shift = drift == "covariate" and not dataset.regression
    recalibrated = {r.column: r for r in recalibrations}
    numeric = [f for f in dataset.features if f.numeric]
    block = np.empty((len(numeric), rows))  # the numeric columns as one block: pandas does not copy it
    for row, feature in zip(block, numeric, strict=True):
        source = reference.numeric[feature.name]
        spread = _pooled_std(source, groups)
        row[:] = source[picked] + jitter.standard_normal(rows) * (JITTER * spread)
        if shift:
            row += severity * spread
        if feature.name in recalibrated:  # the same rows, read in the sensor's new units
            row *= recalibrated[feature.name].scale
            row += recalibrated[feature.name].offset
        decimals = _decimals(source)
        if decimals is not None:
            np.round(row, min(decimals + EXTRA_DECIMALS, MAX_DECIMALS), out=row)
        np.clip(row, -np.inf if feature.min is None else feature.min,
                np.inf if feature.max is None else feature.max, out=row)
    frame = pd.DataFrame(block.T, columns=[f.name for f in numeric], copy=False)
    drawn_codes = {}
    for feature in dataset.features:
        if not feature.numeric:
            codes, categories = reference.categorical[feature.name]
            drawn = codes[picked]
            if shift and len(categories) > 1:
                drawn = _tilt(drawn, codes, len(categories), min(severity, 1.0), drifting)
            drawn_codes[feature.name] = drawn
            frame[feature.name] = _texts(drawn, categories)
    if dataset.regression:
        values = dict(zip([f.name for f in numeric], block, strict=True))
        frame[dataset.label] = _drift_target(labels, reference, drift, severity, j, values.get(j), drifting)
        return frame if list(frame.columns) == dataset.columns else frame[dataset.columns]
    n_classes, count = len(reference.classes), int(np.floor(severity * rows + 0.5))
    if drift == "concept" and count:
        values = dict(zip([f.name for f in numeric], block, strict=True))
        chosen = np.argsort(-_concept_score(dataset, reference, rows, values, drawn_codes), kind="stable")[:count]
        labels = labels.copy()
        labels[chosen] = (labels[chosen] + 1) % n_classes
    elif drift == "label_noise" and count:
        chosen = drifting.choice(rows, size=count, replace=False)
        labels = labels.copy()
        labels[chosen] = (labels[chosen] + drifting.integers(1, n_classes, count)) % n_classes
    frame[dataset.label] = _texts(labels, reference.classes)
    return frame if list(frame.columns) == dataset.columns else frame[dataset.columns]


def drift_feature(dataset: Dataset, reference: Reference) -> str:
    """The numeric feature a regression label's drifts act through: the one whose reference values correlate
    most with the target (absolute Pearson correlation over the rows that have it; the first declared of
    equals), so covariate drift moves the target with it and coefficient drift changes a relation models lean
    on. The same for every batch of a reference."""
    best, chosen = -1.0, None
    for feature in dataset.features:
        values = reference.numeric.get(feature.name)
        if values is None:
            continue
        present = ~np.isnan(values)
        x, y = values[present], reference.labels[present]
        if x.size < 2 or x.std() == 0:
            continue
        score = abs(float(np.corrcoef(x, y)[0, 1])) if y.std() > 0 else 0.0
        if score > best:
            best, chosen = score, feature.name
    if chosen is None:
        raise PipelineError(f"dataset {dataset.name!r}: a regression drift acts through a numeric feature, and "
                            f"no numeric feature of --reference {reference.source} has two different values")
    return chosen


def _standardized(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` in standard deviations from the mean of the reference's values (a missing value: 0)."""
    present = reference[~np.isnan(reference)]
    return np.nan_to_num((values - present.mean()) / present.std())


def _drift_target(target: np.ndarray, reference: Reference, drift: str, severity: float, feature: str | None,
                  values: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The drawn rows' targets, drifted as the module docstring says (coefficient, heteroscedastic) through
    the drift feature's values in the batch; rounded two decimals finer than the reference's."""
    if drift not in ("coefficient", "heteroscedastic") or not severity:
        return target
    scale = severity * float(reference.labels.std())  # s sd_y
    z = _standardized(reference.numeric[feature], values)
    if drift == "coefficient":
        drifted = target + scale * z
    else:
        drifted = target + rng.standard_normal(target.size) * (scale * np.abs(z))
    decimals = _decimals(reference.labels)
    if decimals is not None:
        np.round(drifted, min(decimals + EXTRA_DECIMALS, MAX_DECIMALS), out=drifted)
    return drifted


def _draw_rows(labels: np.ndarray, n_classes: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Reference rows drawn with replacement within each class, as many of each class as its share of the
    reference says (largest remainders rounded up), in random order."""
    counts = np.bincount(labels, minlength=n_classes)
    exact = rows * counts / counts.sum()
    take = np.floor(exact).astype(np.int64)
    take[np.argsort(take - exact, kind="stable")[:rows - int(take.sum())]] += 1
    parts = [rng.choice(np.flatnonzero(labels == c), size=take[c]) for c in range(n_classes) if take[c]]
    return rng.permutation(np.concatenate(parts))


def _texts(codes: np.ndarray, texts: tuple[str, ...]) -> pd.Series:
    """Codes as a text column (code -1: missing), built in Arrow (a column of Python strings is slow)."""
    array = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0),
                                           pa.array(texts, type=pa.string())).dictionary_decode()
    return pd.Series(pd.array(array, dtype="str"))


def _unit(*parts: str) -> float:
    """A fixed number in [-sqrt(3), sqrt(3)] (mean 0, variance 1) named by `parts`: the same in every run."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return (int.from_bytes(digest[:8], "big") / 2**64 - 0.5) * np.sqrt(12)


def _concept_score(dataset: Dataset, reference: Reference, rows: int, numeric: dict[str, np.ndarray],
                   codes: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's position along a fixed direction of the feature space: the sum over the features of a
    fixed weight times the value standardised by the reference (numeric) or a fixed value per category
    (categorical); a missing value counts 0. Weights and category values come from their names, so they are
    the same in every batch."""
    score = np.zeros(rows)
    for feature in dataset.features:
        weight = _unit("weight", feature.name)
        if feature.numeric:
            source = reference.numeric[feature.name]
            spread = float(np.nanstd(source)) if (~np.isnan(source)).sum() > 1 else 0.0
            if spread > 0:
                score += weight * np.nan_to_num((numeric[feature.name] - np.nanmean(source)) / spread)
        else:
            categories = reference.categorical[feature.name][1]
            values = np.asarray([*(_unit("category", feature.name, c) for c in categories), 0.0])
            score += weight * values[codes[feature.name]]  # code -1 (missing): the trailing 0
    return score


def _pooled_std(values: np.ndarray, labels: np.ndarray) -> float:
    """The within-class standard deviation pooled over the classes (the overall one where it is 0 or not
    defined: one row per class)."""
    present = ~np.isnan(values)
    squares, freedom = 0.0, 0
    for c in np.unique(labels[present]):
        group = values[present & (labels == c)]
        squares += float(((group - group.mean()) ** 2).sum())
        freedom += group.size - 1
    pooled = np.sqrt(squares / freedom) if freedom > 0 else 0.0
    if pooled > 0:
        return float(pooled)
    return float(values[present].std()) if present.sum() > 1 else 0.0


def _decimals(values: np.ndarray) -> int | None:
    """The fewest decimals that write every reference value exactly (None: more than MAX_DECIMALS -
    EXTRA_DECIMALS)."""
    present = values[~np.isnan(values)][:100_000]
    for decimals in range(MAX_DECIMALS - EXTRA_DECIMALS + 1):
        if np.all(np.abs(np.round(present, decimals) - present) <= 1e-9 * np.maximum(1.0, np.abs(present))):
            return decimals
    return None


def _tilt(picked: np.ndarray, reference_codes: np.ndarray, n_categories: int, strength: float,
          rng: np.random.Generator) -> np.ndarray:
    """Category codes moved from the reference's frequencies p towards q = (1 - strength) p + strength r, r
    being p with its order reversed (the rarest category gets the commonest's share), changing the fewest
    values: a value of category k stays with probability min(1, q_k / p_k), else takes a category that
    q has more of than p, in proportion to the excess. Missing values stay missing."""
    counts = np.bincount(reference_codes[reference_codes >= 0], minlength=n_categories).astype(float)
    if counts.sum() == 0:
        return picked
    p = counts / counts.sum()
    order = np.lexsort((np.arange(n_categories), p))  # rarest first (ties by code: the categories are sorted)
    r = np.empty_like(p)
    r[order] = p[order][::-1]
    q = (1 - strength) * p + strength * r
    keep = np.divide(q, p, out=np.ones_like(p), where=p > 0).clip(max=1.0)
    excess = np.clip(q - p, 0, None)
    if excess.sum() <= 0:
        return picked
    present = picked >= 0
    moves = present & (rng.random(picked.size) >= np.where(present, keep[np.maximum(picked, 0)], 1.0))
    out = picked.copy()
    out[moves] = rng.choice(n_categories, size=int(moves.sum()), p=excess / excess.sum())
    return out


# ---- writing -------------------------------------------------------------------------------------------------


def to_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """`frame` in a dataset's source format: csv (a header line, missing values empty), jsonl (one object per
    line, missing values null) or parquet."""
    if fmt == "csv":
        return to_csv_bytes(frame)
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True, force_ascii=False, double_precision=10).encode()
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
        return sink.getvalue().to_pybytes()
    raise PipelineError(f"no writer for format {fmt!r}; formats: {', '.join(FORMATS)}")


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([str(c) for c in frame.columns])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    try:
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:  # a text holds a comma, a quote or a line break: quote the texts
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return header.getvalue().encode() + sink.getvalue().to_pybytes()


def batch_name(rows: int, drift: str, severity: float, seed: int, data: bytes, fmt: str = "csv") -> str:
    """The batch's file name: its parameters and a digest of its bytes, so the same batch lands once."""
    digest = hashlib.sha256(data).hexdigest()[:8]
    return f"batch-{rows}r-{drift}-{severity:g}-s{seed}-{digest}{FORMATS[fmt]}"
