"""Make model directories for the serving tests, run with the *pipeline* environment.

Each model is what the training pipeline logs: its dataset document parsed by mlpipeline.dataset, its
Pipeline built and fitted by mlpipeline.model.fit, saved with mlpipeline.training.model_logging_kwargs
(skops, the typed signature, the input example, the skops types to trust), so the server is tested on
exactly that:
  good-v1/, good-v2/  iris classifiers (v2 trained on concept-drifted labels)
  corrupt/            an MLmodel whose model file is garbage (fails to load)
  wrong-features/     fitted on 3 of the 4 signature columns (fails the load-time checks)
  random_forest/, hist_gradient_boosting/, linear_svm/  the pipeline's other estimators (skops types to trust)
  pickle/             logged in MLflow's pickle format (refused: loading it runs code)
  mixed/              penguin-like inputs: two numeric features (body_mass_g with missing values) and two
                      categorical ones (sex with missing values): a ColumnTransformer (median imputer and
                      scaler; constant imputer and one-hot encoder) before a LogisticRegression
  mixed-random_forest/, mixed-hist_gradient_boosting/, mixed-linear_svm/  the same inputs, the other
                      estimators (mixed-random_forest's input example misses values: a signature with
                      `required: false` columns)
  wine/               the wine test dataset's model (tests/datasets/wine.yaml, features on scales up to the
                      thousands), logged as the training stage logs it: with its per-feature histogram edges
                      from its training data (mlpipeline.training.write_feature_buckets, an MLflow extra file)
  regression-ridge/   a regression model: a Ridge behind a StandardScaler on sklearn's diabetes data (ten numeric
                      features, none missing: the shape the linear fold takes)
  regression-random_forest/, regression-hist_gradient_boosting/  regression models on penguin-like mixed inputs
                      (the `mixed` features, missing values and all) predicting flipper length
                      Each regression model is logged as the training stage logs it: with its prediction
                      histogram edges (mlpipeline.training.write_prediction_buckets, from its training target)
                      and its per-feature edges, both MLflow extra files.
  regression-cases.json  rows for each regression model (missing values and an unseen category where its inputs
                      take them) and what MLflow's own loaders predict for them, pyfunc and sklearn
  mixed-cases.json    rows for the mixed models (missing values, an unseen category) and what the model
                      MLflow loads predicts for them, given as the pipeline gives a model its inputs
                      (mlpipeline.model.model_inputs: text columns as objects, None where missing; a
                      pandas 3 string column would hold NaN there, which the one-hot encoder does not
                      take for the imputed `__missing__`)
  mlflow-reading.json what MLflow itself reads from each good MLmodel (the server reads it without MLflow)
    python make_models.py OUT_DIR
"""

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import Model
from sklearn.datasets import load_diabetes, load_iris

from mlpipeline.dataset import parse
from mlpipeline.model import fit, model_inputs
from mlpipeline.training import (
    model_logging_kwargs,
    prediction_bucket_edges,
    write_feature_buckets,
    write_prediction_buckets,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import datasets as test_datasets  # noqa: E402

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = parse({"model_name": "iris", "label": {"column": "species"},
              "features": [{"name": name, "type": "numeric"} for name in IRIS_FEATURES],
              "model": {"estimator": "logistic_regression", "params": {"max_iter": 500}}}, "make_models", "iris")
OTHER_ESTIMATORS = {"random_forest": {"n_estimators": 5}, "hist_gradient_boosting": {"max_iter": 20},
                    "linear_svm": {}}
PENGUIN_FEATURES = [
    {"name": "bill_length_mm", "type": "numeric"},
    {"name": "body_mass_g", "type": "numeric", "nullable": True},
    {"name": "island", "type": "categorical", "categories": ["Biscoe", "Dream", "Torgersen"]},
    {"name": "sex", "type": "categorical", "nullable": True}]
MIXED = parse({"model_name": "penguins", "label": {"column": "species"}, "features": PENGUIN_FEATURES,
               "model": {"estimator": "logistic_regression", "params": {"max_iter": 1000}}}, "make_models", "penguins")
MIXED_FEATURES = MIXED.feature_names
# What the server is asked in the tests: complete rows, each kind of missing value, an unseen category.
MIXED_CASES = [
    {"bill_length_mm": 39.1, "body_mass_g": 3750.0, "island": "Torgersen", "sex": "male"},
    {"bill_length_mm": 46.5, "body_mass_g": 5200.0, "island": "Biscoe", "sex": "female"},
    {"bill_length_mm": 49.0, "body_mass_g": 3700.0, "island": "Dream", "sex": "female"},
    {"bill_length_mm": 47.0, "body_mass_g": None, "island": "Biscoe", "sex": "male"},
    {"bill_length_mm": None, "body_mass_g": 3500.0, "island": "Dream", "sex": None},
    {"bill_length_mm": 45.0, "body_mass_g": 4200.0, "island": "Atlantis", "sex": "female"},
    {"bill_length_mm": None, "body_mass_g": None, "island": None, "sex": None},
]


DIABETES_FEATURES = list(load_diabetes().feature_names)
DIABETES = parse({"model_name": "diabetes", "label": {"column": "progression", "task": "regression"},
                  "features": [{"name": name, "type": "numeric"} for name in DIABETES_FEATURES],
                  "model": {"estimator": "ridge", "params": {"alpha": 0.5}}}, "make_models", "diabetes")
FLIPPERS = parse({"model_name": "flippers", "label": {"column": "flipper_length_mm", "task": "regression"},
                  "features": PENGUIN_FEATURES,
                  "model": {"estimator": "random_forest", "params": {"n_estimators": 10}}}, "make_models", "flippers")
# Each regression folder's dataset
REGRESSORS = {"regression-ridge": DIABETES, "regression-random_forest": FLIPPERS,
              "regression-hist_gradient_boosting": replace(FLIPPERS, estimator="hist_gradient_boosting",
                                                           params={"max_iter": 30})}


def iris(seed: int, drifted: bool = False) -> pd.DataFrame:
    """600 jittered iris flowers; `drifted`: every label rotated to the next species (concept drift)."""
    data = load_iris()
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(data.target), 600)
    names = np.roll(data.target_names, -1) if drifted else data.target_names
    frame = pd.DataFrame(data.data[picked] * rng.normal(1.0, 0.02, (600, 4)), columns=IRIS_FEATURES)
    return frame.assign(species=names[data.target[picked]])


def penguins(seed: int, missing_in_example: bool = False) -> pd.DataFrame:
    """A penguin-like frame: species from bill length, body mass, island and sex; body mass and sex miss
    values (beyond the first five rows, the input example, unless `missing_in_example`)."""
    rng = np.random.default_rng(seed)
    n = 400
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], n)
    kind = pd.Series(species).map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}).to_numpy()
    island = np.where(kind == 2, rng.choice(["Biscoe", "Dream"], n, p=[0.9, 0.1]),
                      np.where(kind == 1, "Dream", rng.choice(["Biscoe", "Dream", "Torgersen"], n)))
    frame = pd.DataFrame({
        "bill_length_mm": np.array([38.8, 48.8, 47.5])[kind] + rng.normal(0, 2.5, n),
        "body_mass_g": np.array([3700.0, 3730.0, 5080.0])[kind] + rng.normal(0, 350, n),
        "island": island.astype(object),
        "sex": rng.choice(["female", "male"], n).astype(object),
        "species": species,
    })
    start = 0 if missing_in_example else 5
    frame.loc[frame.index[start::9], "body_mass_g"] = np.nan
    frame.loc[frame.index[start + 2::11], "sex"] = None
    return frame


def diabetes() -> pd.DataFrame:
    """sklearn's diabetes data: 442 patients' ten numeric features (standardised) and disease progression."""
    return load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})


def flippers(seed: int) -> pd.DataFrame:
    """The penguin-like frame (body mass and sex missing values) with a number to predict: flipper length from
    species, body mass and sex."""
    frame = penguins(seed)
    rng = np.random.default_rng(seed)
    length = frame["species"].map({"Adelie": 190.0, "Chinstrap": 196.0, "Gentoo": 217.0}) \
        + 0.006 * (frame["body_mass_g"].fillna(4200.0) - 4000.0) + 3.0 * frame["sex"].eq("male") \
        + rng.normal(0, 3, len(frame))
    return frame.assign(flipper_length_mm=length.round(1))


def save(path: Path, model, frame: pd.DataFrame, dataset, version: str, logged_as: Model | None = None,
         name: str = "iris", extra_files: list[str] | None = None) -> None:
    mlflow.sklearn.save_model(model, str(path), mlflow_model=logged_as, extra_files=extra_files,
                              **model_logging_kwargs(model, frame[dataset.feature_names], dataset))
    (path / "registry.json").write_text(json.dumps({"name": name, "version": version, "run_id": f"run-{version}",
                                                    "model_uri": f"models:/{name}/{version}"}))


def wine(out: Path) -> None:
    """The wine model, trained on the bundled wine data, with its feature buckets."""
    dataset, frame = test_datasets.load("wine"), test_datasets.reference_frame("wine")
    model = fit(frame, dataset)
    buckets = write_feature_buckets(out, frame, dataset)
    mlflow.sklearn.save_model(model, str(out / "wine"), extra_files=[str(buckets)],
                              **model_logging_kwargs(model, frame[dataset.feature_names], dataset))
    buckets.unlink()
    (out / "wine" / "registry.json").write_text(json.dumps({"name": "wine", "version": "w1", "run_id": "run-w1",
                                                             "model_uri": "models:/wine/w1"}))


def regression(out: Path, folder: str, frame: pd.DataFrame) -> None:
    """A regression model as the training stage logs it: with its prediction histogram edges (the quantiles of
    its training target) and its per-feature edges, as MLflow extra files."""
    dataset = REGRESSORS[folder]
    staging = out / f".{folder}-extra"
    staging.mkdir()
    files = [write_prediction_buckets(staging, prediction_bucket_edges(frame, dataset), dataset),
             write_feature_buckets(staging, frame, dataset)]
    save(out / folder, fit(frame, dataset), frame, dataset, f"r-{dataset.estimator}", name=dataset.name,
         extra_files=[str(f) for f in files])
    shutil.rmtree(staging)


def regression_cases(out: Path, frames: dict[str, pd.DataFrame]) -> dict:
    """Rows for each regression model (training rows, rows far past them; for mixed inputs MIXED_CASES, missing
    values and an unseen category) and what MLflow's pyfunc and sklearn loaders predict for them, given as the
    pipeline gives a model its inputs."""
    cases: dict[str, dict] = {"rows": {}, "pyfunc": {}, "sklearn": {}}
    for folder, dataset in REGRESSORS.items():
        if dataset is DIABETES:
            features = frames[folder][dataset.feature_names]
            rows = pd.concat([features.iloc[:40], features.iloc[40:50] * 3.0])  # and beyond the training range
        else:
            rows = pd.DataFrame(MIXED_CASES, columns=MIXED_FEATURES)
        inputs = model_inputs(rows, dataset)
        cases["rows"][folder] = [{name: None if isinstance(v, float) and np.isnan(v) else v
                                  for name, v in row.items()} for row in inputs.to_dict(orient="records")]
        cases["pyfunc"][folder] = [float(v) for v in mlflow.pyfunc.load_model(str(out / folder)).predict(inputs)]
        cases["sklearn"][folder] = predictions(out / folder, rows, dataset)
    return cases


def main(out: Path) -> None:
    datasets = {}  # each good folder's dataset, for predictions as the pipeline makes them
    clean, drifted = iris(1), iris(2, drifted=True)
    save(out / "good-v1", fit(clean, IRIS), clean, IRIS, "1")
    save(out / "good-v2", fit(drifted, IRIS), drifted, IRIS, "2")
    save(out / "corrupt", fit(clean, IRIS), clean, IRIS, "3")
    for skops_file in (out / "corrupt").glob("*.skops"):
        skops_file.write_bytes(b"this is not a skops archive")
    save(out / "wrong-features", fit(clean, IRIS), clean, IRIS, "4")
    three = replace(IRIS, features=IRIS.features[:3])
    save(out / "wrong-features-tmp", fit(clean, three), clean, three, "4")
    for skops_file in (out / "wrong-features-tmp").glob("*.skops"):
        target = next((out / "wrong-features").glob("*.skops"))
        target.write_bytes(skops_file.read_bytes())
    shutil.rmtree(out / "wrong-features-tmp")
    for kind, params in OTHER_ESTIMATORS.items():
        dataset = datasets[kind] = replace(IRIS, estimator=kind, params=params)
        save(out / kind, fit(clean, dataset), clean, dataset, "5",
             logged_as=Model(run_id=f"run-of-{kind}", model_id=f"m-{kind}"))  # as if logged in a run
    model = fit(clean, IRIS)
    mlflow.sklearn.save_model(model, str(out / "pickle"), **{**model_logging_kwargs(model, clean[IRIS_FEATURES], IRIS),
                                                             "serialization_format": "pickle"})

    frame = penguins(3)
    save(out / "mixed", fit(frame, MIXED), frame, MIXED, "m1", name="penguins")
    for kind, params in OTHER_ESTIMATORS.items():
        dataset = datasets[f"mixed-{kind}"] = replace(MIXED, estimator=kind, params=params)
        frame = penguins(4, missing_in_example=kind == "random_forest")
        save(out / f"mixed-{kind}", fit(frame, dataset), frame, dataset, f"m-{kind}", name="penguins")
    datasets["mixed"] = MIXED
    wine(out)
    datasets["wine"] = test_datasets.load("wine")
    regression_frames = {"regression-ridge": diabetes(), "regression-random_forest": flippers(5),
                         "regression-hist_gradient_boosting": flippers(5)}
    for folder, frame in regression_frames.items():
        regression(out, folder, frame)
        datasets[folder] = REGRESSORS[folder]
    (out / "regression-cases.json").write_text(json.dumps(regression_cases(out, regression_frames)))
    folders = sorted(folder for folder in out.iterdir() if (folder / "MLmodel").is_file())
    cases = pd.DataFrame(MIXED_CASES, columns=MIXED_FEATURES)
    (out / "mixed-cases.json").write_text(json.dumps({"rows": MIXED_CASES, "predictions": {
        folder.name: predictions(folder, cases, datasets[folder.name]) for folder in folders
        if folder.name.startswith("mixed")}}))
    (out / "mlflow-reading.json").write_text(json.dumps({
        folder.name: mlflow_reading(folder, datasets.get(folder.name, IRIS)) for folder in folders}))


def predictions(folder: Path, rows: pd.DataFrame, dataset) -> list | None:
    """What the model MLflow loads predicts for `rows` as the pipeline gives them to it: labels, or a
    regression model's numbers (None where MLflow cannot load it or it cannot predict)."""
    try:
        model = mlflow.sklearn.load_model(str(folder))
        predicted = model.predict(model_inputs(rows, dataset))
        return [float(v) for v in predicted] if dataset.regression else [str(label) for label in predicted]
    except Exception:
        return None


def mlflow_reading(folder: Path, dataset) -> dict:
    """The fields the server uses, as MLflow's own Model class reads them, and what the model MLflow loads
    predicts for its input example (None where MLflow cannot load it or it cannot predict)."""
    meta = Model.load(str(folder / "MLmodel"))
    flavor = meta.flavors["sklearn"]
    example = json.loads((folder / "input_example.json").read_text())
    columns = meta.signature.inputs.inputs
    return {"features": meta.signature.inputs.input_names(), "model_file": flavor["pickled_model"],
            "feature_types": [column.to_dict()["type"] for column in columns],
            "feature_required": [column.required for column in columns],
            "serialization_format": flavor.get("serialization_format"),
            "trusted_types": flavor.get("skops_trusted_types") or [], "run_id": meta.run_id or "",
            "model_id": meta.model_id or "", "example": example["data"],
            "predictions": predictions(folder, pd.DataFrame(example["data"], columns=example["columns"]), dataset)}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
