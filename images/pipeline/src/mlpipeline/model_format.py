"""The one way a model is deserialised, in every process that does it: the detect and train stages (the
champion, fetched from the registry) and the model server (mlserving). Standard library, PyYAML and
skops only, so the serving image installs this package without its dependencies.

A model is an MLflow scikit-learn model directory saved in the skops format. Its `MLmodel` is read
without MLflow; the field names and their meaning follow MLflow 3.17's `mlflow/models/model.py` (the
MLmodel YAML), `mlflow/models/signature.py` (a signature's `inputs` is a JSON list of column specs) and
`mlflow/sklearn/__init__.py` (`save_model` writes `pickled_model`, `serialization_format` and
`skops_trusted_types` under `flavors.sklearn`; `_load_model_from_local_file` passes the latter to
`skops.io.load`).

Whoever can write to the registry is not trusted to decide what code runs: pickle and cloudpickle files
run code when they are loaded, so they are refused; and the types a version's own MLmodel asks skops to
trust are honoured only when they are in TRUSTED_TYPES, the fixed allow-list defined here and nowhere
else. A refusal is a ModelLoadError naming the model and the type.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

# What the pipeline's models hold beyond skops's own defaults: the fitted trees of a random forest and of
# histogram gradient boosting, a calibrated linear SVM's calibrators, and the dtype a SimpleImputer keeps
# (a numpy dtype: data, no code). mlpipeline.model writes the ones a model needs into its MLmodel.
RANDOM_FOREST_TREE = "sklearn.tree._tree.Tree"
HIST_GRADIENT_BOOSTING_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
CALIBRATED_CLASSIFIER = "sklearn.calibration._CalibratedClassifier"
SIGMOID_CALIBRATION = "sklearn.calibration._SigmoidCalibration"
NUMPY_DTYPE = "numpy.dtype"
TRUSTED_TYPES = frozenset({RANDOM_FOREST_TREE, HIST_GRADIENT_BOOSTING_PREDICTOR, CALIBRATED_CLASSIFIER,
                           SIGMOID_CALIBRATION, NUMPY_DTYPE})

MAX_MLMODEL_BYTES = 1 << 20  # an MLmodel is a few KB: a larger one is not read

# Each numeric feature's histogram edges for live drift (the model server's mlserving_feature_value), from
# the training data: written by mlpipeline.training as an MLflow extra file of the model (so the registry
# version, and every copy of its folder, carries it), read by the model server. Data, never code: a JSON
# object {feature: [edges ascending]}, read without following links and at most MAX_FEATURE_BUCKETS_BYTES.
FEATURE_BUCKETS_FILE = "extra_files/feature_buckets.json"
MAX_FEATURE_BUCKETS_BYTES = 64 * 1024
# The most edges a feature may have (the training writes 20): each edge is one more series per feature.
MAX_FEATURE_EDGES = 50
# A regression model's prediction histogram edges (the model server's mlserving_prediction), the same format
# with the one key PREDICTION_BUCKETS_KEY: the quantiles of the first version's training target, carried by
# every later version of the model (mlpipeline.training copies the champion's), so the histograms of two
# versions share buckets and a canary's prediction distribution can be compared with the stable one's in PromQL.
PREDICTION_BUCKETS_FILE = "extra_files/prediction_buckets.json"
PREDICTION_BUCKETS_KEY = "prediction"


class ModelLoadError(Exception):
    """The model cannot be loaded under this policy, or is not a model at all; the message says why."""


@dataclass(frozen=True)
class MLmodelFile:
    features: tuple[str, ...]
    model_file: str  # relative to the model directory, checked to stay inside it
    trusted_types: tuple[str, ...]
    run_id: str
    model_id: str
    # Each input column's MLflow type ("double", "long", "string", ...) and whether the signature requires
    # it, in `features` order. `required` is false only where the input example MLflow inferred the
    # signature from had a missing value in that column, so it is no statement about what a model accepts.
    feature_types: tuple[str, ...] = ()
    feature_required: tuple[bool, ...] = ()


def _document(text: bytes | str, where: str) -> dict:
    if len(text) > MAX_MLMODEL_BYTES:
        raise ModelLoadError(f"{where}: the MLmodel holds {len(text)} bytes; an MLmodel is a few KB")
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{where}: the MLmodel is unreadable: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{where}: the MLmodel is unreadable: a YAML mapping was expected, "
                             f"got {type(document).__name__}")
    return document


def _features(document: dict, where: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[bool, ...]]:
    """The input signature's column names, MLflow types and `required` flags (MLflow's ColSpec: `required`
    absent means true, as MLflow before 2.10 wrote no such field)."""
    signature = document.get("signature")
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    if not inputs:
        raise ModelLoadError(f"{where}: the MLmodel has no input signature; log the model with one")
    try:
        columns = json.loads(inputs)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{where}: the MLmodel's input signature is not a JSON list: {exc}") from exc
    names = [c.get("name") if isinstance(c, dict) else None for c in columns] if isinstance(columns, list) else None
    if not names or any(not isinstance(n, str) for n in names):
        raise ModelLoadError(f"{where}: the input signature must name its columns, got {names}")
    types = [c.get("type") for c in columns]
    untyped = [n for n, t in zip(names, types, strict=True) if not isinstance(t, str) or not t]
    if untyped:
        raise ModelLoadError(f"{where}: the input signature gives no type for column(s) {untyped}")
    required = [c.get("required", True) for c in columns]
    if any(not isinstance(r, bool) for r in required):
        raise ModelLoadError(f"{where}: the input signature's 'required' flags must be true or false, got {required}")
    return tuple(names), tuple(types), tuple(required)


def _sklearn_flavor(document: dict, where: str) -> dict:
    flavors = document.get("flavors")
    if not isinstance(flavors, dict) or not isinstance(flavors.get("sklearn"), dict):
        raise ModelLoadError(f"{where}: flavors {sorted(flavors) if isinstance(flavors, dict) else flavors} "
                             "include no 'sklearn'")
    flavor = flavors["sklearn"]
    serialization = flavor.get("serialization_format", "pickle")  # MLflow's default when the field is absent
    if serialization != "skops":
        raise ModelLoadError(f"{where}: the model is saved as {serialization!r}; only 'skops' is loaded "
                             "(pickle formats run code when loaded): log it with serialization_format='skops'")
    if flavor.get("code"):
        raise ModelLoadError(f"{where}: the model was logged with code paths ({flavor['code']}), which are "
                             "never imported")
    return flavor


def _model_file(flavor: dict, where: str) -> str:
    name = flavor.get("pickled_model")
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{where}: the sklearn flavor names no model file (pickled_model)")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise ModelLoadError(f"{where}: the model file {name!r} is outside the model directory")
    return name


def _trusted_types(flavor: dict, where: str) -> tuple[str, ...]:
    asked = flavor.get("skops_trusted_types") or []
    if not isinstance(asked, list) or any(not isinstance(t, str) for t in asked):
        raise ModelLoadError(f"{where}: skops_trusted_types must be a list of type names, got {asked!r}")
    refused = sorted(set(asked) - TRUSTED_TYPES)
    if refused:
        raise ModelLoadError(f"{where}: the model asks skops to trust {refused}, which is not allowed "
                             f"(allowed: {sorted(TRUSTED_TYPES)})")
    return tuple(asked)


def parse_mlmodel(text: bytes | str, where: str) -> MLmodelFile:
    """The fields of an MLmodel document that loading uses, checked against the policy before the model
    file is fetched or opened; `where` names the model in every message."""
    document = _document(text, where)
    flavor = _sklearn_flavor(document, where)
    names, types, required = _features(document, where)
    return MLmodelFile(features=names, model_file=_model_file(flavor, where),
                       trusted_types=_trusted_types(flavor, where), run_id=str(document.get("run_id") or ""),
                       model_id=str(document.get("model_id") or ""), feature_types=types, feature_required=required)


def read_mlmodel(path: Path, where: str | None = None) -> MLmodelFile:
    """parse_mlmodel of `path`/MLmodel, with the model file checked to exist inside `path`."""
    where = where or str(path)
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        raise ModelLoadError(f"{where} has no MLmodel file: not an MLflow model directory")
    spec = parse_mlmodel(mlmodel.read_bytes(), where)
    model_file = (path / spec.model_file).resolve()
    if not model_file.is_relative_to(path.resolve()):
        raise ModelLoadError(f"{where}: the model file {spec.model_file!r} is outside the model directory")
    if not model_file.is_file():
        raise ModelLoadError(f"{where}: the model file {spec.model_file!r} does not exist")
    return spec


def load_estimator(spec: MLmodelFile, path: Path, where: str | None = None):
    """The estimator in `path`/spec.model_file, loaded by skops trusting spec.trusted_types (already
    checked against TRUSTED_TYPES) and nothing the file itself names."""
    import skops.io

    try:
        return skops.io.load(path / spec.model_file, trusted=list(spec.trusted_types))
    except Exception as exc:
        raise ModelLoadError(f"{where or path}: the sklearn model failed to load: {type(exc).__name__}: "
                             f"{exc}") from exc


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a feature is named twice: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return dict(pairs)


def parse_feature_buckets(text: bytes, numeric: tuple[str, ...], where: str,
                          file: str = FEATURE_BUCKETS_FILE) -> dict[str, tuple[float, ...]]:
    """The edges of every numeric feature in a feature-buckets document (`file`: the same format holds the
    prediction's edges under PREDICTION_BUCKETS_KEY), checked: a JSON object naming exactly the `numeric`
    features, each with 1 to MAX_FEATURE_EDGES finite numbers, strictly increasing. Anything else is a
    ModelLoadError saying what is wrong."""
    problem = f"{where}: {file} is refused"
    try:
        document = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{problem}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ModelLoadError(f"{problem}: a JSON object {{feature: [edges]}} was expected, "
                             f"got {type(document).__name__}")
    missing, unknown = sorted(set(numeric) - set(document)), sorted(set(document) - set(numeric))
    if missing or unknown:  # the first few names, each cut short: the file's text is no one's to log whole
        raise ModelLoadError(f"{problem}: it must name exactly {_names_expected(file)} "
                             f"(missing: {[n[:100] for n in missing[:10]]}, "
                             f"not numeric features: {[n[:100] for n in unknown[:10]]})")
    edges = {}
    for name in numeric:
        values = document[name]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_FEATURE_EDGES:
            raise ModelLoadError(f"{problem}: the edges of {name!r} must be a list of 1 to {MAX_FEATURE_EDGES} "
                                 f"numbers, got {type(values).__name__}"
                                 f"{f' of {len(values)}' if isinstance(values, list) else ''}")
        if any(type(v) not in (int, float) or not math.isfinite(v) for v in values):
            raise ModelLoadError(f"{problem}: the edges of {name!r} must be finite numbers")
        if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
            raise ModelLoadError(f"{problem}: the edges of {name!r} must be strictly increasing")
        edges[name] = tuple(float(v) for v in values)
    return edges


def _names_expected(file: str) -> str:
    return f"the key {PREDICTION_BUCKETS_KEY!r}" if file == PREDICTION_BUCKETS_FILE else \
        "the numeric features of the signature"


def read_feature_buckets(path: Path, numeric: tuple[str, ...], where: str | None = None,
                         file: str = FEATURE_BUCKETS_FILE) -> dict[str, tuple[float, ...]] | None:
    """parse_feature_buckets of `path`/`file`; None when the model has no such file (one logged before the
    file existed, or a classifier's prediction buckets). The file and its folder are opened without following
    links (a link could point anywhere on the server), must be a regular file (not a FIFO that would block the
    load) and at most MAX_FEATURE_BUCKETS_BYTES."""
    where = where or str(path)
    folder, name = file.split("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptors = []
    try:
        try:
            descriptors.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            descriptors.append(os.open(folder, flags | os.O_DIRECTORY, dir_fd=descriptors[-1]))
            descriptors.append(os.open(name, flags, dir_fd=descriptors[-1]))
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: the file is a link; ENOTDIR: the folder is a link, or a file
            linked = exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and len(descriptors) == 1 and stat.S_ISLNK(
                os.stat(folder, dir_fd=descriptors[0], follow_symlinks=False).st_mode))
            why = ("it or its folder is a link (links are not followed)" if linked else
                   f"{folder} is not a folder" if exc.errno == errno.ENOTDIR else exc.strerror)
            raise ModelLoadError(f"{where}: {file} is refused: {why}") from None
        info = os.fstat(descriptors[-1])
        if not stat.S_ISREG(info.st_mode):
            raise ModelLoadError(f"{where}: {file} is refused: not a regular file")
        if info.st_size > MAX_FEATURE_BUCKETS_BYTES:
            raise ModelLoadError(f"{where}: {file} is refused: it holds {info.st_size} bytes, "
                                 f"more than {MAX_FEATURE_BUCKETS_BYTES}")
        with os.fdopen(descriptors.pop(), "rb") as opened:
            text = opened.read(MAX_FEATURE_BUCKETS_BYTES + 1)
        if len(text) > MAX_FEATURE_BUCKETS_BYTES:  # it grew since fstat
            raise ModelLoadError(f"{where}: {file} is refused: more than "
                                 f"{MAX_FEATURE_BUCKETS_BYTES} bytes")
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    return parse_feature_buckets(text, numeric, where, file)
