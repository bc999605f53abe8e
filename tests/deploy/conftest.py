"""Deployment assets (k8s-yaml/, helm-values/, images/, docs/): checked offline against the published
schemas in tests/schemas/ and kubernetes-validate, in the Airflow environment."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s-yaml"
sys.path.insert(0, str(REPO / "plugins"))  # what the DAG generates (routes, pods) is checked here too


def manifest_files() -> list[Path]:
    """Every object file under k8s-yaml/ (kustomization files and examples are not objects)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def objects(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
