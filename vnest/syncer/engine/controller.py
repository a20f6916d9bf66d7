"""How any kind syncs: the worker loop, and the one reconcile every copied kind runs.

`Controller` is client-go's controller shape: informer events enqueue keys,
workers take keys off a work queue and reconcile them from the caches, and a
failure comes back after a per-key backoff.

`Syncer` is the interface of a kind whose copy follows a virtual object (vCluster's
SyncToHost / Sync / SyncToVirtual). Its `reconcile` is the engine's, for every kind:
1. look up the virtual object and its copy; a copy this cluster does not own counts
   as absent (the Patcher reports it when the name is wanted);
2. the virtual object gone (or not wanted): `to_virtual(copy)` — by default the copy
   is deleted — then `forget(key)` for whatever else the object had on the host;
3. the virtual object being deleted: `deleting(vobj, copy)` may take over;
4. no copy: `to_host(vobj)` — by default the translated copy is created;
5. a copy of an earlier object of that name (uid mismatch): `replaced(vobj, copy)` —
   by default deleted, and made again when its DELETED event comes back;
6. both: `sync(vobj, copy)` — bring the copy in line, copy status back.
Every change on either side enqueues the *virtual* key: host copies name theirs in
`vnest.io/object-*` annotations (vnest.syncer.mappings).
"""

from __future__ import annotations

import abc
import asyncio
from typing import ClassVar

from vnest import log
from vnest.kube.client import ApiError, Obj, Resource, resource_of
from vnest.syncer import mappings
from vnest.syncer.engine.context import SyncContext
from vnest.syncer.engine.informer import Handlers, Informer
from vnest.syncer.engine.patcher import Patcher
from vnest.syncer.engine.queue import WorkQueue
from vnest.syncer.mappings import NamespacedMapping, key_of

_log = log.get("syncer")


class Controller(abc.ABC):
    """Workers that take keys off a work queue and reconcile them, retrying failures with backoff."""

    kind: str  # what the metrics and logs call it
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

    def enqueue(self, obj: Obj) -> None:
        """Queues an object's own key (an informer handler for every change: `Handlers.each`)."""
        self.queue.add(key_of(obj))

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


class Syncer(Controller):
    """One kind whose host copy follows the virtual object (see the module docstring)."""

    def __init__(self, ctx: SyncContext, kind: str = "") -> None:
        super().__init__()
        if kind:
            self.kind = kind  # a kind configured at run time (custom resources)
        self.ctx = ctx
        self.resource: Resource = resource_of(self.kind)
        self.mapping: NamespacedMapping = self.make_mapping()
        self.virtual: Informer = ctx.informer("virtual", self.kind)
        self.host: Informer = self.host_informer()
        self.patcher = Patcher(
            ctx,
            self.kind,
            ctx.host,
            self.mapping.owns,
            None if self.mapping is ctx.cluster else ctx.host_namespace,
            log_writes=self.mapping is ctx.cluster,
        )

    def make_mapping(self) -> NamespacedMapping:
        return self.ctx.namespaced

    def host_informer(self) -> Informer:
        return self.ctx.informer("host", self.kind)

    # ---- events -> keys ----------------------------------------------------------------

    def setup(self) -> None:
        """Wires informer events to the queue; override to watch more (and call super)."""
        self.virtual.add_handlers(Handlers.each(self.enqueue))
        self.host.add_handlers(self.host_handlers())

    def host_handlers(self) -> Handlers:
        return Handlers.each(self.enqueue_virtual)

    def enqueue_virtual(self, hobj: Obj) -> None:
        """Queues the key of the virtual object a copy names."""
        if vkey := mappings.virtual_key_of(hobj):
            self.queue.add(vkey)

    def resync(self) -> None:
        """After both caches synced: every key either side knows is reconciled once."""
        for key in list(self.virtual.store):
            self.queue.add(key)
        for hobj in list(self.host.store.values()):
            if (vkey := mappings.virtual_key_of(hobj)) is not None:
                self.queue.add(vkey)

    # ---- the engine's reconcile ----------------------------------------------------------

    def pair(self, vkey: str) -> tuple[Obj | None, Obj | None]:
        """The virtual object and its copy, from the caches; a copy not ours counts as absent."""
        hobj = self.host.get(self.mapping.host_key(vkey))
        return self.virtual.get(vkey), hobj if self.mapping.owns(hobj) else None

    async def reconcile(self, key: str) -> None:
        if await self.handled_elsewhere(key):
            return
        vobj, hobj = self.pair(key)
        if vobj is not None and vobj["metadata"].get("deletionTimestamp") and await self.deleting(vobj, hobj):
            return
        if vobj is None or not self.wanted(key, vobj):
            if hobj is not None:
                await self.to_virtual(hobj)
            await self.forget(key)
        elif hobj is None:
            await self.to_host(vobj)
        elif not mappings.uid_matches(vobj, hobj):
            await self.replaced(vobj, hobj)
        else:
            await self.sync(vobj, hobj)

    # ---- what a kind implements ------------------------------------------------------------

    @abc.abstractmethod
    def translate(self, vobj: Obj) -> Obj:
        """The host copy a virtual object should have."""

    @abc.abstractmethod
    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        """Brings an existing copy in line with its virtual object (a no-op when it is) and copies
        what the host learned (status) back."""

    async def to_host(self, vobj: Obj) -> None:
        """A virtual object without a copy: by default, the copy is created."""
        await self.patcher.create(vobj, self.translate(vobj))

    async def to_virtual(self, hobj: Obj) -> None:
        """A copy whose virtual object is gone (or no longer wanted): by default, deleted."""
        await self.patcher.delete(hobj)

    async def replaced(self, vobj: Obj, hobj: Obj) -> None:
        """A copy of an earlier object of this name: deleted, made again when its DELETED event comes."""
        await self.patcher.delete(hobj)

    async def deleting(self, vobj: Obj, hobj: Obj | None) -> bool:
        """A virtual object being deleted (finalizers pending); True when the kind took care of it."""
        return False

    async def forget(self, key: str) -> None:
        """The virtual object is gone: whatever else it had (a pod's token Secret) goes too."""

    def wanted(self, key: str, vobj: Obj) -> bool:
        """Whether this virtual object is to have a copy at all (ConfigMaps only while pods use them)."""
        return True

    async def handled_elsewhere(self, key: str) -> bool:
        """Keys this kind leaves alone entirely (the `kubernetes` Service, pods' token Secrets)."""
        return False


class ClusterSyncer(Syncer):
    """A cluster-scoped kind (StorageClasses, PriorityClasses, PersistentVolumes): copies named and
    owned per mappings.ClusterMapping, and owned (ownerReferences) by the cluster's ClusterRole,
    so the host's garbage collector removes them when the virtual cluster goes."""

    def make_mapping(self) -> NamespacedMapping:
        return self.ctx.cluster

    def host_informer(self) -> Informer:
        return self.ctx.cluster_copies(self.kind)
