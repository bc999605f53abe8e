"""Every setting defined once (mlops.settings), read as Airflow reads its configuration, refused by name
when it does not parse, and documented as it is defined."""

from __future__ import annotations

import dataclasses

import pytest

from mlops.settings import (
    SECTIONS,
    KubernetesSettings,
    SettingsError,
    env_name,
    kubernetes_settings,
    markdown_tables,
    mlops_settings,
    target,
)

from .conftest import REPO, cluster_settings, kubernetes_target


def test_the_target_is_airflow_configuration(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "Kubernetes ")
    assert target() == "kubernetes"
    monkeypatch.setenv("AIRFLOW__MLOPS__TARGET", "moon")
    with pytest.raises(SettingsError, match=r"\[mlops\] target must be one of local, kubernetes, got 'moon' "
                                            r"\(AIRFLOW__MLOPS__TARGET\)"):
        target()
    monkeypatch.delenv("AIRFLOW__MLOPS__TARGET")
    assert target() == "local"


@pytest.mark.parametrize(("env", "value", "message"), [
    ("AIRFLOW__MLOPS__TASK_RETRIES", "two", r"\[mlops\] task_retries \(AIRFLOW__MLOPS__TASK_RETRIES\) must be int"),
    ("AIRFLOW__MLOPS__BATCH_DEADLINE_MINUTES", "soon", "batch_deadline_minutes .* must be float"),
    ("AIRFLOW__MLOPS_KUBERNETES__REQUESTS", "[1]", r"requests .* must be dict, got '\[1\]'"),
    ("AIRFLOW__MLOPS_KUBERNETES__LABELS", "{nope", "labels .* must be dict"),
    ("AIRFLOW__MLOPS_KUBERNETES__RUN_AS_USER", "root", "run_as_user .* must be int"),
    ("AIRFLOW__MLOPS_KUBERNETES__SERVING_DEPLOYMENT_MODE", "ModelMesh", "must be Knative or Standard"),
])
def test_a_value_that_does_not_parse_is_refused_by_name(monkeypatch, env, value, message):
    kubernetes_target(monkeypatch)
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=message):
        mlops_settings() if "__MLOPS__" in env else kubernetes_settings()


def test_options_take_their_types(monkeypatch):
    kubernetes_target(monkeypatch, node_selector={"pool": "ml"}, kfp_poll_interval_seconds="2.5",
                      image_pull_secrets=["regcred"])
    monkeypatch.setenv("AIRFLOW__MLOPS__TASK_RETRIES", "5")
    cluster = kubernetes_settings()
    assert cluster.node_selector == {"pool": "ml"} and cluster.kfp_poll_interval_seconds == 2.5
    assert cluster.image_pull_secrets == ["regcred"] and cluster.run_as_user == 1000
    assert mlops_settings().task_retries == 5 and mlops_settings().retry_delay.total_seconds() == 20


def test_the_facts_about_the_cluster_have_no_default_here(monkeypatch):
    """They come from k8s-yaml/cluster.env alone; without them the settings say where to look."""
    with pytest.raises(SettingsError, match=r"\[mlops_kubernetes\] has no namespace, pipeline_image, data_pvc.* "
                                            "come from k8s-yaml/cluster.env"):
        kubernetes_settings()
    kubernetes_target(monkeypatch)
    assert kubernetes_settings() == cluster_settings()


def test_cluster_env_holds_exactly_the_facts():
    from mlops.manifests import cluster_env

    facts = {env_name("mlops_kubernetes", f.name) for f in dataclasses.fields(KubernetesSettings)
             if f.metadata.get("required")}
    # DATA_STORAGE_CLASS is a fact for kustomize alone (the data volume's class), which Airflow never reads
    assert set(cluster_env()) == facts | {"AIRFLOW__MLOPS__TARGET", "MLFLOW_TRACKING_URI", "DATA_STORAGE_CLASS"}
    assert cluster_env()["AIRFLOW__MLOPS__TARGET"] == "kubernetes"


def test_docs_show_every_option_and_connection_as_defined():
    """docs/configuration.md carries the tables the code defines: the one a reader finds is the one the
    code reads (`make configuration-docs` rewrites them)."""
    text = (REPO / "docs" / "configuration.md").read_text()
    assert markdown_tables() in text, "docs/configuration.md is stale: run `make configuration-docs`"
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"`[{section}] {f.name}`" in markdown_tables()


def test_the_dataset_folder_is_the_repository_s_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__MLOPS__DATASETS_FOLDER", raising=False)
    assert mlops_settings().datasets == REPO / "datasets"
    monkeypatch.setenv("AIRFLOW__MLOPS__DATASETS_FOLDER", str(tmp_path))
    assert mlops_settings().datasets == tmp_path
    # A folder that is not there is a mistake in the settings (an import error naming the option), not
    # "no models".
    monkeypatch.setenv("AIRFLOW__MLOPS__DATASETS_FOLDER", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match=r"\[mlops\] datasets_folder '.*missing' is not a folder "
                                            r"\(AIRFLOW__MLOPS__DATASETS_FOLDER\)"):
        _ = mlops_settings().datasets


def test_the_airflow_image_ships_the_dataset_files_where_its_setting_points():
    """The image's DAG file reads the dataset folder when parsed: the Dockerfile copies it and names it."""
    dockerfile = (REPO / "images" / "airflow" / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 datasets/ /opt/airflow/datasets/" in dockerfile
    assert "AIRFLOW__MLOPS__DATASETS_FOLDER=/opt/airflow/datasets" in dockerfile
    assert "!datasets/" in (REPO / ".dockerignore").read_text().splitlines()  # in the build context


@pytest.mark.parametrize("mode, annotation", [("Knative", "Knative"), ("Serverless", "Knative"),
                                              ("Standard", "Standard"), ("RawDeployment", "Standard")])
def test_either_name_of_a_deployment_mode_is_accepted_and_the_current_one_is_written(mode, annotation):
    """KServe v0.20 renamed the modes (its webhook rewrites the old names): a user may set either, and the
    InferenceService carries the name the webhook would write, so no apply re-sends a field it changed."""
    from mlops.inference_service import MODE_ANNOTATION, inference_service, is_standard

    from .conftest import cluster_settings

    service = inference_service("iris", "3", "run-1", "s3://mlflow/1/m/artifacts",
                                cluster_settings(serving_deployment_mode=mode))
    assert service["metadata"]["annotations"][MODE_ANNOTATION] == annotation
    assert is_standard(mode) == (annotation == "Standard")
