"""A stage's result: one JSON object on stdout, and in the KPO XCom file when that folder exists."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

XCOM_DIR = "/airflow/xcom"


def emit(result: dict) -> None:
    text = json.dumps(result, sort_keys=True, default=str)
    xcom_dir = Path(os.environ.get("MLPIPELINE_XCOM_DIR", XCOM_DIR))
    if xcom_dir.is_dir():
        (xcom_dir / "return.json").write_text(text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
