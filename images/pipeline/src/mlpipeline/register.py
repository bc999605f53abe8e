"""Register a run's challenger with lineage tags; move `champion` only on promote.

The version's lineage tags are set when it is created and never rewritten: run key, fingerprints, partition,
window, configuration hash, code version, test metrics, the decision, the Airflow DAG and run, the KFP run,
who approved, and what a pull fetched for the partition (`pull.*`, from the run's manifest:
mlpipeline.pull_record; none for a partition landed as files).

What happened is reported as `outcome`, which is what a run reports (not the training decision):
- `promoted`: the challenger became the champion now;
- `registered`: it was registered as the challenger, the champion stays (decision keep);
- `already_registered`: a re-run of a run key registered before; nothing moves again;
- `superseded`: the decision was promote, but the champion it was compared with is no longer the
  champion (another run promoted meanwhile): promoting now would replace a model this one never
  beat, so it stays the challenger.
"""

from __future__ import annotations

import logging

from .contracts import COMPARED_WITH_TAG, DECISION_TAG, REASON_TAG, TrainingDecision
from .evaluate import primary_metrics
from .model_registry import ChampionMoved, Registry
from .pull_record import tags as pull_tags
from .volume import DataVolume, load_run, read_json

log = logging.getLogger(__name__)


def _lineage_tags(run_key: str, manifest: dict, decision: TrainingDecision, context: dict[str, str]) -> dict[str, str]:
    metrics = decision.challenger_metrics
    tags = {
        "run_key": run_key,
        "data_fingerprint": manifest["data_fingerprint"],
        "partition": manifest["partition"],
        "window": manifest["window"],
        "config_hash": manifest["config_hash"],
        "code_version": manifest["code_version"],
        **{f"test_{name}": f"{value:.6f}" for name, value in primary_metrics(metrics).items()},
        "metric": decision.metric,
        "dataset_fingerprint": manifest["dataset_fingerprint"],
        DECISION_TAG: decision.decision,
        REASON_TAG: decision.reason[:4000],
        COMPARED_WITH_TAG: decision.champion_version or "",
        **pull_tags(manifest.get("pull")),
    }
    tags.update({k: v for k, v in context.items() if v})
    return tags


def register_run(volume: DataVolume, run_key: str, model_name: str, context: dict[str, str]) -> dict:
    manifest, _ = load_run(volume, run_key)
    decision = TrainingDecision.from_dict(read_json(volume.run_dir(run_key) / "decision.json"))
    context = {"kfp_run_id": decision.kfp_run_id or "", **{k: v for k, v in context.items() if v}}
    registry = Registry(model_name)
    version = registry.version_for_run_key(run_key)
    created = version is None
    if created:
        tags = _lineage_tags(run_key, manifest, decision, context)
        version = registry.create_version(decision.challenger_model_uri, decision.challenger_run_id, tags)
        registry.set_challenger(version)
        log.info("registered %s v%s for run key %s", model_name, version.version, run_key)
    else:
        log.info("run key %s is already %s v%s; not registering again", run_key, model_name, version.version)
    outcome, promotion = _promote_if_due(registry, version, decision, created, {"run_key": run_key, **context})
    champion = registry.champion()
    return {
        "model_name": model_name,
        "version": version.version,
        "created": created,
        "decision": decision.decision,
        "reason": decision.reason,
        "outcome": outcome,
        "promotion": promotion,
        "champion_version": champion.version if champion else None,
        "model_uri": f"models:/{model_name}/{version.version}",
        "run_id": version.run_id,
    }


def _promote_if_due(registry: Registry, version, decision: TrainingDecision, created: bool,
                    context: dict) -> tuple[str, dict | None]:
    # A retry of this run after an earlier try registered the version but failed before promoting it
    # (MLflow went away, the worker died) finishes the job; one whose earlier try promoted it says so.
    own_earlier_try = not created and context.get("airflow_run_id") and \
        version.tags.get("airflow_run_id") == context.get("airflow_run_id")
    if own_earlier_try and "champion_since_ms" not in version.tags:
        created = True
    elif own_earlier_try and (registry.champion() or version).version == version.version:
        return "promoted", None
    if not created:
        log.info("run key %s was registered before (v%s); the champion does not move again", context["run_key"],
                 version.version)
        return "already_registered", None
    if not decision.promotes:
        return "registered", None
    try:
        return "promoted", registry.move_champion(version, "promote", decision.reason, context,
                                                  expected=decision.champion_version)
    except ChampionMoved as exc:  # it was compared with a champion that is no longer the champion
        log.warning("v%s not promoted: %s", version.version, exc)
        return "superseded", None
