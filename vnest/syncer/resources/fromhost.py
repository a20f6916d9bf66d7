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

from vnest import log
from vnest.config import models
from vnest.config.models import VClusterConfig
from vnest.kube.client import ApiError, Obj, resource_of
from vnest.syncer.engine import FromHostSyncer, Informer, SyncContext, same
from vnest.syncer.engine.diff import with_fields
from vnest.syncer.mappings import LABEL_MANAGED_BY, copied_annotations, is_own_key
from vnest.syncer.resources import storageclasses

_log = log.get("syncer.fromhost")


def class_config(
    config: VClusterConfig, field: str
) -> models.ClassesFromHost | models.StorageClassesFromHost:
    """`sync.fromHost.<field>` (storage_classes, ingress_classes, runtime_classes, priority_classes)."""
    section: models.ClassesFromHost | models.StorageClassesFromHost = getattr(config.sync.from_host, field)
    return section


def from_host_enabled(config: VClusterConfig, field: str) -> bool:
    """Whether `sync.fromHost.<field>` is on, with storageClasses' "auto" resolved as vCluster does."""
    enabled = class_config(config, field).enabled
    if enabled == "auto":
        control_plane = config.control_plane
        scheduler = (
            control_plane.distro.k8s.scheduler.enabled or control_plane.advanced.virtual_scheduler.enabled
        )
        to_host = config.sync.to_host
        return bool(
            scheduler and to_host.persistent_volume_claims.enabled and not to_host.storage_classes.enabled
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
    parts.append(f"!{LABEL_MANAGED_BY}")
    return ",".join(parts)


class FromHostClasses(FromHostSyncer):
    """One class kind, host to virtual; keys are plain names."""

    workers = 2
    config_key: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # top-level fields copied
    immutable: ClassVar[tuple[str, ...]]  # of those, what the API server refuses to change

    def __init__(self, ctx: SyncContext) -> None:
        self.enabled = from_host_enabled(ctx.config, self.config_key)
        # Turned off, its informer never runs (the chart grants no read access to the host's objects):
        # it only removes the copies an earlier config made.
        selector = class_config(ctx.config, self.config_key).selector.model_dump(by_alias=True)
        super().__init__(
            ctx,
            ctx.selected_informer("host", self.resource_kind, None, label_selector=selector_string(selector))
            if self.enabled
            else Informer(ctx.host, resource_of(self.resource_kind), self.resource_kind, name="unused"),
        )

    def setup(self) -> None:
        if self.enabled:
            super().setup()

    def resync(self) -> None:
        if self.enabled:
            super().resync()

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
            await self.patcher.delete(vobj)

    def translate(self, hobj: Obj) -> Obj:
        meta = hobj["metadata"]
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if not is_own_key(k)}
        return {
            "apiVersion": self.resource.group_version,
            "kind": self.resource_kind,
            "metadata": {
                "name": meta["name"],
                "labels": {**labels, **self.labels},
                "annotations": copied_annotations(meta),
            },
            **{k: copy.deepcopy(hobj[k]) for k in self.fields if k in hobj},
        }

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        want = self.translate(hobj)
        if any(not same(want.get(k), vobj.get(k)) for k in self.immutable):
            await self.patcher.delete(
                vobj
            )  # made again, with the host's fields, when its DELETED event comes
            return
        meta = vobj["metadata"]
        if (
            want["metadata"]["labels"] == (meta.get("labels") or {})
            and want["metadata"]["annotations"] == (meta.get("annotations") or {})
            and all(same(want.get(k), vobj.get(k)) for k in self.fields)
        ):
            return
        updated = with_fields(vobj, want, self.fields)
        updated["metadata"]["labels"] = want["metadata"]["labels"]
        updated["metadata"]["annotations"] = want["metadata"]["annotations"]
        await self.patcher.update(vobj, updated)


class StorageClassesFromHost(FromHostClasses):
    kind = "FromHostStorageClass"
    resource_kind = "StorageClass"
    config_key = "storage_classes"
    fields = storageclasses.FIELDS
    immutable = storageclasses.IMMUTABLE


class IngressClassesFromHost(FromHostClasses):
    kind = "FromHostIngressClass"
    resource_kind = "IngressClass"
    config_key = "ingress_classes"
    fields = ("spec",)
    immutable = ("spec",)  # spec.controller cannot change; parameters rarely do: made again either way


class RuntimeClassesFromHost(FromHostClasses):
    kind = "FromHostRuntimeClass"
    resource_kind = "RuntimeClass"
    config_key = "runtime_classes"
    fields = ("handler", "overhead", "scheduling")
    immutable = ("handler",)


class PriorityClassesFromHost(FromHostClasses):
    kind = "FromHostPriorityClass"
    resource_kind = "PriorityClass"
    config_key = "priority_classes"
    fields = ("value", "globalDefault", "description", "preemptionPolicy")
    immutable = ("value", "preemptionPolicy")

    async def handled_elsewhere(self, key: str) -> bool:
        return key.startswith("system-")  # built into every cluster, the virtual one included
