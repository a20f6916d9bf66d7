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
from typing import Any, ClassVar

from vnest import log, naming
from vnest.kube.client import ApiError, Obj, resource_of
from vnest.syncer.engine import (
    CopySyncer,
    Reconciler,
    SyncContext,
    is_own_key,
    is_subset,
    translate_label_key,
)
from vnest.syncer.informer import Informer

_log = log.get("syncer.cluster")


def cluster_selector(ctx: SyncContext) -> str:
    """The labels of this virtual cluster's cluster-scoped host copies, as a selector."""
    return f"{naming.LABEL_MANAGED_BY}={ctx.name},{naming.LABEL_VCLUSTER_NAMESPACE}={ctx.host_namespace}"


def owns_cluster_object(ctx: SyncContext, hobj: Obj | None) -> bool:
    labels = (hobj or {}).get("metadata", {}).get("labels") or {}
    return (
        bool(hobj)
        and labels.get(naming.LABEL_MANAGED_BY) == ctx.name
        and labels.get(naming.LABEL_VCLUSTER_NAMESPACE) == ctx.host_namespace
    )


def host_informer(ctx: SyncContext, kind: str) -> Informer:
    """This virtual cluster's host copies of a cluster-scoped kind, shared by all that read them."""
    return ctx.selected_informer("host", kind, None, label_selector=cluster_selector(ctx))


def host_class_name(ctx: SyncContext, name: str) -> str:
    return naming.host_cluster_scoped_name(name, ctx.host_namespace, ctx.name)


async def cluster_role_owner(
    ctx: SyncContext, name: str = "", owned: str = "cluster-scoped host copies"
) -> Obj | None:
    """An owner reference to a ClusterRole of this cluster (default: naming.cluster_role), or None
    when it cannot be read; `owned` names what goes without an owner then, for the log."""
    name = name or naming.cluster_role(ctx.name, ctx.host_namespace)
    try:
        role = await ctx.host.get("ClusterRole", name)
    except ApiError as e:
        _log.info(f"{owned} get no owner: the ClusterRole is not readable", error=str(e))
        return None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "name": name,
        "uid": role["metadata"]["uid"],
    }


def same(a: Any, b: Any) -> bool:
    """Equal, counting absent, null, false, 0 and empty alike (the API server omits empty fields)."""
    return (a or None) == (b or None)


class ClusterCopySyncer(CopySyncer):
    """A cluster-scoped kind whose host copy follows the virtual object; keys are plain names."""

    fields: ClassVar[tuple[str, ...]] = ()  # top-level fields the copy carries
    immutable: ClassVar[tuple[str, ...]] = ()  # of those, what the API server refuses to change
    dropped_annotations: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: SyncContext) -> None:
        # Not ResourceSyncer.__init__: its host informer lists the host namespace's objects.
        Reconciler.__init__(self)
        self.ctx = ctx
        self.resource = resource_of(self.kind)
        self.virtual = ctx.informer("virtual", self.kind)
        self.host = host_informer(ctx, self.kind)
        self.owner: Obj | None = None

    async def run(self) -> None:
        self.owner = await cluster_role_owner(self.ctx)
        await super().run()

    def host_object_name(self, name: str) -> str:
        return host_class_name(self.ctx, name)

    def owns(self, hobj: Obj | None) -> bool:
        return owns_cluster_object(self.ctx, hobj)

    def pair(self, vkey: str) -> tuple[Obj | None, Obj | None]:
        hobj = self.host.get(self.host_object_name(vkey))
        return self.virtual.get(vkey), hobj if self.owns(hobj) else None

    def metadata(self, vobj: Obj) -> Obj:
        meta = vobj["metadata"]
        dropped = {*self.dropped_annotations, "kubectl.kubernetes.io/last-applied-configuration"}
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if not is_own_key(k) and k not in dropped
        }
        annotations.update(
            {
                naming.ANNOTATION_NAME: meta["name"],
                naming.ANNOTATION_NAMESPACE: "",
                naming.ANNOTATION_UID: meta["uid"],
                naming.ANNOTATION_KIND: self.kind,
            }
        )
        labels = {translate_label_key(k): v for k, v in (meta.get("labels") or {}).items()}
        labels[naming.LABEL_MANAGED_BY] = self.ctx.name
        labels[naming.LABEL_VCLUSTER_NAMESPACE] = self.ctx.host_namespace
        out: Obj = {"name": self.host_object_name(meta["name"]), "labels": labels, "annotations": annotations}
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

    async def create_host(self, vobj: Obj, desired: Obj) -> Obj | None:
        """Creates the host copy; None when an object this virtual cluster does not own holds the name."""
        name = desired["metadata"]["name"]
        try:
            created = await self.ctx.host.create(desired)
        except ApiError as e:
            if not e.conflict:
                raise
        else:
            _log.info(f"host {self.kind} created", name=name, virtual=vobj["metadata"]["name"])
            return created
        existing = await self.ctx.host.get_or_none(self.kind, name)
        if existing is not None and not self.owns(existing):
            await self.ctx.warn_once(
                vobj,
                "SyncError",
                f"host {self.kind} {name} exists and is not managed by this virtual cluster; vnest leaves it alone",
            )
            return None
        raise ApiError(409, "Conflict", f"host {self.kind} {name} is being replaced")

    async def delete_host(self, hobj: Obj, grace: int | None = None) -> None:
        """Deletes a copy this virtual cluster owns, and only that very object (uid precondition)."""
        if self.owns(hobj) and await self.ctx.host.delete_exact(self.kind, hobj):
            _log.info(f"host {self.kind} deleted", name=hobj["metadata"]["name"])

    def metadata_current(self, desired: Obj, hobj: Obj) -> bool:
        want, have = desired["metadata"], hobj["metadata"]
        return (
            want["labels"] == (have.get("labels") or {})
            and is_subset(want["annotations"], have.get("annotations") or {})
            and is_subset(want.get("ownerReferences") or [], have.get("ownerReferences") or [])
        )

    def updated_metadata(self, desired: Obj, hobj: Obj) -> Obj:
        meta = copy.deepcopy(hobj["metadata"])
        meta["labels"] = desired["metadata"]["labels"]
        meta["annotations"] = {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]}
        if desired["metadata"].get("ownerReferences"):
            meta["ownerReferences"] = desired["metadata"]["ownerReferences"]
        return meta

    async def update_host(self, vobj: Obj, hobj: Obj, desired: Obj) -> None:
        if hobj["metadata"].get("deletionTimestamp"):
            return
        if any(k in desired and not same(desired[k], hobj.get(k)) for k in self.immutable):
            # Only a host object changed behind vnest's back gets here: the virtual API refuses such edits.
            await self.delete_host(hobj)  # made again when its DELETED event comes back
            return
        if self.metadata_current(desired, hobj) and all(
            same(desired.get(k), hobj.get(k)) for k in self.fields
        ):
            return
        updated = copy.deepcopy(hobj)
        updated["metadata"] = self.updated_metadata(desired, hobj)
        for k in self.fields:
            if k in desired:
                updated[k] = desired[k]
            else:
                updated.pop(k, None)
        await self.ctx.host.request("PUT", self.resource.path(None, hobj["metadata"]["name"]), body=updated)
