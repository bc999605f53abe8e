"""The dataset file: everything a user declares about one model, parsed and checked in one place.

`datasets/<name>.yaml` names the model, its label and features, where its batches come from, the
estimator and the metric it is held to, and its schedule. The Airflow side parses it when the DAG file is
parsed (one DAG per file), and the stages parse the same text again (they are given its content, never
read it from an image), so this module imports no pandas or scikit-learn: parsing N files stays cheap.

Every mistake is a DatasetFileError naming the file, the key (`features[2].type`) and what is allowed.
Unknown keys are refused (with the nearest allowed key), so a typo never silently falls back to a
default. What the file declares is the contract users rely on; what it leaves out gets the defaults
below (DEFAULTS), and the fingerprint covers the whole parsed result, so a changed default changes the
run keys as a changed file does.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import PipelineError
from .volume import MODEL_NAME, FileTooLarge, read_no_follow  # MODEL_NAME: a DNS-1035 label (an InferenceService's)

TASKS = ("classification", "regression")
FEATURE_TYPES = ("numeric", "categorical")
SOURCE_KINDS = ("files", "sql", "http")
FILE_FORMATS = ("csv", "jsonl", "parquet")
# What a canary still short of requests at its deadline does: keep the offline verdict, or roll back (the Airflow
# side's mlops.canary has the same two; this package never imports it)
CANARY_INCONCLUSIVE = ("promote", "rollback")
SOURCE_KEYS = {"files": ("kind", "format"), "sql": ("kind", "conn_id", "query"),
               "http": ("kind", "format", "conn_id", "endpoint")}
# Each task's metrics and where each is better. The threshold key follows the direction: `min` for a metric
# better higher, `max` for one better lower; it is the degradation threshold (retrain past it on a fresh
# batch) and a first model's bound. Classification: accuracy's paired test is McNemar's (right/wrong per row),
# the others' a paired bootstrap of the metric. Regression: a Wilcoxon signed-rank test on the per-row losses
# and a paired bootstrap CI (mlpipeline.decide). MAPE is a fraction (0.1 is 10 %) and undefined on a zero target.
METRIC_DIRECTIONS = {
    "classification": {"accuracy": "higher", "balanced_accuracy": "higher", "macro_f1": "higher"},
    "regression": {"rmse": "lower", "mae": "lower", "r2": "higher", "mape": "lower"},
}
METRICS = tuple(METRIC_DIRECTIONS["classification"])
# What a file that names no metric is held to: scale-free metrics (rmse's bound depends on the target's unit).
DEFAULT_METRICS = {"classification": ("accuracy", 0.7), "regression": ("r2", 0.5)}
# Each allow-listed estimator with the params a file may set and their JSON types. The pipeline maps the
# names to scikit-learn classes (mlpipeline.model), which check the values again.
_NUMBER, _INT, _STR, _NULL = (int, float), int, str, type(None)
_CLASS_WEIGHT = (_STR, dict, _NULL)
CLASSIFIERS: dict[str, dict[str, tuple]] = {
    "logistic_regression": {"C": _NUMBER, "max_iter": (_INT,), "class_weight": _CLASS_WEIGHT, "tol": _NUMBER},
    "random_forest": {"n_estimators": (_INT,), "max_depth": (_INT, _NULL), "min_samples_leaf": _NUMBER,
                      "max_features": (_STR, *_NUMBER, _NULL), "class_weight": _CLASS_WEIGHT},
    "hist_gradient_boosting": {"max_iter": (_INT,), "learning_rate": _NUMBER, "max_depth": (_INT, _NULL),
                               "max_leaf_nodes": (_INT, _NULL), "min_samples_leaf": (_INT,),
                               "l2_regularization": _NUMBER, "class_weight": _CLASS_WEIGHT},
    "linear_svm": {"C": _NUMBER, "max_iter": (_INT,), "class_weight": _CLASS_WEIGHT},
}
_NO_CLASS_WEIGHT = ("class_weight",)
REGRESSORS: dict[str, dict[str, tuple]] = {
    "ridge": {"alpha": _NUMBER, "fit_intercept": (bool,), "tol": _NUMBER, "max_iter": (_INT, _NULL)},
    **{name: {k: v for k, v in CLASSIFIERS[name].items() if k not in _NO_CLASS_WEIGHT}
       for name in ("random_forest", "hist_gradient_boosting")},
}
ESTIMATORS = {"classification": CLASSIFIERS, "regression": REGRESSORS}  # per task: names and their params
DEFAULT_ESTIMATORS = {"classification": "logistic_regression", "regression": "ridge"}
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the file's stem: part of the DAG id
_WINDOW = re.compile(r"^(all|last:[1-9][0-9]*)$")
_DURATION_SCHEDULES = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@continuous")
MAX_FILE_BYTES = 256 * 1024
MAX_FEATURES = 2000
MAX_CATEGORIES = 10000

DEFAULTS = {
    "window": "last:1",
    "split": {"test_size": 0.25, "seed": 42},
    "model": {"params": {}},  # the estimator's default is the task's (DEFAULT_ESTIMATORS)
    "promotion": {"min_improvement": 0.01, "alpha": 0.05},
    "max_duplicate_fraction": 0.05,
}


# The safe loader, in C where PyYAML has it (a file parses ~6 times faster: the DAG file parses every dataset
# file at each parse); the same documents either way.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DatasetFileError(PipelineError):
    """A dataset file is unreadable or declares something not allowed; the message names the file and key."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # numeric | categorical
    nullable: bool = False
    min: float | None = None  # numeric: the plausible range (values outside it are refused)
    max: float | None = None
    unit: str = ""
    categories: tuple[str, ...] = ()  # categorical: the known categories (others are counted, not refused)

    @property
    def numeric(self) -> bool:
        return self.type == "numeric"

    def as_dict(self) -> dict:
        out = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.numeric:
            out.update({k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None})
            if self.unit:
                out["unit"] = self.unit
        elif self.categories:
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class Source:
    kind: str = "files"  # files (landed per partition) | sql | http (pulled into the landing area)
    format: str = "csv"  # what the landed files are: a sql pull writes JSON lines
    conn_id: str = ""
    query: str = ""  # sql: run with the parameter `partition` (the date)
    endpoint: str = ""  # http: a path with `{partition}` in it

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in SOURCE_KEYS[self.kind]}


@dataclass(frozen=True)
class Dataset:
    name: str
    model_name: str
    label: str
    task: str  # classification | regression
    classes: tuple[str, ...]  # classification: empty when learned from the training window; regression: empty
    features: tuple[Feature, ...]
    source: Source
    estimator: str
    params: dict
    metric: str
    metric_threshold: float  # the file's metric.min (metric better higher) or metric.max (better lower)
    schedule: str | None
    window: str
    test_size: float
    seed: int
    min_improvement: float
    alpha: float
    max_duplicate_fraction: float
    drop_columns: tuple[str, ...] = ()
    description: str = ""
    owners: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    canary: dict = field(default_factory=dict)  # percent, minutes, inconclusive: the DAG's defaults for this model

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def metric_direction(self) -> str:
        """Where the metric is better: higher | lower."""
        return METRIC_DIRECTIONS[self.task][self.metric]

    @property
    def metric_bound(self) -> str:
        """The metric's threshold key in the file: min (better higher) or max (better lower)."""
        return "min" if self.metric_direction == "higher" else "max"

    def metric_fails(self, score: float) -> bool:
        """Whether `score` is past the threshold on the wrong side (below a min, above a max)."""
        return score < self.metric_threshold if self.metric_direction == "higher" else score > self.metric_threshold

    @property
    def numeric_target(self) -> Feature | None:
        """A regression label as the numeric column it is (read, checked and stored as a numeric feature is,
        never missing); None for a classification label (text)."""
        return Feature(self.label, "numeric") if self.regression else None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        return [*self.feature_names, self.label]

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def as_dict(self) -> dict:
        """The parsed file in its own format, every default filled in: what a run records and what
        `from_dict` reads back."""
        return {
            "name": self.name, "model_name": self.model_name, "description": self.description,
            "label": {"column": self.label, "task": self.task, **({"classes": list(self.classes)} if self.classes
                                                                   else {})},
            "features": [f.as_dict() for f in self.features],
            "drop_columns": list(self.drop_columns),
            "source": self.source.as_dict(),
            "model": {"estimator": self.estimator, "params": dict(self.params)},
            "metric": {"name": self.metric, self.metric_bound: self.metric_threshold},
            "schedule": self.schedule, "window": self.window,
            "split": {"test_size": self.test_size, "seed": self.seed},
            "promotion": {"min_improvement": self.min_improvement, "alpha": self.alpha},
            "max_duplicate_fraction": self.max_duplicate_fraction,
            "canary": dict(self.canary), "owners": list(self.owners), "tags": list(self.tags),
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---- reading -------------------------------------------------------------------------------------------------


class _Doc:
    """A mapping read from the file, with the key path of every value for messages."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, key: str, message: str):
        where = f"key {key!r}: " if key else ""
        raise DatasetFileError(f"dataset file {self.origin}: {where}{message}")

    def mapping(self, value, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping with keys {', '.join(allowed)}; got {_kind(value)}")
        for name in value:
            if name not in allowed:
                near = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.fail(_join(key, str(name)), f"unknown key{hint}; allowed: {', '.join(allowed)}")
        for name in required:
            if value.get(name) is None:
                self.fail(_join(key, name), "is required")
        return value

    def string(self, value, key: str, pattern: re.Pattern | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string; got {_kind(value)}")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{value!r} is not {what}")
        return value

    def choice(self, value, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(key, f"{_short(value)} is not allowed; allowed: {', '.join(allowed)}")
        return value

    def number(self, value, key: str, low: float | None = None, high: float | None = None, *,
               open_low: bool = False, open_high: bool = False, integer: bool = False) -> float:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}; got {_short(value)}")
        if low is not None and (value < low or (open_low and value == low)):
            self.fail(key, f"{value} is out of range: must be {'>' if open_low else '>='} {low}")
        if high is not None and (value > high or (open_high and value == high)):
            self.fail(key, f"{value} is out of range: must be {'<' if open_high else '<='} {high}")
        return value

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false; got {_short(value)}")
        return value

    def strings(self, value, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(key, f"must be a list; got {_kind(value)}")
        out = tuple(self.scalar_text(v, f"{key}[{i}]") for i, v in enumerate(value))
        duplicated = sorted({v for v in out if out.count(v) > 1})
        if duplicated:
            self.fail(key, f"lists {duplicated} more than once")
        return out

    def scalar_text(self, value, key: str) -> str:
        """A label or category as the data holds it: text (YAML's yes/1.5 are written back as text)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, str)) and str(value).strip():
            return str(value)
        self.fail(key, f"must be a non-empty text or number; got {_kind(value)}")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {_short(value)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _feature(doc: _Doc, value, key: str) -> Feature:
    item = doc.mapping(value, key, ("name", "type", "nullable", "min", "max", "unit", "categories", "dtype"),
                       ("name",))
    name = doc.string(item["name"], _join(key, "name"))
    kind = item.get("type")
    if kind is None and item.get("dtype") == "float64":  # the earlier schema format's numeric column
        kind = "numeric"
    kind = doc.choice(kind, _join(key, "type"), FEATURE_TYPES)
    if item.get("dtype") not in (None, "float64"):
        doc.fail(_join(key, "dtype"), "is the earlier format's; use type: numeric or type: categorical")
    nullable = doc.boolean(item.get("nullable", False), _join(key, "nullable"))
    if kind == "categorical":
        for numeric_only in ("min", "max", "unit"):
            if numeric_only in item:
                doc.fail(_join(key, numeric_only), "applies to numeric features only")
        categories = doc.strings(item.get("categories"), _join(key, "categories"))
        if len(categories) > MAX_CATEGORIES:
            doc.fail(_join(key, "categories"), f"lists {len(categories)} categories; the limit is {MAX_CATEGORIES}")
        return Feature(name, kind, nullable, categories=categories)
    if "categories" in item:
        doc.fail(_join(key, "categories"), "applies to categorical features only")
    low = None if item.get("min") is None else float(doc.number(item["min"], _join(key, "min")))
    high = None if item.get("max") is None else float(doc.number(item["max"], _join(key, "max")))
    if low is not None and high is not None and not low < high:
        doc.fail(_join(key, "min"), f"min {low} must be below max {high}")
    unit = item.get("unit", "")
    if not isinstance(unit, str):
        doc.fail(_join(key, "unit"), f"must be a text; got {_kind(unit)}")
    return Feature(name, kind, nullable, low, high, unit)


def _source(doc: _Doc, value) -> Source:
    item = doc.mapping(value if value is not None else {}, "source",
                       ("kind", "format", "conn_id", "query", "endpoint"))
    kind = doc.choice(item.get("kind", "files"), "source.kind", SOURCE_KINDS)
    allowed = SOURCE_KEYS[kind]
    for name in item:
        if name not in allowed:
            doc.fail(f"source.{name}", f"does not apply to source.kind {kind}; allowed: {', '.join(allowed)}")
    source = Source(kind=kind, format=doc.choice(item.get("format", "csv"), "source.format", FILE_FORMATS)
                    if kind != "sql" else "jsonl")
    if kind == "files":
        return source
    conn_id = doc.string(item.get("conn_id"), "source.conn_id", re.compile(r"^[A-Za-z0-9_.-]{1,250}$"),
                         "an Airflow connection id")
    if kind == "sql":
        query = doc.string(item.get("query"), "source.query")
        if "%(partition)s" not in query:
            doc.fail("source.query", "must select one partition: use the parameter %(partition)s")
        return Source(kind, "jsonl", conn_id, query=query)  # the pull writes the rows as JSON lines
    endpoint = doc.string(item.get("endpoint"), "source.endpoint")
    if "{partition}" not in endpoint or not endpoint.startswith("/"):
        doc.fail("source.endpoint", "must be a path starting with '/' that holds {partition}")
    return Source(kind, source.format, conn_id, endpoint=endpoint)


def _task_choice(doc: _Doc, value, key: str, task: str, by_task: dict[str, dict], what: str) -> str:
    """`value` if it is one of `task`'s names in `by_task` (task -> names); else the failure names the task it
    belongs to, when it is another's."""
    if isinstance(value, str) and value in by_task[task]:
        return value
    other = next((t for t, names in by_task.items() if t != task and isinstance(value, str) and value in names),
                 None)
    why = f" ({value!r} is a {other} {what})" if other else ""
    doc.fail(key, f"{_short(value)} is not allowed for a {task} label{why}; allowed: {', '.join(by_task[task])}")


def _model(doc: _Doc, value, task: str) -> tuple[str, dict]:
    item = doc.mapping(value if value is not None else {}, "model", ("estimator", "params"))
    estimators = ESTIMATORS[task]
    estimator = _task_choice(doc, item.get("estimator", DEFAULT_ESTIMATORS[task]), "model.estimator", task,
                             ESTIMATORS, "estimator")
    params = item.get("params") or {}
    if not isinstance(params, dict):
        doc.fail("model.params", f"must be a mapping; got {_kind(params)}")
    allowed = estimators[estimator]
    for name, param in params.items():
        key = f"model.params.{name}"
        if name not in allowed:
            doc.fail(key, f"is not a parameter {estimator} takes here; allowed: {', '.join(sorted(allowed))}")
        types = allowed[name]
        if (isinstance(param, bool) and bool not in types) or not isinstance(param, types):
            names = sorted({"null" if t is _NULL else t.__name__ for t in types})
            doc.fail(key, f"must be {' or '.join(names)}; got {_short(param)}")
    return estimator, dict(params)


def _metric(doc: _Doc, value, task: str) -> tuple[str, float]:
    """The metric and its threshold: `min` for a metric better higher, `max` for one better lower."""
    default_name, default_bound = DEFAULT_METRICS[task]
    item = doc.mapping(value if value is not None else {}, "metric", ("name", "min", "max"))
    directions = METRIC_DIRECTIONS[task]
    name = _task_choice(doc, item.get("name", default_name), "metric.name", task, METRIC_DIRECTIONS, "metric")
    key, wrong = ("min", "max") if directions[name] == "higher" else ("max", "min")
    if wrong in item:
        doc.fail(f"metric.{wrong}", f"{name} is better {directions[name]}: its threshold is metric.{key} (retrain "
                                    f"when a fresh batch scores {'below' if key == 'min' else 'above'} it)")
    if key not in item and name in ("rmse", "mae", "mape"):
        doc.fail(f"metric.{key}", f"is required for {name} (its scale is the target's)")
    bound = item.get(key, default_bound)
    where = f"metric.{key}"
    if name in ("rmse", "mae"):
        return name, float(doc.number(bound, where, 0, open_low=True))
    if name == "mape":
        return name, float(doc.number(bound, where, 0, open_low=True))  # a fraction: 0.1 is 10 %
    if name == "r2":
        return name, float(doc.number(bound, where, high=1, open_high=True))
    return name, float(doc.number(bound, where, 0, 1, open_low=True))


def _schedule(doc: _Doc, value) -> str | None:
    if value is None:
        return None
    text = doc.string(value, "schedule")
    if text.startswith("@"):
        return doc.choice(text, "schedule", _DURATION_SCHEDULES)
    if len(text.split()) not in (5, 6) or not re.fullmatch(r"[0-9*/,\-A-Za-z? ]+", text):
        doc.fail("schedule", f"{text!r} is neither a cron expression (5 fields) nor one of "
                             f"{', '.join(_DURATION_SCHEDULES)}")
    return text


TOP_LEVEL = ("model_name", "description", "label", "features", "drop_columns", "source", "model", "metric",
             "schedule", "window", "split", "promotion", "canary", "max_duplicate_fraction", "owners", "tags",
             "name", "version")


def parse(document, origin: str, name: str) -> Dataset:
    """The dataset a parsed YAML document declares; `origin` names it in messages, `name` is its stem."""
    doc = _Doc(origin)
    if not DATASET_NAME.match(name):
        doc.fail("", f"the file name {name!r} must be lower-case letters, digits, '-' and '_' (it is part of the "
                     "DAG id)")
    top = doc.mapping(document, "", TOP_LEVEL, ("model_name", "label", "features"))
    model_name = doc.string(top["model_name"], "model_name", MODEL_NAME,
                            "a model name: lower-case letters, digits and '-', starting with a letter, at most 45 "
                            "characters (it names the InferenceService and /v2/models/<name>)")
    label_doc = doc.mapping(top["label"], "label", ("column", "task", "classes"), ("column",))
    label = doc.string(label_doc["column"], "label.column")
    task = doc.choice(label_doc.get("task", "classification"), "label.task", TASKS)
    classes = doc.strings(label_doc.get("classes"), "label.classes")
    if classes and task == "regression":
        doc.fail("label.classes", "applies to classification only: a regression label is a number")
    if classes and len(classes) < 2:
        doc.fail("label.classes", "needs at least 2 classes (or leave it out to learn them from the data)")
    features_doc = top["features"]
    if not isinstance(features_doc, list) or not features_doc:
        doc.fail("features", f"must be a non-empty list of features; got {_kind(features_doc)}")
    if len(features_doc) > MAX_FEATURES:
        doc.fail("features", f"lists {len(features_doc)} features; the limit is {MAX_FEATURES}")
    features = tuple(_feature(doc, f, f"features[{i}]") for i, f in enumerate(features_doc))
    drop = doc.strings(top.get("drop_columns"), "drop_columns")
    columns = [f.name for f in features] + [label] + list(drop)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        doc.fail("features", f"column(s) {duplicated} are declared more than once (features, label and "
                             "drop_columns name distinct columns)")
    estimator, params = _model(doc, top.get("model"), task)
    metric, metric_threshold = _metric(doc, top.get("metric"), task)
    window = top.get("window", DEFAULTS["window"])
    if not isinstance(window, str) or not _WINDOW.match(window):
        doc.fail("window", f"{_short(window)} is not allowed; allowed: 'all' or 'last:N' with N >= 1")
    split = doc.mapping(top.get("split") or {}, "split", ("test_size", "seed"))
    promotion = doc.mapping(top.get("promotion") or {}, "promotion", ("min_improvement", "alpha"))
    canary = doc.mapping(top.get("canary") or {}, "canary", ("percent", "minutes", "inconclusive"))
    canary_out = {}
    if "percent" in canary:
        canary_out["percent"] = int(doc.number(canary["percent"], "canary.percent", 0, 99, integer=True))
    if "minutes" in canary:
        canary_out["minutes"] = float(doc.number(canary["minutes"], "canary.minutes", 0, open_low=True))
    if "inconclusive" in canary:  # what a canary too short of requests to judge by its deadline does
        canary_out["inconclusive"] = doc.choice(canary["inconclusive"], "canary.inconclusive",
                                                CANARY_INCONCLUSIVE)
    description = top.get("description", "")
    if not isinstance(description, str):
        doc.fail("description", f"must be a text; got {_kind(description)}")
    return Dataset(
        name=name, model_name=model_name, label=label, task=task, classes=classes, features=features,
        source=_source(doc, top.get("source")), estimator=estimator, params=params, metric=metric,
        metric_threshold=metric_threshold, schedule=_schedule(doc, top.get("schedule", "@daily")), window=window,
        test_size=float(doc.number(split.get("test_size", DEFAULTS["split"]["test_size"]), "split.test_size", 0, 1,
                                   open_low=True, open_high=True)),
        seed=int(doc.number(split.get("seed", DEFAULTS["split"]["seed"]), "split.seed", 0, 2**32 - 1,
                            integer=True)),
        min_improvement=float(doc.number(promotion.get("min_improvement", DEFAULTS["promotion"]["min_improvement"]),
                                         "promotion.min_improvement", 0, 1)),
        alpha=float(doc.number(promotion.get("alpha", DEFAULTS["promotion"]["alpha"]), "promotion.alpha", 0, 1,
                               open_low=True, open_high=True)),
        max_duplicate_fraction=float(doc.number(top.get("max_duplicate_fraction",
                                                        DEFAULTS["max_duplicate_fraction"]),
                                                "max_duplicate_fraction", 0, 1)),
        drop_columns=drop, description=description.strip(), owners=doc.strings(top.get("owners"), "owners"),
        tags=doc.strings(top.get("tags"), "tags"), canary=canary_out)


def parse_text(text: str | bytes, origin: str, name: str) -> Dataset:
    if len(text) > MAX_FILE_BYTES:
        raise DatasetFileError(f"dataset file {origin}: {len(text)} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        document = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise DatasetFileError(f"dataset file {origin}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse(document, origin, name)


def read_text(path: str | Path) -> str:
    """The text of the dataset file `path`: a regular file, not followed through a link, within the size
    limit, UTF-8."""
    path = Path(path)
    try:
        data = read_no_follow(path.absolute(), path.absolute().parent, MAX_FILE_BYTES)
    except FileTooLarge as exc:
        raise DatasetFileError(f"dataset file {path}: {exc}") from None
    except OSError as exc:
        raise DatasetFileError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"dataset file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load(path: str | Path) -> Dataset:
    """Parse `path` (read_text's rules)."""
    return parse_text(read_text(path), str(path), Path(path).stem)


def from_dict(document: dict) -> Dataset:
    """The dataset a run recorded (Dataset.as_dict)."""
    return parse(document, "recorded in the run", document.get("name", "recorded"))


def dataset_files(folder: str | Path) -> list[Path]:
    """The dataset files of a folder, in name order: `*.yaml` and `*.yml`, hidden files left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
