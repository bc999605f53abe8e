"""The web pages `make demo` points users to, each one checked to open."""

from __future__ import annotations

import httpx


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
    return {"Airflow UI": f"http://127.0.0.1:{ports['airflow']}",
            "MLflow UI": f"http://127.0.0.1:{ports['mlflow']}/#/models/{model}",
            "Prometheus": prometheus_page(f"http://127.0.0.1:{ports['prometheus']}", "alerts"),
            "Alertmanager": f"http://127.0.0.1:{ports['alertmanager']}/#/alerts"}
