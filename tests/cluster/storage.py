"""The S3-compatible object store behind MLflow's artifacts: moto's server mode on the host, listening
on the pod network's gateway, and reached in the cluster as `minio.mlops.svc.cluster.local:9000` (a
Service without a selector plus its Endpoints, as an external store is usually wired in)."""

from __future__ import annotations

import contextlib
import urllib.request

from tests import support

from .network import GATEWAY

ACCESS_KEY, SECRET_KEY, REGION = "mlops-ct-tests", "mlops-ct-tests-secret", "us-east-1"


@contextlib.contextmanager
def object_store(root, buckets=("mlflow",)):
    """moto's S3 server on <gateway>:<free port>; yields its endpoint URL with the buckets made."""
    port = support.free_port()
    url = f"http://{GATEWAY}:{port}"
    argv = [str(support.PIPELINE_BIN / "moto_server"), "-H", GATEWAY, "-p", str(port)]
    with support.daemon(argv, f"{url}/moto-api/", root / "moto.log"):
        for bucket in buckets:
            urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=10)
        yield url


def store_service(namespace: str, port: int) -> list[dict]:
    """The Service and Endpoints that put the store at minio.<namespace>.svc.cluster.local:9000."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", "namespace": namespace},
         "spec": {"ports": [{"name": "s3", "port": 9000, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "minio", "namespace": namespace},
         "subsets": [{"addresses": [{"ip": GATEWAY}], "ports": [{"name": "s3", "port": port}]}]},
    ]
