"""Make the pipeline's MLflow login, as MLflow's admin: a user who is not an admin, so that whoever holds
the pipeline's Secret can run the pipeline (create its experiments and registered models, which MLflow
then lets it manage, and write to them) but not manage MLflow's users or other users' work.

Run by the `mlflow-pipeline-user` Job (k8s-yaml/mlflow/) and by scripts/services.sh, after the server
is up. Reads MLFLOW_TRACKING_URI and the admin's login as MLFLOW_TRACKING_USERNAME/_PASSWORD (MLflow's
client reads them), and the pipeline's as PIPELINE_MLFLOW_USERNAME/_PASSWORD. Idempotent:

- a new user is made with that password and given MANAGE on every experiment (but MLflow's Default)
  and registered model that exists then: until this user existed the pipeline logged in as the admin,
  so they are its own;
- an existing user gets that password (how the pipeline's password is rotated) and is not made an admin.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
import warnings

WAIT_SECONDS = 300


def wait_for(uri: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"pipeline_user: MLflow did not answer at {uri}/health within {seconds:.0f} s")
        time.sleep(2)


def ensure(uri: str, username: str, password: str) -> str:
    # mlflow.server's FastAPI app imports a Starlette module Starlette deprecates: MLflow's, not ours to act on.
    warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=uri)
    try:
        user = auth.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        user = None
    # The pipeline reads what it did not create (a model's alias before its first version) through the
    # server's default_permission: READ in the basic_auth.ini the project ships.
    if user is not None:
        if user.is_admin:
            raise SystemExit(f"pipeline_user: MLflow user {username!r} is an admin; the pipeline's login must be a "
                             "user of its own (set another MLFLOW_TRACKING_USERNAME in the pipeline's Secret)")
        auth.update_user_password(username, password)
        return f"MLflow user {username!r} exists; its password is the pipeline Secret's"
    client = MlflowClient(uri)
    # MLflow's Default experiment (id 0) is the server's, not the pipeline's.
    experiments = [e.experiment_id for e in _all(lambda token: client.search_experiments(
        view_type=ViewType.ALL, max_results=1000, page_token=token)) if e.experiment_id != "0"]
    models = [m.name for m in _all(lambda token: client.search_registered_models(max_results=1000, page_token=token))]
    auth.create_user(username, password)
    try:
        for experiment_id in experiments:
            auth.grant_user_permission(username, "experiment", experiment_id, "MANAGE")
        for name in models:
            auth.grant_user_permission(username, "registered_model", name, "MANAGE")
    except BaseException:
        # All or nothing: a user without the hand-over would pass for a finished one at the next try.
        auth.delete_user(username)
        raise
    return (f"made MLflow user {username!r} (not an admin); it manages the {len(experiments)} experiments and "
            f"{len(models)} registered models that existed")


def _all(page):
    token = None
    while True:
        found = page(token)
        yield from found
        token = found.token
        if not token:
            return


def main() -> int:
    missing = [name for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                 "PIPELINE_MLFLOW_USERNAME", "PIPELINE_MLFLOW_PASSWORD") if not os.environ.get(name)]
    if missing:
        print(f"pipeline_user: error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    uri, username = os.environ["MLFLOW_TRACKING_URI"].rstrip("/"), os.environ["PIPELINE_MLFLOW_USERNAME"]
    if username == os.environ["MLFLOW_TRACKING_USERNAME"]:
        print(f"pipeline_user: error: the pipeline's MLflow login {username!r} is the admin's; give the pipeline "
              "a user of its own", file=sys.stderr)
        return 2
    wait_for(uri, WAIT_SECONDS)
    print(f"pipeline_user: {ensure(uri, username, os.environ['PIPELINE_MLFLOW_PASSWORD'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
