"""The public schemas and API specs the tests check against, copied into tests/schemas/ (their
upstream project, path, release and licence are in tests/schemas/SOURCES.md)."""

import copy
import json
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def reference_file(name: str) -> Path:
    path = SCHEMAS / name
    if not path.is_file():
        raise FileNotFoundError(f"schema {path} is missing: tests/schemas/SOURCES.md says where each one comes from")
    return path


def strict_schema(schema: dict) -> dict:
    """Unknown fields rejected wherever the schema does not say to preserve them (as a real apiserver
    prunes or, with `kubectl --validate=strict`, refuses them)."""
    schema = copy.deepcopy(schema)
    # Some CRDs (Istio's) describe only spec/status; every object also has these.
    for field, kind in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
        schema.setdefault("properties", {}).setdefault(field, {"type": kind})

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and \
                    not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schema(name: str, version: str) -> dict:
    """A CRD's openAPIV3Schema for one version, from tests/schemas/<name>.json, made strict."""
    return strict_schema(json.loads(reference_file(name).read_text())["versions"][version])
