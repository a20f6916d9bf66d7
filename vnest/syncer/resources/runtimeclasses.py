"""Which host RuntimeClass a tenant's pod runs with.

A RuntimeClass names a handler: a runtime that the nodes' container runtime was configured
with, which only the host's admin can offer. vCluster copies a pod's `runtimeClassName`
unchanged, so a pod runs only with a class the host has of that name. vnest does the same,
and with `sync.fromHost.runtimeClasses` on, the host's classes it selects are the offer: a
RuntimeClass the tenant made itself (upstream's conformance specs make one per test) runs
with the offered host class of the same handler, the one of the same name first, else the
first by name. The tenant's class is never copied to the host: that would let a tenant pick
any handler, and add tolerations and node selectors to its host pods through the class's
`scheduling`. The host's class then decides the host pod's overhead and scheduling (its
RuntimeClass admission sets them, so the pod's own `overhead` is not copied); the virtual
pod keeps what the virtual class gave it. A tenant class whose handler no offered class
has keeps its pod off the host, with a Warning event that names the class and the handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from vnest.kube.client import Obj
from vnest.syncer.engine import Informer, SyncContext
from vnest.syncer.resources import fromhost


@dataclass(frozen=True)
class HostClass:
    """The outcome for one pod: the host class's name (None: no class), or why it cannot go."""

    name: str | None
    problem: str | None = None


class RuntimeClasses:
    def __init__(self, ctx: SyncContext) -> None:
        self.offered: Informer | None = None
        self.virtual: Informer | None = None
        if fromhost.from_host_enabled(ctx.config, "runtime_classes"):
            selector = fromhost.class_config(ctx.config, "runtime_classes").selector.model_dump(by_alias=True)
            # The informer sync.fromHost.runtimeClasses reads with (shared): what the chart lets it read.
            self.offered = ctx.selected_informer(
                "host", "RuntimeClass", None, label_selector=fromhost.selector_string(selector)
            )
            self.virtual = ctx.informer("virtual", "RuntimeClass")

    def host_class(self, name: str | None) -> HostClass:
        if not name or self.offered is None or self.virtual is None:
            return HostClass(name)  # vCluster's: the name as it is
        vclass = self.virtual.get(name)
        if vclass is None:  # deleted after the pod was admitted, or its event not here yet (it requeues)
            return HostClass(None, f"spec.runtimeClassName: there is no RuntimeClass {name!r}")
        handler = vclass.get("handler")
        # Only offered classes, looked up by the virtual class's handler: a tenant's class named like
        # a host class the offer leaves out (or labelled as a copy) gets nothing of it.
        offered = sorted(
            (c for c in self.offered.store.values() if c.get("handler") == handler),
            key=lambda c: (c["metadata"]["name"] != name, c["metadata"]["name"]),
        )
        if not offered:
            return HostClass(
                None,
                f"spec.runtimeClassName: RuntimeClass {name!r} has handler {handler!r}, and no "
                "RuntimeClass the host offers (sync.fromHost.runtimeClasses) has that handler",
            )
        chosen: Obj = offered[0]
        return HostClass(str(chosen["metadata"]["name"]))
