"""Register a run's challenger with lineage tags; move `champion` only on promote."""

from __future__ import annotations

import logging

from .registry import Registry
from .split import load_run
from .volume import DataVolume, read_json

log = logging.getLogger(__name__)


def _lineage_tags(run_key: str, manifest: dict, decision: dict, context: dict[str, str]) -> dict[str, str]:
    metrics = decision["challenger_metrics"]
    tags = {
        "run_key": run_key,
        "data_fingerprint": manifest["data_fingerprint"],
        "partition": manifest["partition"],
        "window": manifest["window"],
        "config_hash": manifest["config_hash"],
        "code_version": manifest["code_version"],
        "test_accuracy": f"{metrics['accuracy']:.6f}",
        "test_macro_f1": f"{metrics['macro_f1']:.6f}",
        "decision": decision["decision"],
        "decision_reason": decision["reason"][:4000],
        "compared_with_champion_version": decision["champion_version"] or "",
    }
    tags.update({k: v for k, v in context.items() if v})
    return tags


def register_run(volume: DataVolume, run_key: str, model_name: str, context: dict[str, str]) -> dict:
    manifest, _ = load_run(volume, run_key)
    decision = read_json(volume.run_dir(run_key) / "decision.json")
    context = {"kfp_run_id": decision.get("kfp_run_id") or "", **{k: v for k, v in context.items() if v}}
    registry = Registry(model_name)
    version = registry.version_for_run_key(run_key)
    created = version is None
    if created:
        tags = _lineage_tags(run_key, manifest, decision, context)
        version = registry.create_version(decision["challenger_model_uri"], decision["challenger_run_id"], tags)
        registry.set_challenger(version)
        log.info("registered %s v%s for run key %s", model_name, version.version, run_key)
    else:
        log.info("run key %s is already %s v%s; not registering again", run_key, model_name, version.version)
    promotion = None
    already_promoted = "champion_since_ms" in version.tags
    if decision["decision"] == "promote" and not already_promoted:
        promotion = registry.move_champion(version, "promote", decision["reason"],
                                           {"run_key": run_key, **context})
    champion = registry.champion()
    return {
        "model_name": model_name,
        "version": version.version,
        "created": created,
        "decision": decision["decision"],
        "reason": decision["reason"],
        "promotion": promotion,
        "champion_version": champion.version if champion else None,
        "model_uri": f"models:/{model_name}/{version.version}",
        "run_id": version.run_id,
    }
