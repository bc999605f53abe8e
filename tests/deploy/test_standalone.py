"""The repository stands alone: nothing in it reads or links a path outside it, and every schema the
tests check against is in tests/schemas/ with its source named."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import REPO

SKIP_DIRS = {".git", ".venv", ".run", "build", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".ini", ".in", ".txt", ".sh", ".cfg", ""}
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "MLOPS_" + "SHARED_DIR"]))
SCHEMAS = REPO / "tests" / "schemas"


def repo_files() -> list[Path]:
    """The checkout's text files; the skipped folders are never entered (`.run` holds the Docker engine's
    layers, which change while other tests run)."""
    files = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in SKIP_DIRS]
        files += [Path(folder, n) for n in names if Path(n).suffix in TEXT_SUFFIXES and Path(folder, n).is_file()]
    return sorted(files)


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in repo_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


MARKDOWN = [p for p in repo_files() if p.suffix == ".md"]


@pytest.mark.parametrize("page", MARKDOWN, ids=[str(p.relative_to(REPO)) for p in MARKDOWN])
def test_every_relative_link_resolves_inside_the_repository(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+:|^#", target):
            continue
        resolved = (page.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{page.relative_to(REPO)} links outside the repository: {target}"
        assert resolved.exists(), f"{page.relative_to(REPO)} links to a missing file: {target}"


def test_the_readme_links_the_design():
    assert "](docs/architecture.md)" in (REPO / "README.md").read_text()


def test_every_schema_file_has_its_source_release_and_licence():
    rows = {}
    for line in (SCHEMAS / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    shipped = {p.name for p in SCHEMAS.iterdir() if p.suffix in (".json", ".yaml")}
    assert shipped == set(rows), f"in the folder but not in SOURCES.md: {shipped - set(rows)}; " \
                                 f"in SOURCES.md but missing: {set(rows) - shipped}"
    for name, (_, project, path, release, licence) in rows.items():
        assert project and path and re.search(r"\d+\.\d+\.\d+", release), name
        assert licence == "Apache-2.0", name


def test_the_tests_read_schemas_only_from_the_repository():
    from tests.reference import SCHEMAS as read_from

    assert read_from == SCHEMAS
