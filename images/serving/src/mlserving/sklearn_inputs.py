"""What a fitted scikit-learn model does with its input columns, read from the model itself.

The MLmodel signature names and types the columns; three facts the server needs are not in it:
- which numeric columns the model imputes (a scikit-learn imputer on the column's way in): those accept a
  missing value. The signature's `required: false` does not say it: MLflow infers the signature from the
  input example (the pipeline logs five rows), and marks a column optional only when those rows happen to
  miss a value in it;
- the categories the model knows for each categorical column (the `categories_` of the OneHotEncoder, or
  any encoder, it passes through): the labels live-traffic metrics count a categorical column under;
- whether it selects its columns by name (a ColumnTransformer fitted on a DataFrame): it then takes a
  DataFrame, not an array.

The walk follows the shape mlpipeline.model builds: a Pipeline whose first step is a ColumnTransformer
routing groups of columns through their own transformers (a Pipeline or a single one), then the
estimator; or a Pipeline of transformers every column passes through; or a bare estimator. What it does
not recognise it reports as nothing (no column imputed, no category known): the server then refuses
missing numeric values and counts every category under `__other__`, which is safe, not wrong.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline


def column_routes(estimator, features: tuple[str, ...]) -> list[tuple[tuple[str, ...], list]]:
    """Each group of input columns and the transformers it passes through, in order, before the estimator."""
    if not isinstance(estimator, Pipeline):
        return [(features, [])]
    transformers = [step for _, step in estimator.steps[:-1]]
    if not transformers or not isinstance(transformers[0], ColumnTransformer):
        return [(features, transformers)]
    routes = []
    for _, transformer, columns in getattr(transformers[0], "transformers_", []):
        names = _column_names(columns, features)
        if names is None or isinstance(transformer, str):  # "drop", "passthrough", or columns not understood
            continue
        routes.append((names, [step for _, step in transformer.steps] if isinstance(transformer, Pipeline)
                       else [transformer]))
    return routes


def _column_names(columns, features: tuple[str, ...]) -> tuple[str, ...] | None:
    """The names a ColumnTransformer's column selection stands for, or None if it is not a plain one."""
    if isinstance(columns, str):
        return (columns,) if columns in features else None
    if isinstance(columns, slice):
        return features[columns] if all(isinstance(b, int | None) for b in (columns.start, columns.stop)) \
            else None
    if not isinstance(columns, list | tuple | np.ndarray):
        return None
    items = list(columns)
    if all(isinstance(c, str) for c in items):
        return tuple(items) if set(items) <= set(features) else None
    if len(items) == len(features) and all(isinstance(c, bool | np.bool_) for c in items):
        return tuple(f for f, keep in zip(features, items, strict=True) if keep)
    if all(isinstance(c, int | np.integer) and not isinstance(c, bool | np.bool_) and -len(features) <= c
           < len(features) for c in items):
        return tuple(features[c] for c in items)
    return None


def _imputes_nan(step) -> bool:
    """A scikit-learn imputer (SimpleImputer, KNNImputer, IterativeImputer) that fills NaN."""
    if not type(step).__module__.startswith("sklearn.impute"):
        return False
    missing = getattr(step, "missing_values", None)
    return isinstance(missing, float) and math.isnan(missing)


def imputed_columns(estimator, features: tuple[str, ...]) -> frozenset[str]:
    """The columns the model fills in when a value is missing (NaN, or None in a text column)."""
    return frozenset(name for names, steps in column_routes(estimator, features) if any(map(_imputes_nan, steps))
                     for name in names)


def known_categories(estimator, features: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each column's categories as the first encoder on its way in learned them (text ones only: a missing
    value imputed before the encoder shows up as the imputer's fill value)."""
    known = {}
    for names, steps in column_routes(estimator, features):
        for step in steps:
            categories = getattr(step, "categories_", None)
            if categories is None:
                continue
            if len(categories) == len(names):
                for name, values in zip(names, categories, strict=True):
                    known[name] = tuple(dict.fromkeys(v for v in values.tolist() if isinstance(v, str)))
            break
    return known


def selects_columns_by_name(estimator) -> bool:
    """A ColumnTransformer fitted on a DataFrame, first in the model: it picks its columns by name, so it
    takes a DataFrame (an array is refused: 'Specifying the columns using strings is only supported for
    dataframes')."""
    first = estimator.steps[0][1] if isinstance(estimator, Pipeline) else estimator
    return isinstance(first, ColumnTransformer) and hasattr(first, "feature_names_in_")
