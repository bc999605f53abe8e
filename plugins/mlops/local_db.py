"""SQLite connection arguments for the local target's Airflow metadata DB.

`airflow standalone` runs a scheduler, a DAG processor, a triggerer and the API server on one SQLite
file, and the CLI (`airflow backfill create`, ...) writes to it too; SQLite's default 5 s lock wait
is too short on a busy 2-core machine ("database is locked"). scripts/services.sh points
AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS here.
"""

CONNECT_ARGS = {"timeout": 60}
