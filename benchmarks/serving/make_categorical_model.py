"""The categorical benchmark's model, run with the *pipeline* environment: a hist-gradient-boosting classifier on
8 numeric and 4 categorical features, declared as a dataset file declares them (mlpipeline.dataset.parse),
fitted by mlpipeline.model.fit (numeric columns imputed, categorical ones imputed and one-hot encoded in a
ColumnTransformer, then the estimator) and saved as the training stage logs a model
(mlpipeline.training.model_logging_kwargs: skops, the typed signature, the input example), with a registry.json
as tests/serving/make_models.py writes one. Also writes rows.json: request rows drawn from the same
distribution (a few categorical values unseen in training, as live traffic has).
    python make_categorical_model.py OUT_DIR   (the model in OUT_DIR/model, the rows in OUT_DIR/rows.json)
"""

import json
import sys
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd

from mlpipeline.dataset import parse
from mlpipeline.model import fit
from mlpipeline.training import model_logging_kwargs

NUMERIC = [f"x{i}" for i in range(8)]
CATEGORIES = {"colour": [f"colour_{i}" for i in range(6)], "region": [f"region_{i}" for i in range(12)],
              "device": ["mobile", "desktop", "tablet"], "plan": [f"plan_{i}" for i in range(25)]}
DATASET = parse({"model_name": "catbench", "label": {"column": "label"},
                 "features": [{"name": n, "type": "numeric"} for n in NUMERIC]
                 + [{"name": n, "type": "categorical", "categories": c} for n, c in CATEGORIES.items()],
                 "model": {"estimator": "hist_gradient_boosting", "params": {"max_iter": 100}}},
                "make_categorical_model", "catbench")


def frame(rows: int, seed: int, unseen: float = 0.0) -> pd.DataFrame:
    """`rows` rows: numeric features, categorical ones (a share `unseen` of them a category the model never saw)
    and a three-class label that depends on both."""
    rng = np.random.default_rng(seed)
    data = {name: rng.normal(0.0, 1.0 + i, rows) for i, name in enumerate(NUMERIC)}
    codes = {}
    for name, categories in CATEGORIES.items():
        codes[name] = rng.integers(0, len(categories), rows)
        values = np.asarray(categories, dtype=object)[codes[name]]
        values[rng.random(rows) < unseen] = f"{name}_unseen"
        data[name] = values
    score = data["x0"] + 0.5 * data["x1"] - 0.3 * data["x2"] + 0.8 * (codes["colour"] % 3) \
        - 0.6 * (codes["device"] == 1) + 0.05 * codes["plan"] + rng.normal(0, 0.5, rows)
    data["label"] = np.where(score < -0.5, "low", np.where(score < 1.0, "mid", "high"))
    return pd.DataFrame(data)


def main(out: Path) -> None:
    train = frame(3000, 1)
    model = fit(train, DATASET)
    mlflow.sklearn.save_model(model, str(out / "model"),
                              **model_logging_kwargs(model, train[DATASET.feature_names], DATASET))
    (out / "model" / "registry.json").write_text(json.dumps({"name": "catbench", "version": "1", "run_id": "run-1",
                                                             "model_uri": "models:/catbench/1"}))
    rows = frame(100, 2, unseen=0.05)[DATASET.feature_names]
    (out / "rows.json").write_text(json.dumps({"numeric": NUMERIC, "categorical": list(CATEGORIES),
                                               "rows": rows.to_dict(orient="list")}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
