"""Make model directories for the serving tests, run with the *pipeline* environment.

Each is saved with mlpipeline's own logging settings (`model_logging_kwargs`), so
the server is tested on exactly what the pipeline logs:
  good-v1/, good-v2/  iris classifiers (v2 trained on concept-drifted labels)
  corrupt/            an MLmodel whose model file is garbage (fails to load)
  wrong-features/     fitted on 3 of the 4 signature columns (fails the load-time checks)
    python make_models.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import mlflow.sklearn

from mlpipeline.model import fit
from mlpipeline.schema import load_schema
from mlpipeline.simulate import simulate
from mlpipeline.training import model_logging_kwargs

MODEL = {"kind": "logistic_regression", "params": {"max_iter": 500}}


def save(path: Path, model, features, version: str) -> None:
    mlflow.sklearn.save_model(model, str(path), **model_logging_kwargs(model, features))
    (path / "registry.json").write_text(json.dumps({"name": "iris", "version": version, "run_id": f"run-{version}",
                                                    "model_uri": f"models:/iris/{version}"}))


def main(out: Path) -> None:
    schema = load_schema()
    names, label = schema.feature_names, schema.label
    clean = simulate(schema, 600, seed=1)
    drifted = simulate(schema, 600, "concept", 1.0, seed=2)
    save(out / "good-v1", fit(clean, names, label, MODEL, 0), clean[names], "1")
    save(out / "good-v2", fit(drifted, names, label, MODEL, 0), drifted[names], "2")
    save(out / "corrupt", fit(clean, names, label, MODEL, 0), clean[names], "3")
    for skops_file in (out / "corrupt").glob("*.skops"):
        skops_file.write_bytes(b"this is not a skops archive")
    save(out / "wrong-features", fit(clean, names, label, MODEL, 0), clean[names], "4")
    three = fit(clean, names[:3], label, MODEL, 0)
    mlflow.sklearn.save_model(three, str(out / "wrong-features-tmp"), **model_logging_kwargs(three, clean[names[:3]]))
    for skops_file in (out / "wrong-features-tmp").glob("*.skops"):
        target = next((out / "wrong-features").glob("*.skops"))
        target.write_bytes(skops_file.read_bytes())
    shutil.rmtree(out / "wrong-features-tmp")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
