"""The S3-compatible object store behind MLflow's artifacts: moto's server mode on the host, listening
on the pod network's gateway, and reached in the cluster as `minio.mlops.svc.cluster.local:9000` (a
Service without a selector plus its Endpoints, as an external store is usually wired in).

Access is checked as the store's own IAM checks it (moto enforces IAM policies once its first
INITIAL_NO_AUTH_ACTION_COUNT calls, the setup below, are done): the pipeline's key may do anything
in its buckets, the predictors' key (docs/deploy.md: MinIO's `readonly` policy) only read and list
them, and any other key is refused."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tests import support

from .network import GATEWAY

REGION = "us-east-1"
# MinIO's `readonly` and AWS's read access. AWS checks s3:ListBucket for HeadBucket (which KServe's storage
# code calls first); moto names that check s3:HeadBucket, so it is listed too: the same access.
READ_ONLY = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:HeadBucket"]


@dataclass(frozen=True)
class Store:
    url: str
    pipeline: tuple[str, str]  # (access key id, secret key): may write
    serving: tuple[str, str]  # may only read


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
def object_store(root, buckets=("mlflow",)):
    """moto's S3 server on <gateway>:<free port> with the buckets and the two users made; yields a Store."""
    port = support.free_port()
    url = f"http://{GATEWAY}:{port}"
    argv = [str(support.PIPELINE_BIN / "moto_server"), "-H", GATEWAY, "-p", str(port)]
    users = {"pipeline": ["s3:*"], "serving": READ_ONLY}
    # the calls made before enforcement starts: each bucket, then per user: create, policy, key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(len(buckets) + 3 * len(users))}
    with support.daemon(argv, f"{url}/moto-api/", root / "moto.log", env=env):
        for bucket in buckets:
            urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=10)
        resources = [arn for b in buckets for arn in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")]
        keys = {}
        for user, actions in users.items():
            _iam(url, "CreateUser", UserName=user)
            _iam(url, "PutUserPolicy", UserName=user, PolicyName=f"{user}-buckets", PolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}))
            created = _iam(url, "CreateAccessKey", UserName=user)
            keys[user] = tuple(next(e.text for e in created.iter() if e.tag.endswith(name))
                               for name in ("AccessKeyId", "SecretAccessKey"))
        yield Store(url, keys["pipeline"], keys["serving"])


def store_service(namespace: str, port: int) -> list[dict]:
    """The Service and Endpoints that put the store at minio.<namespace>.svc.cluster.local:9000."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", "namespace": namespace},
         "spec": {"ports": [{"name": "s3", "port": 9000, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "minio", "namespace": namespace},
         "subsets": [{"addresses": [{"ip": GATEWAY}], "ports": [{"name": "s3", "port": port}]}]},
    ]
