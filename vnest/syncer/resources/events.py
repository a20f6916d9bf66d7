"""Events from the host about synced objects, told again in the virtual cluster.

The host's scheduler, controllers and kubelets write events about the host
copies ("Scheduled", "Pulled", "FailedMount", ...). A tenant needs them on the
virtual object: the event is copied with its involved object translated back
(virtual kind, name, namespace and uid) and host names in its message replaced
by virtual ones. Events about objects this virtual cluster does not manage are
never copied, so no tenant learns about another's.
"""

from __future__ import annotations

from vnest import log
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Controller, Handlers, SyncContext
from vnest.syncer.mappings import split_key

_log = log.get("syncer.events")

_COPIED = ("reason", "message", "type", "count", "firstTimestamp", "lastTimestamp", "source", "action")


class EventSyncer(Controller):
    """Not a Syncer: events are not copies paired by name but a one-way stream, each host event about
    a synced object told again, in virtual names, on the virtual object."""

    kind = "Event"
    workers = 4

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__()
        self.ctx = ctx
        # Host events carry no labels of ours: this informer sees the whole namespace, an hour of
        # events (the API server's default --event-ttl). Each is copied once and never looked up
        # again, so none is cached: an event waits in `pending` until copied (bench/soak.py showed
        # a cache of them growing with every pod for the hour).
        self.events = ctx.selected_informer("host", "Event", ctx.host_namespace, keep=False)
        self.pending: dict[str, Obj] = {}

    def setup(self) -> None:
        # An event deleted on the host (expired) stays in the virtual cluster until its own TTL.
        self.events.add_handlers(Handlers(on_add=self._arrived))

    def _arrived(self, hevent: Obj) -> None:
        key = mappings.key_of(hevent)
        self.pending[key] = hevent
        self.queue.add(key)

    def resync(self) -> None:
        for key in list(self.pending):
            self.queue.add(key)

    def _virtual_target(self, hevent: Obj) -> Obj | None:
        """The virtual object a host event is about, as host annotations name it; None if not ours."""
        involved = hevent.get("involvedObject") or {}
        if involved.get("namespace") != self.ctx.host_namespace:
            return None
        informer = self.ctx.informers.get(("host", involved.get("kind", "")))
        hobj = informer.get(f"{self.ctx.host_namespace}/{involved.get('name')}") if informer else None
        if hobj is None or not self.ctx.owns(hobj):
            return None
        vkey = mappings.virtual_key_of(hobj)
        if vkey is None:
            return None
        ns, name = split_key(vkey)
        return {
            "kind": involved["kind"],
            "apiVersion": involved.get("apiVersion", "v1"),
            "namespace": ns,
            "name": name,
            "uid": mappings.annotations_of(hobj).get(mappings.ANNOTATION_UID, ""),
            "hostName": hobj["metadata"]["name"],
            "fieldPath": involved.get("fieldPath"),
        }

    async def reconcile(self, key: str) -> None:
        hevent = self.pending.get(key)
        if hevent is None:
            return  # copied already; virtual events expire on their own, as host ones do
        await self._copy(hevent)
        if self.pending.get(key) is hevent:  # not a newer version of it, arrived meanwhile
            del self.pending[key]

    async def _copy(self, hevent: Obj) -> None:
        target = self._virtual_target(hevent)
        if target is None:
            return
        suffix = hevent["metadata"]["name"].rsplit(".", 1)[-1]
        name = f"{target['name']}.{suffix}"
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": target["namespace"]},
            "involvedObject": {
                k: target[k]
                for k in ("kind", "apiVersion", "namespace", "name", "uid", "fieldPath")
                if target.get(k)
            },
        }
        for field in _COPIED:
            if field in hevent:
                event[field] = hevent[field]
        event["message"] = (event.get("message") or "").replace(target["hostName"], target["name"])
        # Most host events are new (a pod's Scheduled): created at once, and read only when the name
        # is taken (a repeated event, whose count went up).
        try:
            await self.ctx.virtual.create(event, namespace=target["namespace"])
            return
        except ApiError as e:
            if not e.conflict:
                raise
        existing = await self.ctx.virtual.get_or_none("Event", name, target["namespace"])
        if existing is None:
            raise ApiError(409, "Conflict", f"event {name} taken, then gone: tried again")
        if (existing.get("count"), existing.get("lastTimestamp")) != (
            event.get("count"),
            event.get("lastTimestamp"),
        ):
            event["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            await self.ctx.virtual.replace(event)
