"""How any kind syncs: the worker loop, and the one reconcile every copied kind runs.

`Controller` is client-go's controller shape: informer events enqueue keys,
workers take keys off a work queue and reconcile them from the caches, and a
failure comes back after a per-key backoff.

`Syncer` is the interface of every synced kind (vCluster's SyncToHost / Sync /
SyncToVirtual), and its `reconcile` is the engine's, for every kind:
1. look up the virtual object and its host counterpart; a copy this cluster does not
   own counts as absent (the Patcher reports it when the name is wanted);
2. the virtual object being deleted: `deleting(vobj, hobj)` may take over;
3. no virtual object (or one not wanted): `to_virtual(hobj)`, then `forget(key)` for
   whatever else the object had;
4. no host object: `to_host(vobj)`;
5. a pair that does not belong together (a to-host copy of an earlier object of the
   same name: uid mismatch): `replaced(vobj, hobj)`, by default as an orphan;
6. both: `sync(vobj, hobj)`.
`ToHostSyncer` gives the defaults of a copy that follows its virtual object (create,
delete; every change on either side enqueues the virtual key, which host copies name in
`vnest.io/object-*` annotations); `FromHostSyncer` those of a host object copied into
the virtual cluster.
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

    async def run_with(self, informers: list[Informer], started: str, **fields: object) -> None:
        """A controller on its own: `setup()`, the informers, then once all of them have listed,
        `resync()` and the workers (logging `started`); until cancelled."""
        self.setup()
        tasks = [asyncio.create_task(i.run()) for i in informers]
        try:
            await asyncio.gather(*(i.synced.wait() for i in informers))
            _log.info(started, **fields)
            self.resync()
            await self.run()
        finally:
            for task in tasks:
                task.cancel()

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
    """The interface of every synced kind, and the one reconcile that calls it (module docstring).

    Keys, `pair` and the hooks speak of the virtual object and its host counterpart, whichever of
    them is the copy: a to-host kind's copies live on the host, a from-host kind's in the
    virtual cluster (as in vCluster, where both implement SyncToHost / Sync / SyncToVirtual)."""

    ctx: SyncContext
    virtual: Informer
    host: Informer

    # ---- the engine's reconcile ----------------------------------------------------------

    @abc.abstractmethod
    def pair(self, key: str) -> tuple[Obj | None, Obj | None]:
        """The virtual object and the host object of a key, from the caches; a copy this cluster does
        not own counts as absent."""

    def same_object(self, vobj: Obj, hobj: Obj) -> bool:
        """Whether the pair belongs together (a to-host copy of an earlier virtual object does not)."""
        return True

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
        elif not self.same_object(vobj, hobj):
            await self.replaced(vobj, hobj)
        else:
            await self.sync(vobj, hobj)

    # ---- what a kind implements ------------------------------------------------------------

    @abc.abstractmethod
    async def to_host(self, vobj: Obj) -> None:
        """A virtual object without a host counterpart (to-host: create the copy; from-host: the
        host object it copied is gone, so is it)."""

    @abc.abstractmethod
    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        """Both exist: bring the copy in line (a no-op when it is), copy back what the other side learned."""

    @abc.abstractmethod
    async def to_virtual(self, hobj: Obj) -> None:
        """A host object without a virtual counterpart (to-host: a copy whose virtual object is gone,
        deleted; from-host: a host object to copy in)."""

    async def replaced(self, vobj: Obj, hobj: Obj) -> None:
        """A copy of an earlier object of this name: an orphan, handled as one."""
        await self.to_virtual(hobj)

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


class ToHostSyncer(Syncer):
    """A kind whose host copy follows the virtual object: every change on either side enqueues the
    virtual key, which host copies name in their annotations."""

    def __init__(self, ctx: SyncContext, kind: str = "") -> None:
        super().__init__()
        if kind:
            self.kind = kind  # a kind configured at run time (custom resources)
        self.ctx = ctx
        self.resource: Resource = resource_of(self.kind)
        self.mapping: NamespacedMapping = self.make_mapping()
        self.virtual = ctx.informer("virtual", self.kind)
        self.host = self.host_informer()
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

    # ---- the pair, and the defaults of a copy that follows its virtual object ----------------

    def pair(self, key: str) -> tuple[Obj | None, Obj | None]:
        hobj = self.host.get(self.mapping.host_key(key))
        return self.virtual.get(key), hobj if self.mapping.owns(hobj) else None

    def same_object(self, vobj: Obj, hobj: Obj) -> bool:
        return mappings.uid_matches(vobj, hobj)

    @abc.abstractmethod
    def translate(self, vobj: Obj) -> Obj:
        """The host copy a virtual object should have."""

    async def to_host(self, vobj: Obj) -> None:
        """By default, the copy is created."""
        await self.patcher.create(vobj, self.translate(vobj))

    async def to_virtual(self, hobj: Obj) -> None:
        """By default, the copy is deleted."""
        await self.patcher.delete(hobj)

    async def replaced(self, vobj: Obj, hobj: Obj) -> None:
        """By default, deleted: made again when its DELETED event comes back."""
        await self.patcher.delete(hobj)


class ClusterSyncer(ToHostSyncer):
    """A cluster-scoped kind (StorageClasses, PriorityClasses, PersistentVolumes): copies named and
    owned per mappings.ClusterMapping, and owned (ownerReferences) by the cluster's ClusterRole,
    so the host's garbage collector removes them when the virtual cluster goes."""

    def make_mapping(self) -> NamespacedMapping:
        return self.ctx.cluster

    def host_informer(self) -> Informer:
        return self.ctx.cluster_copies(self.kind)


class FromHostSyncer(Syncer):
    """A cluster-scoped host kind copied into the virtual cluster under the same names: the copies
    carry managed-by and from-host labels, and only those are ever changed or deleted; a virtual
    object of a wanted name without them is the tenant's, reported and left alone."""

    resource_kind: ClassVar[str]  # the kind copied (`kind` names the syncer, for logs and metrics)

    def __init__(self, ctx: SyncContext, host: Informer) -> None:
        super().__init__()
        self.ctx = ctx
        self.host = host
        self.virtual = ctx.informer("virtual", self.resource_kind)
        # Writes go to the virtual cluster, and only to the copies vnest made there.
        self.patcher = Patcher(ctx, self.resource_kind, ctx.virtual, self.ours, log_writes=True)
        self.resource = self.patcher.resource

    @property
    def labels(self) -> dict[str, str]:
        return {mappings.LABEL_MANAGED_BY: self.ctx.name, mappings.LABEL_FROM_HOST: "true"}

    def ours(self, vobj: Obj | None) -> bool:
        return mappings.carries(vobj, self.labels)

    def setup(self) -> None:
        self.host.add_handlers(Handlers.each(self.enqueue))
        self.virtual.add_handlers(Handlers.each(self.enqueue))

    def resync(self) -> None:
        for name in list(self.host.store):
            self.queue.add(name)
        for name, obj in list(self.virtual.store.items()):
            if self.ours(obj):
                self.queue.add(name)

    def pair(self, key: str) -> tuple[Obj | None, Obj | None]:
        vobj = self.virtual.get(key)
        return vobj if self.ours(vobj) else None, self.host.get(key)

    @abc.abstractmethod
    def translate(self, hobj: Obj) -> Obj:
        """The virtual copy a host object should have."""

    async def to_virtual(self, hobj: Obj) -> None:
        name = hobj["metadata"]["name"]
        if (theirs := self.virtual.get(name)) is not None:
            await self.ctx.warn_once(
                theirs,
                "SyncError",
                f"host {self.resource_kind} {name} is not copied into the virtual cluster: a "
                f"{self.resource_kind} of that name exists there and was not made by vnest; vnest leaves it alone",
            )
            return
        # Not through the Patcher's create: a refusal here is the host admin's to read in the log,
        # there is no tenant object to tell it on.
        await self.ctx.virtual.create(self.translate(hobj))
        _log.info(f"host {self.resource_kind} copied in", name=name)

    async def to_host(self, vobj: Obj) -> None:
        """The host object it copied is gone: so goes the copy."""
        await self.patcher.delete(vobj)

    async def deleting(self, vobj: Obj, hobj: Obj | None) -> bool:
        return True  # made again, if still wanted, when its DELETED event comes back
