"""A stand-in for the KFP v2beta1 API server, for contract tests: every request is checked against the
published swagger (`tests/schemas/kfp-v2beta1-*.swagger.json`): operation, query parameters,
body schema with unknown fields rejected, bearer auth; every answer is itself validated against the
operation's response schema. Run states follow a per-test script, or an `executor` runs the submitted
run for real: ContainerBackend runs the submitted pipeline spec in containers, as KFP's backend would."""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema

from tests import support
from tests.reference import reference_file

from .network import POD_LABELS_LABEL, POD_NAMESPACE_LABEL

SWAGGERS = ("kfp-v2beta1-run.swagger.json", "kfp-v2beta1-experiment.swagger.json", "kfp-v2beta1-healthz.swagger.json")
# Inputs the swagger documents as required in prose ("Required input") but cannot mark as such.
REQUIRED_INPUTS = {"v2beta1Run": ["display_name"], "v2beta1Experiment": ["display_name"]}


def _strict(definitions: dict) -> dict:
    """The definitions with unknown fields rejected and the prose-required inputs required."""
    strict = copy.deepcopy(definitions)
    for name, schema in strict.items():
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if name in REQUIRED_INPUTS:
            schema["required"] = REQUIRED_INPUTS[name]
    return strict


class Swagger:
    def __init__(self):
        self.operations = []  # (method, regex, operation)
        self.definitions: dict = {}
        for name in SWAGGERS:
            spec = json.loads(reference_file(name).read_text())
            self.definitions.update(spec["definitions"])
            for path, ops in spec["paths"].items():
                pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape(path)) + "$"
                for method, op in ops.items():
                    self.operations.append((method.upper(), re.compile(pattern), op))
        self.strict_definitions = _strict(self.definitions)

    def match(self, method: str, path: str):
        for op_method, regex, op in self.operations:
            found = regex.match(path)
            if found and op_method == method:
                return op, found.groupdict()
        return None, None

    def validate(self, schema: dict, value, strict: bool = True) -> None:
        jsonschema.validate(value, {**schema, "definitions": self.strict_definitions if strict else self.definitions})


class FakeKfp:
    def __init__(self, script: list[str] | None = None, token: str | None = None,
                 run_error: str = "train-evaluate-decide: exit code 1: ValueError: no rows",
                 executor: Callable[[dict], str | None] | None = None):
        """`executor(run)` runs a submitted run for real, in a thread, and returns None on success or
        the run's error; the run is RUNNING until it returns. Without it, states follow `script`."""
        self.swagger = Swagger()
        self.script = script or ["PENDING", "RUNNING", "SUCCEEDED"]
        self.token, self.run_error, self.executor = token, run_error, executor
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []
        self.lock = threading.Lock()

    # -- the API ------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict]:
        url = urlsplit(raw_path)
        op, path_params = self.swagger.match(method, url.path)
        self.calls.append((method, url.path))
        if op is None:
            return self._violation(404, f"no operation {method} {url.path} in the swagger")
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"code": 16, "message": "Unauthenticated: missing or wrong bearer token"}
        declared = {p["name"]: p for p in op.get("parameters", [])}
        for name, values in parse_qs(url.query).items():
            if declared.get(name, {}).get("in") != "query":
                return self._violation(400, f"{op['operationId']}: undeclared query parameter {name}")
            if declared[name].get("type") == "integer" and not values[0].lstrip("-").isdigit():
                return self._violation(400, f"{op['operationId']}: {name} must be an integer")
        payload = None
        body_param = next((p for p in declared.values() if p["in"] == "body"), None)
        if body_param:
            try:
                payload = json.loads(body or b"null")
                self.swagger.validate(body_param["schema"], payload)
            except (ValueError, jsonschema.ValidationError) as exc:
                return self._violation(400, f"{op['operationId']}: body does not match the swagger: "
                                            f"{getattr(exc, 'message', exc)}")
        elif body:
            return self._violation(400, f"{op['operationId']} takes no body")
        status, answer = getattr(self, op["operationId"])(path_params, parse_qs(url.query), payload)
        if status == 200:
            self.swagger.validate(op["responses"]["200"]["schema"], answer, strict=False)
        return status, answer

    def _violation(self, status: int, message: str) -> tuple[int, dict]:
        self.violations.append(message)
        return status, {"code": 3, "message": message}

    def HealthzService_GetHealthz(self, params, query, body):
        return 200, {"multi_user": False}

    def ExperimentService_ListExperiments(self, params, query, body):
        experiments = list(self.experiments.values())
        if "filter" in query:
            wanted = json.loads(query["filter"][0])["predicates"][0]["string_value"]
            experiments = [e for e in experiments if e["display_name"] == wanted]
        return 200, {"experiments": experiments, "total_size": len(experiments)}

    def ExperimentService_CreateExperiment(self, params, query, body):
        experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": _now(), "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def RunService_CreateRun(self, params, query, body):
        if body.get("experiment_id") not in self.experiments:
            return 404, {"code": 5, "message": f"experiment {body.get('experiment_id')} not found"}
        run = {**body, "run_id": str(uuid.uuid4()), "created_at": _now(), "state": self.script[0],
               "storage_state": "AVAILABLE"}
        with self.lock:
            self.runs[run["run_id"]] = run
            self.polls[run["run_id"]] = 0
        if self.executor:
            run["state"] = "RUNNING"
            threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        return 200, copy.deepcopy(run)

    def _execute(self, run: dict) -> None:
        try:
            error = self.executor(run)
        except Exception as exc:  # a broken executor fails the run at once, as a crashed KFP driver would
            error = f"the run's executor raised {type(exc).__name__}: {exc}"
        with self.lock:
            if run["state"] in ("CANCELING", "CANCELED"):
                run["state"] = "CANCELED"
            elif error is None:
                run["state"] = "SUCCEEDED"
            else:
                run["state"], self.run_error = "FAILED", error
            run["finished_at"] = _now()

    def RunService_GetRun(self, params, query, body):
        run = self.runs.get(params["run_id"])
        if run is None:
            return 404, {"code": 5, "message": f"run {params['run_id']} not found"}
        with self.lock:
            if run["state"] == "CANCELING":
                run["state"] = "CANCELED"
            elif run["state"] != "CANCELED" and not self.executor:  # with an executor, its thread moves the state
                self.polls[run["run_id"]] += 1
                run["state"] = self.script[min(self.polls[run["run_id"]], len(self.script) - 1)]
            if run["state"] == "FAILED":
                run["error"] = {"code": 2, "message": self.run_error}
                run["run_details"] = {"task_details": [{"display_name": "train-evaluate-decide", "state": "FAILED",
                                                        "error": {"code": 2, "message": self.run_error}}]}
            if run["state"] in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
                run.setdefault("finished_at", _now())
        return 200, run

    def RunService_TerminateRun(self, params, query, body):
        run = self.runs.get(params["run_id"])
        if run is None:
            return 404, {"code": 5, "message": f"run {params['run_id']} not found"}
        run["state"] = "CANCELING"
        return 200, {}

    # -- serving it ------------------------------------------------------------------------------
    def __enter__(self) -> FakeKfp:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                support.send_json(self, *fake.handle(self.command, self.path, self.headers, self.rfile.read(length)))

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", support.free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ContainerBackend:
    """The part of a KFP backend that runs a submitted run: its pipeline spec (as submitted, not a copy
    of ours) with kfp.local's DockerRunner, each component in a container of its declared image running
    its own command, and the platform spec applied as KFP's driver applies it to the step's pod
    (kubeflow/pipelines backend/src/v2/driver/k8s.go at 2.17.0): the PVC named by `pvcNameParameter`
    mounted at `mountPath`, Secret and ConfigMap keys as env (`secretAsEnv`, `configMapAsEnv`, resolved
    through their name parameters), `securityContext` user and group, `podMetadata` labels, and the
    launcher pod's own hardening (no privilege escalation, every capability dropped). Those objects are looked up in
    `namespace`, where KFP creates a run's pods; a claim that does not exist there leaves the step's
    pod Pending, so the run stays RUNNING until it is terminated, as in a cluster."""

    def __init__(self, cluster, namespace: str, root):
        self.cluster, self.namespace, self.root = cluster, namespace, root
        self.submitted: list[dict] = []  # (the spec, parameters, docker options) of each run

    def _param(self, reference: dict, parameters: dict) -> str:
        if "componentInputParameter" in reference:
            return parameters[reference["componentInputParameter"]]
        return reference["runtimeValue"]["constant"]

    def _platform(self, run: dict) -> dict:
        platform = ((run["pipeline_spec"].get("platform_spec") or {}).get("platforms") or {}).get("kubernetes") or {}
        executors = (platform.get("deploymentSpec") or {}).get("executors") or {}
        configs = {json.dumps(config, sort_keys=True) for config in executors.values()}
        if len(configs) > 1:
            raise ValueError("this backend runs pipelines whose steps share one platform config")
        return next(iter(executors.values()), {})

    def __call__(self, run: dict) -> str | None:
        import base64
        import os
        import subprocess
        import time

        from .apiserver import CONFIGMAPS, PVCS, SECRETS
        from .engine import docker_host

        parameters = dict(run["runtime_config"].get("parameters") or {})
        config = self._platform(run)
        kube, env, mounts = self.cluster.kube, {}, []
        for mount in config.get("pvcMount") or []:
            claim = self._param(mount.get("pvcNameParameter") or {"runtimeValue": {"constant": mount.get("constant")}},
                                parameters)
            if kube.stored(PVCS, self.namespace, claim) is None:
                # The step's pod cannot be scheduled: nothing fails, the run just never proceeds.
                while run["state"] not in ("CANCELING", "CANCELED"):
                    time.sleep(0.2)
                return f'pod unschedulable: persistentvolumeclaim "{claim}" not found'
            folder = self.cluster.kubelet.root / "pvc" / self.namespace / claim
            folder.mkdir(parents=True, exist_ok=True)
            mounts.append({"target": mount["mountPath"], "source": str(folder), "type": "bind"})
        for field, resource in (("secretAsEnv", SECRETS), ("configMapAsEnv", CONFIGMAPS)):
            for source in config.get(field) or []:
                name_ref = source.get("secretNameParameter") or source.get("configMapNameParameter")
                name = self._param(name_ref, parameters) if name_ref else source.get("secretName") or \
                    source.get("configMapName")
                found = kube.stored(resource, self.namespace, name)
                if found is None and not source.get("optional"):
                    return f"{field}: {resource.plural} {self.namespace}/{name} not found"
                data = (found or {}).get("data") or {}
                if resource == SECRETS:
                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                for pair in source.get("keyToEnv") or []:
                    key = pair.get("secretKey") or pair.get("configMapKey")
                    if key in data:
                        env[pair["envVar"]] = data[key]
        context = config.get("securityContext") or {}
        user = context.get("runAsUser")
        # The step's pod labels (podMetadata), where the pod network's NetworkPolicies look for them.
        pod_labels = (config.get("podMetadata") or {}).get("labels") or {}
        options = {"network": self.cluster.network_name, "extra_hosts": self.cluster.services.hosts(),
                   "environment": env, "mounts": mounts, "entrypoint": [""], "cap_drop": ["ALL"],
                   "security_opt": ["no-new-privileges"],
                   "labels": {POD_NAMESPACE_LABEL: self.namespace, POD_LABELS_LABEL: json.dumps(pod_labels)},
                   **({"user": f"{user}:{context.get('runAsGroup', user)}"} if user is not None else {})}
        work = self.root / run["run_id"]
        work.mkdir(parents=True)
        (work / "pipeline-root").mkdir(mode=0o777)
        (work / "pipeline-root").chmod(0o777)
        spec = dict(run["pipeline_spec"].get("pipeline_spec") or run["pipeline_spec"])
        import yaml

        (work / "spec.yaml").write_text(yaml.safe_dump(spec))
        (work / "parameters.json").write_text(json.dumps(parameters))
        (work / "options.json").write_text(json.dumps(options))
        self.submitted.append({"spec": spec, "parameters": parameters, "options": options})
        # -P: not this folder on sys.path, where kfp.py would shadow the kfp package
        runner = Path(__file__).with_name("kfp_runner.py")
        done = subprocess.run([str(support.PIPELINE_BIN / "python"), "-P", str(runner), str(work / "spec.yaml"),
                               str(work / "parameters.json"), str(work / "options.json"), str(work / "pipeline-root")],
                              capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "DOCKER_HOST": docker_host()})
        (work / "run.log").write_text(done.stdout + done.stderr)
        if done.returncode == 0:
            return None
        lines = [line for line in (done.stdout + done.stderr).strip().splitlines() if line.strip()]
        return " | ".join(lines[-3:])[-2000:] or f"exit code {done.returncode}"
