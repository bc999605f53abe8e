"""The test suite cannot hang: every environment has pytest-timeout, every test a limit."""

from __future__ import annotations

import configparser
import subprocess
import sys

from .conftest import REPO

DEV_REQUIREMENTS = ("requirements-dev.txt", "images/pipeline/requirements-dev.txt",
                    "images/serving/requirements-dev.txt")


def test_every_test_environment_has_a_per_test_limit():
    ini = configparser.ConfigParser()
    ini.read(REPO / "pytest.ini")
    assert 0 < int(ini["pytest"]["timeout"]) <= 300
    for path in DEV_REQUIREMENTS:
        assert any(line.startswith("pytest-timeout==") for line in (REPO / path).read_text().splitlines()), path


def test_a_hanging_test_fails_instead_of_stalling_the_suite(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(3600)\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path),
                             "-o", "timeout=2", "-p", "no:cacheprovider", str(tmp_path / "test_hang.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Timeout (>2.0s)" in result.stdout, result.stdout[-2000:]


def _run_pytest(tmp_path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_warns.py").write_text("import warnings\n\n" + body)
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path),
                           "-p", "no:cacheprovider", str(tmp_path / "test_warns.py")],
                          capture_output=True, text=True, timeout=60)


def _warns(category: str, module: str) -> str:
    """A test in which `module` (as warnings.warn names the caller) emits a warning of `category`."""
    return (f"def test_warns():\n    warnings.warn_explicit('old API', {category}, 'x.py', 1, module={module!r})\n")


def test_our_own_deprecations_fail_the_test(tmp_path):
    """A deprecation attributed to the DAG file, the plugins or the two packages (what Airflow, scikit-learn
    and pandas warn about in our calls) fails; the same from anyone else's module is only reported."""
    for module in ("mlops.operators.deploy", "mlpipeline.cli", "mlserving.server", "continuous_training",
                   "unusual_prefix_0123abcd_continuous_training"):
        for category in ("DeprecationWarning", "FutureWarning"):
            done = _run_pytest(tmp_path, _warns(category, module))
            assert done.returncode == 1 and f"{category}: old API" in done.stdout, (module, done.stdout[-1500:])
    for module in ("sklearn.utils", "airflow.models", "mlopsish"):
        done = _run_pytest(tmp_path, _warns("DeprecationWarning", module))
        assert done.returncode == 0 and "DeprecationWarning: old API" in done.stdout, (module, done.stdout[-1500:])
