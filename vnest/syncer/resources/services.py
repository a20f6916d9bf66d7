"""Services: a host copy with a confined selector, and the same ClusterIP on both sides.

The virtual API server allocates from the host's Service CIDR (the control
plane learns it at start), so the syncer first asks the host for the very IP
the virtual Service got. It is almost always free; when it is not (a host
Service holds it), the host allocates another one and the virtual Service is
created again with that IP, as vCluster does, since a ClusterIP cannot change
in place. Either way a virtual Service and its host copy share one ClusterIP,
so in-pod clients that resolve the virtual name reach the host Service.

The selector selects the same labels among this virtual cluster's pods of the
same virtual namespace only. Endpoints come from each side's own controllers
(the virtual pods carry their host pods' IPs). LoadBalancer status and
NodePorts too are the same on both sides: the virtual one's is asked for, and when the host
has it (or the IP) taken, the host's choice flows back. `default/kubernetes` is the virtual API
server's own and stays virtual, but carries the ClusterIP of host Service
NAME, where in-pod clients reach the virtual API server; its Endpoints (which the
virtual API server, not reconciling them, leaves to the syncer) name that address
too, and the virtual endpointslice-mirroring controller makes its EndpointSlice.

`spec.externalIPs` cross only within `policies.allowedExternalIPs` (none by default):
an external IP makes every node of the host route that address to the tenant's pods
(CVE-2020-8554). What is dropped is told to the tenant in a Warning event.
"""

from __future__ import annotations

import copy

from vnest import log, naming
from vnest.integrations.kubevirt import subresources as kubevirt_subresources
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.addresses import AllowList
from vnest.syncer.engine import SyncContext, ToHostSyncer, is_subset
from vnest.syncer.engine.patcher import REFUSALS
from vnest.syncer.mappings import LABEL_DNS_SERVICE, labels_of
from vnest.syncer.resources.replicated import from_host_targets

_log = log.get("syncer.services")

KUBERNETES = "default/kubernetes"
_SPEC_FIELDS = (
    "type",
    "ports",
    "sessionAffinity",
    "sessionAffinityConfig",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "publishNotReadyAddresses",
    "ipFamilyPolicy",
    "ipFamilies",
    "loadBalancerSourceRanges",
    "externalName",
    "externalIPs",
    "allocateLoadBalancerNodePorts",
)


def headless(svc: Obj) -> bool:
    return bool(svc["spec"].get("clusterIP") == "None")


class ServiceSyncer(ToHostSyncer):
    kind = "Service"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        # The virtual Services networking.replicateServices.fromHost makes mirror host Services
        # (replicated.py) and never go to the host. Decided by the config, not by labels a
        # tenant could put on a Service of their own.
        self.replicated = from_host_targets(ctx)
        self.external_ips = AllowList(ctx.config.policies.allowed_external_ips)

    def translate(self, vsvc: Obj, with_ip: bool = True) -> Obj:
        vspec = vsvc["spec"]
        ns = vsvc["metadata"]["namespace"]
        spec = {k: copy.deepcopy(vspec[k]) for k in _SPEC_FIELDS if k in vspec}
        allowed, _ = self.external_ips.split(vspec.get("externalIPs") or [])
        if allowed:
            spec["externalIPs"] = allowed
        else:
            spec.pop("externalIPs", None)
            if spec.get("type", "ClusterIP") == "ClusterIP":
                # Defaulted for the external IPs; the host refuses it on a Service without any.
                spec.pop("externalTrafficPolicy", None)
        if not with_ip:
            for port in spec.get("ports") or []:
                # Taken on the host: the host assigns another, which flows back to the virtual Service.
                port.pop("nodePort", None)
        if vspec.get("selector"):
            spec["selector"] = self.ctx.host_selector(vspec["selector"], ns)
        if labels_of(vsvc).get(LABEL_DNS_SERVICE) == "true" and (
            ns,
            vsvc["metadata"]["name"],
        ) == (
            "kube-system",
            "kube-dns",
        ):
            # The DNS server runs in the control-plane pod: the host copy selects that pod.
            spec["selector"] = naming.control_plane_pod_selector(self.ctx.name)
        if vspec.get("type") != "ExternalName" and (with_ip or headless(vsvc)) and vspec.get("clusterIP"):
            spec["clusterIP"] = vspec["clusterIP"]
            spec["clusterIPs"] = vspec.get("clusterIPs") or [vspec["clusterIP"]]
        return {"apiVersion": "v1", "kind": "Service", "metadata": self.ctx.host_metadata(vsvc), "spec": spec}

    async def handled_elsewhere(self, key: str) -> bool:
        if key in self.replicated:
            return True  # mirrors of host Services (vnest.syncer.resources.replicated)
        if key == KUBERNETES:
            await self._point_kubernetes_at_host()
            return True
        # The way KubeVirt's subresources reach the syncer (an ExternalName to `localhost`): vnest's
        # own, for the virtual API server only.
        return key == kubevirt_subresources.SERVICE_KEY and mappings.carries(
            self.virtual.get(key), {mappings.LABEL_MANAGED_BY: self.ctx.name}
        )

    async def deleting(self, vsvc: Obj, hsvc: Obj | None) -> bool:
        return True  # the copy goes with the virtual Service itself

    async def _warn_dropped_external_ips(self, vsvc: Obj) -> None:
        _, dropped = self.external_ips.split(vsvc["spec"].get("externalIPs") or [])
        if dropped:
            await self.ctx.warn_once(
                vsvc,
                "ExternalIPsDropped",
                f"spec.externalIPs {', '.join(dropped)} not copied to the host: the host admin has not "
                "allowed them (policies.allowedExternalIPs); an external IP would route that address "
                "to this Service from the whole host (CVE-2020-8554)",
            )

    async def replaced(self, vsvc: Obj, hsvc: Obj) -> None:
        # Our own recreate (new uid, same IP) or an older Service of the same name.
        await self._warn_dropped_external_ips(vsvc)
        if hsvc["spec"].get("clusterIP") == vsvc["spec"].get("clusterIP"):
            await self.ctx.host.patch(
                "Service",
                hsvc["metadata"]["name"],
                {"metadata": {"annotations": self.ctx.host_metadata(vsvc)["annotations"]}},
                self.ctx.host_namespace,
            )
        else:
            await self.patcher.delete(hsvc)

    async def sync(self, vsvc: Obj, hsvc: Obj) -> None:
        await self._warn_dropped_external_ips(vsvc)
        ip = hsvc["spec"].get("clusterIP")
        # The host chose another IP at create: the virtual Service follows. Not while either side
        # is an ExternalName, which has none: that is a type change, for the update to carry.
        if (
            ip
            and not headless(vsvc)
            and "ExternalName" not in (vsvc["spec"].get("type"), hsvc["spec"].get("type"))
            and ip != vsvc["spec"].get("clusterIP")
        ):
            await self._recreate_virtual(vsvc, ip, hsvc["spec"].get("clusterIPs") or [ip])
            return
        await self._update_host(vsvc, hsvc)
        await self._status_back(vsvc, hsvc)

    async def to_host(self, vsvc: Obj) -> None:
        await self._warn_dropped_external_ips(vsvc)
        try:
            # A taken IP or NodePort is no refusal: the host chooses others (below).
            refusals = REFUSALS if headless(vsvc) else REFUSALS - {422}
            await self.patcher.create(vsvc, self.translate(vsvc), refusals)
        except ApiError as e:
            if e.status != 422 or headless(vsvc):
                raise
            # The IP is taken on the host: let the host choose, then follow it.
            _log.info(
                "ClusterIP taken on the host; the virtual Service will follow the host's",
                service=vsvc["metadata"]["name"],
            )
            await self.patcher.create(vsvc, self.translate(vsvc, with_ip=False))

    async def _point_kubernetes_at_host(self) -> None:
        """In-pod clients reach the virtual API through host Service NAME: so does its virtual name."""
        vsvc = self.virtual.get(KUBERNETES)
        ip = self.ctx.host_service_ip
        if vsvc is not None and ip and vsvc["spec"].get("clusterIP") != ip:
            # The API server creates this Service only when it is missing, so ours stays once made.
            await self._recreate_virtual(vsvc, ip, [ip])
        if vsvc is not None and ip:
            await self._kubernetes_endpoints(ip)

    async def _kubernetes_endpoints(self, ip: str) -> None:
        """Endpoints of `default/kubernetes`: as upstream's API servers write theirs (clients and
        conformance read them), at the address in-pod clients use."""
        subsets = [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}]
        current = await self.ctx.virtual.get_or_none("Endpoints", "kubernetes", "default")
        if current is None:
            endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes"}}
            await self.ctx.virtual.create({**endpoints, "subsets": subsets}, namespace="default")
        elif current.get("subsets") != subsets:
            await self.ctx.virtual.replace({**current, "subsets": subsets})

    async def _recreate_virtual(self, vsvc: Obj, ip: str, ips: list[str]) -> None:
        meta = vsvc["metadata"]
        fresh = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                k: copy.deepcopy(meta[k])
                for k in ("name", "namespace", "labels", "annotations", "ownerReferences", "finalizers")
                if k in meta
            },
            "spec": {
                **copy.deepcopy(vsvc["spec"]),
                "clusterIP": ip,
                "clusterIPs": ips,
            },
        }
        await self.ctx.virtual.request(
            "DELETE",
            self.resource.path(meta["namespace"], meta["name"]),
            body={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": meta["uid"]}},
        )
        await self.ctx.virtual.create(fresh, namespace=meta["namespace"])
        _log.info("recreated the virtual Service with its host copy's ClusterIP", service=meta["name"], ip=ip)

    async def _update_host(self, vsvc: Obj, hsvc: Obj) -> None:
        desired = self.translate(vsvc)
        spec = {k: v for k, v in desired["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        # NodePorts the host chose are not the tenant's to lose on the next update (while the type
        # has them: a ClusterIP Service may not name one).
        host_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in hsvc["spec"].get("ports") or []}
        for port in spec.get("ports") or [] if spec.get("type") in ("NodePort", "LoadBalancer") else []:
            # Once the host assigned a NodePort it stays (it flows back to the virtual Service);
            # the virtual one asks for its own only where the host has none yet.
            assigned = host_ports.get((port.get("port"), port.get("protocol", "TCP")), {}).get("nodePort")
            if assigned:
                port["nodePort"] = assigned
        meta = desired["metadata"]
        if (
            is_subset(spec, hsvc["spec"])
            and spec.get("selector") == hsvc["spec"].get("selector")
            and spec.get("externalIPs") == hsvc["spec"].get("externalIPs")
            and is_subset(meta["labels"], hsvc["metadata"].get("labels"))
            and is_subset(meta["annotations"], hsvc["metadata"].get("annotations"))
        ):
            return
        updated = copy.deepcopy(hsvc)
        updated["metadata"]["labels"] = meta["labels"]
        updated["metadata"]["annotations"] = {
            **hsvc["metadata"].get("annotations", {}),
            **meta["annotations"],
        }
        updated["spec"].update(spec)
        # What the virtual Service no longer has goes from the copy too (a type change clears
        # the fields the new type may not have: an ExternalName's IP families, say).
        for field in ("selector", *_SPEC_FIELDS):
            if field not in spec:
                updated["spec"].pop(field, None)
        was_external, external = (
            hsvc["spec"].get("type") == "ExternalName",
            spec.get("type") == "ExternalName",
        )
        if external:
            updated["spec"].pop("clusterIP", None)
            updated["spec"].pop("clusterIPs", None)
        elif was_external and desired["spec"].get("clusterIP"):
            # An ExternalName becoming a Service with an IP: the virtual one's, as at create.
            updated["spec"]["clusterIP"] = desired["spec"]["clusterIP"]
            updated["spec"]["clusterIPs"] = desired["spec"]["clusterIPs"]
        await self.patcher.update(hsvc, updated)

    async def _status_back(self, vsvc: Obj, hsvc: Obj) -> None:
        meta = vsvc["metadata"]
        host_ports = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in hsvc["spec"].get("ports") or []
        }
        ports = copy.deepcopy(vsvc["spec"].get("ports") or [])
        changed = False
        for port in ports:
            node_port = host_ports.get((port.get("port"), port.get("protocol", "TCP")))
            if node_port and port.get("nodePort") != node_port:
                port["nodePort"] = node_port
                changed = True
        if changed:
            await self.ctx.virtual.patch(
                "Service", meta["name"], {"spec": {"ports": ports}}, meta["namespace"]
            )
        host_lb = (hsvc.get("status") or {}).get("loadBalancer") or {}
        if host_lb != ((vsvc.get("status") or {}).get("loadBalancer") or {}):
            updated = copy.deepcopy(vsvc)
            updated["status"] = {**(vsvc.get("status") or {}), "loadBalancer": host_lb}
            await self.ctx.virtual.replace(updated, "status")
