"""Fixtures for the pipeline layer: a temp data volume and a real `mlflow server` (sqlite)."""

from __future__ import annotations

import uuid

import pytest

from mlpipeline import dataset
from mlpipeline.volume import DataVolume
from tests import support


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    with support.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture
def tracking(mlflow_server, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


@pytest.fixture
def model_name() -> str:
    """A fresh registered-model name per test: tests share one server, never state."""
    return f"iris-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def schema() -> dataset.Dataset:
    """The example dataset (datasets/iris.yaml)."""
    return dataset.load(support.EXAMPLE_DATASET)


@pytest.fixture
def volume(tmp_path, schema) -> DataVolume:
    return DataVolume(tmp_path / "volume", schema.model_name)


