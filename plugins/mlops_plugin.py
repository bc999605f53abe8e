"""The one module Airflow's plugin manager loads from this folder (.airflowignore keeps it out of
mlops/, which is imported as a package): it registers the manual-state alert listener."""

from airflow.plugins_manager import AirflowPlugin

from mlops import listeners


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    listeners = [listeners]
