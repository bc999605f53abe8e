"""What a real installation needs of k8s-yaml/, helm-values/ and docs/deploy.md beyond what the emulated
cluster runs (issue 31): each test here decides with the real rule of the system involved (Istio's
AuthorizationPolicy and sidecar, KFP's authorisation, Airflow's own choice of log handler, an S3 store's
IAM, `kubectl kustomize`, Prometheus's relabelling) and fails on the manifests as they were before.

1. The istio-auth policy on the ingress gateway lets Serverless's second hop through Knative's
   cluster-local gateway (the same pods, port 8081) and still asks the public hosts for a JWT.
2. Multi-user KFP: a projected token for KFP's audience where the KFP hook runs, Roles for each KFP call,
   the multi-user API host in the guide.
3. Task logs go to the object store, with a key that reaches only their bucket.
4. Knative's domain is an optional component (operator or ConfigMap), nothing of Knative in the base.
5. The data volume's storage class is a fact in cluster.env.
6. The model server's metrics reach Prometheus under PERMISSIVE and STRICT mTLS.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlops.inference_service import inference_route, inference_service
from mlops.manifests import cluster_env
from tests.cluster.apiserver import PODS, KubeEmulator
from tests.cluster.cluster import STORAGE_INITIALIZER, airflow_identity, kustomization_objects
from tests.cluster.gateway import LOCAL_GATEWAY_PORT, PUBLIC_HTTPS_PORT, Request, authorize
from tests.cluster.kserve import KServeController
from tests.cluster.network import inject_sidecar, plaintext_accepted
from tests.cluster.storage import LOGS_BUCKET, object_store
from tests.cluster.workloads import DeploymentController

from .conftest import REPO, cluster_settings
from .test_monitoring_contract import PODMONITOR, scrape_targets

K8S = REPO / "k8s-yaml"
VALUES = yaml.safe_load((REPO / "helm-values" / "airflow.yaml").read_text())
DEPLOY_GUIDE = (REPO / "docs" / "deploy.md").read_text()


def objects(path: Path) -> list[dict]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


# -- 1. the ingress gateway's AuthorizationPolicy ---------------------------------------------------------
POLICIES = objects(K8S / "istio-auth" / "authorizationpolicy.yaml")
JWT = "https://issuer.example.com/alice"  # <iss>/<sub> of a token requestauthentication.yaml accepts
# net-istio's Service for the cluster-local gateway: port 80 to the gateway pods' 8081
# (knative-extensions/net-istio config/203-local-gateway.yaml).
LOCAL_GATEWAY_SERVICE = ("knative-local-gateway.istio-system.svc.cluster.local", {80: LOCAL_GATEWAY_PORT})


def second_hop(model: str) -> Request:
    """The request the gateway receives again after the model's VirtualService (as the deploy task writes
    it in Serverless mode) sent it to knative-local-gateway: Host rewritten, the JWT not forwarded."""
    [rule] = inference_route(model, cluster_settings(serving_deployment_mode="Serverless"))["spec"]["http"]
    [destination] = [r["destination"] for r in rule["route"]]
    host, ports = LOCAL_GATEWAY_SERVICE
    assert destination["host"] == host
    return Request(host=rule["rewrite"]["authority"], port=ports[destination["port"]["number"]],
                   path=f"/v2/models/{model}/infer", method="POST")


def test_serverless_second_hop_and_knatives_local_probes_are_admitted():
    hop = second_hop("iris-classifier")
    assert hop.host == "iris-classifier-predictor.mlops-serving.svc.cluster.local" and hop.request_principal is None
    assert authorize(POLICIES, hop)
    # net-istio's prober: each host form of the cluster-local route, on each gateway pod's 8081
    for host in ("iris-classifier-predictor.mlops-serving", "iris-classifier-predictor.mlops-serving.svc",
                 "iris-classifier-predictor.mlops-serving.svc.cluster.local"):
        assert authorize(POLICIES, Request(host=host, port=LOCAL_GATEWAY_PORT, path="/healthz",
                                           headers=(("K-Network-Probe", "probe"),)))


@pytest.mark.parametrize("request_, admitted", [
    (Request("inference.mlops.example.com", PUBLIC_HTTPS_PORT, "/v2/models/iris-classifier/infer", "POST"), False),
    (Request("inference.mlops.example.com", PUBLIC_HTTPS_PORT, "/v2/models/iris-classifier/infer", "POST",
             request_principal=JWT), True),
    (Request("kfp.mlops.example.com", PUBLIC_HTTPS_PORT), False),
    (Request("kfp.mlops.example.com:443", PUBLIC_HTTPS_PORT, request_principal=JWT), True),
    (Request("mlflow.mlops.example.com", PUBLIC_HTTPS_PORT), True),  # MLflow asks for its own login
    # Knative's external route of a predictor (config-domain), never meant to be public
    (Request("iris-classifier-predictor-mlops-serving.mlops.example.com", PUBLIC_HTTPS_PORT), False),
    # the cluster-local hosts are admitted on the cluster-local listener only ...
    (Request("iris-classifier-predictor.mlops-serving.svc.cluster.local", PUBLIC_HTTPS_PORT), False),
    # ... and the public host is not admitted there without a JWT, nor another namespace's service
    (Request("inference.mlops.example.com", LOCAL_GATEWAY_PORT, "/v2/models/iris-classifier/infer"), False),
    (Request("ml-pipeline.kubeflow.svc.cluster.local", LOCAL_GATEWAY_PORT), False),
], ids=["inference without JWT", "inference with JWT", "kfp without JWT", "kfp with JWT", "mlflow",
        "knative external domain", "local host on public port", "public host on local port", "other namespace"])
def test_public_hosts_still_need_a_jwt(request_, admitted):
    assert authorize(POLICIES, request_) is admitted


def _policy(action, rules, selector=None):
    spec = {"action": action, "rules": rules, **({"selector": {"matchLabels": selector}} if selector else {})}
    return {"metadata": {"namespace": "istio-system", "name": "p"}, "spec": spec}


def test_the_evaluator_follows_istios_order():
    """Istio's documented semantics: DENY before ALLOW; no ALLOW policy allows; an ALLOW policy without
    rules denies everything; notRequestPrincipals ["*"] is "no JWT" (istio.io, "Require a JWT" task)."""
    anyone = Request("a.example.com", 8080)
    assert authorize([], anyone)
    assert not authorize([_policy("ALLOW", [])], anyone)
    assert not authorize([_policy("ALLOW", [{}]), _policy("DENY", [{}])], anyone)
    require_jwt = _policy("DENY", [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}])
    assert not authorize([require_jwt], anyone)
    assert authorize([require_jwt], Request("a.example.com", 8080, request_principal=JWT))
    other_workload = _policy("ALLOW", [], selector={"istio": "eastwestgateway"})
    assert authorize([other_workload], anyone)


# -- 2. multi-user KFP ------------------------------------------------------------------------------------
KFP_AUDIENCE = "pipelines.kubeflow.org"  # kubeflow/pipelines backend/src/apiserver/common/const.go
KFP_GROUP = "pipelines.kubeflow.org"
# The SubjectAccessReview KFP's API server makes for each call of the hook (backend/src/apiserver/server:
# experiment_server.go ListExperiments/CreateExperiment, run_server.go CreateRun/GetRun/TerminateRun).
HOOK_CALLS = {"get_or_create_experiment": [("experiments", "list"), ("experiments", "create")],
              "create_run": [("runs", "create")], "get_run": [("runs", "get")],
              "terminate_run": [("runs", "terminate")]}
# Who calls KFP: the task pods run the operator, the triggerer runs the trigger.
CALLERS = {"worker": REPO / "plugins" / "mlops" / "operators" / "kfp_cluster.py",
           "triggerer": REPO / "plugins" / "mlops" / "triggers" / "kfp.py"}


def hook_calls(path: Path) -> set[str]:
    """The KfpHook methods a module uses: called, or handed to a thread (`asyncio.to_thread(hook.get_run, ...)`)."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in HOOK_CALLS}


def mounted_token(component: str) -> tuple[str, dict]:
    """(file path, serviceAccountToken source) of the projected token for KFP's audience in a component's
    pods as the chart builds them from the values (workers.kubernetes: the pod-template-file)."""
    section = VALUES["workers"]["kubernetes"] if component == "worker" else VALUES[component]
    found = []
    for volume in section.get("extraVolumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token and token.get("audience") == KFP_AUDIENCE:
                for mount in section.get("extraVolumeMounts") or []:
                    if mount["name"] == volume["name"]:
                        found.append((f"{mount['mountPath'].rstrip('/')}/{token['path']}", token))
    assert len(found) == 1, f"{component}: no single projected token for {KFP_AUDIENCE}: {found}"
    return found[0]


def connections_in_guide(conn_id: str) -> list[dict]:
    """Each JSON value the deploy guide gives AIRFLOW_CONN_<ID> (or shows as its connection) with."""
    # a shell variable spliced into the single-quoted JSON ('"$VAR"') stands for its value
    guide = re.sub(r"""'"\$(\w+)"'""", r"\1", DEPLOY_GUIDE)
    found = [json.loads(m) for m in re.findall(rf"AIRFLOW_CONN_{conn_id.upper()}='(\{{.*?\}})'", guide)]
    found += [json.loads(m) for m in re.findall(r"`(\{\"conn_type\": \"http\", \"host\": \"http://ml-pipeline[^`]*\})`",
                                                DEPLOY_GUIDE) if conn_id == "kfp_default"]
    return found


def test_the_kfp_token_is_projected_for_kfps_audience_where_the_hook_runs():
    paths = {component: mounted_token(component)[0] for component in CALLERS}
    assert len(set(paths.values())) == 1, paths  # one connection serves both
    for component in CALLERS:
        assert mounted_token(component)[1].get("expirationSeconds", 3600) >= 600  # the API server's minimum
    kfp = connections_in_guide("kfp_default")
    multi_user = [c for c in kfp if (c.get("extra") or {}).get("namespace")]
    assert multi_user, "the guide gives no connection for multi-user KFP"
    for connection in multi_user:
        # multi-user KFP's API: the ml-pipeline Service in kubeflow (KFP 2.17 multi-user manifests)
        assert connection["host"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
        assert connection["extra"]["namespace"] == cluster_env()["AIRFLOW__MLOPS_KUBERNETES__NAMESPACE"]
    for connection in kfp:
        assert connection["extra"]["token_path"] == paths["worker"], connection


def rbac_allows(user: str, namespace: str, group: str, resource: str, verb: str, rbac: list[dict]) -> bool:
    """A SubjectAccessReview against RBAC (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac): a RoleBinding
    in the namespace, or a ClusterRoleBinding, naming the service account, to a role with a rule of the
    group, resource and verb (or `*`)."""
    _, _, sa_namespace, name = user.split(":")
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in rbac
             if o["kind"] in ("Role", "ClusterRole")}
    for binding in rbac:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == name and s.get("namespace") == sa_namespace
                   for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], binding["metadata"]["namespace"] if ref["kind"] == "Role" else None,
                          ref["name"]))
        for rule in (role or {}).get("rules") or []:
            if ({group, "*"} & set(rule.get("apiGroups") or []) and {resource, "*"} & set(rule.get("resources") or [])
                    and {verb, "*"} & set(rule.get("verbs") or [])):
                return True
    return False


def test_each_kfp_call_is_authorised_for_the_identity_that_makes_it_and_nothing_more():
    rbac = [o for o in kustomization_objects() if o["kind"] in ("Role", "RoleBinding", "ClusterRole",
                                                                  "ClusterRoleBinding")]
    namespace = cluster_env()["AIRFLOW__MLOPS_KUBERNETES__NAMESPACE"]  # the profile's namespace
    every = {(resource, verb) for calls in HOOK_CALLS.values() for resource, verb in calls}
    for component, module in CALLERS.items():
        made = {call for method in hook_calls(module) for call in HOOK_CALLS[method]}
        assert made, f"{module} makes no KFP call"
        user = airflow_identity(component)
        granted = {call for call in every if rbac_allows(user, namespace, KFP_GROUP, *call, rbac)}
        assert granted == made, (component, sorted(granted), sorted(made))
        assert not rbac_allows(user, "kubeflow", KFP_GROUP, "runs", "get", rbac)  # only the profile's namespace
    # the worker makes everything; the triggerer only reads and terminates
    assert {c for m in hook_calls(CALLERS["triggerer"]) for c in HOOK_CALLS[m]} == {("runs", "get"),
                                                                                     ("runs", "terminate")}


# -- 3. task logs in the object store ---------------------------------------------------------------------
def logging_config() -> dict[str, str]:
    return {k: str(v) for k, v in VALUES["config"]["logging"].items()}


def test_task_logs_go_to_the_object_store_through_a_connection_the_guide_creates():
    logging = logging_config()
    assert logging["remote_logging"] == "True"
    folder = logging["remote_base_log_folder"]
    assert folder.startswith(f"s3://{LOGS_BUCKET}/")
    policy = json.loads((K8S / "storage" / "airflow-logs-policy.json").read_text())
    assert {r for s in policy["Statement"] for r in s["Resource"]} == {f"arn:aws:s3:::{LOGS_BUCKET}",
                                                                         f"arn:aws:s3:::{LOGS_BUCKET}/*"}
    [connection] = connections_in_guide(logging["remote_log_conn_id"])
    # the store the rest of the platform uses (the predictors' S3 endpoint, the pipeline's)
    store = (K8S / "secrets" / "mlflow-s3-credentials.env.example").read_text()
    endpoint = re.search(r"^MLFLOW_S3_ENDPOINT_URL=(.+)$", store, re.M).group(1)
    assert connection["conn_type"] == "aws" and connection["extra"]["endpoint_url"] == endpoint
    # the API server reads the logs back too: the connection comes from the Secret every component gets
    assert "name: airflow-connections" in VALUES["extraEnvFrom"]


def test_airflow_picks_the_s3_log_handler_for_these_values(tmp_path):
    """Airflow's own logging settings (airflow/config_templates/airflow_local_settings.py), run with the
    values' [logging] options: an s3:// folder selects the amazon provider's S3RemoteLogIO (the provider is
    in requirements.txt, so the Airflow image has it)."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           **{f"AIRFLOW__LOGGING__{k.upper()}": v for k, v in logging_config().items()}}
    env.pop("PYTEST_CURRENT_TEST", None)
    probe = ("import json\n"
             "try:\n"
             "    from airflow.config_templates import airflow_local_settings as s\n"
             "except ImportError as error:  # Airflow configures logging when imported\n"
             "    print(json.dumps({'missing': str(error)}))\n"
             "else:\n"
             "    io = s.REMOTE_TASK_LOG\n"
             "    print(json.dumps({'handler': type(io).__name__ if io else None,\n"
             "                      'remote_base': getattr(io, 'remote_base', None)}))\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"handler": "S3RemoteLogIO", "remote_base": logging_config()["remote_base_log_folder"]}


S3_PROBE = """
import boto3, botocore, json, sys
url, keys = sys.argv[1], json.loads(sys.argv[2])
def client(who):
    return boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id=keys[who][0],
                        aws_secret_access_key=keys[who][1])
def attempt(who, what, call):
    try:
        call(client(who)); print(who, what, 'allowed')
    except botocore.exceptions.ClientError as error:
        print(who, what, 'refused', error.response['Error']['Code'])
log = 'task-logs/dag_id=d/run_id=r/task_id=t/attempt=1.log'
attempt('logs', 'put', lambda s3: s3.put_object(Bucket='airflow-logs', Key=log, Body=b'line 1'))
attempt('logs', 'head', lambda s3: s3.head_object(Bucket='airflow-logs', Key=log))
attempt('logs', 'get', lambda s3: s3.get_object(Bucket='airflow-logs', Key=log)['Body'].read())
attempt('logs', 'list', lambda s3: s3.list_objects_v2(Bucket='airflow-logs', Prefix='task-logs/'))
attempt('pipeline', 'put-model', lambda s3: s3.put_object(Bucket='mlflow', Key='1/model.skops', Body=b'weights'))
attempt('logs', 'get-model', lambda s3: s3.get_object(Bucket='mlflow', Key='1/model.skops')['Body'].read())
attempt('logs', 'put-model', lambda s3: s3.put_object(Bucket='mlflow', Key='1/model.skops', Body=b'planted'))
attempt('serving', 'get', lambda s3: s3.get_object(Bucket='airflow-logs', Key=log)['Body'].read())
attempt('logs', 'delete', lambda s3: s3.delete_object(Bucket='airflow-logs', Key=log))
print('kept', client('pipeline').get_object(Bucket='mlflow', Key='1/model.skops')['Body'].read())
"""


def test_the_logs_key_reaches_only_the_logs_bucket(tmp_path):
    """The store checks each key's IAM policy (tests/cluster/storage.py, moto); the logs key is the one
    docs/deploy.md makes with k8s-yaml/storage/airflow-logs-policy.json. The calls are the amazon
    provider's S3 handler's: put, head and get of a log key, list of a prefix."""
    from tests import support

    with object_store(tmp_path, host="127.0.0.1") as store:
        keys = {"logs": store.logs, "pipeline": store.pipeline, "serving": store.serving}
        done = subprocess.run([str(support.PIPELINE_BIN / "python"), "-c", S3_PROBE, store.url, json.dumps(keys)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = set(done.stdout.splitlines())
    for allowed in ("put", "head", "get", "list"):
        assert f"logs {allowed} allowed" in lines, done.stdout
    assert "pipeline put-model allowed" in lines, done.stdout
    for refused in ("logs get-model", "logs put-model", "serving get", "logs delete"):
        assert f"{refused} refused AccessDenied" in lines, done.stdout
    assert "kept b'weights'" in lines, done.stdout


# -- 4 and 5. the kustomization as kubectl renders it -----------------------------------------------------
def render(tmp_path: Path, components: tuple[str, ...] = (), facts: dict[str, str] | None = None) -> list[dict]:
    """`kubectl kustomize` of a copy of k8s-yaml/ with the secret files the guide has users create (from
    the examples), the optional components added and cluster.env facts changed, as a user would."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (its built-in kustomize) is needed to render k8s-yaml/"
    copy = tmp_path / "k8s-yaml"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.env", "*.ini"))
    shutil.copy(K8S / "cluster.env", copy / "cluster.env")
    for example in (copy / "secrets").glob("*.example"):
        shutil.copy(example, example.with_suffix(""))
    if components:
        with (copy / "kustomization.yaml").open("a") as kustomization:
            kustomization.write("components:\n" + "".join(f"  - {c}\n" for c in components))
    if facts:
        env = (copy / "cluster.env").read_text()
        for key, value in facts.items():
            env, found = re.subn(rf"^{key}=.*$", f"{key}={value}", env, flags=re.M)
            assert found == 1, f"cluster.env has no {key}"
        (copy / "cluster.env").write_text(env)
    done = subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def test_the_base_installs_nothing_of_knative(tmp_path):
    """A RawDeployment-only cluster has no knative-serving namespace: `kubectl apply -k k8s-yaml/` must not
    need one, and must not fight the Knative Operator over config-domain."""
    rendered = render(tmp_path)
    assert not [f"{o['kind']}/{o['metadata']['name']}" for o in rendered
                if o["metadata"].get("namespace") == "knative-serving" or "knative.dev" in o["apiVersion"]]


def operator_config_maps(serving: dict) -> dict[str, dict[str, str]]:
    """The ConfigMaps the Knative Operator renders from a KnativeServing's spec.config: each key names a
    ConfigMap with or without its `config-` prefix, whose data the given values replace (knative/operator
    pkg/reconciler/common/config_maps.go ConfigMapTransform)."""
    return {(name if name.startswith("config-") else f"config-{name}"): dict(values)
            for name, values in (serving["spec"].get("config") or {}).items()}


def test_the_domain_is_set_where_knative_reads_it_either_way(tmp_path):
    via_operator = render(tmp_path / "operator", ("knative/operator",))
    [serving] = [o for o in via_operator if o["kind"] == "KnativeServing"]
    assert (serving["apiVersion"].split("/")[0], serving["metadata"]["namespace"], serving["metadata"]["name"]) \
        == ("operator.knative.dev", "knative-serving", "knative-serving")  # the one KServe's quick install makes
    assert not [o for o in via_operator if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "config-domain"]
    via_configmap = render(tmp_path / "configmap", ("knative/configmap",))
    [config_domain] = [o for o in via_configmap
                       if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "config-domain"]
    assert config_domain["metadata"]["namespace"] == "knative-serving"
    domain = operator_config_maps(serving)["config-domain"]
    assert domain == config_domain["data"] == {"mlops.example.com": ""}  # one default domain, no selector


def test_the_data_volume_storage_class_is_the_cluster_fact(tmp_path):
    def claim(rendered, name=cluster_env()["AIRFLOW__MLOPS_KUBERNETES__DATA_PVC"]):
        [found] = [o for o in rendered if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == name]
        return found

    shipped = claim(render(tmp_path / "shipped"))
    assert shipped["spec"]["storageClassName"] == cluster_env()["DATA_STORAGE_CLASS"]
    assert shipped["spec"]["accessModes"] == ["ReadWriteMany"]
    on_gke = render(tmp_path / "gke", facts={"DATA_STORAGE_CLASS": "standard-rwx",
                                             "AIRFLOW__MLOPS_KUBERNETES__DATA_PVC": "shared-data"})
    assert claim(on_gke, "shared-data")["spec"]["storageClassName"] == "standard-rwx"  # renamed claim too
    assert "DATA_STORAGE_CLASS" in DEPLOY_GUIDE
    for cluster in ("kind", "GKE", "EKS"):
        assert re.search(rf"^\| {cluster} \|", DEPLOY_GUIDE, re.M), f"the guide names no RWX class for {cluster}"


def test_claim_renamed_fact_reaches_the_stage_pods_too(tmp_path):
    """The rename above is the existing DATA_PVC replacement; the storage class replacement must select
    the claim before it (kustomize selects by the current name)."""
    rendered = render(tmp_path, facts={"AIRFLOW__MLOPS_KUBERNETES__DATA_PVC": "shared-data"})
    assert [o["metadata"]["name"] for o in rendered if o["kind"] == "PersistentVolumeClaim"
            and o["metadata"]["namespace"] == "mlops" and o["spec"]["accessModes"] == ["ReadWriteMany"]] \
        == ["shared-data"]


# -- 6. scraping the model server through Istio's sidecar -------------------------------------------------
NAMESPACE_LABELS = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in objects(K8S / "namespaces.yaml")}
RUNTIME = objects(K8S / "kserve" / "cluster-serving-runtime.yaml")[0]


@pytest.fixture(scope="module")
def predictor_pods():
    """The predictor pods the emulated KServe controller makes from the shipped runtime, one per mode (no
    kubelet: the pods are read, not run)."""
    settings = cluster_settings()
    with KubeEmulator() as kube:
        kube.create({**RUNTIME, "metadata": {**RUNTIME["metadata"], "name": settings.serving_runtime}})
        with KServeController(kube, STORAGE_INITIALIZER), DeploymentController(kube):
            pods = {}
            for mode in ("Serverless", "RawDeployment"):
                mode_settings = cluster_settings(serving_deployment_mode=mode)
                name = f"scraped-{mode.lower()}"
                kube.create(inference_service(name, "1", None, "s3://mlflow/none", mode_settings))
                deadline = time.monotonic() + 30
                while not (found := [p for p in kube.list(PODS, settings.serving_namespace)
                                     if p["metadata"]["labels"].get("serving.kserve.io/inferenceservice") == name]):
                    assert time.monotonic() < deadline, f"KServe made no predictor pod ({mode})"
                    time.sleep(0.2)
                pods[mode] = found[0]
    return pods


def mesh_wide(mode: str) -> list[dict]:
    return [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": mode}}}]


def model_metrics_scraped(pod: dict, peer_authentications: list[dict]) -> list[tuple[int, str]]:
    """Each scrape the PodMonitor makes of the pod that answers and carries the model server's metrics:
    its own port, or the agent's merged endpoint fetching them from inside the pod."""
    annotations = RUNTIME["spec"]["annotations"]
    model = (int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"])
    found = []
    for _, port, path in scrape_targets(PODMONITOR, [pod]):
        if not plaintext_accepted(pod, port, peer_authentications):
            continue  # Prometheus has no mesh certificate: the sidecar refuses it
        if (port, path) == model:
            found.append((port, path))
        elif (port, path) == (15020, "/stats/prometheus"):
            proxy = next(c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
            merged = json.loads(next(e["value"] for e in proxy["env"] if e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS"))
            if (int(merged["port"]), merged["path"]) == model:
                found.append((port, path))
    return found


@pytest.mark.parametrize("mtls", ["PERMISSIVE", "STRICT"])
@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_model_servers_metrics_arrive_once_under_either_mtls_mode(predictor_pods, mode, mtls):
    pod = inject_sidecar(predictor_pods[mode], NAMESPACE_LABELS[predictor_pods[mode]["metadata"]["namespace"]])
    assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]  # mlops-serving is in the mesh
    assert len(model_metrics_scraped(pod, mesh_wide(mtls))) == 1


def test_merging_stays_on_where_the_mesh_turns_it_off(predictor_pods):
    """The runtime's prometheus.istio.io/merge-metrics annotation wins over meshConfig.enablePrometheusMerge."""
    pod = inject_sidecar(predictor_pods["Serverless"], {"istio-injection": "enabled"}, merge_metrics=False)
    assert len(model_metrics_scraped(pod, mesh_wide("STRICT"))) == 1


def test_a_pod_without_a_sidecar_is_scraped_on_the_model_servers_port(predictor_pods):
    pod = inject_sidecar(predictor_pods["RawDeployment"], {})  # a namespace without injection
    assert model_metrics_scraped(pod, mesh_wide("STRICT")) == [(8080, "/metrics")]


def test_the_sidecar_model_refuses_what_istio_refuses(predictor_pods):
    """Under STRICT the model server's own port refuses a client without a certificate (the old PodMonitor
    scraped only there); the agent's port, an excluded port, a workload's PERMISSIVE override, a pod without
    a sidecar, answer."""
    pod = inject_sidecar(predictor_pods["RawDeployment"], {"istio-injection": "enabled"})
    strict = mesh_wide("STRICT")
    assert not plaintext_accepted(pod, 8080, strict) and plaintext_accepted(pod, 8080, mesh_wide("PERMISSIVE"))
    assert plaintext_accepted(pod, 15020, strict)
    excluded = {**pod, "metadata": {**pod["metadata"], "annotations": {
        **pod["metadata"]["annotations"], "traffic.sidecar.istio.io/excludeInboundPorts": "8080"}}}
    assert plaintext_accepted(excluded, 8080, strict)
    workload = {"metadata": {"name": "w", "namespace": pod["metadata"]["namespace"]},
                "spec": {"selector": {"matchLabels": {"component": "predictor"}},
                         "mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}}
    assert plaintext_accepted(pod, 8080, [*strict, workload])
    assert not plaintext_accepted(pod, 8081, [*strict, workload])
    assert plaintext_accepted(predictor_pods["RawDeployment"], 8080, strict)
    old = {**PODMONITOR, "spec": {**PODMONITOR["spec"], "podMetricsEndpoints": [
        {"portNumber": 8080, "path": "/metrics"}]}}
    assert [port for _, port, _ in scrape_targets(old, [pod]) if plaintext_accepted(pod, port, strict)] == []
