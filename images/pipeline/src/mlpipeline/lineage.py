"""Fingerprints, code version and run keys: what makes a run reproducible and idempotent."""

from __future__ import annotations

import hashlib
import os

import pandas as pd

from . import __version__


def code_version() -> str:
    """The package version, plus the build's commit when the image sets one."""
    commit = os.environ.get("MLPIPELINE_GIT_COMMIT", "").strip()
    return f"{__version__}+{commit[:12]}" if commit else __version__


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a frame's values and column names (row order matters)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def files_fingerprint(names: list[str]) -> str:
    """Fingerprint of a set of content-addressed files: their names are their hashes."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def run_key(data_fingerprint: str, config_hash: str, version: str | None = None) -> str:
    material = f"{data_fingerprint}|{config_hash}|{version or code_version()}"
    return "rk-" + hashlib.sha256(material.encode()).hexdigest()[:16]
