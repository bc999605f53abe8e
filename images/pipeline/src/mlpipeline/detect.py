"""Score the serving champion on the fresh labelled batch, test whether it got worse than on its own test set
(degradation.py), and measure drift; with a live window, also the drift of the traffic the champion served
(live_drift.py, no labels needed).

The threshold comparison is the DAG's branch, not this stage's: it reports.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .config import engine_settings
from .degradation import degradation, words
from .drift import drift_report
from .errors import PipelineError
from .evaluate import score_labelled
from .live_drift import live_drift, live_prediction_drift
from .model import model_inputs, targets
from .model_registry import Registry
from .split import load_set, run_dataset
from .volume import DataVolume, load_run, read_json, write_json_atomic

log = logging.getLogger(__name__)


def detect(volume: DataVolume, run_key: str, model_name: str, live_window: str = "",
           prometheus_url: str = "") -> dict:
    """`live_window` (a Prometheus duration; empty: off) and `prometheus_url`: measure live drift too."""
    manifest, config = load_run(volume, run_key)
    dataset, classes = run_dataset(manifest)
    fresh = load_set(volume, run_key, "fresh")
    registry = Registry(model_name)
    champion = registry.champion()
    result = {"run_key": run_key, "model_name": model_name, "partition": manifest["partition"],
              "fresh_rows": len(fresh), "metric": dataset.metric, "direction": dataset.metric_direction,
              "metric_threshold": dataset.metric_threshold, "fresh_score": None, "live_drift": None,
              "degradation": None}
    if champion is None:
        result.update(champion=None, degraded_by_definition=True, fresh_metrics=None, drift=None,
                      reason=f"no champion: models:/{model_name}@champion does not exist, so the model is "
                             "degraded by definition and must be trained")
        log.info(result["reason"])
    else:
        model = registry.load_version(champion)
        fresh_true, fresh_pred = targets(fresh, dataset), model.predict(model_inputs(fresh, dataset))
        metrics = score_labelled(dataset, fresh_true, fresh_pred, classes)
        degraded = _degradation(volume, champion, model, dataset, classes, config, fresh_true, fresh_pred,
                                model_name, manifest["partition"])
        reference = registry.reference_sample(champion)
        drift = drift_report(reference, fresh, dataset, classes, config["drift"])
        # the server's histograms (numeric features: the champion version's, on its edges) and category
        # counts (categorical ones)
        numeric = [f.name for f in dataset.features if f.numeric]
        categorical = [f.name for f in dataset.features if not f.numeric]
        live = live_drift(prometheus_url, model_name, live_window, reference, numeric, config["drift"],
                          categorical, version=champion.version) if live_window else None
        if live is not None and dataset.regression:
            live["prediction"] = live_prediction_drift(prometheus_url, model_name, live_window,
                                                       model.predict(model_inputs(reference, dataset)),
                                                       config["drift"], version=champion.version)
        result.update(champion={"version": champion.version, "run_id": champion.run_id},
                      degraded_by_definition=False, fresh_metrics=metrics, fresh_score=metrics[dataset.metric],
                      drift=drift, live_drift=live, degradation=degraded,
                      reason=f"champion v{champion.version}: fresh {dataset.metric} {_score(metrics[dataset.metric])}, "
                             f"{words(degraded)}; "
                             f"{len(drift['drifted_features'])}/{len(dataset.features)} feature(s) drifted "
                             f"({drift['method']})" + _target_words(drift.get("label"), dataset)
                             + (f"; live traffic ({live_window}): {live_summary(live)}"
                                                       if live else ""))
        log.info(result["reason"])
    write_json_atomic(volume.run_dir(run_key) / "detect.json", result)
    return result


def _degradation(volume: DataVolume, champion, model, dataset, classes: list[str], config: dict, fresh_true,
                 fresh_pred, model_name: str, partition: str) -> dict:
    """The degradation test against the champion's earlier score: its own test set, read from its run's folder
    on the volume, and the batches it served since (_served_batches): more rows tell a smaller drop from
    chance, which a slow drift needs."""
    run_key = champion.tags.get("run_key", "")
    try:
        path = volume.run_dir(run_key) / "test.parquet" if run_key else None
    except PipelineError:  # a tag that is no run key names no folder
        path = None
    if path is None or not path.is_file():
        return {"status": "unavailable", "degraded": False,
                "reason": f"the champion's test set is not on the data volume (run key {run_key or 'not tagged'})"}
    # a run split before the setting existed keeps its config: the engine's default then
    settings = config.get("degradation") or engine_settings()["degradation"]
    served = _served_batches(volume, model_name, champion.version, champion.tags.get("partition", ""), partition,
                             int(settings["reference_batches"]))
    sets = [load_set(volume, run_key, "test"), *(load_set(volume, key, "fresh") for key in served)]
    earlier = pd.concat(sets, ignore_index=True)
    groups = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    result = degradation(targets(earlier, dataset), model.predict(model_inputs(earlier, dataset)), fresh_true,
                         fresh_pred, metric=dataset.metric, classes=classes, alpha=float(settings["alpha"]),
                         rounds=int(config["decision"]["bootstrap_rounds"]), seed=dataset.seed, ref_groups=groups)
    return {**result, "served_batches": len(served)}


def _served_batches(volume: DataVolume, model_name: str, version: str, trained_on: str, before: str,
                    limit: int) -> list[str]:
    """Run keys of the last `limit` partitions after `trained_on` (the champion's own partition: its training
    rows are no evidence) and before `before` whose batch this champion version was scored on, and either was
    not found degraded or was, but the retrain it called for kept the champion (the run's decision.json
    rejects): a drop no retrain can mend is the champion's new normal, not a reason to retrain every day.
    One run per partition; a folder without a readable detect.json or fresh set is skipped."""
    found = {}
    for run_dir in sorted((volume.root / "runs").glob("*/")):
        earlier = _json_object(run_dir / "detect.json")
        degradation = earlier.get("degradation") or {}
        partition, run_key = earlier.get("partition"), earlier.get("run_key")
        if not (isinstance(partition, str) and trained_on < partition < before and run_key == run_dir.name
                and earlier.get("model_name") == model_name
                and (earlier.get("champion") or {}).get("version") == version
                and degradation.get("status") == "measured" and (run_dir / "fresh.parquet").is_file()):
            continue
        if not degradation.get("degraded") or _json_object(run_dir / "decision.json").get("decision") == "reject":
            found[partition] = run_key
    return [found[partition] for partition in sorted(found)[-limit:]] if limit > 0 else []


def _json_object(path) -> dict:
    """A JSON object from a run's folder; {} for a missing, unreadable or non-object file."""
    try:
        value = read_json(path) if path.is_file() else {}
    except (PipelineError, OSError, ValueError):  # ValueError: not UTF-8
        return {}
    return value if isinstance(value, dict) else {}


def _target_words(label: dict | None, dataset) -> str:
    """A numeric target's shift, when the batch's differs from the reference's."""
    if not dataset.regression or not label or not label["drifted"]:
        return ""
    return (f"; the target {dataset.label} shifted (KS {label['ks_statistic']:.3f}, mean "
            f"{label['mean_reference']:.4g} -> {label['mean_current']:.4g})")


def _score(value: float | None) -> str:
    return "undefined (MAPE on a target of 0)" if value is None else f"{value:.4g}"


def live_summary(live: dict) -> str:
    if live["status"] == "measured":
        new = f", new categories {live['new_categories']}" if live.get("new_categories") else ""
        prediction = live.get("prediction") or {}
        predicted = (f", predictions {'drifted' if prediction['drifted'] else 'steady'} (KS "
                     f"{prediction['ks_statistic']:.3f})" if prediction.get("status") == "measured" else "")
        return f"{len(live['drifted_features'])} feature(s) drifted {live['drifted_features']}{new}{predicted}"
    return live["status"]
