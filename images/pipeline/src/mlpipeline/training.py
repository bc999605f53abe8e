"""The training stages the KFP pipeline runs: train, evaluate, decide.

Each reads its inputs from the run's folder on the data volume and writes its
result there too, so a retried step can pick up where the last one stopped.

The training run is tagged with the run's lineage: run key, fingerprints, configuration hash, code version,
partition, the Airflow DAG and run and the KFP run, and what a pull fetched for the partition (`pull.*`,
from the manifest: mlpipeline.pull_record). A run key trained before reuses its model: its run too when that
run never decided (an attempt that stopped on the way), else a run of its own tagged `rerun_of` (a run that
decided is history, perhaps a registered version's source run, and is never written again).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

# Importing skops.io walks numpy's ufuncs through every module loaded so far: before MLflow it costs
# a fraction (mlflow.sklearn imports it to save the skops model anyway).
import skops.io  # noqa: F401

# isort: split
import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature

from . import lineage, pull_record
from .contracts import DECISION_TAG, TrainingDecision
from .dataset import Dataset
from .decide import decide, decide_regression
from .evaluate import primary_metrics, score_labelled
from .model import fit, model_inputs, skops_trusted_types, targets
from .model_format import (
    FEATURE_BUCKETS_FILE,
    PREDICTION_BUCKETS_FILE,
    PREDICTION_BUCKETS_KEY,
    parse_feature_buckets,
)
from .model_registry import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, REFERENCE_ARTIFACT, Registry
from .split import load_set, run_dataset
from .volume import DataVolume, load_run, read_json, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

RERUN_OF_TAG = "rerun_of"  # on a re-run's own training run: the earlier run of the same run key it reuses the model of


def _metric_key(text: str) -> str:
    """A class name as part of an MLflow metric key (letters, digits, _ - . space / only)."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in text)[:200]


def _flat_metrics(prefix: str, metrics: dict) -> dict[str, float]:
    flat = {f"{prefix}_{name}": value for name, value in primary_metrics(metrics).items()}
    flat.update({f"{prefix}_recall_{_metric_key(c)}": r for c, r in metrics.get("per_class_recall", {}).items()})
    return flat


def model_logging_kwargs(model, features: pd.DataFrame, dataset: Dataset) -> dict:
    """How every model is logged: the serving image loads exactly this (skops format, a signature naming
    and typing the columns as the dataset declares them, an input example, pinned requirements)."""
    from importlib.metadata import version

    example = model_inputs(features.head(5), dataset)
    return {
        "input_example": example,
        "signature": infer_signature(example, model.predict(example)),
        # Stating them skips MLflow's slow requirement inference.
        "pip_requirements": [f"{name}=={version(name)}" for name in ("scikit-learn", "skops", "numpy", "scipy")],
        "serialization_format": "skops",
        "skops_trusted_types": skops_trusted_types(dataset),
    }


# Edges per numeric feature for the model server's live-drift histograms (model_format.FEATURE_BUCKETS_FILE).
# 20 edges, 21 buckets: fine enough for the binned KS distance to follow the unbinned one (its error is at
# most a bucket's share, under 5 %), few enough that a feature costs the server 22 series.
FEATURE_BUCKET_EDGES = 20


def feature_bucket_edges(train: pd.DataFrame, dataset: Dataset) -> dict[str, list[float]]:
    """Each numeric feature's edges: the k/21 quantiles (k = 1..20) of its non-missing training values, so
    each of the 21 le-buckets holds about the same share of the reference. Equal shares put the resolution
    where the values are, on any scale, and leave no bucket nearly empty on the reference side (PSI divides
    by those shares); the two open-ended buckets, a twenty-first of the values each, are where a shift past
    the training range shows. The quantiles are observed values (inverted CDF), so a value repeated in the
    data (a count, a code, a rounded measurement) falls whole in one bucket, on the server and in the
    reference alike; repeated quantiles (a value holding several shares) are merged, so a constant feature
    gets one edge. A feature with no value at all (never in practice: validation refuses an empty column)
    gets one edge at 0."""
    # as the model (and the server) takes them
    return {name: quantile_edges(train[name].astype("float64").to_numpy())
            for name in (f.name for f in dataset.features if f.numeric)}


def quantile_edges(values: np.ndarray) -> list[float]:
    """The equal-share edges of one column's finite values (feature_bucket_edges says why these)."""
    probabilities = np.arange(1, FEATURE_BUCKET_EDGES + 1) / (FEATURE_BUCKET_EDGES + 1)
    values = values[np.isfinite(values)]
    found = np.unique(np.quantile(values, probabilities, method="inverted_cdf")) if values.size else [0.0]
    return [float(e) for e in found]


def write_feature_buckets(folder: Path, train: pd.DataFrame, dataset: Dataset) -> Path:
    """feature_bucket_edges as the file the model carries (to log with the model as an extra file), checked
    as the model server will check it."""
    edges = feature_bucket_edges(train, dataset)
    text = json.dumps(edges).encode()
    parse_feature_buckets(text, tuple(edges), f"the model of {dataset.name}")
    path = folder / Path(FEATURE_BUCKETS_FILE).name
    path.write_bytes(text)
    return path


def prediction_bucket_edges(train: pd.DataFrame, dataset: Dataset) -> list[float]:
    """A regression model's prediction histogram edges, when no earlier version has any: the same equal-share
    quantiles as a feature's (feature_bucket_edges), of the training target."""
    return quantile_edges(targets(train, dataset).to_numpy())


def write_prediction_buckets(folder: Path, edges: list[float], dataset: Dataset) -> Path:
    """The prediction edges as the file a regression model carries, checked as the model server checks it."""
    text = json.dumps({PREDICTION_BUCKETS_KEY: [float(e) for e in edges]}).encode()
    parse_feature_buckets(text, (PREDICTION_BUCKETS_KEY,), f"the model of {dataset.name}", PREDICTION_BUCKETS_FILE)
    path = folder / Path(PREDICTION_BUCKETS_FILE).name
    path.write_bytes(text)
    return path


def _prediction_edges(model_name: str, train: pd.DataFrame, dataset: Dataset) -> tuple[list[float], str]:
    """The champion's prediction edges (every version of a model bins its predictions alike), or new ones."""
    registry = Registry(model_name)
    champion = registry.champion()
    inherited = registry.prediction_edges(champion) if champion else None
    if inherited:
        return list(inherited), f"v{champion.version}'s"
    return prediction_bucket_edges(train, dataset), "the training target's quantiles"


def _dataset(volume: DataVolume, run_key: str, name: str, frame: pd.DataFrame, manifest: dict) -> MetaDataset:
    """The set's location, fingerprint and schema; not its rows (from_pandas profiles every row)."""
    with warnings.catch_warnings():  # a local path matches two equivalent local source types
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(volume.run_dir(run_key) / f"{name}.parquet"))
    return MetaDataset(source,
                       name=f"{name}-{manifest['data_fingerprint']} ({len(frame)} rows)",
                       digest=manifest["sets"][name]["fingerprint"], schema=infer_signature(frame.head(100)).inputs)


def _existing_training_run(experiment_id: str, run_key: str):
    runs = mlflow.search_runs([experiment_id], f"tags.run_key = '{run_key}' and tags.stage = 'train' "
                              "and attributes.status = 'FINISHED'", output_format="list", max_results=1)
    return runs[0] if runs and runs[0].data.tags.get("model_uri") else None


def train_challenger(volume: DataVolume, run_key: str, model_name: str, context: dict[str, str]) -> dict:
    manifest, config = load_run(volume, run_key)
    dataset, classes = run_dataset(manifest)
    experiment = mlflow.set_experiment(model_name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # set once, on the experiment's first run
        mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    existing = _existing_training_run(experiment.experiment_id, run_key)
    tags = {"run_key": run_key, "stage": "train", "data_fingerprint": manifest["data_fingerprint"],
            "config_hash": manifest["config_hash"], "dataset_fingerprint": manifest["dataset_fingerprint"],
            "dataset_file": dataset.name, "metric": dataset.metric, "code_version": lineage.code_version(),
            "partition": manifest["partition"], **pull_record.tags(manifest.get("pull")),
            **{k: v for k, v in context.items() if v}}
    if existing and DECISION_TAG not in existing.data.tags:  # an earlier attempt stopped before deciding
        log.info("run key %s already trained in MLflow run %s; reusing it", run_key, existing.info.run_id)
        result = {"run_id": existing.info.run_id, "model_uri": existing.data.tags["model_uri"], "reused": True}
        write_json_atomic(volume.run_dir(run_key) / "challenger.json", result)
        return result
    if existing:
        # A run that decided is history (it may be a registered version's source run): a re-run of its run key
        # reuses its model but evaluates and decides in a run of its own, linked to it, never writing to it.
        model_uri = existing.data.tags["model_uri"]
        with mlflow.start_run(run_name=f"re-run {run_key}", tags={**tags, "model_uri": model_uri,
                                                                   RERUN_OF_TAG: existing.info.run_id}) as run:
            mlflow.log_params({"estimator": dataset.estimator, "window": config["window"]})
        log.info("run key %s was trained and decided in MLflow run %s; this re-run records in run %s, reusing "
                 "its model", run_key, existing.info.run_id, run.info.run_id)
        result = {"run_id": run.info.run_id, "model_uri": model_uri, "reused": True,
                  "rerun_of": existing.info.run_id}
        write_json_atomic(volume.run_dir(run_key) / "challenger.json", result)
        return result

    train, test = load_set(volume, run_key, "train"), load_set(volume, run_key, "test")
    with mlflow.start_run(run_name=f"train {run_key}", tags=tags) as run:
        mlflow.log_params({"estimator": dataset.estimator, "window": config["window"],
                           "test_size": dataset.test_size, "seed": dataset.seed,
                           "train_rows": len(train), "test_rows": len(test),
                           **{f"param_{k}": v for k, v in dataset.params.items()}})
        log.info("fitting %s on %d rows", dataset.estimator, len(train))
        model = fit(train, dataset)
        predictions = model.predict(model_inputs(test, dataset))
        metrics = score_labelled(dataset, targets(test, dataset), predictions, classes)
        mlflow.log_metrics(_flat_metrics("test", metrics))
        for name, frame, context in (("train", train, "training"), ("test", test, "evaluation")):
            mlflow.log_input(_dataset(volume, run_key, name, frame, manifest), context=context)
        reference = train.sample(n=min(len(train), config["reference_rows"]), random_state=dataset.seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
            # MLflow copies an extra file into the model's folder (extra_files/), listed in its MLmodel
            extra_files = [str(write_feature_buckets(Path(tmp), train, dataset))]
            if dataset.regression:
                edges, whose = _prediction_edges(model_name, train, dataset)
                log.info("prediction histogram: %d edges, %s", len(edges), whose)
                extra_files.append(str(write_prediction_buckets(Path(tmp), edges, dataset)))
            info = mlflow.sklearn.log_model(model, name="model", extra_files=extra_files,
                                            **model_logging_kwargs(model, test, dataset))
        mlflow.set_tag("model_uri", info.model_uri)
        result = {"run_id": run.info.run_id, "model_uri": info.model_uri, "reused": False,
                  "test_metrics": metrics}
    write_json_atomic(volume.run_dir(run_key) / "challenger.json", result)
    log.info("challenger %s: test %s %s", info.model_uri, dataset.metric, metrics[dataset.metric])
    return result


def evaluate_models(volume: DataVolume, run_key: str, model_name: str, challenger_run_id: str) -> dict:
    """Score challenger and champion on the same held-out test set."""
    manifest, _ = load_run(volume, run_key)
    dataset, classes = run_dataset(manifest)
    challenger = read_json(volume.run_dir(run_key) / "challenger.json")
    test = load_set(volume, run_key, "test")
    inputs = model_inputs(test, dataset)
    predictions = pd.DataFrame({"label": targets(test, dataset)})
    kind = "float64" if dataset.regression else str
    registry = Registry(model_name)
    # Read back as every champion is (the one loading policy): a challenger reused from an earlier attempt
    # was written to the registry's store, where others can write too.
    loaded = registry.load_model(challenger["model_uri"], f"challenger {challenger['model_uri']}")
    predictions["challenger"] = pd.Series(loaded.predict(inputs)).astype(kind)
    champion = registry.champion()
    result = {"challenger": {"run_id": challenger_run_id, "model_uri": challenger["model_uri"],
                             "metrics": score_labelled(dataset, predictions["label"], predictions["challenger"],
                                                       classes)},
              "champion": None}
    if champion is not None:
        predictions["champion"] = pd.Series(registry.load_version(champion).predict(inputs)).astype(kind)
        result["champion"] = {"version": champion.version, "run_id": champion.run_id,
                              "metrics": score_labelled(dataset, predictions["label"], predictions["champion"],
                                                        classes)}
        with mlflow.start_run(run_id=challenger_run_id):
            mlflow.log_metrics(_flat_metrics("champion_test", result["champion"]["metrics"]))
            mlflow.set_tag("compared_with_champion_version", champion.version)
    run_dir = volume.run_dir(run_key)
    write_atomic(run_dir / "predictions.parquet", lambda tmp: predictions.to_parquet(tmp, index=False))
    write_json_atomic(run_dir / "evaluation.json", result)
    log.info("evaluated on %d test rows: %s of challenger %.4f, champion %s", len(test), dataset.metric,
             result["challenger"]["metrics"][dataset.metric],
             f"{result['champion']['metrics'][dataset.metric]:.4f}" if champion else "none")
    return result


def _test_metric_name(test: str) -> str:
    """The paired test as an MLflow metric's prefix: mcnemar, paired_bootstrap, wilcoxon."""
    return "mcnemar" if test == "mcnemar_exact" else test


def decide_promotion(volume: DataVolume, run_key: str, kfp_run_id: str = "") -> dict:
    manifest, config = load_run(volume, run_key)
    dataset, classes = run_dataset(manifest)
    run_dir = volume.run_dir(run_key)
    evaluation = read_json(run_dir / "evaluation.json")
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    champion_pred = predictions["champion"].to_numpy() if "champion" in predictions else None
    settings = {"metric": dataset.metric, f"{dataset.metric_bound}_metric": dataset.metric_threshold,
                "min_improvement": dataset.min_improvement, "alpha": dataset.alpha,
                "bootstrap_rounds": config["decision"]["bootstrap_rounds"]}
    if dataset.regression:
        outcome = decide_regression(predictions["label"].to_numpy(), predictions["challenger"].to_numpy(),
                                    champion_pred, settings, seed=dataset.seed)
    else:
        outcome = decide(predictions["label"].to_numpy(), predictions["challenger"].to_numpy(), champion_pred,
                         classes, settings, seed=dataset.seed)
    challenger, champion = evaluation["challenger"], evaluation["champion"]
    decision = TrainingDecision(
        run_key=run_key, kfp_run_id=kfp_run_id or None, **outcome,
        challenger_run_id=challenger["run_id"], challenger_model_uri=challenger["model_uri"],
        challenger_metrics=challenger["metrics"], champion_version=champion["version"] if champion else None,
        champion_metrics=champion["metrics"] if champion else None)
    with mlflow.start_run(run_id=challenger["run_id"]):
        mlflow.set_tags(decision.tags())
        if decision.paired_test:
            mlflow.log_metrics({"improvement": decision.improvement,
                                f"{_test_metric_name(decision.paired_test['name'])}_pvalue":
                                    decision.paired_test["pvalue"],
                                **({"relative_improvement": decision.relative_improvement}
                                   if decision.relative_improvement is not None else {}),
                                "improvement_ci95_low": decision.bootstrap_ci95[0],
                                "improvement_ci95_high": decision.bootstrap_ci95[1]})
    result = decision.to_dict()
    write_json_atomic(run_dir / "decision.json", result)
    log.info("decision: %s (%s)", outcome["decision"], outcome["reason"])
    return result

