"""The object store's two keys, as the pods that hold them use them on the emulated cluster (whose store
checks IAM policies, tests/cluster/storage.py): the pipeline's pods (the mlflow-s3-credentials Secret)
write, the predictors (the mlops-serving-s3 Secret their service account lists, which KServe's storage
initializer reads) can only read. That the storage initializer downloads a served version with it is
checked by every deploy on the cluster (test_dag_kubernetes_contract.py, test_kserve_contract.py)."""

from __future__ import annotations

import base64

from tests.cluster.apiserver import SECRETS, SERVICE_ACCOUNTS
from tests.cluster.cluster import STORAGE_INITIALIZER

# In the storage initializer's image: the boto3 KServe's storage code downloads with.
S3 = ("import boto3, botocore, sys\n"
      "s3 = boto3.client('s3', endpoint_url='http://minio.mlops.svc.cluster.local:9000')\n"
      "def attempt(what, call):\n"
      "    try:\n"
      "        call(); print(what, 'allowed')\n"
      "    except botocore.exceptions.ClientError as error:\n"
      "        print(what, 'refused', error.response['Error']['Code'])\n")


def test_the_pipeline_key_writes_and_the_predictor_key_only_reads(cluster):
    phase, log = cluster.run_python("s3-pipeline", "mlops", S3 + (
        "attempt('put', lambda: s3.put_object(Bucket='mlflow', Key='probe/model.skops', Body=b'weights'))\n"),
        secret="mlflow-s3-credentials", image=STORAGE_INITIALIZER)
    assert phase == "Succeeded" and "put allowed" in log, log

    account = cluster.kube.stored(SERVICE_ACCOUNTS, "mlops-serving", "mlops-serving")
    [secret] = [s["name"] for s in account["secrets"]]
    data = cluster.kube.stored(SECRETS, "mlops-serving", secret)["data"]
    assert not {k for k in data if k.startswith("MLFLOW_")}  # no MLflow login for a predictor
    assert base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode() == cluster.store.serving[0]

    phase, log = cluster.run_python("s3-predictor", "mlops-serving", S3 + (
        "attempt('get', lambda: s3.get_object(Bucket='mlflow', Key='probe/model.skops')['Body'].read())\n"
        "attempt('list', lambda: s3.list_objects_v2(Bucket='mlflow', Prefix='probe/'))\n"
        "attempt('put', lambda: s3.put_object(Bucket='mlflow', Key='probe/model.skops', Body=b'planted'))\n"
        "attempt('delete', lambda: s3.delete_object(Bucket='mlflow', Key='probe/model.skops'))\n"
        "print('kept', s3.get_object(Bucket='mlflow', Key='probe/model.skops')['Body'].read())\n"),
        secret=secret, image=STORAGE_INITIALIZER)
    assert phase == "Succeeded", log
    assert "get allowed" in log and "list allowed" in log, log
    assert "put refused AccessDenied" in log and "delete refused AccessDenied" in log, log
    assert "kept b'weights'" in log, log
