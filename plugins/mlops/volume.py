"""The data volume as the Airflow side sees it: the `mlops_data` connection (type `fs`, extra `path`),
read through the standard provider's FSHook, the same connection its FileSensor uses. Pods see the
volume at `[mlops_kubernetes] data_mount` instead."""

from __future__ import annotations

from pathlib import Path

from mlops.settings import SettingsError

DATA_CONN_ID = "mlops_data"


def data_root(conn_id: str = DATA_CONN_ID) -> Path:
    from airflow.providers.standard.hooks.filesystem import FSHook

    try:
        path = FSHook(conn_id).get_path()
    except Exception as exc:  # AirflowNotFoundException: no such connection
        example = '{"conn_type": "fs", "extra": {"path": "/data"}}'
        raise SettingsError(f"the data volume's connection {conn_id!r} is not defined ({exc}); set e.g. "
                            f"AIRFLOW_CONN_{conn_id.upper()}='{example}' (docs/configuration.md)") from None
    if not path:
        raise SettingsError(f"the connection {conn_id!r} names no path (its extra `path`)")
    return Path(path)
