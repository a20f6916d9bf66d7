"""PersistentVolumeClaims: claimed on the host, where the storage is; binding and status come back.

The virtual cluster's PV binder is off (vnest.controlplane.run), so a virtual
claim's phase, capacity and conditions are exactly its host copy's. A claim
cloned from another claim names that claim's host copy. Expanding a claim
(a larger request) is passed on to the host copy.
"""

from __future__ import annotations

import copy

from vnest.kube.client import Obj
from vnest.syncer.engine import ResourceSyncer


class PersistentVolumeClaimSyncer(ResourceSyncer):
    kind = "PersistentVolumeClaim"

    def translate(self, vpvc: Obj) -> Obj:
        ns = vpvc["metadata"]["namespace"]
        spec = copy.deepcopy(vpvc["spec"])
        spec.pop("volumeName", None)  # the host binds to its own volumes
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

    async def reconcile(self, vkey: str) -> None:
        vpvc = self.virtual.get(vkey)
        hpvc = self.host.get(self.ctx.host_key(vkey))
        if hpvc is not None and not self.ctx.owns(hpvc):
            hpvc = None
        if vpvc is None or vpvc["metadata"].get("deletionTimestamp"):
            if hpvc is not None and not hpvc["metadata"].get("deletionTimestamp"):
                await self.delete_host(hpvc)
            return
        if hpvc is None:
            await self.create_host(vpvc, self.translate(vpvc))
            return
        if not self.uid_matches(vpvc, hpvc):
            await self.delete_host(hpvc)
            return
        want = vpvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        have = hpvc["spec"].get("resources", {}).get("requests", {}).get("storage")
        if want and want != have:
            await self.ctx.host.patch(
                "PersistentVolumeClaim",
                hpvc["metadata"]["name"],
                {"spec": {"resources": {"requests": {"storage": want}}}},
                self.ctx.host_namespace,
            )
        status = hpvc.get("status") or {}
        if status and status != vpvc.get("status"):
            meta = vpvc["metadata"]
            updated = {**vpvc, "status": status}
            await self.ctx.virtual.request(
                "PUT", self.resource.path(meta["namespace"], meta["name"], "status"), body=updated
            )
