"""Make model directories for the serving tests, run with the *pipeline* environment.

Each is saved with mlpipeline's own logging settings (`model_logging_kwargs`), so
the server is tested on exactly what the pipeline logs:
  good-v1/, good-v2/  iris classifiers (v2 trained on concept-drifted labels)
  corrupt/            an MLmodel whose model file is garbage (fails to load)
  wrong-features/     fitted on 3 of the 4 signature columns (fails the load-time checks)
  random_forest/, hist_gradient_boosting/  the pipeline's other model kinds (skops types to trust)
  pickle/             logged in MLflow's pickle format (refused: loading it runs code)
  mlflow-reading.json what MLflow itself reads from each good MLmodel (the server reads it without MLflow)
    python make_models.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from mlflow.models import Model

from mlpipeline.model import ESTIMATORS, fit
from mlpipeline.schema import load_schema
from mlpipeline.simulate import simulate
from mlpipeline.training import model_logging_kwargs

MODEL = {"kind": "logistic_regression", "params": {"max_iter": 500}}


def save(path: Path, model, features, version: str, logged_as: Model | None = None) -> None:
    mlflow.sklearn.save_model(model, str(path), mlflow_model=logged_as, **model_logging_kwargs(model, features))
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
    for kind in sorted(set(ESTIMATORS) - {MODEL["kind"]}):
        save(out / kind, fit(clean, names, label, {"kind": kind, "params": {"max_iter": 20} if "boost" in kind
                                                  else {"n_estimators": 5}}, 0), clean[names], "5",
             logged_as=Model(run_id=f"run-of-{kind}", model_id=f"m-{kind}"))  # as if logged in a run
    model = fit(clean, names, label, MODEL, 0)
    mlflow.sklearn.save_model(model, str(out / "pickle"),
                              **{**model_logging_kwargs(model, clean[names]), "serialization_format": "pickle"})
    (out / "mlflow-reading.json").write_text(json.dumps({folder.name: mlflow_reading(folder) for folder in
                                                          sorted(out.iterdir()) if (folder / "MLmodel").is_file()}))


def mlflow_reading(folder: Path) -> dict:
    """The fields the server uses, as MLflow's own Model class reads them, and what the model MLflow loads
    predicts for its input example (None where MLflow cannot load it or it cannot predict)."""
    meta = Model.load(str(folder / "MLmodel"))
    flavor = meta.flavors["sklearn"]
    example = json.loads((folder / "input_example.json").read_text())
    try:
        loaded = mlflow.sklearn.load_model(str(folder))
        predictions = loaded.predict(pd.DataFrame(example["data"], columns=example["columns"])).tolist()
    except Exception:
        predictions = None
    return {"features": meta.signature.inputs.input_names(), "model_file": flavor["pickled_model"],
            "serialization_format": flavor.get("serialization_format"),
            "trusted_types": flavor.get("skops_trusted_types") or [], "run_id": meta.run_id or "",
            "model_id": meta.model_id or "", "example": example["data"], "predictions": predictions}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
