"""What every cluster-scoped host copy shares (StorageClasses, PriorityClasses, PersistentVolumes).

Cluster-scoped host objects are shared
by every tenant of the host, so `ClusterCopySyncer` adds to the engine's ownership rules:
- a copy carries `vnest.io/managed-by=<vcluster>` *and* `vnest.io/vcluster-namespace=<host
  namespace>`, and the host informer selects both, cluster-wide: two virtual clusters of one
  name in two namespaces never see, let alone touch, each other's copies;
- a host object of the wanted name without both labels is never modified or deleted: the
  virtual object gets a SyncError event instead; deletes carry uid preconditions;
- copies are owned (ownerReferences) by the cluster's ClusterRole `vnest-vc-x-<ns>-x-<name>`
  (naming.cluster_role, chart/templates/clusterrole.yaml), which exists while any of these
  kinds syncs: when it goes (the virtual cluster deleted, or the last feature that needs it
  turned off), the host's garbage collector removes the copies, since no namespace deletion
  would. A kind turned off while the ClusterRole stays keeps its copies until then: the syncer
  no longer has the rights to remove them.
"""

from __future__ import annotations

import copy
from typing import ClassVar

from vnest import log, naming
from vnest.kube.client import ApiError, Obj
from vnest.kube.objects import OwnerReference, owner_reference
from vnest.syncer.engine.context import SyncContext
from vnest.syncer.engine.controller import ClusterSyncer
from vnest.syncer.engine.diff import metadata_in_line, same, with_fields, with_metadata

_log = log.get("syncer.cluster")


async def cluster_role_owner(
    ctx: SyncContext, name: str = "", owned: str = "cluster-scoped host copies"
) -> OwnerReference | None:
    """An owner reference to a ClusterRole of this cluster (default: naming.cluster_role), or None
    when it cannot be read; `owned` names what goes without an owner then, for the log."""
    name = name or naming.cluster_role(ctx.name, ctx.host_namespace)
    try:
        role = await ctx.host.get("ClusterRole", name)
    except ApiError as e:
        _log.info(f"{owned} get no owner: the ClusterRole is not readable", error=str(e))
        return None
    return owner_reference(role)


class ClusterCopySyncer(ClusterSyncer):
    """A cluster-scoped kind whose copy carries some top-level fields of the virtual object."""

    fields: ClassVar[tuple[str, ...]] = ()  # top-level fields the copy carries
    immutable: ClassVar[tuple[str, ...]] = ()  # of those, what the API server refuses to change
    dropped_annotations: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        self.owner: OwnerReference | None = None

    async def run(self) -> None:
        self.owner = await cluster_role_owner(self.ctx)
        await super().run()

    def metadata(self, vobj: Obj) -> Obj:
        out = self.ctx.cluster.host_metadata(vobj, self.dropped_annotations)
        if self.owner is not None:
            out["ownerReferences"] = [self.owner]
        return out

    def payload(self, vobj: Obj) -> Obj:
        return {k: copy.deepcopy(vobj[k]) for k in self.fields if k in vobj}

    def translate(self, vobj: Obj) -> Obj:
        return {
            "apiVersion": self.resource.group_version,
            "kind": self.kind,
            "metadata": self.metadata(vobj),
            **self.payload(vobj),
        }

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        await self.update_host(vobj, hobj, self.translate(vobj))
        await self.status_back(vobj, hobj)

    async def update_host(self, vobj: Obj, hobj: Obj, desired: Obj) -> None:
        if hobj["metadata"].get("deletionTimestamp"):
            return
        if any(k in desired and not same(desired[k], hobj.get(k)) for k in self.immutable):
            # Only a host object changed behind vnest's back gets here: the virtual API refuses such edits.
            await self.patcher.delete(hobj)  # made again when its DELETED event comes back
            return
        if metadata_in_line(desired, hobj) and all(same(desired.get(k), hobj.get(k)) for k in self.fields):
            return
        await self.patcher.update(hobj, with_fields(with_metadata(hobj, desired), desired, self.fields))

    async def status_back(self, vobj: Obj, hobj: Obj) -> None:
        """Copies what the host learned back to the virtual object; most classes have nothing to copy."""
