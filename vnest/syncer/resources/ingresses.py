"""Ingresses (optional, `sync.toHost.ingresses.enabled`): served by the host's ingress controller.

The host copy routes to the host copies of the virtual Services and terminates
TLS with the host copies of the virtual Secrets (which the Secret syncer copies
because an Ingress names them). The load balancer status the host's
controller writes comes back to the virtual Ingress.
"""

from __future__ import annotations

import copy

from vnest.kube.client import Obj
from vnest.syncer.engine import ToHostSyncer, is_subset
from vnest.syncer.engine.diff import metadata_in_line, with_metadata


def tls_secrets(ingress: Obj) -> set[str]:
    return {t["secretName"] for t in ingress.get("spec", {}).get("tls") or [] if t.get("secretName")}


class IngressSyncer(ToHostSyncer):
    kind = "Ingress"

    def translate(self, ving: Obj) -> Obj:
        ns = ving["metadata"]["namespace"]
        spec = copy.deepcopy(ving["spec"])

        def backend(b: Obj | None) -> None:
            if not b:
                return
            if "service" in b:
                b["service"]["name"] = self.ctx.host_name(b["service"]["name"], ns)
            b.pop("resource", None)  # a virtual object the host cannot reach

        backend(spec.get("defaultBackend"))
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend(path.get("backend"))
        for tls in spec.get("tls") or []:
            if tls.get("secretName"):
                tls["secretName"] = self.ctx.host_name(tls["secretName"], ns)
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": self.ctx.host_metadata(ving),
            "spec": spec,
        }

    async def sync(self, ving: Obj, hing: Obj) -> None:
        await self._update_host(hing, self.translate(ving))
        await self._status_back(ving, hing)

    async def _update_host(self, hing: Obj, desired: Obj) -> None:
        # Annotations too: ingress controllers are configured by them (rewrite-target, ...).
        if is_subset(desired["spec"], hing["spec"]) and metadata_in_line(desired, hing):
            return
        updated = with_metadata(hing, desired)
        updated["spec"] = desired["spec"]
        await self.patcher.update(hing, updated)

    async def _status_back(self, ving: Obj, hing: Obj) -> None:
        host_lb = (hing.get("status") or {}).get("loadBalancer") or {}
        if host_lb != ((ving.get("status") or {}).get("loadBalancer") or {}):
            await self.ctx.virtual.replace({**ving, "status": {"loadBalancer": host_lb}}, "status")
