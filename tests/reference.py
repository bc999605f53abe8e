"""Where the public reference schemas live: ../shared/reference beside the clone (as in CI),
or MLOPS_SHARED_DIR/reference."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("MLOPS_SHARED_DIR", REPO.parent / "shared")) / "reference"


def reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} is missing: clone beside shared/ or set MLOPS_SHARED_DIR")
    return path
