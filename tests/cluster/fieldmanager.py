"""Server-side apply and field ownership for the emulated API server: what the API server's field manager
does with `metadata.managedFields` on an apply (`PATCH` with `application/apply-patch+yaml`) and on the
other writes, kept to what the objects written here need.

Follows https://kubernetes.io/docs/reference/using-api/server-side-apply/ and the code behind it
(k8s.io/apimachinery/pkg/util/managedfields/internal, sigs.k8s.io/structured-merge-diff v4):
- every write records which manager owns which fields: an apply under its `fieldManager` (operation
  Apply, the fields of the configuration it sent), any other write under its manager (operation Update,
  the fields it changed, taken from whoever owned them);
- an apply merges its configuration into the live object (maps key by key, lists as their schema's
  `x-kubernetes-list-type` says: `map` lists item by item on their `x-kubernetes-list-map-keys`,
  others whole) and removes the fields the same manager applied last time and no longer sends, unless
  another manager owns them too;
- a field the apply sets to another value than the live one, owned by another manager, is a conflict:
  409 with one cause per field (internal/conflict.go wording), unless `force`, which takes the field
  over; the same value is shared ownership, no conflict;
- mutating admission runs after the field manager (k8s.io/apiserver/pkg/endpoints/handlers/patch.go,
  create.go), so what a webhook sets is owned by no manager: an apply never removes it.
Fields are tuples of path segments: a map key, or for an item of a `map` list the tuple of its key
(name, value) pairs. Not played: `fieldsV1`'s "." entries for the map items themselves and `set` lists.
"""

from __future__ import annotations

import copy
import datetime as dt
import json

APPLY_PATCH = "application/apply-patch+yaml"
_ABSENT = object()
# Not fields anyone manages: identity, server bookkeeping, and status (an apply to the main resource
# ignores it when the resource has a status subresource).
UNMANAGED = {("apiVersion",), ("kind",), ("status",), ("metadata", "name"), ("metadata", "namespace"),
             ("metadata", "uid"), ("metadata", "resourceVersion"), ("metadata", "generation"),
             ("metadata", "creationTimestamp"), ("metadata", "managedFields"), ("metadata", "deletionTimestamp")}


class Conflict(Exception):
    """The apply would change fields other managers own (and was not forced)."""

    def __init__(self, conflicts: list[tuple[str, str]], api_version: str):
        super().__init__()
        self.conflicts, self.api_version = conflicts, api_version

    def status(self) -> dict:
        """As internal/conflict.go words it (NewConflictError / ConflictsToError)."""
        by_manager: dict[str, list[str]] = {}
        for manager, field in self.conflicts:
            by_manager.setdefault(manager, []).append(field)
        count = len(self.conflicts)
        if count == 1:
            (manager, field), = self.conflicts
            message = f'Apply failed with 1 conflict: conflict with "{manager}" using {self.api_version}: {field}'
        else:
            parts = [f'conflicts with "{manager}" using {self.api_version}:\n' + "\n".join(f"- {f}" for f in fields)
                     for manager, fields in by_manager.items()]
            message = f"Apply failed with {count} conflicts: " + "\n".join(parts)
        causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{manager}" using {self.api_version}',
                   "field": field} for manager, field in self.conflicts]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": "Conflict", "details": {"causes": causes}, "code": 409}


def list_map_keys(schema: dict | None) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Where an OpenAPI schema declares `x-kubernetes-list-type: map`: its property path -> its keys."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}

    def walk(node, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-list-type") == "map":
            found[path] = tuple(node.get("x-kubernetes-list-map-keys") or ())
        for name, child in (node.get("properties") or {}).items():
            walk(child, (*path, name))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path)  # an item's fields continue the list's path

    walk(schema, ())
    return found


class Fields:
    """Field paths of objects of one kind (its schema's map lists)."""

    def __init__(self, map_lists: dict[tuple[str, ...], tuple[str, ...]] | None = None):
        self.map_lists = map_lists or {}

    def _keys(self, path: tuple) -> tuple[str, ...] | None:
        return self.map_lists.get(tuple(p for p in path if isinstance(p, str)))

    def of(self, obj: dict) -> set[tuple]:
        """The leaf fields `obj` sets (an empty map or list is a leaf of its own)."""
        found: set[tuple] = set()

        def walk(value, path: tuple) -> None:
            if path in UNMANAGED:
                return
            keys = self._keys(path) if isinstance(value, list) else None
            if isinstance(value, dict) and value:
                for key, child in value.items():
                    walk(child, (*path, key))
            elif keys and value and all(isinstance(i, dict) for i in value):
                for item in value:
                    identity = tuple((k, item.get(k)) for k in keys)
                    for key, child in item.items():
                        walk(child, (*path, identity, key))
            else:
                found.add(path)

        walk(obj, ())
        return found

    @staticmethod
    def get(obj, path: tuple):
        """The value at `path`, or KeyError."""
        for segment in path:
            if isinstance(segment, tuple):
                obj = next(i for i in obj if isinstance(i, dict) and all(i.get(k) == v for k, v in segment))
            else:
                obj = obj[segment]
        return obj

    def value(self, obj, path: tuple, default=None):
        try:
            return self.get(obj, path)
        except (KeyError, TypeError, StopIteration):
            return default

    def merge(self, live, applied, path: tuple = ()):
        """`applied` over `live` (structured-merge-diff's merge: maps by key, map lists by item key)."""
        if isinstance(live, dict) and isinstance(applied, dict):
            merged = dict(live)
            for key, value in applied.items():
                merged[key] = self.merge(live.get(key), value, (*path, key)) if key in live else copy.deepcopy(value)
            return merged
        keys = self._keys(path)
        if keys and isinstance(live, list) and isinstance(applied, list):
            merged = [copy.deepcopy(i) for i in live]
            for item in applied:
                identity = tuple((k, item.get(k)) for k in keys)
                at = next((n for n, i in enumerate(merged) if all(i.get(k) == v for k, v in identity)), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = self.merge(merged[at], item, (*path, identity))
            return merged
        return copy.deepcopy(applied)

    def remove(self, obj: dict, path: tuple) -> None:
        """Drop the field at `path`, and the map-list items and maps it leaves without fields."""
        chain = []  # (container, segment, the node under it)
        node = obj
        try:
            for segment in path[:-1]:
                child = self.get(node, (segment,))
                chain.append((node, segment, child))
                node = child
        except (KeyError, TypeError, StopIteration):
            return
        if not isinstance(node, dict):
            return
        node.pop(path[-1], None)
        for container, segment, child in reversed(chain):
            if child:
                break
            if isinstance(container, list):
                container.remove(child)
            else:
                container.pop(segment, None)


def render(fields: set[tuple]) -> dict:
    """fieldsV1: {"f:<key>": {...}} for map keys, {"k:<json of the item's keys>": {...}} for map-list items."""
    tree: dict = {}
    for path in fields:
        node = tree
        for segment in path:
            name = f"k:{json.dumps(dict(segment), separators=(',', ':'), sort_keys=True)}" \
                if isinstance(segment, tuple) else f"f:{segment}"
            node = node.setdefault(name, {})
    return tree


def parse(tree: dict, path: tuple = ()) -> set[tuple]:
    found: set[tuple] = set()
    for name, child in (tree or {}).items():
        if name == ".":
            continue
        segment = tuple(sorted(json.loads(name[2:]).items())) if name.startswith("k:") else name[2:]
        if child:
            found |= parse(child, (*path, segment))
        else:
            found.add((*path, segment))
    return found


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entries(obj: dict | None) -> list[dict]:
    return [dict(e) for e in ((obj or {}).get("metadata") or {}).get("managedFields") or []]


def _owned(entry: dict) -> set[tuple]:
    return parse(entry.get("fieldsV1") or {})


def _set(entry: dict, fields: set[tuple]) -> dict:
    return {**entry, "fieldsType": "FieldsV1", "fieldsV1": render(fields), "time": _now()}


def _same_manager(entry: dict, manager: str, operation: str) -> bool:
    return entry.get("manager") == manager and entry.get("operation") == operation


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


def _with_entry(managed: list[dict], manager: str, operation: str, api_version: str, fields: set[tuple]) -> list:
    kept = [e for e in managed if not _same_manager(e, manager, operation)]
    if fields:
        kept.append(_set({"manager": manager, "operation": operation, "apiVersion": api_version}, fields))
    return [e for e in kept if e.get("fieldsV1")]


def apply(live: dict | None, config: dict, manager: str, force: bool, fields: Fields) -> dict:
    """The object after `manager` applies `config` to `live` (None: the apply creates it), with its
    managedFields; Conflict when it would change other managers' fields without `force`."""
    api_version = config.get("apiVersion", "")
    applied = fields.of(config)
    managed = entries(live)
    if live is None:
        result = copy.deepcopy(config)
    else:
        merged = fields.merge(live, config)
        conflicts = []
        for entry in managed:
            if _same_manager(entry, manager, "Apply"):
                continue
            owned = _owned(entry)
            # a conflict: a field of another manager's that this apply would change (the same value is shared)
            taken = {o for o in owned if any(_overlaps(o, a) for a in applied)
                     and fields.value(merged, o, _ABSENT) != fields.value(live, o, _ABSENT)}
            conflicts += [(entry["manager"], _dotted(o)) for o in sorted(taken, key=str)]
            if force and taken:
                entry.update(_set(entry, owned - taken))
        if conflicts and not force:
            raise Conflict(conflicts, api_version)
        managed = [e for e in managed if e.get("fieldsV1")]
        result = merged
        before = next((_owned(e) for e in managed if _same_manager(e, manager, "Apply")), set())
        others = set().union(*(_owned(e) for e in managed if not _same_manager(e, manager, "Apply")))
        # deepest first, and an item's key fields after its others (the key finds the item)
        for path in sorted(before - applied, key=lambda p: (-len(p), _is_key(p))):
            if not any(_overlaps(path, o) for o in others):
                fields.remove(result, path)
    result.setdefault("metadata", {})["managedFields"] = _with_entry(managed, manager, "Apply", api_version, applied)
    return result


def update(live: dict | None, new: dict, manager: str, fields: Fields) -> dict:
    """`new` with its managedFields after a write that is not an apply (create, merge or JSON patch):
    `manager` (operation Update) takes every field whose value it changed; fields it removed are no one's."""
    old_fields = fields.of(live) if live is not None else set()
    new_fields = fields.of(new)
    changed = {f for f in new_fields if live is None or f not in old_fields or
               fields.value(live, f, _ABSENT) != fields.value(new, f, _ABSENT)}
    gone = old_fields - new_fields
    managed = []
    for entry in entries(live):
        owned = _owned(entry)
        left = {o for o in owned if not any(_overlaps(o, c) for c in changed | gone)}
        if _same_manager(entry, manager, "Update"):
            changed |= left
            continue
        if left:
            managed.append(_set(entry, left) if left != owned else entry)
    api_version = new.get("apiVersion", "")
    result = dict(new)
    result["metadata"] = {**(new.get("metadata") or {}),
                          "managedFields": _with_entry(managed, manager, "Update", api_version, changed)}
    return result


def _is_key(path: tuple) -> bool:
    return len(path) > 1 and isinstance(path[-2], tuple) and path[-1] in dict(path[-2])


def _dotted(path: tuple) -> str:
    """A field as the conflict message names it: .spec.predictor.model.env[name="X"].value."""
    text = ""
    for segment in path:
        if isinstance(segment, tuple):
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in segment) + "]"
        else:
            text += f".{segment}"
    return text


def manager_of(params: dict, headers: dict) -> str:
    """The manager of a write: its fieldManager, else the client's User-Agent up to the first '/'
    (managerOrUserAgent in k8s.io/apiserver/pkg/endpoints/handlers/rest.go)."""
    return params.get("fieldManager") or (headers.get("User-Agent") or "unknown").split("/", 1)[0]
