"""PersistentVolumeClaims: claimed on the host, where the storage is; binding and status come back.

The virtual cluster's PV binder is off (vnest.controlplane.run), so a virtual
claim's phase, capacity and conditions are exactly its host copy's. Once the
host binds its copy, the virtual claim is bound too, to a virtual
PersistentVolume named after the host's (as vCluster's fake PVs: capacity,
access modes and class of the real one, no usable source, since nothing in
the virtual cluster mounts it), and that PV goes when the claim does. A claim
cloned from another claim names that claim's host copy. Expanding a claim (a
larger request) is passed on to the host copy.

With `sync.toHost.storageClasses.enabled`, storageClassName names the host copy of
the class (vnest.syncer.resources.storageclasses). With `sync.toHost.persistentVolumes.enabled`,
a claim the host binds to the host copy of a tenant's PV is bound to that virtual PV
(no fake one), and a claim pre-bound to a tenant's PV (volumeName) names its host copy.
The fake PVs are never copied to the host (vnest.syncer.resources.persistentvolumes).
"""

from __future__ import annotations

import copy

from vnest.kube.client import Obj
from vnest.kube.objects import claim_reference
from vnest.syncer.engine import Informer, SyncContext, ToHostSyncer
from vnest.syncer.engine.diff import metadata_in_line, metadata_patch
from vnest.syncer.mappings import (
    ANNOTATION_NAME,
    FAKE_VOLUME_DRIVER,
    LABEL_FAKE_VOLUME,
    annotations_of,
    labels_of,
)
from vnest.syncer.resources.storageclasses import host_storage_class, storage_classes_to_host


class PersistentVolumeClaimSyncer(ToHostSyncer):
    kind = "PersistentVolumeClaim"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        self.host_volumes: Informer | None = None
        self.virtual_volumes: Informer | None = None
        if ctx.config.sync.to_host.persistent_volumes.enabled:
            # The tenant's PVs have host copies (vnest.syncer.resources.persistentvolumes), shared caches.
            self.host_volumes = ctx.cluster_copies("PersistentVolume")
            self.virtual_volumes = ctx.informer("virtual", "PersistentVolume")

    def virtual_volume_of(self, host_volume: str) -> str | None:
        """The tenant's virtual PV whose host copy `host_volume` is; None for the host's own volumes."""
        hpv = self.host_volumes.get(host_volume) if self.host_volumes is not None else None
        if hpv is None or not self.ctx.cluster.owns(hpv):
            return None
        return annotations_of(hpv).get(ANNOTATION_NAME)

    def translate(self, vpvc: Obj) -> Obj:
        ns = vpvc["metadata"]["namespace"]
        spec = copy.deepcopy(vpvc["spec"])
        volume = spec.pop("volumeName", None)  # the host binds to its own volumes
        vpv = self.virtual_volumes.get(volume) if volume and self.virtual_volumes is not None else None
        if vpv is not None and labels_of(vpv).get(LABEL_FAKE_VOLUME) != "true":
            spec["volumeName"] = self.ctx.cluster.host_class_name(
                volume
            )  # pre-bound to a tenant's PV: its copy
        if spec.get("storageClassName"):
            spec["storageClassName"] = host_storage_class(self.ctx, spec["storageClassName"])
        for field in ("dataSource", "dataSourceRef"):
            ref = spec.get(field)
            if ref and ref.get("kind") == "PersistentVolumeClaim":
                ref["name"] = self.ctx.host_name(ref["name"], ns)
            elif ref:
                spec.pop(field)  # snapshots and populators of the virtual cluster do not exist on the host
        if spec.get("selector"):
            spec.pop("selector")  # it selects virtual PVs, which the host does not have
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self.ctx.host_metadata(vpvc),
            "spec": spec,
        }

    async def deleting(self, vpvc: Obj, hpvc: Obj | None) -> bool:
        await self._delete_host(vpvc, hpvc)
        return True

    async def to_virtual(self, hpvc: Obj) -> None:
        await self._delete_host(None, hpvc)

    async def _delete_host(self, vpvc: Obj | None, hpvc: Obj | None) -> None:
        if hpvc is not None and not hpvc["metadata"].get("deletionTimestamp"):
            await self.patcher.delete(hpvc)
        await self._delete_virtual_volume(vpvc, hpvc)

    async def sync(self, vpvc: Obj, hpvc: Obj) -> None:
        desired = self.translate(vpvc)
        if not metadata_in_line(desired, hpvc):
            # A patch, as for the size: the rest of a bound claim's spec is the host's.
            patch = metadata_patch(hpvc, desired)
            hpvc = await self.ctx.host.patch(
                self.kind, hpvc["metadata"]["name"], patch, self.ctx.host_namespace
            )
        want = vpvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        have = hpvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        if want and want != have:
            await self.ctx.host.patch(
                "PersistentVolumeClaim",
                hpvc["metadata"]["name"],
                {"spec": {"resources": {"requests": {"storage": want}}}},
                self.ctx.host_namespace,
            )
        volume = hpvc["spec"].get("volumeName")
        if volume and hpvc.get("status", {}).get("phase") == "Bound":
            virtual_volume = self.virtual_volume_of(volume)
            if virtual_volume is None:  # a volume of the host's: shown as a fake virtual PV
                await self._ensure_virtual_volume(vpvc, hpvc, volume)
                virtual_volume = volume
            if not vpvc["spec"].get("volumeName"):
                meta = vpvc["metadata"]
                await self.ctx.virtual.patch(
                    "PersistentVolumeClaim",
                    meta["name"],
                    {"spec": {"volumeName": virtual_volume}},
                    meta["namespace"],
                )
                return  # the update brings us back for the status
        status = hpvc.get("status") or {}
        if status and status != vpvc.get("status"):
            await self.ctx.virtual.replace({**vpvc, "status": status}, "status")

    async def _ensure_virtual_volume(self, vpvc: Obj, hpvc: Obj, name: str) -> None:
        if await self.ctx.virtual.get_or_none("PersistentVolume", name) is not None:
            return
        status = hpvc.get("status") or {}
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {LABEL_FAKE_VOLUME: "true"}},
            "spec": {
                "capacity": status.get("capacity") or hpvc["spec"].get("resources", {}).get("requests", {}),
                "accessModes": status.get("accessModes")
                or hpvc["spec"].get("accessModes")
                or ["ReadWriteOnce"],
                # The virtual class name when classes sync to the host (the host's is its copy's).
                "storageClassName": (
                    vpvc["spec"].get("storageClassName") if storage_classes_to_host(self.ctx.config) else None
                )
                or hpvc["spec"].get("storageClassName")
                or "",
                # Deleted with its claim, by the syncer, since no binder runs in the virtual cluster.
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": claim_reference(vpvc),
                # A source is required; nothing in the virtual cluster mounts this one.
                "flexVolume": {"driver": FAKE_VOLUME_DRIVER},
            },
        }
        created = await self.ctx.virtual.create(volume)
        await self.ctx.virtual.replace({**created, "status": {"phase": "Bound"}}, "status")

    async def _delete_virtual_volume(self, vpvc: Obj | None, hpvc: Obj | None) -> None:
        name = (vpvc or {}).get("spec", {}).get("volumeName") or (hpvc or {}).get("spec", {}).get(
            "volumeName"
        )
        if not name:
            return
        volume = await self.ctx.virtual.get_or_none("PersistentVolume", name)
        if volume is not None and labels_of(volume).get(LABEL_FAKE_VOLUME) == "true":
            await self.ctx.virtual.delete("PersistentVolume", name)
