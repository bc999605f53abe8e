"""The three environments stay separate and exactly pinned (see docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==[^=\s]+(\s+#.*)?$")

FORBIDDEN = {
    REPO / "requirements.txt": {"kfp", "kserve", "scikit-learn", "mlflow", "pandas"},
    REPO / "images/pipeline/requirements.txt": {"apache-airflow", "apache-airflow-core", "kserve"},
    # The model server reads the MLmodel itself (mlserving/mlmodel.py): MLflow would only cost start-up and size.
    REPO / "images/serving/requirements.txt": {"apache-airflow", "apache-airflow-core", "kfp", "mlflow",
                                               "mlflow-skinny"},
}


def packages(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        name, version = line.split("#")[0].strip().split("==")
        pins[name.lower()] = version
    return pins


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
