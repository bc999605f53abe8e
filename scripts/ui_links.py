"""The web pages `make demo` and `make up` point users to, each one checked to open, with their logins.
Alertmanager's own page is not one of them: Debian's Alertmanager ships no web UI; its alerts are on the
Airflow UI's Alerts page (Browse > Alerts, plugins/mlops/alerts_page.py).

`python scripts/ui_links.py` prints them for the stack in $RUN_DIR (ports from the *_PORT variables
scripts/services.sh reads)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def prometheus_page(base: str, page: str) -> str:
    """A Prometheus UI page: Debian's Prometheus 2.42 serves the classic pages under /classic/ and has no
    React UI at /, upstream builds serve / (and /classic/ only in 2.x)."""
    for url in (f"{base}/{page}", f"{base}/classic/{page}"):
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            continue
    return f"{base}/classic/{page}"


def demo_links(ports: dict[str, str], model: str) -> dict[str, str]:
    airflow = f"http://127.0.0.1:{ports['airflow']}"
    return {"Airflow UI": airflow,
            "MLflow UI": f"http://127.0.0.1:{ports['mlflow']}/#/models/{model}",
            "Prometheus": prometheus_page(f"http://127.0.0.1:{ports['prometheus']}", "alerts"),
            # what Alertmanager holds, Prometheus's alerts and the notifiers' (the mlops plugin's url_route)
            "Alerts": f"{airflow}/plugin/alerts"}


def _one_quick_try():
    """MLflow's request settings for the lookups below: one try of at most 5 s, so a stack whose MLflow is down
    still prints its pages at once. MLflow reads them from the environment on every request
    (mlflow/utils/rest_utils.py http_request); they are put back afterwards."""
    from mlpipeline.environment import environment

    return environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})


def experiment_links(mlflow: str, login: tuple[str, str] | None, model: str) -> dict[str, str]:
    """The runs tables of the model's training experiment (named after the model) and of its promotions
    experiment; MLflow's experiments list until training has made them (its UI has no page by name).

    Looked up with MLflow's own client: its tracking REST store (what MlflowClient.get_experiment_by_name
    sends through), given the login as its host credentials rather than through this process's
    environment, as the Airflow side's MlflowHook does (plugins/mlops/hooks/mlflow_client.py)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds

    user, password = login or (None, None)
    store = RestStore(lambda: MlflowHostCreds(mlflow, username=user, password=password))
    links = {}
    for title, name in (("MLflow runs", model), ("MLflow promotions", f"{model}.promotions")):
        try:
            with _one_quick_try():
                experiment = store.get_experiment_by_name(name)  # None: not made yet
            found = experiment.experiment_id if experiment else None
        except MlflowException:  # no answer, or refused: the list is the page to go to
            found = None
        # in MLflow's model-training mode: its UI opens GenAI pages unless the URL asks otherwise
        links[title] = (f"{mlflow}/#/experiments/{found}/runs?workflowType=machine_learning" if found else
                        f"{mlflow}/#/experiments")
    return links


def stack_ports() -> dict[str, str]:
    """The local stack's ports, as scripts/services.sh picks them (its defaults, or the *_PORT variables)."""
    return {name: os.environ.get(f"{name.upper()}_PORT", default) for name, default in
            {"mlflow": "5000", "prometheus": "9090", "airflow": "8080", "mlops_serving": "8085",
             "alertmanager": "9093"}.items()}


def link_lines(run_dir: Path, ports: dict[str, str], model: str) -> list[str]:
    """One line per page, with the login a person uses there (the stack made them at its first start)."""
    from scripts.airflow_cli import admin_password, mlflow_login

    airflow_login = ("admin", admin_password(run_dir) or "(see airflow.log)")
    mlflow_admin = mlflow_login(run_dir)
    logins = {"Airflow UI": airflow_login, "Alerts": airflow_login,
              **dict.fromkeys(("MLflow UI", "MLflow runs", "MLflow promotions"),
                              mlflow_admin or ("admin", f"(see {run_dir}/mlflow/credentials)"))}
    lines = []
    pages = {**demo_links(ports, model), **experiment_links(f"http://127.0.0.1:{ports['mlflow']}", mlflow_admin, model)}
    for name, url in pages.items():
        login = f"  (login {logins[name][0]} / {logins[name][1]})" if name in logins else ""
        lines.append(f"{name:<17} {url}{login}")
    return lines


def model_lines(datasets: Path, ports: dict[str, str]) -> list[str]:
    """Where each dataset file's model answers once a run of its DAG has deployed it: the one router address,
    under the model's name (a file that does not parse is named with the reason; its DAG says it too)."""
    from mlpipeline.dataset import DatasetFileError, dataset_files, load

    lines = ["models, at the router once their DAG has deployed them (POST a v2 request):"]
    for file in dataset_files(datasets):
        try:
            model = load(file).model_name
        except DatasetFileError as exc:
            lines.append(f"  {file.name}: not loaded: {str(exc)[:200]}")
            continue
        lines.append(f"  {model:<24} http://127.0.0.1:{ports['mlops_serving']}/v2/models/{model}/infer"
                     f"  (DAG continuous_training_{file.stem})")
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from mlpipeline.dataset import load

    example = load(REPO / "datasets" / "iris.yaml")  # the example model's pages (each model has a DAG of its own)
    print("\n".join(link_lines(Path(os.environ["RUN_DIR"]), stack_ports(), example.model_name)))
    print("\n".join(model_lines(Path(os.environ.get("AIRFLOW__MLOPS__DATASETS_FOLDER", REPO / "datasets")),
                                stack_ports())))
    print("stop everything with: make down")
