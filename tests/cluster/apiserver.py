"""A Kubernetes API for contract tests: kmock's KubernetesEmulator (an in-memory API over HTTP) with the
apiserver behaviour the tests rely on and kmock lacks, served from a background thread so that the
synchronous kubernetes client (as Airflow's KubernetesHook uses it) can talk to it.

Added behaviour: server-filled metadata on create (uid, resourceVersion, generation 1,
creationTimestamp; a Pending status for pods) and 201; 409 AlreadyExists; generation bumped only
when a patch changes `spec`; label selectors on list; the discovery paths the typed client asks for
(with a trailing slash); bearer tokens naming users (as a static token file does: `token(user)`);
mutating admission webhooks (`mutators`, e.g. KServe's defaulter, kserve.py) on creates and patches,
then ValidatingAdmissionPolicies on creates, patches, deletes and pod exec (admission.py); server-side
apply and managedFields (fieldmanager.py). Authorisation (RBAC) is not enforced: the RBAC contract test
compares the calls made, with the verbs the API server authorises them as (`api_calls`), with the Roles.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import inspect
import json
import re
import threading
import uuid
from collections.abc import Callable

import aiohttp.web
import attrs
import kmock
import yaml

from tests.reference import reference_file

from . import admission, fieldmanager
from .fieldmanager import APPLY_PATCH

ISVC = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")
RUNTIMES = kmock.resource("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
PODS = kmock.resource("", "v1", "pods")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
SECRETS = kmock.resource("", "v1", "secrets")
EVENTS = kmock.resource("", "v1", "events")
SERVICES = kmock.resource("", "v1", "services")
ENDPOINTS = kmock.resource("", "v1", "endpoints")
PVCS = kmock.resource("", "v1", "persistentvolumeclaims")
SERVICE_ACCOUNTS = kmock.resource("", "v1", "serviceaccounts")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
JOBS = kmock.resource("batch", "v1", "jobs")
VIRTUAL_SERVICES = kmock.resource("networking.istio.io", "v1", "virtualservices")
NAMESPACES = kmock.resource("", "v1", "namespaces")
NETWORK_POLICIES = kmock.resource("networking.k8s.io", "v1", "networkpolicies")
ADMISSION_POLICIES = kmock.resource("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies")
ADMISSION_BINDINGS = kmock.resource("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings")
# kind -> resource, for objects installed from manifests
KINDS = {"InferenceService": ISVC, "ClusterServingRuntime": RUNTIMES, "Pod": PODS, "ConfigMap": CONFIGMAPS,
         "Secret": SECRETS, "Service": SERVICES, "Endpoints": ENDPOINTS, "PersistentVolumeClaim": PVCS,
         "ServiceAccount": SERVICE_ACCOUNTS, "Deployment": DEPLOYMENTS, "Job": JOBS, "VirtualService": VIRTUAL_SERVICES,
         "Namespace": NAMESPACES, "NetworkPolicy": NETWORK_POLICIES,
         "ValidatingAdmissionPolicy": ADMISSION_POLICIES, "ValidatingAdmissionPolicyBinding": ADMISSION_BINDINGS}
CLUSTER_SCOPED = {RUNTIMES, NAMESPACES, ADMISSION_POLICIES, ADMISSION_BINDINGS}
ADMITTED = {kmock.action.CREATE: "CREATE", kmock.action.UPDATE: "UPDATE", kmock.action.DELETE: "DELETE"}
ANONYMOUS = "system:anonymous"  # a request without a known bearer token, as with --anonymous-auth


POD_SUBRESOURCE = re.compile(r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/(?P<sub>exec|log)")
# A mutating webhook: (operation, object, old object or None) -> the object it admits (kserve.py's defaulter).
Mutator = Callable[[str, dict, dict | None], dict]


def merge_diff(current, desired):
    """The RFC 7386 merge patch that turns `current` into `desired` (keys only in current become null)."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return copy.deepcopy(desired)
    patch = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif current[key] != value:
            patch[key] = merge_diff(current[key], value)
    return patch


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_match(obj: dict, selector: str | dict | None) -> bool:
    """Equality-based selectors (a=b, a==b, a!=b, a, !a) as a string, what clients send, or a
    Service's / Deployment's matchLabels dict."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if isinstance(selector, dict):
        return all(labels.get(k) == v for k, v in selector.items())
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            ok = labels.get(key.strip()) == value.strip()
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


class NotFound(LookupError):
    """The object is not stored (any more): what the API server answers 404 for."""


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """`exec_handler(namespace, pod, container, command, stdin) -> (stdout, exit code)` answers
    `pods/exec` (KPO reads XCom through the sidecar that way); `log_handler(namespace, pod, container)`
    answers `pods/log`. The kubelet provides both. `mutators[resource]`: the mutating admission webhooks
    (Mutator) the API server calls on creates, patches and applies of that resource, in order, after the
    field manager and before the ValidatingAdmissionPolicies, as the admission chain runs them."""

    _resource_version: int = attrs.field(default=0, init=False)
    exec_handler: Callable | None = attrs.field(default=None, init=False)
    log_handler: Callable | None = attrs.field(default=None, init=False)
    # (namespace, pod, "exec" | "log", HTTP method, whether it asked for a websocket upgrade)
    subresource_calls: list = attrs.field(factory=list, init=False)
    users: dict = attrs.field(factory=dict, init=False)  # bearer token -> user name
    mutators: dict = attrs.field(factory=dict, init=False)  # resource -> [Mutator], in the order called
    field_schemas: dict = attrs.field(factory=dict, init=False)  # resource -> fieldmanager.Fields
    apply_creates: set = attrs.field(factory=set, init=False)  # ids of applies that created their object

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources[ISVC] = kmock.ResourceInfo(
            kind="InferenceService", singular="inferenceservice", namespaced=True, shortnames={"isvc"},
            categories={"kserve"}, subresources={"status"},
            verbs={"create", "delete", "get", "list", "patch", "watch"})
        self.resources[PODS] = kmock.ResourceInfo(
            kind="Pod", singular="pod", namespaced=True, shortnames={"po"}, categories={"all"},
            subresources={"status", "log", "exec"}, verbs={"create", "delete", "get", "list", "patch", "watch"})
        self.resources[EVENTS] = kmock.ResourceInfo(
            kind="Event", singular="event", namespaced=True, shortnames={"ev"}, categories=set(), subresources=set(),
            verbs={"create", "get", "list", "watch"})
        crud = {"create", "delete", "get", "list", "patch", "update", "watch"}
        for kind, resource in KINDS.items():
            if resource not in self.resources:
                self.resources[resource] = kmock.ResourceInfo(
                    kind=kind, singular=kind.lower(), namespaced=resource not in CLUSTER_SCOPED, shortnames=set(),
                    categories=set(), subresources={"status"}, verbs=crud)
        # The InferenceService CRD's structural schema says which lists merge by key (spec...env by name).
        self.field_schemas[ISVC] = fieldmanager.Fields(fieldmanager.list_map_keys(
            json.loads(reference_file("kserve-crd-inferenceservices.json").read_text())["versions"]["v1beta1"]))
        early = self ** -1000  # above kmock's own fallbacks, below a test's reactions
        early["get", re.compile(r"/apis/[^/]+/[^/]+/")] << self._serve_version
        early["get", re.compile(r"/apis/[^/]+/")] << self._serve_group
        early["get", re.compile(r"/api/[^/]+/")] << self._serve_version
        early["get /version/"] << self._serve_server_version
        early["get /apis/"] << self._serve_apis
        early["get /api/"] << self._serve_api

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        found = POD_SUBRESOURCE.fullmatch(raw_request.path)
        upgrade = raw_request.headers.get("Upgrade", "").lower() == "websocket"
        if found:
            self.subresource_calls.append((found["namespace"], found["name"], found["sub"], raw_request.method,
                                           upgrade))
        if found and found["sub"] == "exec":
            options = {"kind": "PodExecOptions", "apiVersion": "v1", "container": raw_request.query.get("container"),
                       "command": raw_request.query.getall("command", []),
                       **{k: raw_request.query.get(k, "").lower() == "true"
                          for k in ("stdin", "stdout", "stderr", "tty")}}
            try:
                self.admit(admission.Request(
                    "CONNECT", "", "v1", "pods", "exec", found["namespace"], found["name"], "PodExecOptions",
                    options, None, self.user(raw_request.headers)))
            except admission.Denied as denied:
                return aiohttp.web.json_response(denied.status(), status=denied.code)
            if not upgrade:  # SPDY (a POST that upgrades to SPDY/3.1) is not played: only websockets
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "Upgrade request required", "reason": "BadRequest", "code": 400}, status=400)
            return await self._serve_exec(raw_request, found["namespace"], found["name"])
        if found and found["sub"] == "log":
            text = await asyncio.to_thread(self.log_handler, found["namespace"], found["name"],
                                           raw_request.query.get("container")) if self.log_handler else ""
            lines = text.splitlines()
            if raw_request.query.get("timestamps", "").lower() == "true":
                lines = [f"{_now().replace('Z', '.000000000Z')} {line}" for line in lines]
            return aiohttp.web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")
        return await super().__call__(raw_request)

    async def _serve_exec(self, raw_request, namespace: str, name: str) -> aiohttp.web.StreamResponse:
        """The `v4.channel.k8s.io` websocket protocol: stdin on channel 0, stdout 1, the exit status 3."""
        ws = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(raw_request)
        query = raw_request.query
        stdin = None
        if query.get("stdin", "").lower() == "true":
            message = await ws.receive(timeout=10)
            stdin = bytes(message.data[1:]).decode() if message.type == aiohttp.WSMsgType.BINARY else message.data[1:]
        stdout, code = await asyncio.to_thread(self.exec_handler, namespace, name, query.get("container"),
                                               query.getall("command", []), stdin)
        if stdout:
            await ws.send_bytes(b"\x01" + stdout.encode())
        status = {"metadata": {}, "status": "Success"} if code == 0 else {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    def user(self, headers) -> str:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        return self.users.get(token, ANONYMOUS) if scheme.lower() == "bearer" else ANONYMOUS

    def stored_raw(self, resource, namespace: str | None, name: str) -> dict | None:
        key = (resource, namespace or None, name)
        return self.objects[key].raw if key in self.objects and not self.objects[key].deleted else None

    def admit(self, request: admission.Request) -> None:
        """Raise admission.Denied when a ValidatingAdmissionPolicy denies the request."""
        bindings = [o.raw for (r, _, _), o in self.objects.items() if r == ADMISSION_BINDINGS and not o.deleted]
        if not bindings:
            return
        policies = [o.raw for (r, _, _), o in self.objects.items() if r == ADMISSION_POLICIES and not o.deleted]

        def lookup(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
            resource = KINDS.get(kind)
            if resource is None:
                return None
            return self.stored_raw(resource, None if resource in CLUSTER_SCOPED else namespace, name)

        admission.admit(request, policies, bindings, lookup)

    def _admission_request(self, request: kmock.Request) -> admission.Request | None:
        """The request as admission sees it, for creates, patches and deletes of stored kinds."""
        resource, operation = request.resource, ADMITTED.get(request.action)
        if resource is None or operation is None or resource not in self.resources:
            return None
        new = request.data if isinstance(request.data, dict) else None
        namespace = None if resource in CLUSTER_SCOPED else \
            request.namespace or ((new or {}).get("metadata") or {}).get("namespace")
        kind = self.resources[resource].kind
        old = None
        if operation == "CREATE":
            name = ((new or {}).get("metadata") or {}).get("name") or ""
        else:
            name = request.name or ""
            old = self.stored_raw(resource, namespace, name)
            if old is None:
                return None  # 404 follows
            if operation == "UPDATE":
                preview = kmock.Object(copy.deepcopy(old))
                preview.patch(request.data)
                new = preview.raw
            else:
                new = None
        return admission.Request(operation, resource.group, resource.version, resource.plural,
                                 request.subresource or "", namespace or "", name, kind, new, old,
                                 self.user(request.headers))

    def next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _bookkeeping(self, stored: dict, patch):
        preview = kmock.Object(copy.deepcopy(stored))
        preview.patch(patch)
        meta = {"resourceVersion": self.next_resource_version()}
        if preview.raw.get("spec") != stored.get("spec"):
            meta["generation"] = int((stored.get("metadata") or {}).get("generation") or 1) + 1
        if isinstance(patch, dict):
            return {**patch, "metadata": {**(patch.get("metadata") or {}), **meta}}
        return [*patch, *({"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in meta.items())]

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock matches reactions to requests by identity: enrich request.data in place, never copy it.
        if request.action == kmock.action.LIST and str(request.params.get("watch", "")).lower() in ("true", "1"):
            object.__setattr__(request, "action", kmock.action.WATCH)  # the client sends watch=True
        resource = request.resource
        if resource is not None and request.action == kmock.action.UPDATE and request.name and \
                (request.headers.get("Content-Type") or "").startswith(APPLY_PATCH):
            return await self._serve_apply(request)
        self._mutate_and_own(request)
        admitted = self._admission_request(request)
        if admitted is not None:
            try:
                self.admit(admitted)
            except admission.Denied as denied:
                return aiohttp.web.json_response(denied.status(), status=denied.code)
            if request.params.get("dryRun") == "All":  # admitted, answered, not stored
                answer = admitted.object or admitted.old_object
                return aiohttp.web.json_response(answer, status=201 if admitted.operation == "CREATE" else 200)
        if resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            namespace = request.namespace or meta.get("namespace")
            key = (resource, namespace, meta.get("name"))
            if key in self.objects and not self.objects[key].deleted:
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 409,
                     "reason": "AlreadyExists",
                     "message": f'{resource.plural}.{resource.group} "{meta.get("name")}" already exists',
                     "details": {"name": meta.get("name"), "group": resource.group, "kind": resource.plural}},
                    status=409)
            meta["namespace"] = namespace
            self.server_defaults(resource, request.data)
            response = await super()._handle(request)
            if response.status == 200:
                response.set_status(201)
            return response
        if resource is not None and request.action == kmock.action.UPDATE and request.name and \
                isinstance(request.data, (dict, list)):
            key = (resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                enriched = self._bookkeeping(self.objects[key].raw, request.data)
                if isinstance(request.data, dict):
                    request.data.clear()
                    request.data.update(enriched)
                else:
                    request.data[:] = enriched
        return await super()._handle(request)

    def fields(self, resource) -> fieldmanager.Fields:
        """How objects of `resource` break into fields (their schema's map lists, when one was given)."""
        return self.field_schemas.get(resource) or fieldmanager.Fields()

    def _mutated(self, resource, operation: str, obj: dict, old: dict | None) -> dict:
        """The object after the mutating webhooks (in order, each on the previous one's answer); they may
        not change managedFields (fieldmanager's admission controller resets them, admission.go)."""
        managed = (obj.get("metadata") or {}).get("managedFields")
        for mutate in self.mutators.get(resource) or []:
            obj = mutate(operation, copy.deepcopy(obj), old)
        if managed is not None:
            obj.setdefault("metadata", {})["managedFields"] = managed
        return obj

    def _mutate_and_own(self, request: kmock.Request) -> None:
        """A create or merge patch as the API server handles it before validation: the field manager
        records what the request's manager changed, then the mutating webhooks run. The request's data is
        rewritten in place (kmock matches reactions to requests by identity) to what gets stored."""
        resource, data = request.resource, request.data
        if resource is None or resource not in self.resources or not isinstance(data, dict):
            return
        manager = fieldmanager.manager_of(request.params, request.headers)
        if request.action == kmock.action.CREATE:
            new = self._mutated(resource, "CREATE", fieldmanager.update(None, data, manager, self.fields(resource)),
                                None)
        elif request.action == kmock.action.UPDATE and request.name and not request.subresource:
            old = self.stored_raw(resource, None if resource in CLUSTER_SCOPED else request.namespace, request.name)
            if old is None:
                return
            preview = kmock.Object(copy.deepcopy(old))
            preview.patch(data)
            owned = fieldmanager.update(old, preview.raw, manager, self.fields(resource))
            new = merge_diff(old, self._mutated(resource, "UPDATE", owned, old))
        else:
            return
        data.clear()
        data.update(new)

    async def _serve_apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Server-side apply (PATCH, application/apply-patch+yaml): creates the object when absent (which is
        also authorised as `create`, k8s.io/apiserver/pkg/endpoints/handlers/patch.go), else merges the
        configuration as fieldmanager.apply does; then the mutating webhooks and the validating policies,
        as for any write."""
        def status(code: int, reason: str, message: str) -> aiohttp.web.Response:
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                              "message": message, "reason": reason, "code": code}, status=code)

        resource, name = request.resource, request.name
        namespace = None if resource in CLUSTER_SCOPED else request.namespace
        manager = request.params.get("fieldManager")
        if not manager:  # ValidatePatchOptions
            return status(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                          "is required for apply patch")
        config = request.data if isinstance(request.data, dict) else yaml.safe_load(request.text or "")
        if not isinstance(config, dict) or (config.get("metadata") or {}).get("name") != name:
            return status(400, "BadRequest", "the name of the object does not match the name on the URL")
        # every kind here has a status subresource: a write to the main resource leaves status alone
        config = {key: value for key, value in config.items() if key != "status"}
        force = str(request.params.get("force", "")).lower() == "true"
        old = self.stored_raw(resource, namespace, name)
        try:
            applied = fieldmanager.apply(copy.deepcopy(old) if old else None, config, manager, force,
                                         self.fields(resource))
        except fieldmanager.Conflict as conflict:
            return aiohttp.web.json_response(conflict.status(), status=409)
        operation = "UPDATE" if old else "CREATE"
        new = self._mutated(resource, operation, applied, old)
        if namespace:
            new["metadata"]["namespace"] = namespace
        try:
            self.admit(admission.Request(operation, resource.group, resource.version, resource.plural, "",
                                         namespace or "", name, self.resources[resource].kind, new, old,
                                         self.user(request.headers)))
        except admission.Denied as denied:
            return aiohttp.web.json_response(denied.status(), status=denied.code)
        if request.params.get("dryRun") == "All":
            return aiohttp.web.json_response(new, status=201 if old is None else 200)
        if old is None:
            self.apply_creates.add(request.id)
            stored = await self.create_stored(resource, new)
            return aiohttp.web.json_response(stored, status=201)
        stored = await self.patch_stored(resource, namespace, name, merge_diff(old, new))
        return aiohttp.web.json_response(stored)

    async def _serve_list(self, request: kmock.Request):
        result = await super()._serve_list(request)
        result["items"] = [o for o in result["items"] if labels_match(o, request.params.get("labelSelector"))]
        result["metadata"] = {"resourceVersion": str(self._resource_version)}
        return result

    def server_defaults(self, resource, obj: dict) -> dict:
        """What the apiserver fills in on create: uid, resourceVersion, generation, creationTimestamp;
        a Pending status for pods (until a kubelet takes them)."""
        meta = obj.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self.next_resource_version(), generation=1,
                    creationTimestamp=_now())
        if resource == PODS:
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        if resource == NAMESPACES:  # set on every namespace since Kubernetes 1.21 (NamespaceDefaultLabelName)
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
        return obj

    async def create_stored(self, resource, obj: dict) -> dict:
        """Store a new object as a controller's create would (the harness's own writes, which are not
        the plugins' API calls)."""
        obj = self.server_defaults(resource, copy.deepcopy(obj))
        meta = obj["metadata"]
        async with self._lock:
            key = (resource, meta.get("namespace"), meta["name"])
            if key in self.objects and not self.objects[key].deleted:
                raise KeyError(f"{resource.plural} {meta.get('namespace')}/{meta['name']} already exists")
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            await self._buses[resource].put({"type": "ADDED", "object": self.objects[key].raw})
            return copy.deepcopy(self.objects[key].raw)

    async def delete_stored(self, resource, namespace: str | None, name: str) -> None:
        async with self._lock:
            key = (resource, namespace, name)
            if key in self.objects and not self.objects[key].deleted:
                raw = self.objects[key].raw
                self.objects[key].delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})

    async def patch_stored(self, resource, namespace: str, name: str, patch) -> dict:
        """Change a stored object as a controller or kubelet would (resourceVersion bump, watch event).
        An object that is gone, deleted since the caller read it, is NotFound, as the API server's 404."""
        async with self._lock:
            key = (resource, namespace, name)
            if key not in self.objects or self.objects[key].deleted:
                raise NotFound(f"{resource} {namespace}/{name} not found")
            obj = self.objects[key]
            obj.patch(self._bookkeeping(obj.raw, patch))
            await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
            return copy.deepcopy(obj.raw)


class KubeEmulator:
    """ApiServer on a free port, in a thread with its own event loop. `call` runs code in that loop
    (the thread-safe way to read or change stored objects)."""

    def __init__(self):
        self.api = ApiServer()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self.api, kmock.Server(self.api, host="127.0.0.1") as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable, *args, timeout: float = 10, **kwargs):
        async def run():
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stored(self, resource, namespace: str, name: str) -> dict | None:
        def read():
            key = (resource, namespace, name)
            return copy.deepcopy(self.api.objects[key].raw) if key in self.api.objects and \
                not self.api.objects[key].deleted else None

        return self.call(read)

    def patch(self, resource, namespace: str, name: str, patch) -> dict:
        return self.call(self.api.patch_stored, resource, namespace, name, patch)

    def token(self, username: str) -> str:
        """A bearer token the API server takes as `username` (e.g. a service account's
        system:serviceaccount:<namespace>:<name>)."""
        token = uuid.uuid4().hex
        self.call(lambda: self.api.users.__setitem__(token, username))
        return token

    def create(self, obj: dict, resource=None) -> dict:
        return self.call(self.api.create_stored, resource or KINDS[obj["kind"]], obj)

    def delete(self, resource, namespace: str | None, name: str) -> None:
        self.call(self.api.delete_stored, resource, namespace, name)

    def list(self, resource, namespace: str | None = None) -> list[dict]:
        def read():
            return [copy.deepcopy(obj.raw) for (res, ns, _), obj in self.api.objects.items()
                    if res == resource and not obj.deleted and namespace in (None, ns)]

        return self.call(read)

    def requests(self, *criteria) -> list[kmock.Request]:
        return self.call(lambda: list(self.api[criteria] if criteria else self.api))

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError("the Kubernetes emulator did not start") from self._error
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def kube_connection(monkeypatch, url: str, conn_id: str = "kubernetes_emulator", token: str | None = None,
                    **extra) -> str:
    """An Airflow connection to the emulator, as the provider's KubernetesHook reads it (inline kubeconfig,
    with `token` as its user's bearer token when given; `extra`: the connection's other fields, e.g.
    xcom_sidecar_container_image)."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "emulator",
              "clusters": [{"name": "emulator", "cluster": {"server": url}}],
              "users": [{"name": "tests", "user": {"token": token} if token else {}}],
              "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tests"}}]}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": config, **extra}}))
    return conn_id


RBAC_VERBS = {kmock.action.LIST: "list", kmock.action.WATCH: "watch", kmock.action.FETCH: "get",
              kmock.action.CREATE: "create", kmock.action.UPDATE: "patch", kmock.action.DELETE: "delete"}


def api_calls(kube: KubeEmulator, since: tuple[int, int] = (0, 0),
              until: tuple[int, int] | None = None) -> set[tuple[str, str, str, str]]:
    """Every resource call the emulator served (between two `mark()`s), as RBAC sees it: (namespace,
    apiGroup, resource, verb). The verb is the request's, as kube-apiserver's request-info resolver gives
    it (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go): for a named resource GET is get, PATCH
    patch, DELETE delete, POST create; for a connect subresource (pods/exec, attach, portforward) the
    HTTP method's alone, GET get and POST create. A server-side apply that creates its object is also
    authorised as `create` (handlers/patch.go). A websocket exec (the kubernetes client's `stream`, an
    HTTP GET that upgrades) is `get`, and from Kubernetes 1.35 also `create`: the feature gate
    AuthorizePodWebsocketUpgradeCreatePermission (beta, on by default) adds that synthetic check so that a
    websocket needs what SPDY's POST always needed. A log read is `get`. The harness's own reads and
    writes are not API calls."""
    calls = set()
    requests, subresources = kube.requests(), kube.call(lambda: list(kube.api.subresource_calls))
    creates = kube.call(lambda: set(kube.api.apply_creates))
    until = until or (len(requests), len(subresources))
    for request in requests[since[0]:until[0]]:
        if request.resource is not None and request.action in RBAC_VERBS:
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            calls.add((request.namespace or "", request.resource.group, resource, RBAC_VERBS[request.action]))
            if request.id in creates:
                calls.add((request.namespace or "", request.resource.group, resource, "create"))
    for namespace, _, sub, method, upgrade in subresources[since[1]:until[1]]:
        verbs = {"GET": {"get"}, "POST": {"create"}}.get(method, set())
        if sub == "exec" and method == "GET" and upgrade:
            verbs = verbs | {"create"}
        calls.update((namespace, "", f"pods/{sub}", verb) for verb in verbs)
    return calls


def mark(kube: KubeEmulator) -> tuple[int, int]:
    """Where the request log is now, for api_calls(since=...)."""
    return len(kube.requests()), kube.call(lambda: len(kube.api.subresource_calls))
