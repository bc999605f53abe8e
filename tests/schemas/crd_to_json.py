"""Extract one CustomResourceDefinition's schemas from an upstream CRD YAML file into the JSON form the
tests read: {"source", "group", "kind", "plural", "versions": {"<version>": <openAPIV3Schema>}}.

    python tests/schemas/crd_to_json.py CRD.yaml PLURAL.GROUP "owner/repo@tag:path" > tests/schemas/NAME.json

Run it on a checkout of the release that SOURCES.md names; the schemas are copied unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml


def extract(documents, plural: str, group: str, source: str) -> dict:
    for crd in documents:
        if crd and crd.get("kind") == "CustomResourceDefinition" and \
                crd["spec"]["group"] == group and crd["spec"]["names"]["plural"] == plural:
            return {"source": source, "group": group, "kind": crd["spec"]["names"]["kind"], "plural": plural,
                    "versions": {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}}
    raise SystemExit(f"no CustomResourceDefinition {plural}.{group} in the file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crd_yaml")
    parser.add_argument("resource", help="PLURAL.GROUP, e.g. inferenceservices.serving.kserve.io")
    parser.add_argument("source", help="where the YAML came from: owner/repo@tag:path")
    args = parser.parse_args()
    plural, _, group = args.resource.partition(".")
    with open(args.crd_yaml) as handle:
        crd = extract(yaml.safe_load_all(handle), plural, group, args.source)
    json.dump(crd, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
