"""Which registry version the server reports: what the deployer says, never a guess. In a cluster
KServe's storage initializer copies only the MLflow artifact folder into /mnt/models, so the
InferenceService names the version in the predictor's environment."""

from __future__ import annotations

import shutil

import pytest

from mlserving.loader import load_model_dir

IDENTITY = {"MLSERVING_REGISTRY_VERSION": "7", "MLSERVING_RUN_ID": "run-7",
            "MLSERVING_MODEL_URI": "models:/iris/7"}


@pytest.fixture
def artifact_folder(model_dirs, tmp_path):
    """A model folder exactly as the storage initializer leaves it: the logged artifacts, no registry.json."""
    folder = shutil.copytree(model_dirs / "good-v1", tmp_path / "mnt-models")
    (folder / "registry.json").unlink()
    return folder


def test_the_predictors_environment_names_the_version(artifact_folder, monkeypatch):
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)
    loaded = load_model_dir(artifact_folder)
    assert (loaded.version, loaded.run_id, loaded.model_uri) == ("7", "run-7", "models:/iris/7")


def test_without_a_name_from_the_deployer_the_model_is_unregistered(artifact_folder, monkeypatch):
    for key in IDENTITY:
        monkeypatch.delenv(key, raising=False)
    loaded = load_model_dir(artifact_folder)
    assert (loaded.version, loaded.run_id) == ("unregistered", "")  # saved outside a run: nothing to name


def test_a_registry_file_beside_the_model_wins_over_the_environment(model_dirs, monkeypatch):
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)
    assert load_model_dir(model_dirs / "good-v2").version == "2"  # the local deploy's fetched folder
