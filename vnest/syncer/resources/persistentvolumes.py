"""PersistentVolumes (optional, `sync.toHost.persistentVolumes.enabled`): the tenant's own volumes on the host.

A virtual PV (a static volume the tenant brings: NFS, CSI, hostPath, ...) becomes host PV
`vnest-<name>-x-<hostns>-x-<vcluster>` (see vnest.syncer.engine.clusterscoped for what all
cluster-scoped copies share) with the same source, capacity, access modes, reclaim policy,
volume mode, node affinity and mount options. A claimRef (pre-binding) names the host copy
of the claim; storageClassName names the host copy of the class while StorageClasses sync
to the host. Binding happens on the host, where the virtual claims' copies are (the virtual
PV binder is off): the host PV's status comes back, and its claimRef, told in virtual
names, becomes the virtual PV's, so the tenant sees an ordinary bound pair. Capacity,
access modes, reclaim policy, class and mount options follow later edits; the source
cannot change (the API server refuses it on both sides) and a claimRef is only sent at
creation, after which the host's binder owns it. Secret references inside a source are
passed as they are.

Not copied: the virtual PVs the PVC syncer makes for volumes the host provisioned
(vnest.syncer.resources.pvcs), which *are* host volumes already. They are told apart by the PVC
syncer's label or, whatever labels a tenant changes, by the PVC syncer's knowledge: a
virtual PV named after a host volume that one of this cluster's host claims is bound to.
A tenant can only make its own PV not sync that way, never make vnest copy a host volume.

Deleting a virtual PV deletes the host copy (the host's pv-protection holds it while a
claim uses it); once that is gone, the virtual PV's pv-protection finalizer is released,
since no virtual binder will. A host copy the host reclaimed (policy Delete, claim gone)
takes its Released virtual PV with it, as the binder would.

The host copy is a real host volume: a tenant with this sync can mount whatever the
volume source names (a hostPath, any NFS export) on the host's nodes. Enable it only for
tenants trusted with that, as with vCluster.
"""

from __future__ import annotations

import copy

from vnest import log
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Handlers, SyncContext, same
from vnest.syncer.engine.clusterscoped import ClusterCopySyncer
from vnest.syncer.engine.diff import metadata_in_line, with_metadata
from vnest.syncer.mappings import LABEL_FAKE_VOLUME, key_of, labels_of
from vnest.syncer.resources.storageclasses import host_storage_class

_log = log.get("syncer.persistentvolumes")

PROTECTION_FINALIZER = "kubernetes.io/pv-protection"
MUTABLE_SPEC = (
    "capacity",
    "accessModes",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
)
CLAIM_FIELDS = ("namespace", "name", "uid")


class PersistentVolumeSyncer(ClusterCopySyncer):
    kind = "PersistentVolume"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        self.host_claims = ctx.informer("host", "PersistentVolumeClaim")
        # host volume name -> keys of this cluster's host claims bound to it
        self.bound_volumes: dict[str, set[str]] = {}

    def setup(self) -> None:
        super().setup()
        self.host_claims.add_handlers(Handlers.diff(self._on_host_claim))

    def _on_host_claim(self, old: Obj | None, new: Obj | None) -> None:
        for obj, present in ((old, False), (new, True)):
            if obj is None or not self.ctx.namespaced.owns(obj):
                continue
            volume = obj["spec"].get("volumeName")
            if not volume:
                continue
            claims = self.bound_volumes.setdefault(volume, set())
            if present:
                claims.add(key_of(obj))
            else:
                claims.discard(key_of(obj))
                if not claims:
                    del self.bound_volumes[volume]
            copy_of = self.host.get(volume)
            if copy_of is not None and (vkey := mappings.virtual_key_of(copy_of)):
                self.queue.add(vkey)  # a claim bound to our copy: the virtual PV learns its claim
            else:
                self.queue.add(volume)  # a host volume: the virtual PV of that name is not to be copied

    def made_by_vnest(self, vpv: Obj) -> bool:
        """A virtual PV the PVC syncer made for a host volume (see the module's docstring)."""
        if labels_of(vpv).get(LABEL_FAKE_VOLUME) == "true":
            return True
        return (
            vpv["metadata"]["name"] in self.bound_volumes and self.host.get(vpv["metadata"]["name"]) is None
        )

    def wanted(self, key: str, vobj: Obj) -> bool:
        return not self.made_by_vnest(vobj)

    def translate(self, vpv: Obj) -> Obj:
        spec = copy.deepcopy(vpv["spec"])
        claim = spec.pop("claimRef", None) or {}
        if claim.get("name") and claim.get("namespace"):
            spec["claimRef"] = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": self.ctx.host_namespace,
                "name": self.ctx.host_name(claim["name"], claim["namespace"]),
            }
        if spec.get("storageClassName"):
            spec["storageClassName"] = host_storage_class(self.ctx, spec["storageClassName"])
        return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": self.metadata(vpv), "spec": spec}

    async def deleting(self, vpv: Obj, hpv: Obj | None) -> bool:
        if hpv is not None:
            if not hpv["metadata"].get("deletionTimestamp"):
                await self.patcher.delete(hpv)
            return True  # its DELETED event brings us back
        await self._release(vpv)
        return True

    async def to_host(self, vpv: Obj) -> None:
        if _reclaimed(vpv):
            await self._delete_virtual(vpv)
        else:
            await super().to_host(vpv)

    async def update_host(self, vpv: Obj, hpv: Obj, desired: Obj) -> None:
        if hpv["metadata"].get("deletionTimestamp"):
            return
        want = {k: desired["spec"].get(k) for k in MUTABLE_SPEC}
        have = hpv.get("spec") or {}
        if metadata_in_line(desired, hpv) and all(same(v, have.get(k)) for k, v in want.items()):
            return
        updated = with_metadata(hpv, desired)
        for k, v in want.items():
            if v is None:
                updated["spec"].pop(k, None)
            else:
                updated["spec"][k] = v
        await self.patcher.update(hpv, updated)

    def virtual_claim(self, hpv: Obj) -> Obj | None:
        """The host PV's claim, in virtual names: None unless it is this cluster's copy of a claim."""
        ref = hpv["spec"].get("claimRef") or {}
        if ref.get("namespace") != self.ctx.host_namespace or not ref.get("name"):
            return None
        hpvc = self.host_claims.get(f"{self.ctx.host_namespace}/{ref['name']}")
        if hpvc is None or not self.ctx.namespaced.owns(hpvc):
            return None
        if ref.get("uid") and ref["uid"] != hpvc["metadata"]["uid"]:
            return None  # bound to an earlier claim of that name
        ann = mappings.annotations_of(hpvc)
        if not ann.get(mappings.ANNOTATION_NAME):
            return None
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": ann.get(mappings.ANNOTATION_NAMESPACE, ""),
            "name": ann[mappings.ANNOTATION_NAME],
            "uid": ann.get(mappings.ANNOTATION_UID, ""),
        }

    async def status_back(self, vpv: Obj, hpv: Obj) -> None:
        claim = self.virtual_claim(hpv)
        have = vpv["spec"].get("claimRef") or {}
        if claim is not None and any(claim[k] != have.get(k) for k in CLAIM_FIELDS):
            updated = copy.deepcopy(vpv)
            updated["spec"]["claimRef"] = claim
            vpv = await self.ctx.virtual.replace(updated)
        status = hpv.get("status") or {}
        if status and status != vpv.get("status"):
            await self.ctx.virtual.replace({**vpv, "status": status}, "status")

    async def _release(self, vpv: Obj) -> None:
        """Drops the pv-protection finalizer of a deleted virtual PV whose host copy is gone."""
        finalizers = vpv["metadata"].get("finalizers") or []
        if PROTECTION_FINALIZER not in finalizers:
            return
        updated = copy.deepcopy(vpv)
        updated["metadata"]["finalizers"] = [f for f in finalizers if f != PROTECTION_FINALIZER]
        try:
            await self.ctx.virtual.replace(updated)
        except ApiError as e:
            if not e.not_found:
                raise

    async def _delete_virtual(self, vpv: Obj) -> None:
        if await self.ctx.virtual.delete_exact("PersistentVolume", vpv):
            _log.info(
                "virtual PersistentVolume removed: the host reclaimed its copy", name=vpv["metadata"]["name"]
            )


def _reclaimed(vpv: Obj) -> bool:
    """Released with policy Delete: its host copy went the way the binder deletes such volumes."""
    return (
        vpv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
        and (vpv.get("status") or {}).get("phase") == "Released"
    )
