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
