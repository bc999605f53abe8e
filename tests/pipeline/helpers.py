"""Helpers shared by the pipeline tests: run the CLI as a subprocess, snapshot folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    @property
    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got: {self.stdout!r}"
        return json.loads(lines[0])

    @property
    def error_line(self) -> str:
        errors = [line for line in self.stderr.splitlines() if line.startswith("mlpipeline ")]
        assert len(errors) == 1, f"expected one error line, got stderr: {self.stderr[-3000:]}"
        return errors[0]


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600) -> CliResult:
    proc = subprocess.run([str(BIN / "mlpipeline"), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    result = CliResult(proc)
    if check:
        assert proc.returncode == 0, f"mlpipeline {args} failed: {proc.stderr[-4000:]}"
    return result


def land_and_split(root: Path, dataset: Path, reference: Path, partition: str, rows: int, seed: int) -> str:
    """A batch drawn from `reference` landed, ingested and split through the stage CLI: its run key."""
    given = ["--dataset", dataset]
    run_cli("simulate", "--data-root", root, "--partition", partition, "--rows", rows, "--seed", seed,
            "--reference", reference, *given)
    run_cli("ingest", "--data-root", root, "--partition", partition, *given)
    return run_cli("split", "--data-root", root, "--partition", partition, *given).json["run_key"]
