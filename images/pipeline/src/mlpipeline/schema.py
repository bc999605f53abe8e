"""Dataset schema: feature columns, dtypes, plausible ranges, label and classes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .errors import PipelineError


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    min: float
    max: float
    unit: str = ""


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    version: int
    label: str
    classes: tuple[str, ...]
    features: tuple[Feature, ...]
    max_duplicate_fraction: float

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        return [*self.feature_names, self.label]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "label": {"column": self.label, "classes": list(self.classes)},
            "features": [vars(f) for f in self.features],
            "max_duplicate_fraction": self.max_duplicate_fraction,
        }


def _parse(doc: dict, origin: str) -> DatasetSchema:
    try:
        features = tuple(
            Feature(name=f["name"], dtype=f.get("dtype", "float64"), min=float(f["min"]),
                    max=float(f["max"]), unit=f.get("unit", ""))
            for f in doc["features"]
        )
        schema = DatasetSchema(
            name=doc["name"],
            version=int(doc.get("version", 1)),
            label=doc["label"]["column"],
            classes=tuple(str(c) for c in doc["label"]["classes"]),
            features=features,
            max_duplicate_fraction=float(doc.get("max_duplicate_fraction", 0.05)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(f"invalid dataset schema {origin}: missing or bad field {exc}") from exc
    if not schema.features or len(schema.classes) < 2:
        raise PipelineError(f"invalid dataset schema {origin}: needs features and at least 2 classes")
    if len(set(schema.columns)) != len(schema.columns):
        raise PipelineError(f"invalid dataset schema {origin}: duplicate column names")
    for f in schema.features:
        if f.dtype != "float64" or not f.min < f.max:
            raise PipelineError(f"invalid dataset schema {origin}: feature {f.name!r} needs dtype float64 "
                                "and min < max")
    return schema


# The example dataset bundled with the package: the default of every stage that is given no schema.
EXAMPLE_SCHEMA = "example-dataset.yaml"


def _example_document() -> dict:
    return yaml.safe_load(resources.files("mlpipeline.resources").joinpath(EXAMPLE_SCHEMA).read_text())


def example_model_name() -> str:
    """The registry name the bundled example dataset declares (`model_name`): the default model name of
    the stages, the DAG and the KFP pipeline, so that no code names the example."""
    return str(_example_document()["model_name"])


def load_schema(path: str | Path | None = None) -> DatasetSchema:
    """Load a schema YAML; without a path, the bundled example dataset's."""
    if path is None:
        return _parse(_example_document(), f"{EXAMPLE_SCHEMA} (bundled)")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PipelineError(f"cannot read dataset schema {path}: {exc.strerror}") from exc
    return _parse(yaml.safe_load(text) or {}, str(path))


def schema_from_dict(doc: dict) -> DatasetSchema:
    """The schema a run was split with (stored in its manifest)."""
    return _parse(doc, "from run manifest")
