"""The parts of a cluster the contract tests script on top of the Kubernetes emulator:

- ScriptedKubelet runs every pod created on the emulator as a local process: the container's real
  command (`mlpipeline ...` from the pipeline environment), env from the referenced ConfigMap/Secret,
  the data PVC mapped onto a local data volume, the XCom emptyDir onto a folder; then it reports the
  phase, exit code and termination message as a kubelet does.
- ScriptedKServe plays KServe's controller for InferenceServices: per new generation it serves the
  model (fetching the registry version the object names and starting or swapping a real mlserving
  process), reports a failed revision, stays silent (never Ready) or answers late, as scripted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import yaml

from mlops.hooks.serving import ServingHook
from mlops.hooks.stage import StageHook
from mlops.inference_service import VERSION_ANNOTATION
from tests import support
from tests.support import REPO

from .kube_emulator import CONFIGMAPS, ISVC, PODS, SECRETS, KubeEmulator


def install_mlflow_config(kube: KubeEmulator, tracking_uri: str) -> None:
    """What `kubectl apply -k k8s-yaml/` installs for the stage pods: the shipped MLflow ConfigMap,
    pointed at the test's tracking server."""
    configmap = yaml.safe_load((REPO / "k8s-yaml" / "mlflow" / "configmap.yaml").read_text())
    configmap["data"]["MLFLOW_TRACKING_URI"] = tracking_uri
    key = (CONFIGMAPS, configmap["metadata"]["namespace"], configmap["metadata"]["name"])
    kube.call(lambda: kube.api.objects.__setitem__(key, configmap))


def _stored_of(kube: KubeEmulator, resource) -> list[dict]:
    def read():
        return [obj.raw for key, obj in kube.api.objects.items()
                if key[0] == resource and not obj.deleted]

    return kube.call(read)


class ScriptedKubelet:
    def __init__(self, kube: KubeEmulator, data_root: Path, workdir: Path):
        self.kube, self.data_root, self.workdir = kube, data_root, workdir
        self.started: set[tuple[str, str]] = set()
        self.runs: dict[str, dict] = {}  # pod name -> {"argv", "returncode", "stderr", "xcom_dir"}
        self.sidecar_waits: dict[str, int] = {}  # pods whose stage ended while the XCom sidecar still runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scripted-kubelet", daemon=True)

    def __enter__(self) -> ScriptedKubelet:
        self.kube.api.exec_handler = self.exec
        self._thread.start()
        return self

    def exec(self, namespace: str, name: str, container: str, command: list[str], stdin: str | None):
        """What KPO runs in the XCom sidecar: reading /airflow/xcom/return.json, then `kill -s SIGINT 1`."""
        run = self.runs.get(name)
        if run is None or container != "airflow-xcom-sidecar":
            return f"exec into {container} of {name} is not scripted", 1
        if stdin and "kill -s SIGINT 1" in stdin:
            self.kill_sidecar(namespace, name)
            return "", 0
        script = " ".join(command[2:]) if command[:2] == ["/bin/sh", "-c"] else " ".join(command)
        done = subprocess.run(["/bin/sh", "-c", script.replace("/airflow/xcom", str(run["xcom_dir"]))],
                              capture_output=True, text=True)
        return done.stdout, done.returncode

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pod in _stored_of(self.kube, PODS):
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                if key not in self.started and (pod.get("status") or {}).get("phase") == "Pending":
                    self.started.add(key)
                    threading.Thread(target=self._run_pod, args=(pod,), daemon=True).start()
            time.sleep(0.1)

    def _env(self, namespace: str, container: dict, tmp: Path) -> dict:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "TMPDIR": str(tmp)}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                found = self.kube.stored(CONFIGMAPS, namespace, source["configMapRef"]["name"])
                if found is None and not source["configMapRef"].get("optional"):
                    raise RuntimeError(f"configmap {source['configMapRef']['name']} not found")
                env.update((found or {}).get("data") or {})
            if "secretRef" in source:
                found = self.kube.stored(SECRETS, namespace, source["secretRef"]["name"])
                if found is None and not source["secretRef"].get("optional"):
                    raise RuntimeError(f"secret {source['secretRef']['name']} not found")
                env.update({k: base64.b64decode(v).decode() for k, v in ((found or {}).get("data") or {}).items()})
        for item in container.get("env") or []:
            if item["name"] not in ("HOME", "TMPDIR"):
                env[item["name"]] = item.get("value", "")
        return env

    def _run_pod(self, pod: dict) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        containers = pod["spec"]["containers"]
        base = containers[0]
        has_sidecar = any(c["name"] == "airflow-xcom-sidecar" for c in containers)
        running = {"running": {"startedAt": "2026-11-28T00:00:00Z"}}
        self.kube.patch(PODS, namespace, name, {"status": {"phase": "Running", "containerStatuses": [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0, "state": running}
            for c in containers]}})
        folder = self.workdir / name
        tmp, xcom = folder / "tmp", folder / "xcom"
        tmp.mkdir(parents=True)
        xcom.mkdir()
        mounts = {m["mountPath"]: m["name"] for m in base.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        local_paths = {}
        for path, volume in mounts.items():
            spec = volumes[volume]
            if "persistentVolumeClaim" in spec:
                local_paths[path] = str(self.data_root)
            elif path == "/airflow/xcom":
                local_paths[path] = str(xcom)
            else:
                local_paths[path] = str(tmp)
        argv = [*(base.get("command") or []), *(base.get("args") or [])]
        for i, arg in enumerate(argv):  # the container's paths onto this machine's folders
            for path, local in local_paths.items():
                if arg == path or arg.startswith(path + "/"):
                    argv[i] = local + arg[len(path):]
        # The image's entry point is the pipeline environment's CLI here (mapped after the paths: the
        # environment itself may live under a folder a container path also names, such as /tmp).
        argv[0] = str(support.PIPELINE_BIN / argv[0]) if argv[0] == "mlpipeline" else argv[0]
        try:
            env = {**self._env(namespace, base, tmp), "MLPIPELINE_XCOM_DIR": str(xcom)}
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
            returncode, stderr = done.returncode, done.stderr
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            returncode, stderr = 128, f"CreateContainerConfigError: {exc}"
        self.runs[name] = {"argv": argv, "returncode": returncode, "stderr": stderr, "xcom_dir": xcom}
        self.kube.api.pod_logs[(namespace, name)] = stderr  # the stage's progress log (stdout is its result)
        lines = stderr.strip().splitlines()
        terminated = {"terminated": {"exitCode": returncode, "reason": "Completed" if returncode == 0 else "Error",
                                     "startedAt": "2026-11-28T00:00:00Z", "finishedAt": "2026-11-28T00:00:01Z",
                                     # terminationMessagePolicy FallbackToLogsOnError: the log's tail on failure
                                     **({"message": "\n".join(lines[-5:])} if returncode and lines else {})}}
        statuses = [{"name": base["name"], "image": base["image"], "imageID": "", "ready": False, "restartCount": 0,
                     "state": terminated}]
        statuses += [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                      "state": running} for c in containers[1:]]
        phase = "Running" if has_sidecar else ("Succeeded" if returncode == 0 else "Failed")
        self.kube.patch(PODS, namespace, name, {"status": {"phase": phase, "containerStatuses": statuses}})
        if has_sidecar:
            self.sidecar_waits[name] = returncode

    def kill_sidecar(self, namespace: str, name: str) -> None:
        """What `kill -s SIGINT 1` in the XCom sidecar leads to: the pod finishes with the stage's outcome."""
        returncode = self.sidecar_waits.pop(name, 0)
        pod = self.kube.stored(PODS, namespace, name)
        statuses = pod["status"]["containerStatuses"]
        for status in statuses[1:]:
            status["state"] = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            status["ready"] = False
        self.kube.patch(PODS, namespace, name, {"status": {
            "phase": "Succeeded" if returncode == 0 else "Failed", "containerStatuses": statuses}})


class ScriptedKServe:
    """`script(generation) -> "serve" | "fail" | "never" | ("serve", delay_seconds)` per new generation."""

    FAILED_REVISION = 'Revision "{name}-predictor-0000{generation}" failed with message: model could not be loaded'

    def __init__(self, kube: KubeEmulator, script, mlflow_uri: str, workdir: Path):
        self.kube, self.script, self.mlflow_uri, self.workdir = kube, script, mlflow_uri, workdir
        self.port = support.free_port()
        self.seen: dict[tuple[str, str], int] = {}
        self.served: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scripted-kserve", daemon=True)
        self._server: ServingHook | None = None

    def __enter__(self) -> ScriptedKServe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        pidfile = self.workdir / "mlserving.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pidfile.read_text()), signal.SIGTERM)
            pidfile.unlink()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for isvc in _stored_of(self.kube, ISVC):
                key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
                generation = isvc["metadata"]["generation"]
                if self.seen.get(key, 0) < generation:
                    self.seen[key] = generation
                    self._reconcile(isvc, generation)
            time.sleep(0.1)

    def _reconcile(self, isvc: dict, generation: int) -> None:
        namespace, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        action = self.script(generation)
        delay = 0.0
        if isinstance(action, tuple):
            action, delay = action
        if action == "never":
            return
        time.sleep(delay)
        if action == "fail":
            message = self.FAILED_REVISION.format(name=name, generation=generation)
            self.kube.patch(ISVC, namespace, name, {"status": {"observedGeneration": generation, "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": message},
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": message}]}})
            return
        version = isvc["metadata"]["annotations"][VERSION_ANNOTATION]
        # The storage initializer's part: the registry version's files, then the predictor rollout.
        fetched = StageHook(support.PIPELINE_BIN / "mlpipeline", env={"MLFLOW_TRACKING_URI": self.mlflow_uri}).run(
            "fetch-model", {"model_name": name, "version": version, "into": self.workdir / name},
            on_line=lambda _: None)
        server = ServingHook(f"http://127.0.0.1:{self.port}", name)
        if server.is_live():
            server.load(fetched["model_dir"])
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            server.start(support.SERVING_BIN, fetched["model_dir"], self.port, self.workdir / "mlserving.log")
        self.served.append((version, generation))
        self.kube.patch(ISVC, namespace, name, {"status": {
            "observedGeneration": generation, "url": f"http://{name}.{namespace}.example.com",
            "address": {"url": f"http://127.0.0.1:{self.port}"},
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]}})
