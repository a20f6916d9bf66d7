"""The shared engine every resource syncer runs on: informers on both sides, a work queue, reconcile.

One syncer per kind (vnest.syncer.pods, .services, ...) behind one small
interface, as in vCluster and Kubernetes' own controllers:
- a virtual informer over all namespaces and a host informer over the host
  namespace, selecting only what this virtual cluster manages;
- every change on either side enqueues the *virtual* key ("ns/name"): host
  objects name theirs in vnest.io/object-* annotations;
- workers reconcile one key at a time, from the caches, and retry with backoff.
Ownership rules live here too: a host object is ours only when it carries our
managed-by label; a tenant's labels in vnest's prefix are rewritten to hashed
keys, so no tenant can forge that label.
"""

from __future__ import annotations

import abc
import asyncio
import datetime
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vnest import log, naming
from vnest.kube.client import ApiError, KubeClient, Obj, Resource, resource_of
from vnest.syncer.informer import Informer, key_of
from vnest.syncer.queue import WorkQueue

_log = log.get("syncer")

# How many (object, message) warnings the context remembers so as to tell each only once.
WARNED_MAX = 10_000
# Host answers to a create that retrying alone will not fix: the tenant must hear of them.
REFUSALS = frozenset({400, 403, 404, 422})

LABEL_NAMESPACE = f"{naming.PREFIX}/namespace"


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


def hashed_label_key(key: str) -> str:
    return f"{naming.PREFIX}/label-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def namespace_label_key(key: str) -> str:
    """The pod label that carries a label of the pod's virtual namespace (for namespaceSelectors)."""
    return f"{naming.PREFIX}/ns-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def is_own_key(key: str) -> bool:
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return prefix == naming.PREFIX or prefix.endswith("." + naming.PREFIX)


def translate_label_key(key: str) -> str:
    return hashed_label_key(key) if is_own_key(key) else key


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_subset(want: Any, have: Any) -> bool:
    """Whether every field of `want` has the same value in `have` (defaults the server added are ignored)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    return want == have


@dataclass
class SyncContext:
    name: str  # the virtual cluster
    host_namespace: str
    virtual: KubeClient
    host: KubeClient
    values: dict[str, Any]
    informers: dict[tuple[str, str], Informer] = field(default_factory=dict)
    host_service_ip: str = ""  # the ClusterIP of host Service NAME: where in-pod clients reach the API
    _warned: OrderedDict[tuple[str, str, str], None] = field(default_factory=OrderedDict)

    def informer(self, side: str, kind: str) -> Informer:
        """One shared informer per (side, kind): syncers that read another kind share its cache."""
        key = (side, kind)
        if key not in self.informers:
            resource = resource_of(kind)
            if side == "virtual":
                self.informers[key] = Informer(self.virtual, resource, kind, name=f"virtual {kind}")
            else:
                self.informers[key] = Informer(
                    self.host,
                    resource,
                    kind,
                    namespace=self.host_namespace,
                    label_selector=f"{naming.LABEL_MANAGED_BY}={self.name}",
                    name=f"host {kind}",
                )
        return self.informers[key]

    def selected_informer(
        self,
        side: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Informer:
        """A shared informer beyond a side's default scope: any namespace (None: all), any selectors.

        For syncers that read objects vnest does not manage (a host Service another team
        runs) or its own objects outside the host namespace; shared like `informer`.
        """
        where = f"{namespace or '*'}?{label_selector}&{field_selector}"
        key = (f"{side} {where}", kind)
        if key not in self.informers:
            self.informers[key] = Informer(
                self.virtual if side == "virtual" else self.host,
                resource_of(kind),
                kind,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                name=f"{side} {kind} {where}",
            )
        return self.informers[key]

    # ---- names and metadata --------------------------------------------------

    def host_name(self, name: str, namespace: str) -> str:
        return naming.host_name(name, namespace, self.name)

    def host_key(self, vkey: str) -> str:
        ns, name = split_key(vkey)
        return f"{self.host_namespace}/{self.host_name(name, ns)}"

    def owns(self, hobj: Obj | None) -> bool:
        return bool(hobj) and hobj["metadata"].get("labels", {}).get(naming.LABEL_MANAGED_BY) == self.name

    @staticmethod
    def virtual_key_of(hobj: Obj) -> str | None:
        ann = hobj["metadata"].get("annotations", {})
        name, ns = ann.get(naming.ANNOTATION_NAME), ann.get(naming.ANNOTATION_NAMESPACE)
        if not name:
            return None
        return f"{ns}/{name}" if ns else name

    def host_labels(self, labels: dict[str, str] | None, namespace: str) -> dict[str, str]:
        out = {translate_label_key(k): v for k, v in (labels or {}).items()}
        out[naming.LABEL_MANAGED_BY] = self.name
        out[LABEL_NAMESPACE] = namespace
        return out

    def host_selector(self, selector: dict[str, str], namespace: str) -> dict[str, str]:
        """A service's selector on the host: the same labels, within this cluster's namespace only."""
        return self.host_labels(selector, namespace)

    def host_metadata(self, vobj: Obj) -> Obj:
        meta = vobj["metadata"]
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not is_own_key(k)}
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        annotations.update(
            {
                naming.ANNOTATION_NAME: meta["name"],
                naming.ANNOTATION_NAMESPACE: meta.get("namespace", ""),
                naming.ANNOTATION_UID: meta["uid"],
                naming.ANNOTATION_KIND: vobj["kind"],
            }
        )
        return {
            "name": self.host_name(meta["name"], meta["namespace"]),
            "namespace": self.host_namespace,
            "labels": self.host_labels(meta.get("labels"), meta["namespace"]),
            "annotations": annotations,
        }

    async def event(self, vobj: Obj, reason: str, message: str, type_: str = "Warning") -> None:
        """An event on the virtual object: how a tenant learns why something did not sync."""
        meta = vobj["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": vobj.get("apiVersion", "v1"),
                "kind": vobj["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "vnest-syncer"},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        try:
            await self.virtual.create(event)
        except ApiError as e:
            _log.debug("cannot record event", error=str(e))

    async def warn_once(self, vobj: Obj, reason: str, message: str) -> None:
        """A Warning event (and log line), told once per object and message: retries with backoff
        must not spam. Every syncer's warnings to the tenant go through here."""
        key = (key_of(vobj), vobj["metadata"].get("uid", ""), message)
        if key in self._warned:
            self._warned.move_to_end(key)
            return
        self._warned[key] = None
        if len(self._warned) > WARNED_MAX:
            self._warned.popitem(last=False)
        _log.warning(message)
        await self.event(vobj, reason, message)


class Reconciler(abc.ABC):
    """Workers that take keys off a work queue and reconcile them, retrying failures with backoff."""

    kind: ClassVar[str]
    workers: ClassVar[int] = 4

    def __init__(self) -> None:
        self.queue = WorkQueue()
        self.reconciles = 0
        self.failures = 0  # reconciles that raised and were queued again (served as a metric)

    @abc.abstractmethod
    def setup(self) -> None:
        """Wires informer events to the queue."""

    @abc.abstractmethod
    def resync(self) -> None:
        """After the caches synced: queues every key once."""

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None: ...

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
                self.reconciles += 1
                self.queue.forget(key)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                self.failures += 1
                delay = self.queue.retry(key)
                level = _log.debug if e.conflict or e.status in (404, 409, 429) else _log.warning
                level(f"{self.kind} {key}: {e}", retry=f"{delay:.2f}s")
            except Exception:
                self.failures += 1
                delay = self.queue.retry(key)
                _log.error(f"{self.kind} {key}: reconcile failed", retry=f"{delay:.2f}s", exc_info=True)
            finally:
                self.queue.done(key)


class ResourceSyncer(Reconciler):
    """Syncs one kind between the virtual cluster and the host namespace."""

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.resource: Resource = resource_of(self.kind)
        self.virtual = ctx.informer("virtual", self.kind)
        self.host = ctx.informer("host", self.kind)

    def setup(self) -> None:
        """Wires informer events to the queue; override to watch more (and call super)."""
        self.virtual.add_handler(lambda old, new: self.queue.add(key_of(new or old)))  # type: ignore[arg-type]
        self.host.add_handler(self._on_host)

    def _on_host(self, old: Obj | None, new: Obj | None) -> None:
        vkey = self.ctx.virtual_key_of(new or old)  # type: ignore[arg-type]
        if vkey:
            self.queue.add(vkey)

    def resync(self) -> None:
        """After both caches synced: every key either side knows is reconciled once."""
        for key in list(self.virtual.store):
            self.queue.add(key)
        for hobj in list(self.host.store.values()):
            if (vkey := self.ctx.virtual_key_of(hobj)) is not None:
                self.queue.add(vkey)

    # ---- shared steps -----------------------------------------------------------

    def pair(self, vkey: str) -> tuple[Obj | None, Obj | None]:
        """The virtual object and its host copy, from the caches; a host object not ours counts as absent."""
        hobj = self.host.get(self.ctx.host_key(vkey))
        return self.virtual.get(vkey), hobj if self.ctx.owns(hobj) else None

    async def create_host(self, vobj: Obj, desired: Obj) -> Obj | None:
        """Creates the host copy; None when an object vnest does not manage holds the name.

        A refusal by the host (admission, validation, a missing RuntimeClass, a quota) is told
        to the tenant as a Warning event on the virtual object, with the host's reason in
        virtual names, and raised so that the work queue retries with backoff.
        """
        try:
            return await self.ctx.host.create(desired, namespace=self.ctx.host_namespace)
        except ApiError as e:
            if e.status in REFUSALS:
                message = e.detail.replace(desired["metadata"]["name"], vobj["metadata"]["name"])
                await self.ctx.warn_once(vobj, "SyncError", f"the host refused the {self.kind}: {message}")
            if not e.conflict:
                raise
        existing = await self.ctx.host.get_or_none(
            self.kind, desired["metadata"]["name"], self.ctx.host_namespace
        )
        if existing is not None and not self.ctx.owns(existing):
            await self.ctx.event(
                vobj,
                "SyncError",
                f"host {self.kind} {self.ctx.host_namespace}/{desired['metadata']['name']} exists and is not "
                "managed by this virtual cluster; vnest leaves it alone",
            )
            return None
        raise ApiError(409, "Conflict", f"host {self.kind} {desired['metadata']['name']} is being replaced")

    async def delete_host(self, hobj: Obj, grace: int | None = None) -> None:
        await self.delete_host_object(self.kind, hobj, grace)

    async def delete_host_object(self, kind: str, hobj: Obj, grace: int | None = None) -> None:
        """Deletes a host object this cluster manages, and only that very object (uid precondition)."""
        if self.ctx.owns(hobj):
            await self.ctx.host.delete_exact(kind, hobj, grace)

    @staticmethod
    def uid_matches(vobj: Obj, hobj: Obj) -> bool:
        return hobj["metadata"].get("annotations", {}).get(naming.ANNOTATION_UID) == vobj["metadata"]["uid"]


class CopySyncer(ResourceSyncer):
    """A kind whose host copy simply follows the virtual object: created, updated, deleted with it."""

    def wanted(self, vkey: str) -> bool:
        return True

    @abc.abstractmethod
    def translate(self, vobj: Obj) -> Obj: ...

    @abc.abstractmethod
    async def update_host(self, vobj: Obj, hobj: Obj, desired: Obj) -> None:
        """Brings an existing host copy in line with `desired` (a no-op when it already is)."""

    async def status_back(self, vobj: Obj, hobj: Obj) -> None:
        """Copies what the host learned (status) back to the virtual object."""

    async def reconcile(self, vkey: str) -> None:
        vobj, hobj = self.pair(vkey)
        if vobj is None or not self.wanted(vkey):
            if hobj is not None:
                await self.delete_host(hobj)
            return
        desired = self.translate(vobj)
        if hobj is None:
            await self.create_host(vobj, desired)
        elif not self.uid_matches(vobj, hobj):
            await self.delete_host(hobj)  # recreated when its DELETED event comes back
        else:
            await self.update_host(vobj, hobj, desired)
            await self.status_back(vobj, hobj)
