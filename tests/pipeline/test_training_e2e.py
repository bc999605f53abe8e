"""End to end through the CLI: kfp.local training runs against a real MLflow server.

The scenario the product exists for: train on clean data -> a clean batch does
not displace the champion -> a concept-drift batch degrades it -> retraining
promotes a challenger that beats the old champion on the drifted data.
"""

from __future__ import annotations

import json
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.support import EXAMPLE_DATASET, tree_snapshot

from .helpers import run_cli

pytestmark = pytest.mark.slow

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


EXAMPLE = ["--dataset", EXAMPLE_DATASET]


def stage(volume, partition, rows, seed, drift="none", severity=1.0):
    root = volume.root
    run_cli("simulate", "--data-root", root, "--partition", partition, "--rows", rows, "--seed", seed,
            "--drift", drift, "--severity", severity, *EXAMPLE)
    run_cli("ingest", "--data-root", root, "--partition", partition, *EXAMPLE)
    return run_cli("split", "--data-root", root, "--partition", partition, *EXAMPLE).json["run_key"]


@pytest.mark.timeout(600)
def test_continuous_training_scenario(volume, tracking, model_name):
    client = MlflowClient(tracking)
    root, name = volume.root, ["--model-name", model_name]

    # Day 1: no champion yet.
    rk1 = stage(volume, DAYS[0], 1500, seed=1)
    detect1 = run_cli("detect", "--data-root", root, "--run-key", rk1, *name).json
    assert detect1["champion"] is None and detect1["degraded_by_definition"] and "no champion" in detect1["reason"]
    train1 = run_cli("train-local", "--data-root", root, "--run-key", rk1, *name,
                     "--dag-id", "continuous_training", "--dag-run-id", "manual__1").json
    assert train1["decision"] == "promote" and train1["champion_version"] is None and train1["kfp_run_id"]
    reg1 = run_cli("register", "--data-root", root, "--run-key", rk1, *name,
                   "--dag-id", "continuous_training", "--dag-run-id", "manual__1").json
    assert reg1["created"] and reg1["version"] == "1" and reg1["champion_version"] == "1"
    after_promotion_1 = int(time.time() * 1000)

    v1 = client.get_model_version(model_name, "1")
    assert v1.tags["run_key"] == rk1 and v1.tags["decision"] == "promote"
    for tag in ("data_fingerprint", "config_hash", "code_version", "kfp_run_id", "test_accuracy", "partition"):
        assert v1.tags[tag], tag
    assert v1.tags["airflow_dag_id"] == "continuous_training" and v1.tags["airflow_run_id"] == "manual__1"
    assert v1.tags["kfp_run_id"] == train1["kfp_run_id"]
    training_run = client.get_run(v1.run_id)
    assert training_run.data.metrics["test_accuracy"] > 0.9
    # The decision is recorded whole on the training run (the contract the kubernetes target reads back)
    # and is what train-local returned, less the kfp.local run's own fields.
    from mlpipeline.contracts import TrainingDecision

    recorded = TrainingDecision.from_tags(training_run.data.tags)
    assert recorded.to_dict() == {k: v for k, v in train1.items() if k not in ("pipeline_root", "engine")}
    assert training_run.data.tags["run_key"] == rk1
    assert not [k for k in {**v1.tags, **training_run.data.tags} if k.startswith("pull.")]  # landed, not pulled
    assert [i.dataset.digest for i in training_run.inputs.dataset_inputs]  # the dataset and its fingerprint

    # The model is logged so that a serving runtime can load it: signature with column names, an input example.
    model_info = mlflow.models.get_model_info(f"models:/{model_name}/1")
    assert [c.name for c in model_info.signature.inputs.inputs] == \
        ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert model_info.saved_input_example_info

    # Register again with the same run key: nothing changes.
    assert not run_cli("register", "--data-root", root, "--run-key", rk1, *name).json["created"]
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1

    # Day 2: more clean data; the challenger is no better, so it is registered but not promoted.
    rk2 = stage(volume, DAYS[1], 1500, seed=2)
    detect2 = run_cli("detect", "--data-root", root, "--run-key", rk2, *name).json
    assert detect2["champion"]["version"] == "1" and detect2["fresh_metrics"]["accuracy"] > 0.9
    assert detect2["drift"]["drifted_features"] == []
    # the champion scored on the test set it was chosen on (its run's folder), against the fresh batch
    assert detect2["degradation"]["status"] == "measured" and not detect2["degradation"]["degraded"]
    manifest1 = json.loads((volume.run_dir(rk1) / "manifest.json").read_text())
    assert detect2["degradation"]["reference_rows"] == manifest1["sets"]["test"]["rows"]
    assert detect2["degradation"]["served_batches"] == 0
    train2 = run_cli("train-local", "--data-root", root, "--run-key", rk2, *name).json
    assert train2["decision"] == "reject" and train2["champion_version"] == "1"
    reg2 = run_cli("register", "--data-root", root, "--run-key", rk2, *name).json
    assert reg2["version"] == "2" and reg2["promotion"] is None and reg2["champion_version"] == "1"
    assert client.get_model_version_by_alias(model_name, "challenger").version == "2"
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    assert client.get_model_version(model_name, "2").tags["decision"] == "reject"

    # Day 3: concept drift. detect shows the drop; retraining promotes a better model.
    rk3 = stage(volume, DAYS[2], 1500, seed=3, drift="concept", severity=1.0)
    detect3 = run_cli("detect", "--data-root", root, "--run-key", rk3, *name).json
    assert detect3["fresh_metrics"]["accuracy"] < 0.2 < detect2["fresh_metrics"]["accuracy"] - 0.5
    # day 2's batch, which v1 served without being found degraded, joins its test set as the earlier score
    assert detect3["degradation"]["degraded"] and detect3["degradation"]["pvalue"] < 1e-6
    assert detect3["degradation"]["served_batches"] == 1
    assert detect3["degradation"]["reference_rows"] == manifest1["sets"]["test"]["rows"] + 1500
    train3 = run_cli("train-local", "--data-root", root, "--run-key", rk3, *name).json
    assert train3["decision"] == "promote" and train3["mcnemar"]["pvalue"] < 0.05
    reg3 = run_cli("register", "--data-root", root, "--run-key", rk3, *name).json
    assert reg3["version"] == "3" and reg3["champion_version"] == "3"
    assert reg3["promotion"]["previous_version"] == "1"

    fresh = pd.read_parquet(volume.run_dir(rk3) / "fresh.parquet")
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    new = mlflow.sklearn.load_model(f"models:/{model_name}@champion")
    old = mlflow.sklearn.load_model(f"models:/{model_name}/1")
    new_acc = np.mean(new.predict(fresh[features]) == fresh["species"])
    old_acc = np.mean(old.predict(fresh[features]) == fresh["species"])
    assert new_acc > 0.9 > 0.2 > old_acc

    # "Which version was champion at time T" is answered from MLflow's promotion record.
    history = run_cli("champion-at", "--model-name", model_name, "--time", "now").json
    assert history["champion_version"] == "3"
    assert [(e["event"], e["version"]) for e in history["history"]] == [("promote", "1"), ("promote", "3")]
    import datetime as dt

    at = dt.datetime.fromtimestamp(after_promotion_1 / 1000, dt.UTC).isoformat()
    assert run_cli("champion-at", "--model-name", model_name, "--time", at).json["champion_version"] == "1"
    before_any = run_cli("champion-at", "--model-name", model_name, "--time", "2000-01-01T00:00:00").json
    assert before_any["champion_version"] is None
    assert client.get_model_version(model_name, "1").tags["champion_until_ms"]

    # A rollback is recorded like a promotion; an unknown version is refused and changes nothing.
    refused = run_cli("rollback", "--model-name", model_name, "--to-version", "9", "--from-version", "3",
                      "--reason", "x", check=False)
    assert refused.returncode == 1 and f"{model_name} has no version '9'" in refused.error_line
    assert client.get_model_version_by_alias(model_name, "champion").version == "3"
    rolled = run_cli("rollback", "--model-name", model_name, "--to-version", "1", "--from-version", "3",
                     "--reason", "smoke test failed").json
    assert rolled["event"] == "rollback" and rolled["previous_version"] == "3"
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    events = run_cli("champion-at", "--model-name", model_name).json["history"]
    assert [(e["event"], e["version"], e["reason"]) for e in events][-1] == ("rollback", "1", "smoke test failed")
    # No version to go back to (a first deploy failed): nothing moves, and the result says so.
    nothing = run_cli("rollback", "--model-name", model_name, "--reason", "deploy of v1 failed").json
    assert nothing == {"model_name": model_name, "rolled_back": False, "reason": "deploy of v1 failed"}
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"


def test_training_twice_with_one_run_key_reuses_the_model_never_its_decided_run_and_registers_once(
        volume, schema, tracking, model_name):
    """In-process (no kfp.local start-up cost): the same stage functions the components call. An attempt that
    stopped before deciding is continued in its run; once a run decided (and here made v1), a re-run of its
    run key reuses its model but evaluates and decides in a run of its own: v1's source run, read through
    MLflow's own client, is the same before and after (params, metrics, tags, end time)."""
    from mlpipeline.config import run_config
    from mlpipeline.ingest import ingest_partition
    from mlpipeline.register import register_run
    from mlpipeline.simulate import simulate, to_csv_bytes
    from mlpipeline.split import split_partition
    from mlpipeline.training import decide_promotion, evaluate_models, train_challenger

    volume.landing(DAYS[0]).mkdir(parents=True)
    (volume.landing(DAYS[0]) / "b.csv").write_bytes(to_csv_bytes(simulate(schema, 600, seed=9)))
    ingest_partition(volume, DAYS[0], schema)
    rk = split_partition(volume, DAYS[0], schema, run_config(schema))["run_key"]
    first = train_challenger(volume, rk, model_name, {})
    resumed = train_challenger(volume, rk, model_name, {})  # a retry before the decision: the same run
    assert resumed["reused"] and resumed["run_id"] == first["run_id"]
    evaluate_models(volume, rk, model_name, first["run_id"])
    decide_promotion(volume, rk)
    registered = register_run(volume, rk, model_name, {})
    assert registered["created"] and registered["outcome"] == "promoted"
    client = MlflowClient(tracking)
    v1_tags = client.get_model_version(model_name, "1").tags
    import datetime as dt

    assert dt.datetime.fromisoformat(v1_tags["champion_since"]) == dt.datetime.fromtimestamp(
        int(v1_tags["champion_since_ms"]) / 1000, dt.UTC)
    for experiment in (model_name, f"{model_name}.promotions"):  # opened by MLflow's UI as model training
        assert client.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"

    def record(run_id: str) -> tuple:
        run = client.get_run(run_id)
        return run.data.params, run.data.metrics, run.data.tags, run.info.end_time, run.info.status

    source_before = record(first["run_id"])
    second = train_challenger(volume, rk, model_name, {"airflow_run_id": "manual__forced"})
    assert second["reused"] and second["run_id"] != first["run_id"] and second["rerun_of"] == first["run_id"]
    assert second["model_uri"] == first["model_uri"]
    evaluate_models(volume, rk, model_name, second["run_id"])
    redecided = decide_promotion(volume, rk)
    assert redecided["challenger_run_id"] == second["run_id"]
    assert redecided["decision"] == "reject" and redecided["champion_version"] == "1"  # v1 against itself
    assert record(first["run_id"]) == source_before  # history: never written again
    rerun = client.get_run(second["run_id"]).data.tags
    assert rerun["rerun_of"] == first["run_id"] and rerun["decision"] == "reject"
    assert rerun["airflow_run_id"] == "manual__forced" and rerun["run_key"] == rk
    again = register_run(volume, rk, model_name, {})
    assert not again["created"] and again["version"] == "1" and again["promotion"] is None
    # What a re-run reports is what happened, not the training decision it read again.
    assert again["decision"] == "reject" and again["outcome"] == "already_registered"
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert client.get_model_version(model_name, "1").run_id == first["run_id"]
    runs = client.search_runs([client.get_experiment_by_name(model_name).experiment_id],
                              f"tags.run_key = '{rk}' and tags.stage = 'train'")
    assert len(runs) == 2  # the run that made v1, and the re-run's own
    assert len(run_cli("champion-at", "--model-name", model_name).json["history"]) == 1

    # What the serving runtime gets: the model directory plus registry.json naming the version.
    dest = volume.root / "serving" / model_name
    fetched = run_cli("fetch-model", "--model-name", model_name, "--alias", "champion", "--dest", dest).json
    assert fetched["version"] == "1" and (dest / "MLmodel").is_file() and list(dest.glob("*.skops"))
    import json

    assert json.loads((dest / "registry.json").read_text())["version"] == "1"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    missing = run_cli("fetch-model", "--model-name", model_name, "--alias", "nope", "--dest", dest, check=False)
    assert missing.returncode == 1 and "has no version with alias 'nope'" in missing.error_line
    assert (dest / "MLmodel").is_file()  # a failed fetch leaves the served copy alone
    into = run_cli("fetch-model", "--model-name", model_name, "--alias", "champion", "--into", dest.parent).json
    assert into["model_dir"] == str((dest.parent / "v1").resolve()) and (dest.parent / "v1" / "MLmodel").is_file()


def test_stages_fail_with_one_line_on_bad_input(volume, tracking, model_name, mlflow_server):
    rk = stage(volume, DAYS[0], 300, seed=4)
    before = tree_snapshot(volume.root / "curated")
    cases = [
        (["detect", "--data-root", volume.root, "--run-key", "rk-unknown"], "unknown run key rk-unknown"),
        (["register", "--data-root", volume.root, "--run-key", rk], "decision.json: run the earlier stage first"),
        (["train-local", "--data-root", volume.root, "--run-key", "nope"], "run nope has no split"),
        (["detect", "--data-root", volume.root, "--run-key", rk, "--tracking-uri", "http://127.0.0.1:9"],
         "http://127.0.0.1:9"),
        (["champion-at", "--time", "yesterday"], "--time must be ISO 8601"),
    ]
    for args, message in cases:
        result = run_cli(*args, "--model-name", model_name, check=False, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        assert result.returncode == 1 and result.stdout == "", args
        assert message in result.error_line, (args, result.stderr[-2000:])
    assert tree_snapshot(volume.root / "curated") == before
    assert MlflowClient(mlflow_server).search_model_versions(f"name = '{model_name}'") == []


@pytest.mark.timeout(600)
def test_a_champion_that_would_run_code_fails_detect_and_training_and_moves_nothing(volume, tracking, model_name,
                                                                                   tmp_path):
    """Whoever can write to the registry plants a champion whose skops file calls os.system: detect and
    training refuse to load it with one line naming it; nothing runs, nothing moves."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from .test_model_registry import hostile_version

    marker = tmp_path / "ran"
    client = MlflowClient(tracking)
    with _use_tracking_uri(tracking):
        registry, planted = hostile_version(client, model_name, tmp_path, "skops trusting os.system", marker)
    registry.move_champion(planted, "promote", "planted", {}, expected=None)
    history = registry.champion_history()
    rk = stage(volume, DAYS[0], 300, seed=6)  # the split is the stages' input; it needs no MLflow
    refusal = f"refused to load {model_name} v{planted.version}: the model asks skops to trust ['posix.system']"
    for args in (["detect", "--data-root", volume.root, "--run-key", rk],
                 ["train-local", "--data-root", volume.root, "--run-key", rk]):
        result = run_cli(*args, "--model-name", model_name, check=False, env={"MLFLOW_TRACKING_URI": tracking})
        # detect's own error line; train-local's names the failed step, whose log above it has the refusal
        assert result.returncode == 1 and refusal in result.stderr, (args, result.stderr[-2000:])
        assert result.error_line.startswith(f"mlpipeline {args[0]}: error: ")
    assert refusal in run_cli("detect", "--data-root", volume.root, "--run-key", rk, "--model-name", model_name,
                              check=False, env={"MLFLOW_TRACKING_URI": tracking}).error_line
    assert not marker.exists()
    assert registry.champion().version == planted.version and registry.champion_history() == history
    assert [v.version for v in client.search_model_versions(f"name = '{model_name}'")] == [planted.version]


def test_a_promotion_decided_against_a_champion_that_has_changed_is_not_applied(volume, schema, tracking,
                                                                               model_name):
    """Two runs trained while there was no champion both decide promote; the first registers and is
    promoted; the second was never compared with it, so it stays the challenger."""
    from mlpipeline.config import run_config
    from mlpipeline.ingest import ingest_partition
    from mlpipeline.register import register_run
    from mlpipeline.simulate import simulate, to_csv_bytes
    from mlpipeline.split import split_partition
    from mlpipeline.training import decide_promotion, evaluate_models, train_challenger

    keys = []
    for day, seed in ((DAYS[0], 11), (DAYS[1], 12)):
        volume.landing(day).mkdir(parents=True)
        (volume.landing(day) / "b.csv").write_bytes(to_csv_bytes(simulate(schema, 600, seed=seed)))
        ingest_partition(volume, day, schema)
        rk = split_partition(volume, day, schema, run_config(schema))["run_key"]
        trained = train_challenger(volume, rk, model_name, {})
        evaluate_models(volume, rk, model_name, trained["run_id"])
        assert decide_promotion(volume, rk)["decision"] == "promote"
        keys.append(rk)
    assert register_run(volume, keys[0], model_name, {})["outcome"] == "promoted"
    late = register_run(volume, keys[1], model_name, {})
    assert late["outcome"] == "superseded" and late["promotion"] is None and late["champion_version"] == "1"
    assert MlflowClient(tracking).get_model_version_by_alias(model_name, "champion").version == "1"


def test_a_failed_training_step_fails_train_local_with_one_line(volume, tracking, model_name):
    rk = stage(volume, DAYS[0], 300, seed=6)
    (volume.run_dir(rk) / "train.parquet").write_bytes(b"not parquet")
    result = run_cli("train-local", "--data-root", volume.root, "--run-key", rk, "--model-name", model_name,
                     check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "the kfp.local training run failed; its failed step's log is above" in result.error_line
    assert "train.parquet" in result.stderr
    assert MlflowClient(tracking).search_model_versions(f"name = '{model_name}'") == []
