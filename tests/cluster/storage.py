"""The S3-compatible object store behind MLflow's artifacts: moto's server mode on the host, listening
on the pod network's gateway, and reached in the cluster as `minio.mlops.svc.cluster.local:9000` (a
Service without a selector plus its Endpoints, as an external store is usually wired in).

Access is checked as the store's own IAM checks it (moto enforces IAM policies once its first
INITIAL_NO_AUTH_ACTION_COUNT calls, the setup below, are done): the pipeline's key may do anything
in its buckets, the predictors' key only read and list them (k8s-yaml/storage/serving-read-policy.json,
which the deploy guide attaches), Airflow's task-log key only list, read and write the airflow-logs
bucket (k8s-yaml/storage/airflow-logs-policy.json, helm-values/airflow.yaml's remote logging), and any
other key is refused."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tests import support
from tests.support import REPO

from .network import GATEWAY

REGION = "us-east-1"
# The predictors' policy as the deploy guide has users attach it. AWS and MinIO check s3:ListBucket for
# HeadBucket (which KServe's storage code calls first); moto names that check s3:HeadBucket, so the
# emulated store's copy adds it where ListBucket is granted: the same access.
SERVING_POLICY = REPO / "k8s-yaml" / "storage" / "serving-read-policy.json"
# Airflow's task logs: a bucket of their own, and a key that reaches only it (the deploy guide, step 2).
LOGS_POLICY = REPO / "k8s-yaml" / "storage" / "airflow-logs-policy.json"
LOGS_BUCKET = "airflow-logs"


def store_policy(path) -> dict:
    """A policy file as the deploy guide has users attach it, with moto's name for HeadBucket's check."""
    policy = json.loads(path.read_text())
    for statement in policy["Statement"]:
        if "s3:ListBucket" in statement["Action"]:
            statement["Action"] = [*statement["Action"], "s3:HeadBucket"]
    return policy


def serving_policy() -> dict:
    return store_policy(SERVING_POLICY)


@dataclass(frozen=True)
class Store:
    url: str
    pipeline: tuple[str, str]  # (access key id, secret key): may write
    serving: tuple[str, str]  # may only read
    logs: tuple[str, str]  # Airflow's task logs: the airflow-logs bucket only


def _iam(url: str, action: str, **params: str) -> ET.Element:
    """One call of IAM's query API. moto routes a request by the service its credential scope names and,
    while its setup calls last, does not check the signature."""
    body = urllib.parse.urlencode({"Action": action, "Version": "2010-05-08", **params}).encode()
    scope = {"Authorization": f"AWS4-HMAC-SHA256 Credential=setup/20260101/{REGION}/iam/aws4_request, "
                              "SignedHeaders=host, Signature=0"}
    request = urllib.request.Request(url, data=body, method="POST", headers=scope)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return ET.fromstring(answer.read())


@contextlib.contextmanager
def object_store(root, buckets=("mlflow",), host: str = GATEWAY):
    """moto's S3 server on <host>:<free port> (the pod network's gateway: reached from the pods) with the
    buckets, the task logs' bucket and the three users made; yields a Store."""
    port = support.free_port()
    url = f"http://{host}:{port}"
    argv = [str(support.PIPELINE_BIN / "moto_server"), "-H", host, "-p", str(port)]
    resources = [arn for b in buckets for arn in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")]
    users = {"pipeline": {"Version": "2012-10-17",
                          "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": resources}]},
             "serving": serving_policy(), "logs": store_policy(LOGS_POLICY)}
    made = (*buckets, LOGS_BUCKET)
    # the calls made before enforcement starts: each bucket, then per user: create, policy, key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(len(made) + 3 * len(users))}
    with support.daemon(argv, f"{url}/moto-api/", root / "moto.log", env=env):
        for bucket in made:
            urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=10)
        keys = {}
        for user, policy in users.items():
            _iam(url, "CreateUser", UserName=user)
            _iam(url, "PutUserPolicy", UserName=user, PolicyName=f"{user}-buckets", PolicyDocument=json.dumps(policy))
            created = _iam(url, "CreateAccessKey", UserName=user)
            keys[user] = tuple(next(e.text for e in created.iter() if e.tag.endswith(name))
                               for name in ("AccessKeyId", "SecretAccessKey"))
        yield Store(url, keys["pipeline"], keys["serving"], keys["logs"])


def store_service(namespace: str, port: int) -> list[dict]:
    """The Service and Endpoints that put the store at minio.<namespace>.svc.cluster.local:9000."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", "namespace": namespace},
         "spec": {"ports": [{"name": "s3", "port": 9000, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "minio", "namespace": namespace},
         "subsets": [{"addresses": [{"ip": GATEWAY}], "ports": [{"name": "s3", "port": port}]}]},
    ]
