"""An in-memory Kubernetes API server for unit tests, behind the real `KubeClient`.

Why: reconcile logic (what a syncer reads, writes, refuses to touch, and how it meets conflicts
and refusals) is worth testing without a cluster, against a server that answers as kube-apiserver
does rather than against a recorder that answers anything. `FakeApiServer` keeps objects in
memory and serves them through `httpx.MockTransport` to a real `vnest.kube.client.KubeClient`, so
the client's own code (paths, errors, preconditions, watch streams) and the real informer run
too. Whether the syncing itself works is proven against real API servers in tests/e2e; this is
no conformance fake, and says here where it stops.

What it does, for the kinds in `vnest.kube.client.RESOURCES` of built-in API groups, kinds a
test `serve()`s, and the kinds of the CustomResourceDefinitions stored in it (a CRD is
Established as soon as it is written):
- GET, LIST (labelSelector in all its forms; fieldSelector `=`/`!=` on any dotted field path;
  limit/continue), WATCH (`watch=1|true`, from a resourceVersion, bookmarks on `bookmark()`,
  timeoutSeconds; ADDED/MODIFIED/DELETED, objects entering or leaving a selector included);
- POST (generateName, uid, creationTimestamp, generation, one resourceVersion counter for all
  kinds, 409 AlreadyExists, 404 when the namespace is missing, 403 when it is terminating);
- PUT (409 on a stale resourceVersion or another uid; custom resources need a resourceVersion);
- PATCH: JSON patch (add, replace, remove, test); merge patch; strategic merge patch as a
  merge patch whose lists of containers,
  volumes, env, ... (`MERGE_KEYS`) merge by key (`$patch: delete|replace` understood); server-side
  apply (`application/apply-patch+yaml`) as "the fields given replace what is there", creating
  the object when missing;
- DELETE with DeleteOptions (uid/resourceVersion preconditions → 409, gracePeriodSeconds,
  propagationPolicy accepted); finalizers hold an object (deletionTimestamp set) until an update
  empties them; a Pod on a node with a grace period > 0 waits for a second delete with grace 0;
  a deleted Namespace goes at once with everything in it;
- subresources: `status` (writes only status; writes to the object keep the stored status, for
  kinds that have one), `pods/binding`, `pods/ephemeralcontainers`, `pods/resize` (containers'
  and the pod's resources only), `serviceaccounts/token`;
  `GET /version`;
- Status answers for every error, List objects with metadata.resourceVersion;
- `requests` records every request; `fail_next()` makes the next matching one fail;
  `compact()` ends open watches with 410 Expired and refuses watches from older versions;
- opt-in, `allocate_cluster_ips()`: a Service created without a clusterIP gets the next free
  one of a /24, and one naming an IP another Service holds is refused (422), as the host's
  allocator refuses a taken IP.

What it does not: validation, defaulting, admission, immutable fields, allocation (but the
opt-in Service clusterIPs above), garbage collection (ownerReferences), managedFields and field ownership (so
apply never removes fields), JSON patch, deletecollection, discovery, authorization.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import itertools
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from vnest.kube.client import RESOURCES, KubeClient, Resource
from vnest.kube.transport import HttpxTransport

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace, name

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
# Built-in kinds with a status subresource; all but Node start with the status below (or none).
STATUS_KINDS = frozenset(
    {
        "CustomResourceDefinition",
        "Deployment",
        "Ingress",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "ResourceQuota",
        "Service",
        "StatefulSet",
    }
)
INITIAL_STATUS: dict[str, Obj] = {
    "Namespace": {"phase": "Active"},
    "PersistentVolume": {"phase": "Pending"},
    "PersistentVolumeClaim": {"phase": "Pending"},
    "Pod": {"phase": "Pending"},
    "Service": {"loadBalancer": {}},
}
SUBRESOURCES = {
    "Pod": frozenset({"binding", "ephemeralcontainers", "resize"}),
    "ServiceAccount": frozenset({"token"}),
}
# Strategic merge patch: these lists merge by key; all others are replaced, as in a merge patch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
}
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
# What a write to an object leaves as it was: the API server's to set.
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
NO_ROUTE = "the server could not find the requested resource"
GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # as the API server's generateName suffixes


def now(offset: int = 0) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Refused(Exception):
    """An error answer of the API server; it becomes a Status response."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Kind:
    """A kind as this server serves it."""

    name: str
    group: str
    versions: tuple[str, ...]
    plural: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    builtin: bool = True

    @property
    def resource(self) -> str:
        """How the API server names it in messages: `pods`, `storageclasses.storage.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def api_version(self, version: str = "") -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version

    def key(self, namespace: str, name: str) -> Key:
        return (self.group, self.plural, namespace if self.namespaced else "", name)


def kind_of(name: str, resource: Resource, status: bool = False, builtin: bool = True) -> Kind:
    group, _, version = resource.group_version.rpartition("/")
    subresources = SUBRESOURCES.get(name, frozenset()) | ({"status"} if status else set())
    return Kind(name, group, (version,), resource.plural, resource.namespaced, subresources, builtin)


CRD = kind_of(
    "CustomResourceDefinition",
    Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False),
    status=True,
)


def builtin_group(group: str) -> bool:
    """Kubernetes' own API groups; a CRD's group has a dot and is not under k8s.io."""
    return "." not in group or group.endswith(".k8s.io")


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


@dataclass(frozen=True)
class Selector:
    """A label or field selector: (key, operator, values) requirements, all of which must hold;
    operators `in`, `notin` (`=` and `!=` are those with one value), `exists` and `!`."""

    requirements: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str, fields: bool = False) -> Selector:
        out: list[tuple[str, str, tuple[str, ...]]] = []
        for part in _split_outside_parentheses(text):
            if not fields and (m := _SET_REQUIREMENT.match(part)):
                values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
                out.append((m.group(1), m.group(2), values))
            elif "!=" in part:
                key, _, value = part.partition("!=")
                out.append((key.strip(), "notin", (value.strip(),)))
            elif "=" in part:
                key, _, value = part.replace("==", "=").partition("=")
                out.append((key.strip(), "in", (value.strip(),)))
            elif not fields and part.startswith("!"):
                out.append((part[1:].strip(), "!", ()))
            elif not fields:
                out.append((part, "exists", ()))
            else:
                raise Refused(400, f"invalid field selector: {text!r}")
        if any(not key for key, _, _ in out):
            raise Refused(400, f"invalid selector: {text!r}")
        return cls(tuple(out))

    def matches(self, value_of: Callable[[str], str | None]) -> bool:
        for key, op, values in self.requirements:
            value = value_of(key)
            if op == "in":
                ok = value in values
            elif op == "notin":
                ok = value not in values  # as in the API server: an absent label is not in the set
            else:
                ok = (value is None) == (op == "!")
            if not ok:
                return False
        return True


_SET_REQUIREMENT = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")


def _split_outside_parentheses(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def field_value(obj: Obj, path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return str(value).lower()
    return None if value is None else str(value)


# ---- patches ---------------------------------------------------------------------------------


def json_patch(target: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902's add, replace, remove and test; a failed test or a missing path is a 422."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = target
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key: Any = int(last) if isinstance(node, list) and last != "-" else last
            if op["op"] == "test":
                if node[key] != op["value"]:
                    raise Refused(422, f"the server rejected our request: test of {op['path']} failed")
            elif op["op"] == "remove":
                del node[key]
            elif op["op"] in ("add", "replace"):
                if isinstance(node, list) and op["op"] == "add":
                    node.insert(len(node) if last == "-" else key, copy.deepcopy(op["value"]))
                else:
                    node[key] = copy.deepcopy(op["value"])
            else:
                raise Refused(400, f"unsupported JSON patch operation {op['op']!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise Refused(422, f"the server rejected our request: no path {op['path']}") from None
    return target


def _resized(current: Obj, proposed: Obj) -> Obj:
    """A write through `pods/resize`: the containers' and the pod's resources, nothing else."""

    def without_resources(pod: Obj) -> Obj:
        spec = copy.deepcopy(pod.get("spec") or {})
        spec.pop("resources", None)
        for containers in ("containers", "initContainers"):
            for c in spec.get(containers) or []:
                c.pop("resources", None)
        return spec

    if without_resources(proposed) != without_resources(current):
        raise Refused(
            422,
            f'Pod "{current["metadata"]["name"]}" is invalid: spec: Forbidden: only cpu and memory '
            "resources are mutable",
        )
    out = copy.deepcopy(current)
    out["spec"] = copy.deepcopy(proposed["spec"])
    if out["spec"] != current.get("spec"):
        out["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null removes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch whose `MERGE_KEYS` lists merge element by element; `$` directives aside."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        have = out.get(key)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            out.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(have, list):
            out[key] = _merge_list(have, value, MERGE_KEYS[key])
        else:
            out[key] = strategic_merge_patch(have, value)
    return out


def _merge_list(have: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    out = list(have)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            out.append(copy.deepcopy(item))
            continue
        at = next(
            (i for i, h in enumerate(out) if isinstance(h, dict) and h.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[at] = strategic_merge_patch(out[at], item)
    return out


def apply_patch(target: Any, given: Any) -> Any:
    """Server-side apply, without field ownership: objects merge, the fields given replace."""
    if isinstance(target, dict) and isinstance(given, dict):
        out = dict(target)
        for key, value in given.items():
            out[key] = apply_patch(target.get(key), value)
        return out
    return copy.deepcopy(given)


def payload(obj: Obj) -> Obj:
    """What a write can change besides metadata and status: what `generation` counts."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


# ---- watches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One write, as watches see it: `new` None for a deletion (then `old` is the last state)."""

    rv: int
    key: Key
    old: Obj | None
    new: Obj | None


@dataclass(frozen=True)
class Scope:
    """What a list or watch asks for: a kind, maybe one namespace, selectors."""

    kind: Kind
    namespace: str
    labels: Selector
    fields: Selector

    @classmethod
    def of(cls, route: Route, query: dict[str, str]) -> Scope:
        labels = Selector.parse(query.get("labelSelector", ""))
        return cls(route.kind, route.namespace, labels, Selector.parse(query.get("fieldSelector", ""), True))

    def selects(self, key: Key, obj: Obj | None) -> bool:
        if obj is None or key[:2] != (self.kind.group, self.kind.plural):
            return False
        if self.namespace and key[2] != self.namespace:
            return False
        labels = obj["metadata"].get("labels") or {}
        return self.labels.matches(labels.get) and self.fields.matches(lambda p: field_value(obj, p))


@dataclass(eq=False)
class Watcher:
    scope: Scope
    version: str
    bookmarks: bool
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    def send(self, event_type: str, obj: Obj) -> None:
        if not self.loop.is_closed():
            self.queue.put_nowait(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    def end(self) -> None:
        if not self.loop.is_closed():
            self.queue.put_nowait(None)


class WatchStream(httpx.AsyncByteStream):
    """A watch response body: one event a line until the server ends it or timeoutSeconds pass."""

    def __init__(self, server: FakeApiServer, watcher: Watcher, timeout: float | None) -> None:
        self.server = server
        self.watcher = watcher
        self.timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            left = None if deadline is None else deadline - loop.time()
            try:
                line = await asyncio.wait_for(self.watcher.queue.get(), left)
            except TimeoutError:
                return
            if line is None:
                return
            yield line

    async def aclose(self) -> None:
        self.server.watchers.discard(self.watcher)


# ---- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    kind: Kind
    version: str
    namespace: str
    name: str
    subresource: str

    @property
    def key(self) -> Key:
        return self.kind.key(self.namespace, self.name)


@dataclass
class Failure:
    method: str
    plural: str
    name: str | None
    subresource: str
    error: Refused


class FakeApiServer:
    """One in-memory API server; `client()` is a KubeClient talking to it."""

    def __init__(self, name: str = "api", namespaces: Iterable[str] = DEFAULT_NAMESPACES) -> None:
        self.name = name
        self.url = f"https://{name}.kubeapi.test"
        self.requests: list[Request] = []
        self.watchers: set[Watcher] = set()
        self.closed = False
        self._objects: dict[Key, Obj] = {}
        self._served: dict[str, Kind] = {}
        self._history: list[Change] = []
        self._failures: list[Failure] = []
        self._rv = 0
        self._compacted = 0
        self._tokens = itertools.count(1)
        self._ip_prefix: str | None = None  # allocate_cluster_ips()
        for ns in namespaces:
            self.seed(namespace_object(ns))

    # ---- for tests ---------------------------------------------------------------------------

    def client(self) -> KubeClient:
        """A real KubeClient over this server (an async context manager too)."""
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._handle), base_url=self.url)
        return KubeClient(HttpxTransport(http), context=self.name)

    def serve(self, kind: str, resource: Resource, status: bool = False) -> None:
        """Serves a kind beyond the built-in ones and the CRDs stored here (no CRD needed)."""
        builtin = builtin_group(resource.group_version.rpartition("/")[0])
        self._served[kind] = kind_of(kind, resource, status, builtin)

    def allocate_cluster_ips(self, prefix: str = "10.96.100.") -> None:
        """From now on Services created without a clusterIP get a free `<prefix>N`, and a clusterIP
        another Service holds is refused, as the API server's allocator does."""
        self._ip_prefix = prefix

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def seed(self, obj: Obj) -> Obj:
        """Makes `obj` exist as given (uid, status, finalizers, deletionTimestamp kept; a new
        resourceVersion), as a write watches see; no request is recorded. Returns what is stored."""
        kind = self._kind_named(obj["kind"])
        new = copy.deepcopy(obj)
        new["apiVersion"] = new.get("apiVersion") or kind.api_version()
        meta = new.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if kind.namespaced else ""
        if kind.namespaced and not namespace:
            raise ValueError(f"seed: {kind.name} {meta.get('name')} is namespaced; give metadata.namespace")
        if namespace and self._namespace(namespace) is None:
            raise ValueError(f"seed: namespace {namespace} does not exist; seed the Namespace first")
        if not kind.namespaced:
            meta.pop("namespace", None)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.setdefault("generation", 1)
        if kind.name == "CustomResourceDefinition":
            establish(new)
        key = kind.key(namespace, meta["name"])
        return self._commit(key, self._objects.get(key), new)

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        """The stored object, read without a request."""
        obj = self._objects.get(self._kind_named(kind).key(namespace, name))
        return copy.deepcopy(obj)

    def objects(self, kind: str, namespace: str = "") -> list[Obj]:
        served = self._kind_named(kind)
        return [
            copy.deepcopy(obj)
            for (group, plural, ns, _), obj in sorted(self._objects.items())
            if (group, plural) == (served.group, served.plural) and (not namespace or ns == namespace)
        ]

    def remove(self, kind: str, name: str, namespace: str = "") -> None:
        """Deletes at once (finalizers ignored), as a write watches see; no request is recorded."""
        served = self._kind_named(kind)
        key = served.key(namespace, name)
        self._commit(key, self._objects[key], None)

    def writes(self) -> list[Request]:
        """The requests that could have changed something."""
        return [r for r in self.requests if r.method != "GET"]

    def fail_next(
        self,
        method: str,
        plural: str,
        *,
        name: str | None = None,
        subresource: str = "",
        status: int = 500,
        reason: str = "",
        message: str = "",
    ) -> None:
        """The next `method` request on `plural` (that name, or any) fails with that Status."""
        message = message or f"injected failure of {method} {plural}"
        self._failures.append(
            Failure(method.upper(), plural, name, subresource, Refused(status, message, reason))
        )

    def compact(self) -> None:
        """Forgets history: watches from an older resourceVersion get 410 Expired, and open ones
        lose what they have not read yet and end with it, as when a watcher falls behind."""
        self._compacted = self._rv
        self._history.clear()
        for watcher in list(self.watchers):
            if watcher.loop.is_closed():
                continue
            while not watcher.queue.empty():
                watcher.queue.get_nowait()
            watcher.send("ERROR", self._expired(self._rv).status())
            watcher.end()
        self.watchers.clear()

    def bookmark(self) -> None:
        """Sends every watch that allows bookmarks the current resourceVersion."""
        for w in self.watchers:
            if w.bookmarks:
                kind, meta = w.scope.kind, {"resourceVersion": str(self._rv)}
                w.send(
                    "BOOKMARK",
                    {"kind": kind.name, "apiVersion": kind.api_version(w.version), "metadata": meta},
                )

    def close(self) -> None:
        """Ends every watch; later watches are refused (503)."""
        self.closed = True
        for watcher in self.watchers:
            watcher.end()
        self.watchers.clear()

    # ---- kinds and routes ----------------------------------------------------------------------

    def _kinds(self) -> list[Kind]:
        kinds = list(self._served.values())
        for (group, plural, _, _), obj in self._objects.items():
            if (group, plural) == (CRD.group, CRD.plural):
                kinds.append(crd_kind(obj))
        kinds.append(CRD)
        for name, resource in RESOURCES.items():
            if builtin_group(resource.group_version.rpartition("/")[0]):
                kinds.append(kind_of(name, resource, status=name in STATUS_KINDS))
        return kinds

    def _kind_named(self, name: str) -> Kind:
        for kind in self._kinds():
            if kind.name == name:
                return kind
        raise ValueError(f"{self.name} API server does not serve kind {name}")

    def _kind_at(self, group: str, version: str, plural: str) -> Kind | None:
        for kind in self._kinds():
            if (kind.group, kind.plural) == (group, plural) and version in kind.versions:
                return kind
        return None

    def _route(self, path: str) -> Route:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise Refused(404, NO_ROUTE)
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            inner = self._kind_at(group, version, rest[2])
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        kind = self._kind_at(group, version, rest[0]) if rest else None
        if kind is None or len(rest) > 3 or (namespace == "" and kind.namespaced and len(rest) > 1):
            raise Refused(404, NO_ROUTE)
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in kind.subresources:
            raise Refused(404, NO_ROUTE)
        return Route(kind, version, namespace, name, subresource)

    # ---- requests ----------------------------------------------------------------------------

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        query = dict(request.url.params)
        path = request.url.path
        try:
            body = _body(request.content, content_type)
        except ValueError as e:
            self.requests.append(Request(request.method, path, query, None, content_type))
            return _answer(400, Refused(400, f"cannot decode the body: {e}").status())
        self.requests.append(Request(request.method, path, query, copy.deepcopy(body), content_type))
        try:
            if path == "/version" and request.method == "GET":
                return _answer(200, VERSION)
            route = self._route(path)
            self._fail_if_told(request.method, route)
            return self._serve(request.method, route, query, body, content_type)
        except Refused as e:
            return _answer(e.code, e.status())

    def _fail_if_told(self, method: str, route: Route) -> None:
        for failure in self._failures:
            if (
                failure.method == method
                and failure.plural == route.kind.plural
                and failure.name in (None, route.name)
                and failure.subresource == route.subresource
            ):
                self._failures.remove(failure)
                raise failure.error

    def _serve(
        self, method: str, route: Route, query: dict[str, str], body: Any, content_type: str
    ) -> httpx.Response:
        not_allowed = Refused(
            405, f"the server does not allow this method on the requested resource: {method}"
        )
        if route.kind.namespaced and not route.namespace and method != "GET":
            raise not_allowed
        if route.subresource in ("binding", "token"):
            if method != "POST":
                raise not_allowed
            return _answer(
                201, self._bind(route, body) if route.subresource == "binding" else self._token(route, body)
            )
        if method == "GET" and not route.name:
            if query.get("watch") in ("1", "true"):
                return self._watch(route, query)
            return _answer(200, self._list(route, query))
        if method == "GET":
            return _answer(200, self._out(route, self._existing(route)))
        if method == "POST" and not route.name:
            return _answer(201, self._out(route, self._create(route, body)))
        if method == "PUT" and route.name:
            return _answer(200, self._out(route, self._update(route, body)))
        if method == "PATCH" and route.name:
            code, obj = self._patch(route, body, content_type, query)
            return _answer(code, self._out(route, obj))
        if method == "DELETE" and route.name and not route.subresource:
            return _answer(200, self._out(route, self._delete(route, body, query)))
        raise not_allowed

    def _out(self, route: Route, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = route.kind.api_version(route.version)
        return out

    def _existing(self, route: Route) -> Obj:
        obj = self._objects.get(route.key)
        if obj is None:
            raise Refused(404, f'{route.kind.resource} "{route.name}" not found')
        return obj

    def _namespace(self, name: str) -> Obj | None:
        return self._objects.get(("", "namespaces", "", name))

    def _expired(self, rv: int) -> Refused:
        return Refused(410, f"too old resource version: {rv} ({self._compacted})", "Expired")

    # ---- reads ---------------------------------------------------------------------------------

    def _list(self, route: Route, query: dict[str, str]) -> Obj:
        kind, scope = route.kind, Scope.of(route, query)
        items = [obj for key, obj in sorted(self._objects.items()) if scope.selects(key, obj)]
        if cont := query.get("continue"):
            after = tuple(json.loads(base64.b64decode(cont)))
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        meta: Obj = {"resourceVersion": str(self._rv)}
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            meta["continue"] = base64.b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()
            ).decode()
        listed = []
        for obj in items:
            item = self._out(route, obj)
            if kind.builtin:  # typed lists carry no kind per item; custom resources' do
                item.pop("apiVersion")
                item.pop("kind", None)
            listed.append(item)
        return {
            "kind": f"{kind.name}List",
            "apiVersion": kind.api_version(route.version),
            "metadata": meta,
            "items": listed,
        }

    def _watch(self, route: Route, query: dict[str, str]) -> httpx.Response:
        if self.closed:
            raise Refused(503, "the API server is shutting down")
        bookmarks = query.get("allowWatchBookmarks") == "true"
        watcher = Watcher(Scope.of(route, query), route.version, bookmarks, asyncio.get_running_loop())
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        stream = WatchStream(self, watcher, timeout)
        since = query.get("resourceVersion", "")
        if since in ("", "0"):  # from now, after the current state as ADDED events
            for key, obj in sorted(self._objects.items()):
                if watcher.scope.selects(key, obj):
                    watcher.send("ADDED", self._out(route, obj))
        else:
            try:
                rv = int(since)
            except ValueError:
                raise Refused(400, f"invalid resource version: {since!r}") from None
            if rv < self._compacted:
                watcher.send("ERROR", self._expired(rv).status())
                watcher.end()
                return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=stream)
            for change in self._history:
                if change.rv > rv:
                    self._tell(watcher, change)
        self.watchers.add(watcher)
        return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=stream)

    def _tell(self, watcher: Watcher, change: Change) -> None:
        scope = watcher.scope
        was, selected = scope.selects(change.key, change.old), scope.selects(change.key, change.new)
        if selected:
            event_type, obj = ("MODIFIED" if was else "ADDED"), change.new
        elif was:  # deleted, or no longer selected
            event_type, obj = "DELETED", change.new or change.old
        else:
            return
        assert obj is not None
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = scope.kind.api_version(watcher.version)
        watcher.send(event_type, obj)

    # ---- writes ------------------------------------------------------------------------------

    def _commit(self, key: Key, old: Obj | None, new: Obj | None) -> Obj:
        """Stores `new` (None: deletes) under the next resourceVersion and tells the watches."""
        self._rv += 1
        if new is not None:
            stored = new
            self._objects[key] = new
            change = Change(self._rv, key, old, new)
        else:
            assert old is not None
            stored = copy.deepcopy(old)  # what the DELETED event carries
            del self._objects[key]
            change = Change(self._rv, key, stored, None)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append(change)
        for watcher in list(self.watchers):
            if watcher.loop.is_closed():
                self.watchers.discard(watcher)
            else:
                self._tell(watcher, change)
        return copy.deepcopy(stored)

    def _body_for(self, route: Route, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise Refused(400, "the body of the request was not a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind", route.kind.name) != route.kind.name:
            raise Refused(400, f"the kind of the object ({obj['kind']}) does not match {route.kind.name}")
        obj["kind"] = route.kind.name
        obj["apiVersion"] = route.kind.api_version(route.version)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise Refused(400, "metadata must be an object")
        if route.kind.namespaced:
            if meta.get("namespace", route.namespace) != route.namespace:
                raise Refused(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = route.namespace
        else:
            meta.pop("namespace", None)
        if route.name and meta.get("name", route.name) != route.name:
            raise Refused(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL ({route.name})",
            )
        return obj

    def _create(self, route: Route, body: Any) -> Obj:
        obj = self._body_for(route, body)
        meta, kind = obj["metadata"], route.kind
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise Refused(
                    422,
                    f"{kind.name} is invalid: metadata.name: Required value: name or generateName is required",
                )
            while True:
                meta["name"] = meta["generateName"] + "".join(random.choices(GENERATE_CHARS, k=5))
                if kind.key(route.namespace, meta["name"]) not in self._objects:
                    break
        key = kind.key(route.namespace, meta["name"])
        if key in self._objects:
            raise Refused(409, f'{kind.resource} "{meta["name"]}" already exists', "AlreadyExists")
        if kind.namespaced:
            namespace = self._namespace(route.namespace)
            if namespace is None:
                raise Refused(404, f'namespaces "{route.namespace}" not found')
            if namespace["metadata"].get("deletionTimestamp"):
                raise Refused(
                    403,
                    f'{kind.resource} "{meta["name"]}" is forbidden: unable to create new content in namespace '
                    f"{route.namespace} because it is being terminated",
                )
        if kind.name == "Service" and self._ip_prefix is not None:
            self._allocate(obj)
        for system in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(system, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if kind.has_status and kind.name != "Node":  # a Node registers with its status
            obj.pop("status", None)
            if kind.name in INITIAL_STATUS:
                obj["status"] = copy.deepcopy(INITIAL_STATUS[kind.name])
        if kind.name == "CustomResourceDefinition":
            establish(obj)
        return self._commit(key, None, obj)

    def _allocate(self, service: Obj) -> None:
        """The clusterIP allocator's part of a Service's create (`allocate_cluster_ips()`)."""
        spec = service.setdefault("spec", {})
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            return
        held = {
            (obj.get("spec") or {}).get("clusterIP")
            for (group, plural, _, _), obj in self._objects.items()
            if (group, plural) == ("", "services")
        }
        ip = spec.get("clusterIP")
        if ip and ip in held:
            raise Refused(
                422,
                f'Service "{service["metadata"]["name"]}" is invalid: spec.clusterIPs: Invalid value: '
                f'[]string{{"{ip}"}}: failed to allocate IP {ip}: provided IP is already allocated',
            )
        if not ip:
            prefix = self._ip_prefix or ""
            ip = next(f"{prefix}{n}" for n in range(1, 255) if f"{prefix}{n}" not in held)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]

    def _preconditions(
        self, route: Route, current: Obj, uid: str | None, rv: str | None, deleting: bool = False
    ) -> None:
        have = current["metadata"]
        what = f'Operation cannot be fulfilled on {route.kind.resource} "{route.name}"'
        if uid and uid != have["uid"]:
            raise Refused(
                409,
                f"{what}: Precondition failed: UID in precondition: {uid}, UID in object meta: {have['uid']}",
            )
        if rv and rv != have["resourceVersion"]:
            if deleting:
                raise Refused(
                    409,
                    f"{what}: Precondition failed: ResourceVersion in precondition: {rv}, "
                    f"ResourceVersion in object meta: {have['resourceVersion']}",
                )
            raise Refused(
                409,
                f"{what}: the object has been modified; please apply your changes to the latest version and try again",
            )

    def _update(self, route: Route, body: Any) -> Obj:
        current = self._existing(route)
        new = self._body_for(route, body)
        rv = new["metadata"].get("resourceVersion")
        if not rv and not route.kind.builtin:
            raise Refused(
                422,
                f"{route.kind.name} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        self._preconditions(route, current, new["metadata"].get("uid"), rv)
        return self._write(route, current, new)

    def _patch(self, route: Route, body: Any, content_type: str, query: dict[str, str]) -> tuple[int, Obj]:
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise Refused(400, "a JSON patch is a list of operations")
            current = self._existing(route)
            return 200, self._write(
                route, current, self._body_for(route, json_patch(copy.deepcopy(current), body))
            )
        if not isinstance(body, dict):
            raise Refused(400, "the body of the request was not a JSON object")
        if content_type == "application/apply-patch+yaml":
            return self._apply(route, body, query)
        patchers = {
            "application/merge-patch+json": merge_patch,
            "application/strategic-merge-patch+json": strategic_merge_patch,
        }
        if content_type not in patchers:
            raise Refused(
                415,
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(patchers)}, application/apply-patch+yaml",
            )
        current = self._existing(route)
        meta = body.get("metadata") or {}
        self._preconditions(route, current, meta.get("uid"), meta.get("resourceVersion"))
        patched = patchers[content_type](copy.deepcopy(current), body)
        return 200, self._write(route, current, self._body_for(route, patched))

    def _apply(self, route: Route, body: Obj, query: dict[str, str]) -> tuple[int, Obj]:
        if not query.get("fieldManager"):
            raise Refused(
                400,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            )
        if not body.get("kind") or not body.get("apiVersion"):
            raise Refused(400, "apply patches must name their apiVersion and kind")
        obj = self._body_for(route, body)
        current = self._objects.get(route.key)
        if current is None:
            if route.subresource:
                self._existing(route)
            collection = Route(route.kind, route.version, route.namespace, "", "")
            return 201, self._create(collection, obj)
        meta = obj["metadata"]
        self._preconditions(route, current, meta.get("uid"), meta.get("resourceVersion"))
        return 200, self._write(route, current, apply_patch(copy.deepcopy(current), obj))

    def _write(self, route: Route, current: Obj, proposed: Obj) -> Obj:
        """Stores an update of `current` (through `route`'s subresource), as the API server would."""
        kind = route.kind
        out = copy.deepcopy(current)
        if route.subresource == "status":
            out.pop("status", None)
            if proposed.get("status") is not None:
                out["status"] = proposed["status"]
        elif route.subresource == "ephemeralcontainers":
            out.setdefault("spec", {})["ephemeralContainers"] = self._ephemeral(current, proposed)
        elif route.subresource == "resize":
            out = _resized(current, proposed)
        else:
            out = proposed
            meta, have = out["metadata"], current["metadata"]
            for system in SYSTEM_FIELDS:
                meta.pop(system, None)
                if system in have:
                    meta[system] = have[system]
            if kind.has_status:
                out.pop("status", None)
                if "status" in current:
                    out["status"] = copy.deepcopy(current["status"])
            if payload(out) != payload(current):
                meta["generation"] = int(have.get("generation", 1)) + 1
            if kind.name == "CustomResourceDefinition":
                establish(out)
        out["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if out == current:
            return copy.deepcopy(current)  # nothing changed: no new resourceVersion, no event
        meta = out["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not _terminating_pod(kind, out):
            return self._commit(route.key, current, None)
        return self._commit(route.key, current, out)

    def _ephemeral(self, current: Obj, proposed: Obj) -> list[Obj]:
        have = (current.get("spec") or {}).get("ephemeralContainers") or []
        wanted = (proposed.get("spec") or {}).get("ephemeralContainers") or []
        by_name = {c.get("name"): c for c in wanted}
        for container in have:
            if by_name.get(container["name"]) != container:
                raise Refused(
                    422,
                    f'Pod "{current["metadata"]["name"]}" is invalid: spec.ephemeralContainers: Forbidden: '
                    "existing ephemeral containers may not be changed or removed",
                )
        return copy.deepcopy(wanted)

    def _delete(self, route: Route, body: Any, query: dict[str, str]) -> Obj:
        current = self._existing(route)
        options = body if isinstance(body, dict) else {}
        pre = options.get("preconditions") or {}
        self._preconditions(route, current, pre.get("uid"), pre.get("resourceVersion"), deleting=True)
        policy = options.get("propagationPolicy", query.get("propagationPolicy"))
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise Refused(400, f"propagationPolicy: Unsupported value: {policy!r}")
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        kind = route.kind
        if kind.name in ("Namespace", "CustomResourceDefinition"):  # their controllers' work, done at once
            for key in self._contents(route, current):
                self._commit(key, self._objects[key], None)
            return self._commit(route.key, current, None)
        spec = current.get("spec") or {}
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30) if kind.name == "Pod" else 0
        graceful = kind.name == "Pod" and bool(spec.get("nodeName")) and int(grace) > 0
        meta = current["metadata"]
        if not meta.get("finalizers") and not graceful:
            return self._commit(route.key, current, None)
        grace = int(grace) if graceful else 0
        if meta.get("deletionTimestamp") and grace >= int(meta.get("deletionGracePeriodSeconds") or 0):
            return copy.deepcopy(current)  # being deleted already, as soon or sooner
        out = copy.deepcopy(current)
        out["metadata"]["deletionTimestamp"] = now(grace)
        out["metadata"]["deletionGracePeriodSeconds"] = grace
        return self._commit(route.key, current, out)

    def _contents(self, route: Route, obj: Obj) -> list[Key]:
        """What goes with a Namespace (its objects) or a CRD (its custom resources)."""
        if route.kind.name == "Namespace":
            return [key for key in self._objects if key[2] == route.name]
        served = crd_kind(obj)
        return [key for key in self._objects if key[:2] == (served.group, served.plural)]

    def _bind(self, route: Route, body: Any) -> Obj:
        pod = self._existing(route)
        binding = body if isinstance(body, dict) else {}
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise Refused(400, "Binding is invalid: target.name: Required value")
        meta = binding.get("metadata") or {}
        self._preconditions(route, pod, meta.get("uid"), meta.get("resourceVersion"))
        if (pod.get("spec") or {}).get("nodeName"):
            raise Refused(409, f'pod {route.name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        out = copy.deepcopy(pod)
        out.setdefault("spec", {})["nodeName"] = node
        if meta.get("annotations"):
            out["metadata"]["annotations"] = {
                **(out["metadata"].get("annotations") or {}),
                **meta["annotations"],
            }
        status = out.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [
            *conditions,
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
        ]
        self._commit(route.key, pod, out)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _token(self, route: Route, body: Any) -> Obj:
        self._existing(route)
        spec = copy.deepcopy((body or {}).get("spec") or {}) if isinstance(body, dict) else {}
        spec.setdefault("audiences", ["https://kubernetes.default.svc.cluster.local"])
        seconds = int(spec.setdefault("expirationSeconds", 3600))
        bound = spec.get("boundObjectRef")
        if bound:
            if bound.get("kind") not in ("Pod", "Secret", "Node"):
                raise Refused(400, f"cannot bind a token to a {bound.get('kind')}")
            where = self._kind_named(bound["kind"]).key(route.namespace, bound.get("name", ""))
            target = self._objects.get(where)
            if target is None:
                raise Refused(404, f'{bound.get("kind", "").lower()}s "{bound.get("name")}" not found')
            if bound.get("uid") and bound["uid"] != target["metadata"]["uid"]:
                raise Refused(
                    409,
                    f"the UID in the bound object reference ({bound['uid']}) does not match the UID in record",
                )
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": route.name, "namespace": route.namespace},
            "spec": spec,
            "status": {
                "token": f"fake-token.{route.namespace}.{route.name}.{next(self._tokens)}",
                "expirationTimestamp": now(seconds),
            },
        }


def namespace_object(name: str) -> Obj:
    """A Namespace to seed."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "status": {"phase": "Active"},
    }


def _terminating_pod(kind: Kind, obj: Obj) -> bool:
    """A Pod deleted gracefully waits for the kubelet's final delete, finalizers or not."""
    return kind.name == "Pod" and int(obj["metadata"].get("deletionGracePeriodSeconds") or 0) > 0


def crd_kind(crd: Obj) -> Kind:
    """The kind a CustomResourceDefinition serves."""
    spec = crd["spec"]
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    status = any("status" in (v.get("subresources") or {}) for v in versions)
    return Kind(
        spec["names"]["kind"],
        spec["group"],
        tuple(v["name"] for v in versions),
        spec["names"]["plural"],
        spec.get("scope", "Namespaced") == "Namespaced",
        frozenset({"status"} if status else ()),
        builtin=False,
    )


def establish(crd: Obj) -> None:
    """The apiextensions controller's part: names accepted, Established, the storage version recorded."""
    status = crd.get("status") or {}
    conditions = status.setdefault("conditions", [])
    for type_ in ("NamesAccepted", "Established"):
        if not any(c.get("type") == type_ for c in conditions):
            conditions.append({"type": type_, "status": "True", "reason": type_, "lastTransitionTime": now()})
    status["acceptedNames"] = copy.deepcopy(crd["spec"]["names"])
    stored = status.setdefault("storedVersions", [])
    for version in crd["spec"].get("versions") or []:
        if version.get("storage") and version["name"] not in stored:
            stored.append(version["name"])
    crd["status"] = status


def _body(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    if content_type == "application/apply-patch+yaml":
        try:
            return yaml.safe_load(content)
        except yaml.YAMLError as e:
            raise ValueError(str(e)) from None
    return json.loads(content)


def _answer(code: int, obj: Obj) -> httpx.Response:
    return httpx.Response(code, json=obj)
