"""The host's classes, copied read-only into the virtual cluster (`sync.fromHost.*Classes`).

StorageClasses, IngressClasses, RuntimeClasses and PriorityClasses of the host appear in
the virtual cluster under the same names, so tenants' PVCs, Ingresses and pods can name
them and their host copies name the host's own objects (no translation needed). Each
kind follows its `selector` (matchLabels/matchExpressions, as in vCluster), read by the
host API server itself. Host objects vnest made for any virtual cluster (managed-by
labelled: other tenants' PriorityClasses, StorageClasses) are never copied, nor are the
`system-*` PriorityClasses, which every cluster has of its own.

The host is the source of truth: a copy carries the host object's fields, labels and
annotations plus `vnest.io/managed-by=<vcluster>` and `vnest.io/from-host=true`, a tenant's
edit is reverted, a deleted copy comes back, and the host object's deletion (or leaving
the selector) removes it. A virtual object of that name without those labels is the
tenant's: never modified or deleted, it gets a SyncError event instead. Fields the API
server will not change in place (a PriorityClass's value, a StorageClass's provisioner,
...) are followed by deleting and creating the copy again.

`sync.fromHost.storageClasses.enabled: auto` (the default) is vCluster's: on when the
virtual cluster schedules its own pods (its scheduler enabled) and PVCs sync, unless
StorageClasses sync to the host; otherwise off. A kind turned off leaves nothing behind:
its syncer then only deletes, once, the copies an earlier config made.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from vnest import log, naming
from vnest.kube.client import ApiError, Obj, resource_of
from vnest.syncer import storageclasses
from vnest.syncer.clusterscoped import same
from vnest.syncer.engine import Reconciler, SyncContext, is_own_key
from vnest.syncer.informer import Informer, key_of

_log = log.get("syncer.fromhost")

LABEL_FROM_HOST = f"{naming.PREFIX}/from-host"
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def from_host_enabled(values: dict[str, Any], config_key: str) -> bool:
    """Whether `sync.fromHost.<config_key>` is on, with storageClasses' "auto" resolved as vCluster does."""
    enabled = values["sync"]["fromHost"][config_key]["enabled"]
    if enabled == "auto":
        k8s = values["controlPlane"]["distro"]["k8s"]
        scheduler = (
            k8s["scheduler"]["enabled"] or values["controlPlane"]["advanced"]["virtualScheduler"]["enabled"]
        )
        to_host = values["sync"]["toHost"]
        return bool(
            scheduler
            and to_host["persistentVolumeClaims"]["enabled"]
            and not to_host["storageClasses"]["enabled"]
        )
    return enabled is True


def selector_string(selector: dict[str, Any] | None) -> str:
    """A label selector (matchLabels, matchExpressions) as the API's labelSelector parameter, never
    selecting objects vnest made."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    parts.append(f"!{naming.LABEL_MANAGED_BY}")
    return ",".join(parts)


class FromHostClasses(Reconciler):
    """One class kind, host to virtual; keys are plain names."""

    workers = 2
    resource_kind: ClassVar[str]
    config_key: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # top-level fields copied
    immutable: ClassVar[tuple[str, ...]]  # of those, what the API server refuses to change

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.resource = resource_of(self.resource_kind)
        self.enabled = from_host_enabled(ctx.values, self.config_key)
        self.host: Informer | None = None
        self.virtual: Informer | None = None
        if self.enabled:  # else no informer: the chart grants no read access to the host's objects
            selector = ctx.values["sync"]["fromHost"][self.config_key].get("selector")
            self.host = ctx.selected_informer(
                "host", self.resource_kind, None, label_selector=selector_string(selector)
            )
            self.virtual = ctx.informer("virtual", self.resource_kind)

    @property
    def labels(self) -> dict[str, str]:
        return {naming.LABEL_MANAGED_BY: self.ctx.name, LABEL_FROM_HOST: "true"}

    def ours(self, vobj: Obj | None) -> bool:
        labels = (vobj or {}).get("metadata", {}).get("labels") or {}
        return bool(vobj) and all(labels.get(k) == v for k, v in self.labels.items())

    def skipped(self, name: str) -> bool:
        return False

    def setup(self) -> None:
        if self.host is None or self.virtual is None:
            return
        self.host.add_handler(self._on_change)
        self.virtual.add_handler(self._on_change)

    def _on_change(self, old: Obj | None, new: Obj | None) -> None:
        self.queue.add(key_of(new or old))  # type: ignore[arg-type]

    def resync(self) -> None:
        if self.host is None or self.virtual is None:
            return
        for name in list(self.host.store):
            self.queue.add(name)
        for name, obj in list(self.virtual.store.items()):
            if self.ours(obj):
                self.queue.add(name)

    async def run(self) -> None:
        if not self.enabled:
            try:
                await self._clean_up()
            except ApiError as e:
                _log.warning(f"cannot clean up the copies of host {self.resource_kind}s", error=str(e))
        await super().run()

    async def _clean_up(self) -> None:
        """Turned off: deletes the copies an earlier config made (nothing else carries our labels)."""
        selector = ",".join(f"{k}={v}" for k, v in self.labels.items())
        for vobj in await self.ctx.virtual.list(self.resource_kind, label_selector=selector):
            await self._delete(vobj)

    def desired(self, hobj: Obj) -> Obj:
        meta = hobj["metadata"]
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if not is_own_key(k)}
        annotations = {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if not is_own_key(k) and k not in _DROPPED_ANNOTATIONS
        }
        return {
            "apiVersion": self.resource.group_version,
            "kind": self.resource_kind,
            "metadata": {
                "name": meta["name"],
                "labels": {**labels, **self.labels},
                "annotations": annotations,
            },
            **{k: copy.deepcopy(hobj[k]) for k in self.fields if k in hobj},
        }

    async def reconcile(self, name: str) -> None:
        assert self.host is not None and self.virtual is not None
        if self.skipped(name):
            return
        hobj = self.host.get(name)
        vobj = self.virtual.get(name)
        ours = vobj if self.ours(vobj) else None
        if hobj is None:
            if ours is not None:
                await self._delete(ours)
            return
        if vobj is not None and ours is None:
            await self.ctx.warn_once(
                vobj,
                "SyncError",
                f"host {self.resource_kind} {name} is not copied into the virtual cluster: a {self.resource_kind} "
                "of that name exists there and was not made by vnest; vnest leaves it alone",
            )
            return
        want = self.desired(hobj)
        if ours is None:
            await self.ctx.virtual.create(want)
            _log.info(f"host {self.resource_kind} copied in", name=name)
            return
        if ours["metadata"].get("deletionTimestamp"):
            return  # made again when its DELETED event comes back
        if any(not same(want.get(k), ours.get(k)) for k in self.immutable):
            await self._delete(ours)  # made again, with the host's fields, when its DELETED event comes back
            return
        meta = ours["metadata"]
        if (
            want["metadata"]["labels"] == (meta.get("labels") or {})
            and want["metadata"]["annotations"] == (meta.get("annotations") or {})
            and all(same(want.get(k), ours.get(k)) for k in self.fields)
        ):
            return
        updated = copy.deepcopy(ours)
        updated["metadata"]["labels"] = want["metadata"]["labels"]
        updated["metadata"]["annotations"] = want["metadata"]["annotations"]
        for k in self.fields:
            if k in want:
                updated[k] = want[k]
            else:
                updated.pop(k, None)
        await self.ctx.virtual.request("PUT", self.resource.path(None, name), body=updated)
        _log.info(f"{self.resource_kind} copy brought back in line with the host", name=name)

    async def _delete(self, vobj: Obj) -> None:
        if self.ours(vobj) and await self.ctx.virtual.delete_exact(self.resource_kind, vobj):
            _log.info(f"{self.resource_kind} copy removed", name=vobj["metadata"]["name"])


class StorageClassesFromHost(FromHostClasses):
    kind = "FromHostStorageClass"
    resource_kind = "StorageClass"
    config_key = "storageClasses"
    fields = storageclasses.FIELDS
    immutable = storageclasses.IMMUTABLE


class IngressClassesFromHost(FromHostClasses):
    kind = "FromHostIngressClass"
    resource_kind = "IngressClass"
    config_key = "ingressClasses"
    fields = ("spec",)
    immutable = ("spec",)  # spec.controller cannot change; parameters rarely do: made again either way


class RuntimeClassesFromHost(FromHostClasses):
    kind = "FromHostRuntimeClass"
    resource_kind = "RuntimeClass"
    config_key = "runtimeClasses"
    fields = ("handler", "overhead", "scheduling")
    immutable = ("handler",)


class PriorityClassesFromHost(FromHostClasses):
    kind = "FromHostPriorityClass"
    resource_kind = "PriorityClass"
    config_key = "priorityClasses"
    fields = ("value", "globalDefault", "description", "preemptionPolicy")
    immutable = ("value", "preemptionPolicy")

    def skipped(self, name: str) -> bool:
        return name.startswith("system-")  # built into every cluster, the virtual one included


def syncers(ctx: SyncContext) -> list[Reconciler]:
    """All four kinds, always: a kind turned off removes the copies an earlier config made."""
    return [
        StorageClassesFromHost(ctx),
        IngressClassesFromHost(ctx),
        RuntimeClassesFromHost(ctx),
        PriorityClassesFromHost(ctx),
    ]
