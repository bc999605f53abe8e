"""What `dag.test()` needs beside an initialised metadata DB, for the tests and the benchmarks alike: the
dataset file a test's DAG is made from, and Airflow's deadline alerts decoded."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DATASET = REPO / "datasets" / "iris.yaml"


def dataset_file(folder: Path, name: str = "iris", **changes) -> Path:
    """The example dataset file (datasets/iris.yaml) as `folder/<name>.yaml`, its top-level keys replaced by
    `changes` (e.g. model_name="iris-dagtest"): the DAG `continuous_training_<name>` once `[mlops]
    datasets_folder` is `folder`. A test's own model name keeps its registry, landing area and served model
    apart from every other test's."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(dataset_text(**changes))
    return path


def dataset_text(**changes) -> str:
    """The example dataset file's text with top-level keys replaced (model_name=..., model={...})."""
    import yaml

    return yaml.safe_dump({**yaml.safe_load(EXAMPLE_DATASET.read_text()), **changes}, sort_keys=False)


@contextmanager
def deadline_alerts_decoded():
    """dag.test() builds its scheduler DAG by serializing the DAG in memory, so `dag.deadline` holds the
    encoded alerts instead of the ids of `deadline_alert` rows, and a run that succeeds crashes in
    DagRun.update_state (`'dict' object has no attribute 'hex'`): apache/airflow#73428 (3.3.1, 3.3.2). The
    fix proposed upstream (apache/airflow#73430) decodes a dict entry instead of looking it up; this does
    the same, for dag.test() only. The live-stack tests run the real scheduler, unpatched."""
    from airflow.models.deadline_alert import DeadlineAlert

    by_id, original = DeadlineAlert.get_by_id, DeadlineAlert.__dict__["get_by_id"]  # bound, and as declared

    def get_by_id(deadline_alert_id, **kwargs):
        if isinstance(deadline_alert_id, dict):
            return DeadlineAlert(name=deadline_alert_id.get("name"), reference=deadline_alert_id["reference"],
                                 interval=deadline_alert_id["interval"], callback_def=deadline_alert_id["callback"])
        return by_id(deadline_alert_id, **kwargs)

    DeadlineAlert.get_by_id = get_by_id
    try:
        yield
    finally:
        DeadlineAlert.get_by_id = original
