"""The three environments stay separate and exactly pinned (see docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^=\s\\]+)\s*\\?$")  # `name==version \`, its hashes below
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}\s*\\?$")
LOCKED = sorted({*REPO.glob("requirements*.txt"), *REPO.glob("images/**/requirements*.txt"),
                 *REPO.glob("tests/cluster/**/requirements*.txt"), *REPO.glob("benchmarks/**/requirements*.txt")})

FORBIDDEN = {
    # The Airflow side's MlflowHook is MLflow's client (mlflow-skinny); the full `mlflow` (its server, and
    # pandas, scikit-learn and more with it) stays out.
    REPO / "requirements.txt": {"kfp", "kserve", "scikit-learn", "mlflow", "pandas"},
    REPO / "images/pipeline/requirements.txt": {"apache-airflow", "apache-airflow-core", "kserve"},
    # The model server reads the MLmodel itself (mlpipeline/model_format.py): MLflow would only cost start-up and size.
    REPO / "images/serving/requirements.txt": {"apache-airflow", "apache-airflow-core", "kfp", "mlflow",
                                               "mlflow-skinny"},
}


def packages(path: Path) -> dict[str, str]:
    """Every requirement of a locked file, each an exact pin followed by at least one sha256 hash."""
    pins, hashes, current = {}, {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if HASH.match(line):
            assert current, f"{path.name}: a hash before any requirement"
            hashes[current] += 1
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin with hashes: {line!r}"
        current = match.group(1).lower()
        pins[current], hashes[current] = match.group(2), 0
    unhashed = sorted(name for name, count in hashes.items() if not count)
    assert not unhashed, f"{path.name}: no hash for {unhashed}"
    return pins


@pytest.mark.parametrize("path", LOCKED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_locked_file_pins_exactly_with_hashes(path):
    assert packages(path), f"{path} is empty"


def test_every_install_checks_the_hashes():
    """pip and uv installs from a locked file, in the Makefile and every Dockerfile, require hashes."""
    sources = [REPO / "Makefile", *REPO.glob("images/**/*Dockerfile"), *REPO.glob("tests/cluster/**/Dockerfile")]
    installs = [(path.name, line.strip()) for path in sources
                for line in path.read_text().replace("\\\n", " ").splitlines()
                if re.search(r"pip install .*(-r |--constraint )", line)]
    assert installs and [i for i in installs if "--require-hashes" not in i[1]] == []


@pytest.mark.parametrize("path", sorted(FORBIDDEN), ids=lambda p: str(p.relative_to(REPO)))
def test_environment_is_exactly_pinned_and_holds_nothing_forbidden(path):
    pins = packages(path)
    assert pins, f"{path} is empty"
    assert not FORBIDDEN[path] & set(pins), f"{path.name} holds {FORBIDDEN[path] & set(pins)}"


def test_the_conflict_that_separates_them_is_real():
    airflow, pipeline = packages(REPO / "requirements.txt"), packages(REPO / "images/pipeline/requirements.txt")
    assert int(airflow["kubernetes"].split(".")[0]) >= 36 > 31 > int(pipeline["kubernetes"].split(".")[0])


def test_installed_pipeline_environment_matches_its_pins():
    from importlib.metadata import version

    for name, pinned in packages(REPO / "images/pipeline/requirements.txt").items():
        assert version(name) == pinned, name


def test_every_mlflow_client_is_the_tracking_server_s_release():
    """The Airflow side's MlflowHook (plugins/mlops/hooks/mlflow_client.py builds on MLflow's REST stores)
    and the pipeline talk to the server `images/mlflow` runs: one MLflow release for all three."""
    server = packages(REPO / "images/mlflow/requirements.txt")["mlflow"]
    assert packages(REPO / "requirements.txt")["mlflow-skinny"] == server
    assert packages(REPO / "images/pipeline/requirements.txt")["mlflow-skinny"] == server
