"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), as the API server applies it after
authorisation, for the emulated API server. CEL is evaluated by cel-python.

Follows k8s.io/apiserver/pkg/admission/plugin/policy (v1.34): a binding names its policy
(`spec.policyName`); a request is checked against a policy when it matches the policy's
`matchConstraints` and, when given, the binding's `matchResources` (matching/matching.go: rules by
operation, group, version and resource, `pods/exec`-style subresources, `*` wildcards; exclude rules
win; namespace and object selectors by labels); then every `matchCondition` must be true
(matchconditions/matcher.go, a false one skips the policy); the binding's `paramRef` object becomes
`params` (`parameterNotFoundAction: Deny` refuses the request when it is missing); `variables` are
computed in order; the first `validation` that is false denies the request when the binding's
`validationActions` has Deny, with "ValidatingAdmissionPolicy '<policy>' with binding '<binding>'
denied request: <message>" and the validation's `reason` (Invalid, 422, when unset). An expression
that errors applies the policy's `failurePolicy` (Fail by default).

Simplifications, none of which the project's policy relies on: variables are evaluated eagerly (the
API server evaluates them when first used), no type checking, no cost budget, `authorizer` is absent.
The CEL variables given: `object`, `oldObject` (null when absent, as upstream), `request` (operation,
kind, resource, subResource, name, namespace, userInfo), `params`, `namespaceObject`, `variables`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import celpy

from .selectors import selects

STATUS_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}


@dataclass(frozen=True)
class Request:
    """What admission sees of one API request (k8s.io/apiserver/pkg/admission.Attributes)."""
    operation: str  # CREATE, UPDATE, DELETE or CONNECT
    group: str
    version: str
    resource: str  # plural, e.g. pods
    subresource: str  # "" or e.g. exec
    namespace: str
    name: str
    kind: str
    object: dict | None
    old_object: dict | None
    username: str
    groups: tuple[str, ...] = ()

    def as_cel(self) -> dict:
        group_version_kind = {"group": self.group, "version": self.version, "kind": self.kind}
        return {"operation": self.operation, "kind": group_version_kind, "requestKind": group_version_kind,
                "resource": {"group": self.group, "version": self.version, "resource": self.resource},
                "subResource": self.subresource, "name": self.name, "namespace": self.namespace,
                "userInfo": {"username": self.username, "groups": list(self.groups)}, "dryRun": False}


@dataclass
class Denied(Exception):
    """The API server's answer to a denied request: a Status with this code, reason and message."""
    code: int
    reason: str
    message: str

    def __str__(self) -> str:
        return self.message

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


@dataclass
class _Cel:
    env: celpy.Environment = field(default_factory=celpy.Environment)
    programs: dict = field(default_factory=dict)

    def evaluate(self, expression: str, activation: dict):
        if expression not in self.programs:
            self.programs[expression] = self.env.program(self.env.compile(expression))
        result = self.programs[expression].evaluate(activation)
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result


_CEL = _Cel()


def _rule_matches(rule: dict, request: Request) -> bool:
    def listed(values, value) -> bool:
        return "*" in values or value in values

    if not (listed(rule.get("operations") or [], request.operation) and
            listed(rule.get("apiGroups") or [], request.group) and
            listed(rule.get("apiVersions") or [], request.version)):
        return False
    names = rule.get("resourceNames") or []
    if names and request.name not in names:
        return False
    for resource in rule.get("resources") or []:
        plural, _, sub = resource.partition("/")
        if plural not in ("*", request.resource):
            continue
        if (sub == "" and request.subresource == "") or sub == "*" or sub == request.subresource:
            return True
    return False


def _matches(resources: dict | None, request: Request, namespace: dict | None) -> bool:
    """MatchResources: a namespaced request needs its namespace to match the namespaceSelector, the
    object (or old object) its objectSelector, one resourceRule and no excludeResourceRule."""
    resources = resources or {}
    if request.namespace and not selects(resources.get("namespaceSelector"),
                                         ((namespace or {}).get("metadata") or {}).get("labels") or {}):
        return False
    subject = request.object if request.operation != "CONNECT" and request.object else request.old_object or {}
    if not selects(resources.get("objectSelector"), (subject.get("metadata") or {}).get("labels") or {}):
        return False
    rules = resources.get("resourceRules")
    if rules is not None and not any(_rule_matches(rule, request) for rule in rules):
        return False
    return not any(_rule_matches(rule, request) for rule in resources.get("excludeResourceRules") or [])


def admit(request: Request, policies: list[dict], bindings: list[dict],
          lookup: Callable[[str, str, str, str], dict | None]) -> None:
    """Raise Denied when a bound policy denies `request`. `lookup(apiVersion, kind, namespace, name)`
    reads a stored object (the binding's parameter, the request's namespace)."""
    by_name = {p["metadata"]["name"]: p for p in policies}
    namespace = lookup("v1", "Namespace", "", request.namespace) if request.namespace else None
    for binding in bindings:
        policy = by_name.get(binding["spec"]["policyName"])
        if policy is None:
            continue
        spec = policy["spec"]
        if not (_matches(spec.get("matchConstraints"), request, namespace) and
                (binding["spec"].get("matchResources") is None or
                 _matches(binding["spec"]["matchResources"], request, namespace))):
            continue
        _apply(policy, binding, request, namespace, lookup)


def _apply(policy: dict, binding: dict, request: Request, namespace: dict | None, lookup) -> None:
    spec = policy["spec"]
    names = f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding '{binding['metadata']['name']}'"

    def deny(message: str, reason: str = "Invalid") -> None:
        if "Deny" in (binding["spec"].get("validationActions") or []):
            raise Denied(STATUS_CODES.get(reason, 422), reason, f"{names} denied request: {message}")

    params = None
    reference = binding["spec"].get("paramRef")
    if reference and spec.get("paramKind"):
        kind = spec["paramKind"]
        params = lookup(kind["apiVersion"], kind["kind"], reference.get("namespace") or request.namespace,
                        reference["name"])
        if params is None:
            if reference.get("parameterNotFoundAction", "Deny") == "Deny":  # validating/dispatcher.go
                raise Denied(403, "Forbidden", f"{names} denied request: failed to configure binding: no params "
                                               "found for policy binding with `Deny` parameterNotFoundAction")
            return
    activation = {"object": request.object, "oldObject": request.old_object, "request": request.as_cel(),
                  "params": params, "namespaceObject": namespace}
    try:
        cel = celpy.json_to_cel(activation)
        for condition in spec.get("matchConditions") or []:
            if not _CEL.evaluate(condition["expression"], cel):
                return
        cel["variables"] = celpy.celtypes.MapType()
        for variable in spec.get("variables") or []:
            value = _CEL.evaluate(variable["expression"], cel)
            name = celpy.celtypes.StringType(variable["name"])
            cel["variables"] = celpy.celtypes.MapType({**cel["variables"], name: value})
        for validation in spec.get("validations") or []:
            if not _CEL.evaluate(validation["expression"], cel):
                message = validation.get("message") or f"failed expression: {validation['expression'].strip()}"
                if validation.get("messageExpression"):
                    message = str(_CEL.evaluate(validation["messageExpression"], cel))
                deny(message, validation.get("reason") or "Invalid")
                return
    except Denied:
        raise
    except Exception as exc:  # a CEL error: the policy's failurePolicy decides
        if spec.get("failurePolicy", "Fail") == "Fail":
            deny(f"expression resulted in error: {exc}", "Invalid")
