"""EndpointSlices of selector-less Services (`sync.toHost.endpoints.enabled`, on by default as in vCluster).

A virtual Service with a selector needs nothing here: its host copy selects the
translated pods and the host's own endpointslice controller lists them. A
selector-less one is different: its tenant writes the endpoints by hand (an
external database, a pod of another Service), and its host copy, selector-less
too, would have none, so traffic to its ClusterIP would go nowhere. So each
virtual EndpointSlice of such a Service gets a host copy:
- named by the usual rule (`<name>-x-<namespace>-x-<vcluster>`), with the usual
  managed-by label and vnest.io/object-* annotations;
- `kubernetes.io/service-name` naming the host Service, and
  `endpointslice.kubernetes.io/managed-by` naming vnest's controller: the host's
  endpointslice and mirroring controllers leave slices of other managers alone;
- owned by the host Service, so the host's garbage collector removes it with it;
- addresses only when they are this virtual cluster's own pods' (their host copies'
  IPs) or within `policies.allowedEndpointCIDRs` (none by default): an endpoint
  is a way for the host's proxies to send traffic, and a tenant's must not lead
  to the host API server or another tenant's pods. An endpoint left without
  addresses is dropped, and the tenant gets a Warning event on the Service;
- conditions, hostname, zone, hints and ports as they are; a targetRef
  to a pod names that pod's host copy (dropped when the pod is not synced: a
  reference to a virtual name means nothing on the host), as are targetRefs of
  other kinds; a nodeName is kept only when the host has that node (one running
  a pod of this cluster, or one real node sync selected), never a made-up name.
vCluster syncs the legacy Endpoints objects instead; vnest syncs the slices,
which cover both: a tenant's Endpoints object is mirrored into slices by the
virtual cluster's own endpointslice-mirroring controller, and those sync here.

Never synced: slices of `default/kubernetes` (the virtual API server's own), of
`networking.replicateServices.fromHost` targets (replicated.py makes those from
the host's), and of Services whose host copy is missing, not ours, or has a
selector (e.g. the virtual kube-dns Service, whose host copy selects the
control-plane pod): there the host's own controller owns the endpoints. A
Service gaining a selector, or going, takes the host slices with it.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from vnest.kube.client import Obj
from vnest.syncer import mappings
from vnest.syncer.addresses import AllowList
from vnest.syncer.engine import Handlers, Informer, SyncContext, ToHostSyncer, is_subset
from vnest.syncer.engine.informer import event_object
from vnest.syncer.mappings import (
    ENDPOINTS_CONTROLLER,
    LABEL_SERVICE_NAME,
    LABEL_SLICE_MANAGER,
    NamespacedMapping,
    key_of,
    labels_of,
)
from vnest.syncer.resources.replicated import from_host_targets

# The endpointslice.kubernetes.io/managed-by of the host slices made here (a domain, as Kubernetes
# names its own controllers); distinct from replicated.py's, whose slices are other objects.
KUBERNETES = "default/kubernetes"
_ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "zone", "hints")

Dep = tuple[str, str]  # ("Service" | "Pod", "ns/name"), ("Node", name) or ("Address", ip)


def translate_endpoint(
    endpoint: Obj,
    namespace: str,
    host_namespace: str,
    host_pod: Callable[[str, str], str | None],
    host_node: Callable[[str], bool],
    address_allowed: Callable[[str], bool] = lambda _: True,
) -> Obj | None:
    """One endpoint of a virtual slice in `namespace`, as the host (`host_namespace`) should see it.

    `host_pod(ns, name)` is the host name of a synced virtual pod (None when it is not
    synced); `host_node(name)` tells whether the host has that node; `address_allowed(ip)`
    whether an address may be an endpoint on the host. None: no address may.
    """
    out = {k: copy.deepcopy(endpoint[k]) for k in _ENDPOINT_FIELDS if k in endpoint}
    out["addresses"] = [a for a in endpoint.get("addresses") or [] if address_allowed(a)]
    if not out["addresses"]:
        return None
    ref = endpoint.get("targetRef")
    if ref and ref.get("kind") == "Pod" and ref.get("name"):
        name = host_pod(ref.get("namespace") or namespace, ref["name"])
        if name is not None:
            # The virtual pod's uid and resourceVersion would only mislead on the host.
            out["targetRef"] = {"kind": "Pod", "namespace": host_namespace, "name": name}
    if endpoint.get("nodeName") and host_node(endpoint["nodeName"]):
        out["nodeName"] = endpoint["nodeName"]
    return out


def translate_slice(
    ctx: SyncContext,
    vslice: Obj,
    hsvc: Obj,
    host_pod: Callable[[str, str], str | None],
    host_node: Callable[[str], bool],
    address_allowed: Callable[[str], bool] = lambda _: True,
) -> Obj:
    """The host copy of virtual EndpointSlice `vslice`, for host Service `hsvc`."""
    ns = vslice["metadata"]["namespace"]
    meta = ctx.host_metadata(vslice)
    meta["labels"][LABEL_SERVICE_NAME] = hsvc["metadata"]["name"]
    meta["labels"][LABEL_SLICE_MANAGER] = ENDPOINTS_CONTROLLER
    meta["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": hsvc["metadata"]["name"],
            "uid": hsvc["metadata"]["uid"],
        }
    ]
    endpoints = [
        endpoint
        for e in vslice.get("endpoints") or []
        if (endpoint := translate_endpoint(e, ns, ctx.host_namespace, host_pod, host_node, address_allowed))
    ]
    out: Obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": vslice.get("addressType", "IPv4"),
        "endpoints": endpoints,
    }
    if vslice.get("ports") is not None:
        out["ports"] = copy.deepcopy(vslice["ports"])
    return out


def dependencies(vslice: Obj) -> set[Dep]:
    """What a virtual slice's host copy depends on: its Service, the pods and nodes it names."""
    ns = vslice["metadata"]["namespace"]
    deps: set[Dep] = set()
    service = (vslice["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME)
    if service:
        deps.add(("Service", f"{ns}/{service}"))
    for endpoint in vslice.get("endpoints") or []:
        ref = endpoint.get("targetRef") or {}
        if ref.get("kind") == "Pod" and ref.get("name"):
            deps.add(("Pod", f"{ref.get('namespace') or ns}/{ref['name']}"))
        if endpoint.get("nodeName"):
            deps.add(("Node", endpoint["nodeName"]))
        deps.update(("Address", a) for a in endpoint.get("addresses") or [])
    return deps


class SliceMapping(NamespacedMapping):
    """The host informer also sees the host controller's slices of our Services (they carry the
    Service's labels, managed-by included): only those vnest's controller manages are copies."""

    def owns(self, hobj: Obj | None) -> bool:
        return super().owns(hobj) and labels_of(hobj).get(LABEL_SLICE_MANAGER) == ENDPOINTS_CONTROLLER


class EndpointSliceSyncer(ToHostSyncer):
    kind = "EndpointSlice"

    def __init__(self, ctx: SyncContext, selected_nodes: Informer | None) -> None:
        super().__init__(ctx)
        self.replicated = from_host_targets(ctx)  # decided by the config, never by a tenant's labels
        self.services = ctx.informer("virtual", "Service")
        self.host_services = ctx.informer("host", "Service")
        # Synced pods (targetRefs) and the nodes they run on (nodeNames the host has).
        self.host_pods: Informer | None = None
        if ctx.config.sync.to_host.pods.enabled:
            self.host_pods = ctx.informer("host", "Pod")
        self.selected_nodes = selected_nodes  # real node sync's host nodes, if on
        self.pods_on: Counter[str] = Counter()  # host node -> how many of our host pods run there
        self.pod_ips: Counter[str] = Counter()  # IP -> how many of our host pods have it
        self.allowed = AllowList(ctx.config.policies.allowed_endpoint_cidrs)
        self.deps_of: dict[str, set[Dep]] = {}  # virtual slice key -> what it depends on
        self.slices_of: dict[Dep, set[str]] = defaultdict(set)  # and back

    # ---- watching what the slices depend on ----------------------------------------

    def setup(self) -> None:
        super().setup()
        self.virtual.add_handlers(Handlers.diff(self._on_virtual_slice))
        self.services.add_handlers(Handlers.each(self._on_virtual_service))
        self.host_services.add_handlers(Handlers.each(self._on_host_service))
        if self.host_pods is not None:
            self.host_pods.add_handlers(Handlers.diff(self._on_host_pod))
        if self.selected_nodes is not None:
            self.selected_nodes.add_handlers(Handlers.each(self._on_selected_node))

    def make_mapping(self) -> NamespacedMapping:
        return SliceMapping(self.ctx.name, self.ctx.host_namespace)

    def enqueue_virtual(self, hobj: Obj) -> None:
        if self.mapping.owns(hobj):
            super().enqueue_virtual(hobj)

    def _on_virtual_service(self, vsvc: Obj) -> None:
        self._wake(("Service", key_of(vsvc)))

    def _on_selected_node(self, hnode: Obj) -> None:
        self._wake(("Node", key_of(hnode)))

    def _on_virtual_slice(self, old: Obj | None, new: Obj | None) -> None:
        key = key_of(event_object(old, new))
        for dep in self.deps_of.pop(key, set()):
            self.slices_of[dep].discard(key)
            if not self.slices_of[dep]:
                del self.slices_of[dep]
        if new is not None:
            deps = dependencies(new)
            self.deps_of[key] = deps
            for dep in deps:
                self.slices_of[dep].add(key)

    def _wake(self, dep: Dep) -> None:
        for key in self.slices_of.get(dep, ()):
            self.queue.add(key)

    def _on_host_service(self, hsvc: Obj) -> None:
        if vkey := mappings.virtual_key_of(hsvc):
            self._wake(("Service", vkey))

    def _on_host_pod(self, old: Obj | None, new: Obj | None) -> None:
        before = (old or {}).get("spec", {}).get("nodeName")
        after = (new or {}).get("spec", {}).get("nodeName")
        if before != after:
            if before:
                self.pods_on[before] -= 1
                if self.pods_on[before] <= 0:
                    del self.pods_on[before]
                    self._wake(("Node", before))
            if after:
                self.pods_on[after] += 1
                if self.pods_on[after] == 1:
                    self._wake(("Node", after))
        before_ips, after_ips = _pod_ips(old), _pod_ips(new)
        for ip in before_ips - after_ips:
            self.pod_ips[ip] -= 1
            if self.pod_ips[ip] <= 0:
                del self.pod_ips[ip]
                self._wake(("Address", ip))
        for ip in after_ips - before_ips:
            self.pod_ips[ip] += 1
            if self.pod_ips[ip] == 1:
                self._wake(("Address", ip))
        # Only a pod's coming and going changes a targetRef, not its every status update.
        moved = old is None or new is None or old["metadata"].get("uid") != new["metadata"].get("uid")
        if moved and (vkey := mappings.virtual_key_of(event_object(old, new))):
            self._wake(("Pod", vkey))

    # ---- lookups -------------------------------------------------------------------

    def host_pod(self, namespace: str, name: str) -> str | None:
        if self.host_pods is None:
            return None
        hpod = self.host_pods.get(self.ctx.host_key(f"{namespace}/{name}"))
        return hpod["metadata"]["name"] if hpod is not None and self.ctx.owns(hpod) else None

    def host_node(self, name: str) -> bool:
        return name in self.pods_on or (
            self.selected_nodes is not None and self.selected_nodes.get(name) is not None
        )

    def address_allowed(self, address: str) -> bool:
        """This cluster's own pods' IPs, and what the admin allowed; never another address."""
        return address in self.pod_ips or address in self.allowed

    def host_service(self, vslice: Obj) -> Obj | None:
        """The host Service a virtual slice syncs for; None when it must not sync."""
        meta = vslice["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        service = (meta.get("labels") or {}).get(LABEL_SERVICE_NAME)
        if not service:
            return None
        skey = f"{meta['namespace']}/{service}"
        if skey == KUBERNETES or skey in self.replicated:
            return None
        vsvc = self.services.get(skey)
        if vsvc is None or vsvc["metadata"].get("deletionTimestamp") or vsvc["spec"].get("selector"):
            return None
        hsvc = self.host_services.get(self.ctx.host_key(skey))
        if hsvc is None or not self.ctx.owns(hsvc) or hsvc["spec"].get("selector"):
            return None
        return hsvc

    # ---- reconcile -----------------------------------------------------------------

    def wanted(self, key: str, vslice: Obj) -> bool:
        return self.host_service(vslice) is not None

    def translate(self, vslice: Obj) -> Obj:
        hsvc = self.host_service(vslice)
        assert hsvc is not None  # wanted
        return translate_slice(self.ctx, vslice, hsvc, self.host_pod, self.host_node, self.address_allowed)

    async def to_host(self, vslice: Obj) -> None:
        await self._warn_dropped(vslice)
        await self.patcher.create(vslice, self.translate(vslice))

    async def replaced(self, vslice: Obj, hslice: Obj) -> None:
        await self._warn_dropped(vslice)
        await self.patcher.delete(hslice)  # made again when its DELETED event comes back

    async def sync(self, vslice: Obj, hslice: Obj) -> None:
        desired = self.translate(vslice)
        await self._warn_dropped(vslice)
        if hslice.get("addressType") != desired["addressType"]:
            await self.patcher.delete(hslice)  # made again when its DELETED event comes back
        elif not _same(desired, hslice):
            await self.patcher.update(hslice, desired)

    async def _warn_dropped(self, vslice: Obj) -> None:
        dropped = sorted(
            {
                a
                for e in vslice.get("endpoints") or []
                for a in e.get("addresses") or []
                if not self.address_allowed(a)
            }
        )
        if dropped:
            vsvc = self.services.get(f"{vslice['metadata']['namespace']}/{_service_name(vslice)}")
            await self.ctx.warn_once(
                vsvc or vslice,
                "EndpointsDropped",
                f"endpoint addresses {', '.join(dropped)} not copied to the host: they are not this "
                "virtual cluster's pods, and the host admin has not allowed them "
                "(policies.allowedEndpointCIDRs)",
            )


def _service_name(vslice: Obj) -> str:
    return labels_of(vslice).get(LABEL_SERVICE_NAME, "")


def _pod_ips(pod: Obj | None) -> set[str]:
    status = (pod or {}).get("status") or {}
    ips = {p["ip"] for p in status.get("podIPs") or [] if p.get("ip")}
    if status.get("podIP"):
        ips.add(status["podIP"])
    return ips


def _same(want: Obj, have: Obj) -> bool:
    """Whether host slice `have` already is `want`: a field gone (a dropped targetRef) counts too."""
    wmeta: dict[str, Any] = want["metadata"]
    hmeta: dict[str, Any] = have["metadata"]
    hendpoints = have.get("endpoints") or []
    return (
        is_subset(want["endpoints"], hendpoints)
        and all(w.keys() == h.keys() for w, h in zip(want["endpoints"], hendpoints, strict=False))
        and is_subset(want.get("ports") or [], have.get("ports") or [])
        and wmeta["labels"] == hmeta.get("labels")
        and wmeta["annotations"] == hmeta.get("annotations")
        and is_subset(wmeta["ownerReferences"], hmeta.get("ownerReferences"))
    )
