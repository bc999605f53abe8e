"""A kubelet on Docker: every Pod stored in the API server runs as containers of its images.

What it does, and the kubelet behaviour it follows (kubernetes/kubernetes pkg/kubelet):
- A pod's containers share one network namespace, held by a pause container, with the pod's own
  address on the pod network; Services are reachable by their DNS names (see network.py).
- Volumes: a PersistentVolumeClaim is a host folder per namespace and claim, and a claim that does
  not exist leaves the pod Pending and unschedulable ('persistentvolumeclaim "x" not found', as the
  scheduler reports it); an emptyDir is a fresh world-writable folder per pod; a secret volume holds
  the Secret's keys (or its `items`) as files, mounted read-only.
- Env: envFrom first, then env (values, Secret/ConfigMap keys, fieldRefs), over the Service links
  every pod gets (<NAME>_SERVICE_HOST, <NAME>_PORT, ..., envvars.go); $(VAR) in command and args is
  expanded from it. A missing non-optional Secret or ConfigMap keeps the container waiting in
  CreateContainerConfigError (kuberuntime_container.go), retried until it appears.
- Security context (the container's over the pod's): runAsUser/runAsGroup, fsGroup and
  supplementalGroups, readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation: false as
  no-new-privileges, privileged; runAsNonRoot refuses an image that would run as root
  (CreateContainerConfigError, 'container has runAsNonRoot and image will run as root').
- Resources: memory and CPU limits become the container's limits.
- Init containers run one after another to completion before the main containers start.
- Status: phase, podIP, conditions (PodScheduled, Initialized, ContainersReady, Ready), container
  states with exit code and reason; readiness probes (httpGet, tcpSocket, exec) decide Ready;
  terminationMessagePolicy FallbackToLogsOnError takes the log's last 80 lines / 2 KiB on failure.
- restartPolicy Never: the pod ends Succeeded or Failed when its containers have; Always and
  OnFailure restart an exited container (with a growing back-off); a failed init container waits in
  CrashLoopBackOff with its failed run as `lastState` until it is run again.
- pods/log and pods/exec are answered from the containers (`docker logs`, `docker exec`).
- A deleted pod's containers get SIGTERM, SIGKILL after the 30 s grace period, and are removed.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import shlex
import shutil
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from .apiserver import CONFIGMAPS, PODS, PVCS, SECRETS, SERVICES, KubeEmulator
from .engine import docker, image_exists, image_user, inspect, remove
from .network import PodNetwork, Services

LABEL = "mlops-ct.kubelet"
TERMINATION_LOG_LINES, TERMINATION_LOG_BYTES = 80, 2048


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def terminate(containers: list[str], pause: str | None, grace_seconds: int = 30) -> None:
    """A deleted pod's end, as the kubelet gives it: SIGTERM to the containers, which finish what they
    are answering, SIGKILL after the grace period (terminationGracePeriodSeconds, 30 by default); then
    they are removed."""
    if containers:
        docker("stop", "--time", str(grace_seconds), *containers, check=False, timeout=grace_seconds + 30)
    remove(*containers, *([pause] if pause else []))


class ConfigError(Exception):
    """CreateContainerConfigError: the container cannot be configured yet."""


class Unschedulable(Exception):
    """The pod cannot be placed yet (a claim is missing)."""


def expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) references as Kubernetes expands them in command and args: known names are replaced,
    unknown ones are kept, $$ escapes (third_party/forked/golang/expansion)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def service_links(services: list[dict]) -> dict[str, str]:
    """The env vars kubelet adds for each Service of the pod's namespace (pkg/kubelet/envvars)."""
    env = {}
    for service in services:
        ip = service["spec"].get("clusterIP")
        ports = service["spec"].get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = service["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{name}_SERVICE_HOST"], env[f"{name}_SERVICE_PORT"] = ip, str(first["port"])
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"], env[f"{prefix}_PORT"], env[f"{prefix}_ADDR"] = \
                protocol.lower(), str(port["port"]), ip
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    return env


class PodRun:
    """One pod's containers and what the kubelet knows of them."""

    def __init__(self, pod: dict):
        self.namespace, self.name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod = pod
        self.pause: str | None = None
        self.ip: str | None = None
        self.containers: dict[str, str] = {}  # container name -> docker container name
        self.restarts: dict[str, int] = {}
        self.ready: dict[str, bool] = {}
        self.started_at: dict[str, str] = {}
        self.finished: dict[str, dict] = {}  # container name -> terminated state
        self.last: dict[str, dict] = {}  # container name -> its previous run's terminated state (lastState)
        self.backing_off: set[str] = set()  # containers waiting to be restarted (CrashLoopBackOff)
        self.deleted = threading.Event()


class DockerKubelet:
    def __init__(self, kube: KubeEmulator, network: PodNetwork, services: Services, root: Path,
                 node: str = "node-1"):
        self.kube, self.network, self.services, self.root, self.node = kube, network, services, root, node
        self.id = uuid.uuid4().hex[:8]
        self.runs: dict[tuple[str, str], PodRun] = {}
        self.waiting: dict[tuple[str, str], str] = {}  # pods that cannot start yet -> why
        self.images: set[str] = set()  # present in the engine
        self.missing: dict[str, float] = {}  # image -> when to look again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> DockerKubelet:
        stale = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        remove(*stale)  # pods of an interrupted earlier run: the engine is this checkout's own
        self.kube.api.exec_handler = self.exec
        self.kube.api.log_handler = self.logs
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        for run in list(self.runs.values()):
            run.deleted.set()
        leftovers = docker("ps", "-aq", "--filter", f"label={LABEL}={self.id}", check=False).stdout.split()
        remove(*leftovers)

    def _loop(self) -> None:
        while not self._stop.is_set():
            pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.kube.list(PODS)}
            for key, pod in pods.items():
                run = self.runs.get(key)
                if run is not None and run.uid != pod["metadata"]["uid"]:  # re-created under the same name
                    self._kill(run)
                    run = None
                if run is None and (pod.get("status") or {}).get("phase") == "Pending":
                    self._try_start(pod)
            for key, run in list(self.runs.items()):
                if key not in pods or pods[key]["metadata"]["uid"] != run.uid:
                    self._kill(run)
            time.sleep(0.2)

    def _kill(self, run: PodRun) -> None:
        run.deleted.set()
        self.runs.pop((run.namespace, run.name), None)
        threading.Thread(target=terminate, args=(list(run.containers.values()), run.pause), daemon=True).start()

    # -- starting a pod ----------------------------------------------------------------------------
    def _try_start(self, pod: dict) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        missing = sorted({c["image"] for c in self._all_containers(pod) if not self._have(c["image"])})
        if missing:  # nothing can be pulled here: the kubelet's ErrImagePull, retried
            waiting = {"waiting": {"reason": "ErrImagePull", "message": f'image "{missing[0]}" not found'}}
            self._wait(key, pod, {"conditions": [{"type": "PodScheduled", "status": "True"}],
                                  "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": False,
                                                         "restartCount": 0, "state": waiting}
                                                        for c in pod["spec"]["containers"]]},
                       waiting["waiting"]["message"])
            return
        try:
            mounts = self._volumes(pod)
            envs = {c["name"]: self._env(pod, c) for c in self._all_containers(pod)}
            flags = {c["name"]: self._security_flags(pod, c) for c in self._all_containers(pod)}
        except Unschedulable as exc:
            self._wait(key, pod, {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                  "message": str(exc)}]}, str(exc))
            return
        except ConfigError as exc:
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self._wait(key, pod, {"conditions": [{"type": "PodScheduled", "status": "True"}],
                                  "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": False,
                                                         "restartCount": 0, "state": waiting}
                                                        for c in pod["spec"]["containers"]]}, str(exc))
            return
        self.waiting.pop(key, None)
        run = PodRun(pod)
        self.runs[key] = run
        threading.Thread(target=self._run, args=(run, mounts, envs, flags), name=f"pod-{run.name}",
                         daemon=True).start()

    def _wait(self, key, pod, status: dict, why: str) -> None:
        if self.waiting.get(key) != why:
            self.waiting[key] = why
            self.kube.patch(PODS, *key, {"status": status})

    def _have(self, image: str) -> bool:
        """Whether the engine has the image (nothing is ever pulled); a miss is asked again after 5 s,
        as the kubelet's image pull back-off retries."""
        if image in self.images:
            return True
        if time.monotonic() < self.missing.get(image, 0):
            return False
        if image_exists(image):
            self.images.add(image)
            return True
        self.missing[image] = time.monotonic() + 5
        return False

    @staticmethod
    def _all_containers(pod: dict) -> list[dict]:
        return [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]

    def _volumes(self, pod: dict) -> dict[str, Path]:
        namespace, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
        folders = {}
        for volume in pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if self.kube.stored(PVCS, namespace, claim) is None:
                    raise Unschedulable(f'persistentvolumeclaim "{claim}" not found')
                folder = self.root / "pvc" / namespace / claim
                if not folder.exists():  # a fresh volume, owned by the first pod's fsGroup
                    folder.mkdir(parents=True)
                    group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
                    if group is not None:
                        shutil.chown(folder, user=group, group=group)
            elif "emptyDir" in volume:
                folder = self.root / "pods" / uid / volume["name"]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o777)
            elif "secret" in volume:
                folder = self._secret_volume(pod, volume)
            else:
                raise ConfigError(f"volume {volume['name']}: only persistentVolumeClaim, emptyDir and secret are "
                                  "supported here")
            folders[volume["name"]] = folder
        return folders

    def _secret_volume(self, pod: dict, volume: dict) -> Path:
        """A Secret's keys as files (all of them, or the listed `items` at their paths), mode `defaultMode`
        (0644), as the kubelet's secret volume plugin writes them (kubernetes pkg/volume/secret); the
        container sees them read-only, whatever its mount says."""
        source = volume["secret"]
        data = self._lookup(SECRETS, pod["metadata"]["namespace"], {"name": source["secretName"],
                                                                      "optional": source.get("optional")}, "secret")
        folder = self.root / "pods" / pod["metadata"]["uid"] / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if data is None:  # an optional Secret that does not exist: an empty volume
            return folder
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            if item["key"] not in data:
                raise ConfigError(f'couldn\'t find key {item["key"]} in Secret {source["secretName"]}')
            path = folder / item["path"]
            path.write_text(data[item["key"]])
            path.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        return folder

    def _lookup(self, resource, namespace: str, ref: dict, kind: str) -> dict | None:
        found = self.kube.stored(resource, namespace, ref["name"])
        if found is None and not ref.get("optional"):
            raise ConfigError(f'{kind} "{ref["name"]}" not found')
        data = (found or {}).get("data") or {}
        if resource == SECRETS:
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data if found is not None else None

    def _env(self, pod: dict, container: dict) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env = {}
        if pod["spec"].get("enableServiceLinks", True):
            env.update(service_links(self.kube.list(SERVICES, namespace)))
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for field, resource, kind in (("configMapRef", CONFIGMAPS, "configmap"), ("secretRef", SECRETS, "secret")):
                if field in source:
                    data = self._lookup(resource, namespace, source[field], kind) or {}
                    env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = expand(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            for field, resource, kind in (("secretKeyRef", SECRETS, "secret"), ("configMapKeyRef", CONFIGMAPS,
                                                                                 "configmap")):
                if field in source:
                    ref = source[field]
                    data = self._lookup(resource, namespace, ref, kind)
                    if data is not None and ref["key"] in data:
                        env[item["name"]] = data[ref["key"]]
                    elif not ref.get("optional"):
                        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind.capitalize()} '
                                          f'{namespace}/{ref["name"]}')
            if "fieldRef" in source:
                env[item["name"]] = self._field(pod, source["fieldRef"]["fieldPath"])
        return env

    def _field(self, pod: dict, path: str) -> str:
        meta = pod["metadata"]
        fields = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "spec.nodeName": self.node,
                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                  "status.hostIP": self.network.gateway}
        found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if found:
            return (meta.get(found[1]) or {}).get(found[2], "")
        return fields.get(path, "$(POD_IP)" if path == "status.podIP" else "")

    def _security_flags(self, pod: dict, container: dict) -> list[str]:
        pod_context = pod["spec"].get("securityContext") or {}
        context = {**{k: v for k, v in pod_context.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot")},
                   **(container.get("securityContext") or {})}
        user, group = context.get("runAsUser"), context.get("runAsGroup")
        if user is None:
            declared = image_user(container["image"]).split(":")[0]
            user = int(declared) if declared.isdigit() else (0 if declared in ("", "root") else declared)
        if context.get("runAsNonRoot") and (user == 0 or not isinstance(user, int)):
            # kubelet can only prove a numeric non-zero uid (kuberuntime_container_linux.go verifyRunAsNonRoot)
            raise ConfigError("container has runAsNonRoot and image will run as root" if user == 0 else
                              f"container has runAsNonRoot and image has non-numeric user ({user}), "
                              "cannot verify user is non-root")
        flags = ["--user", f"{user}:{group}" if group is not None else str(user)]
        for extra in [pod_context.get("fsGroup"), *(pod_context.get("supplementalGroups") or [])]:
            if extra is not None:
                flags += ["--group-add", str(extra)]
        if context.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        for capability in (context.get("capabilities") or {}).get("drop") or []:
            flags += ["--cap-drop", capability]
        for capability in (context.get("capabilities") or {}).get("add") or []:
            flags += ["--cap-add", capability]
        if context.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        if context.get("privileged"):
            flags.append("--privileged")
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            flags += ["--memory", _bytes(limits["memory"])]
        if "cpu" in limits:
            flags += ["--cpus", _cpus(limits["cpu"])]
        return flags

    # -- running it ----------------------------------------------------------------------------------
    def _run(self, run: PodRun, mounts: dict[str, Path], envs: dict, flags: dict) -> None:
        pod = run.pod
        spec = pod["spec"]
        labels = ["--label", f"{LABEL}={self.id}", "--label", f"mlops-ct.pod={run.namespace}/{run.name}"]
        hosts = [f"--add-host={name}:{ip}" for name, ip in self.services.hosts().items()]
        first = spec["containers"][0]["image"]
        run.pause = f"k8s_POD_{run.name}_{run.namespace}_{run.uid[:8]}"
        docker("run", "-d", "--name", run.pause, *labels, "--network", self.network.name, "--hostname", run.name[:63],
               *hosts, "--user", "65535:65535", "--read-only", "--cap-drop", "ALL", "--entrypoint", "sleep", first,
               "infinity")
        run.ip = inspect(run.pause)["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
        self._status(run, "Pending", initialized=not spec.get("initContainers"))
        for container in spec.get("initContainers") or []:
            while not run.deleted.is_set():
                code = self._start_container(run, container, mounts, envs, flags, labels, detach=False)
                if code == 0:
                    break
                never = spec.get("restartPolicy", "Always") == "Never"
                self._status(run, "Failed" if never else "Pending", initialized=False)
                if never:
                    return
                # Init:CrashLoopBackOff: waiting, its failed run as lastState, until the back-off passes
                run.last[container["name"]] = run.finished.pop(container["name"])
                run.backing_off.add(container["name"])
                self._status(run, "Pending", initialized=False)
                time.sleep(min(2 ** run.restarts.get(container["name"], 0), 10))
                run.backing_off.discard(container["name"])
                run.restarts[container["name"]] = run.restarts.get(container["name"], 0) + 1
            if run.deleted.is_set():
                return
        self._status(run, "Pending", initialized=True)
        for container in spec["containers"]:
            self._start_container(run, container, mounts, envs, flags, labels, detach=True)
        self._status(run, "Running", initialized=True)
        self._watch(run, mounts, envs, flags, labels)

    def _docker_name(self, run: PodRun, container: dict) -> str:
        attempt = run.restarts.get(container["name"], 0)
        return f"k8s_{container['name']}_{run.name}_{run.namespace}_{run.uid[:8]}_{attempt}"

    def _start_container(self, run, container, mounts, envs, flags, labels, detach: bool) -> int | None:
        env = {k: v.replace("$(POD_IP)", run.ip) for k, v in envs[container["name"]].items()}
        name = self._docker_name(run, container)
        argv = ["run", "--name", name, *labels, "--network", f"container:{run.pause}", *flags[container["name"]]]
        for mount in container.get("volumeMounts") or []:
            read_only = mount.get("readOnly") or any(v["name"] == mount["name"] and "secret" in v
                                                     for v in run.pod["spec"].get("volumes") or [])
            argv += ["-v", f"{mounts[mount['name']]}:{mount['mountPath']}{':ro' if read_only else ''}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        if container.get("workingDir"):
            argv += ["-w", container["workingDir"]]
        command = [expand(c, env) for c in container.get("command") or []]
        args = [expand(a, env) for a in container.get("args") or []]
        if command:
            argv += ["--entrypoint", command[0]]
        argv += ["-d", container["image"], *command[1:], *args]
        run.containers[container["name"]] = name
        run.started_at[container["name"]] = _now()
        if container["name"] in run.finished:  # a restart: what ended before is its lastState
            run.last[container["name"]] = run.finished.pop(container["name"])
        started = docker(*argv, check=False)
        if started.returncode != 0:  # e.g. the executable does not exist: StartError, exit code 128
            run.finished[container["name"]] = {"exitCode": 128, "reason": "StartError",
                                               "message": started.stderr.strip()[-TERMINATION_LOG_BYTES:]}
            return 128
        if detach:
            return None
        code = int(docker("wait", name, timeout=3600).stdout.strip() or 1)
        run.finished[container["name"]] = self._terminated(run, container, code)
        return code

    def _terminated(self, run: PodRun, container: dict, code: int) -> dict:
        state = inspect(run.containers[container["name"]]) or {}
        oom = (state.get("State") or {}).get("OOMKilled")
        terminated = {"exitCode": code, "reason": "OOMKilled" if oom else ("Completed" if code == 0 else "Error"),
                      "startedAt": run.started_at.get(container["name"], _now()), "finishedAt": _now(),
                      "containerID": f"docker://{(state.get('Id') or '')}"}
        if code and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = self._container_logs(run.containers[container["name"]]).splitlines()[-TERMINATION_LOG_LINES:]
            terminated["message"] = "\n".join(lines)[-TERMINATION_LOG_BYTES:]
        return terminated

    def _watch(self, run: PodRun, mounts, envs, flags, labels) -> None:
        spec = run.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        probed_at: dict[str, float] = {}
        while not run.deleted.is_set():
            changed = False
            for container in spec["containers"]:
                name = container["name"]
                if name in run.finished:
                    continue
                state = (inspect(run.containers[name]) or {}).get("State") or {}
                if state.get("Status") in ("exited", "dead"):
                    run.finished[name] = self._terminated(run, container, int(state.get("ExitCode", 1)))
                    run.ready[name] = False
                    changed = True
                    if policy == "Always" or (policy == "OnFailure" and run.finished[name]["exitCode"]):
                        self._status(run, "Running", initialized=True)
                        time.sleep(min(2 ** run.restarts.get(name, 0), 10))
                        run.restarts[name] = run.restarts.get(name, 0) + 1
                        self._start_container(run, container, mounts, envs, flags, labels, detach=True)
                    continue
                ready = self._probe(run, container, probed_at)
                if ready is not None and ready != run.ready.get(name):
                    run.ready[name] = ready
                    changed = True
            if all(c["name"] in run.finished for c in spec["containers"]):
                failed = any(t["exitCode"] for t in run.finished.values())
                self._status(run, "Failed" if failed else "Succeeded", initialized=True)
                return
            if changed:
                self._status(run, "Running", initialized=True)
            time.sleep(0.3)

    def _probe(self, run: PodRun, container: dict, probed_at: dict) -> bool | None:
        probe = container.get("readinessProbe")
        if probe is None:
            return True
        name = container["name"]
        started = time.monotonic() if name not in probed_at else probed_at[name]
        probed_at.setdefault(name, started)
        if time.monotonic() - probed_at[name] < probe.get("initialDelaySeconds", 0):
            return None
        # Probed every second at most: earlier readiness than periodSeconds, never a different answer.
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = get["port"] if isinstance(get["port"], int) else next(
                    p["containerPort"] for p in container.get("ports") or [] if p.get("name") == get["port"])
                with urllib.request.urlopen(f"http://{run.ip}:{port}{get.get('path', '/')}",
                                            timeout=probe.get("timeoutSeconds", 1)) as answer:
                    return 200 <= answer.status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((run.ip, probe["tcpSocket"]["port"]), timeout=1):
                    return True
            if "exec" in probe:
                done = docker("exec", run.containers[name], *probe["exec"]["command"], check=False, timeout=10)
                return done.returncode == 0
        except (OSError, StopIteration):
            return False
        return True

    def _status(self, run: PodRun, phase: str, initialized: bool) -> None:
        spec = run.pod["spec"]

        def state_of(container: dict) -> dict:
            name = container["name"]
            if name in run.backing_off:  # kuberuntime: the back-off's reason and message
                return {"waiting": {"reason": "CrashLoopBackOff",
                                    "message": f"back-off {min(2 ** run.restarts.get(name, 0), 10)}s restarting "
                                               f"failed container={name} pod={run.name}_{run.namespace}({run.uid})"}}
            if name in run.finished:
                return {"terminated": run.finished[name]}
            if name in run.containers:
                return {"running": {"startedAt": run.started_at[name]}}
            return {"waiting": {"reason": "PodInitializing" if not initialized else "ContainerCreating"}}

        def last_state(container: dict) -> dict:
            return {"terminated": run.last[container["name"]]} if container["name"] in run.last else {}

        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "lastState": last_state(c),
                     "restartCount": run.restarts.get(c["name"], 0),
                     "ready": bool(run.ready.get(c["name"])) and c["name"] not in run.finished, "state": state_of(c),
                     "started": c["name"] in run.containers and c["name"] not in run.finished}
                    for c in spec["containers"]]
        init = [{"name": c["name"], "image": c["image"], "imageID": "", "lastState": last_state(c),
                 "restartCount": run.restarts.get(c["name"], 0),
                 "ready": c["name"] in run.finished and run.finished[c["name"]]["exitCode"] == 0, "state": state_of(c)}
                for c in spec.get("initContainers") or []]
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        conditions = [{"type": "PodScheduled", "status": "True"},
                      {"type": "Initialized", "status": str(initialized)},
                      {"type": "ContainersReady", "status": str(ready)},
                      {"type": "Ready", "status": str(ready)}]
        status = {"phase": phase, "podIP": run.ip, "podIPs": [{"ip": run.ip}], "hostIP": self.network.gateway,
                  "startTime": run.pod["metadata"]["creationTimestamp"], "conditions": conditions,
                  "containerStatuses": statuses, **({"initContainerStatuses": init} if init else {})}
        if not run.deleted.is_set() and self.kube.stored(PODS, run.namespace, run.name) is not None:
            self.kube.patch(PODS, run.namespace, run.name, {"status": status})

    # -- pods/log and pods/exec -------------------------------------------------------------------------
    def _find(self, namespace: str, name: str) -> PodRun | None:
        return self.runs.get((namespace, name))

    @staticmethod
    def _container_logs(container: str) -> str:
        """stdout and stderr interleaved in time, as the container runtime's log file holds them."""
        done = docker("logs", "--timestamps", container, check=False)
        lines = [*done.stdout.splitlines(), *done.stderr.splitlines()]
        return "\n".join(line.split(" ", 1)[1] if " " in line else "" for line in sorted(lines))

    def logs(self, namespace: str, name: str, container: str | None) -> str:
        run = self._find(namespace, name)
        if run is None:
            return ""
        target = container or run.pod["spec"]["containers"][0]["name"]
        return self._container_logs(run.containers[target]) if target in run.containers else ""

    def exec(self, namespace: str, name: str, container: str | None, command: list[str], stdin: str | None):
        run = self._find(namespace, name)
        target = container or (run.pod["spec"]["containers"][0]["name"] if run else None)
        if run is None or target not in run.containers:
            return f"container {target} of pod {namespace}/{name} is not running", 1
        done = docker("exec", "-i", run.containers[target], *command, input=stdin or "", check=False, timeout=60)
        return done.stdout + done.stderr, done.returncode


def _bytes(quantity: str) -> str:
    units = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9}
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    return str(int(float(found[1]) * units.get(found[2] or "", 1)))


def _cpus(quantity: str) -> str:
    text = str(quantity)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


def describe(pod: dict) -> str:
    """One line about a pod's state, for test failure messages."""
    status = pod.get("status") or {}
    states = [f"{s['name']}={next(iter(s.get('state') or {'?': 0}))}" for s in status.get("containerStatuses") or []]
    return f"{pod['metadata']['name']}: {status.get('phase')} {shlex.join(states)}"
