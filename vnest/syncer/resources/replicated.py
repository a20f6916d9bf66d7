"""Replicated services (`networking.replicateServices`), after vCluster's servicesync controller.

Mappings are read as vCluster reads them: on the host side a bare name means the virtual
cluster's host namespace (fromHost `from`, toHost `to`); the virtual side always names its
namespace (the config rejects a bare one).

fromHost: a host Service (any host namespace) appears in the virtual cluster as a
selector-less Service carrying the host Service's ClusterIP and ports, with EndpointSlices
mirroring the host's. The virtual API server allocates from the host's Service CIDR (as
services.py keeps virtual and host IPs equal), so the name resolves in the virtual cluster's
DNS straight to an IP the host routes; the slices tell `kubectl get endpointslices` and DNS
(headless services, whose per-endpoint records are the host pods' IPs) what is behind it.
vCluster makes every such virtual Service headless with the host ClusterIP as its endpoint;
keeping the real ClusterIP is the more faithful copy here, since the IPs are shared. The
virtual namespace is created when missing. services.py never syncs these Services back:
it skips the fromHost targets of the config, never trusting a label a tenant could set.

toHost: a virtual Service is exposed in a chosen host namespace under a chosen name, as a
selector-less host Service with the virtual Service's ports and EndpointSlices mirroring
those of its host copy (the synced Service in the host namespace, whose slices the host's
own controller keeps for the translated pods). vCluster instead gives the host Service a
selector of the translated pod labels: that only works in the virtual cluster's own host
namespace (a selector cannot reach pods of another namespace), which is all vCluster
allows; mirroring works in any namespace and keeps the host's readiness of each endpoint.

Ownership: everything made here carries `vnest.io/managed-by=<vcluster>`,
`vnest.io/vcluster-namespace=<host namespace>` (two virtual clusters of one name in two
namespaces never touch each other's) and `vnest.io/replicated=from-host|to-host`. An object
without all three at a target name is never modified or deleted: the virtual Service
involved gets a SyncError event instead. Deletes carry uid preconditions. Slices are owned
(ownerReferences) by their Service, so each side's garbage collector removes them with it.

Rights (chart/templates/clusterrole.yaml): fromHost reads Services and EndpointSlices in any
namespace through the virtual cluster's ClusterRole; toHost has a ClusterRole of its own
(`naming.to_host_cluster_role`), rendered only while toHost has mappings, which also owns every
host replica (a cluster-scoped owner is valid for namespaced objects in any namespace). So
when the last toHost mapping goes, or the virtual cluster is deleted, that ClusterRole goes
and the host's garbage collector removes the replicas everywhere, though the syncer itself
may no longer touch other namespaces.

Clean-up: on start, every object these labels select (a cluster-wide list on the host) whose
target is no longer configured is deleted, on both sides.
"""

from __future__ import annotations

import copy
import hashlib
import time

from vnest import log, naming
from vnest.config.models import VClusterConfig
from vnest.kube.client import ApiError, KubeClient, Obj, resource_of
from vnest.kube.objects import OwnerReference, owner_reference
from vnest.syncer import mappings
from vnest.syncer.engine import Controller, Handlers, Informer, SyncContext, is_subset
from vnest.syncer.engine.clusterscoped import cluster_role_owner
from vnest.syncer.engine.informer import event_object
from vnest.syncer.mappings import (
    LABEL_MANAGED_BY,
    LABEL_REPLICATED,
    LABEL_SERVICE_NAME,
    LABEL_SLICE_MANAGER,
    LABEL_VCLUSTER_NAMESPACE,
    REPLICATED_CONTROLLER,
    key_of,
    split_key,
)

_log = log.get("syncer.replicated")

ANNOTATION_SOURCE = mappings.ANNOTATION_REPLICATED_FROM
FROM_HOST, TO_HOST = "from-host", "to-host"
# The endpointslice.kubernetes.io/managed-by of the slices made here: the Kubernetes
# controllers leave slices of another manager alone.
RECHECK = 60.0  # a target held by someone else is looked at again this often
_PORT_FIELDS = ("name", "protocol", "port", "targetPort", "appProtocol")


def service_mappings(config: VClusterConfig, direction: str, host_namespace: str) -> dict[str, str]:
    """target "ns/name" -> source "ns/name" of one direction, bare host-side names qualified."""
    replicate = config.networking.replicate_services
    out: dict[str, str] = {}
    for mapping in replicate.from_host if direction == FROM_HOST else replicate.to_host:
        source, target = mapping.from_, mapping.to
        if direction == FROM_HOST and "/" not in source:
            source = f"{host_namespace}/{source}"
        if direction == TO_HOST and "/" not in target:
            target = f"{host_namespace}/{target}"
        if target in out:
            _log.warning("a replicated service target is configured twice; the first wins", target=target)
            continue
        out[target] = source
    return out


def from_host_targets(ctx: SyncContext) -> set[str]:
    """The virtual Services fromHost makes, which the service syncer must not sync to the host."""
    return set(service_mappings(ctx.config, FROM_HOST, ctx.host_namespace))


def _service_spec(source: Obj, with_ip: bool) -> Obj:
    """A selector-less copy of a Service's spec: type, ports, and (`with_ip`) its ClusterIP."""
    sspec = source.get("spec") or {}
    spec: Obj
    if sspec.get("type") == "ExternalName":
        spec = {"type": "ExternalName", "externalName": sspec.get("externalName", "")}
    else:
        spec = {"type": "ClusterIP"}
        ip = sspec.get("clusterIP")
        if ip and (ip == "None" or with_ip):  # headless stays headless
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
    ports = [{k: p[k] for k in _PORT_FIELDS if k in p} for p in sspec.get("ports") or []]
    if ports:
        spec["ports"] = ports
    return spec


def _needs_recreate(want: Obj, have: Obj) -> bool:
    """Whether a Service must be made again: the type or ClusterIP cannot change in place."""
    hspec = have.get("spec") or {}
    if want.get("type") != hspec.get("type"):
        return True
    if want.get("type") == "ExternalName":
        return False
    if (want.get("clusterIP") == "None") != (hspec.get("clusterIP") == "None"):
        return True
    return bool(want.get("clusterIP")) and want.get("clusterIP") != hspec.get("clusterIP")


def _slice_endpoint(endpoint: Obj, keep_refs: bool) -> Obj:
    fields: tuple[str, ...] = ("addresses", "conditions", "hostname", "zone")
    if keep_refs:  # host pods and nodes mean something on the host only
        fields += ("nodeName", "targetRef")
    return {k: copy.deepcopy(endpoint[k]) for k in fields if k in endpoint}


class _Replicator(Controller):
    """What both directions share: ownership, deletes, and mirroring EndpointSlices onto a target Service.

    Not a Syncer: a replica is keyed by the configured mapping, not paired by name with one object,
    and follows two objects of its source (the Service and its EndpointSlices)."""

    workers = 2
    direction = ""
    target_slices: Informer | None = None  # our slices on the target side

    def __init__(self, ctx: SyncContext, target: KubeClient) -> None:
        super().__init__()
        self.ctx = ctx
        self.target = target  # the client of the side the replicas live on
        # target Service key -> keys of our slices for it, kept by the target slice informer's handler
        self.slices_of: dict[str, set[str]] = {}
        self.mappings = service_mappings(ctx.config, self.direction, ctx.host_namespace)  # target -> source
        self.targets_of: dict[str, list[str]] = {}
        for target_key, source in self.mappings.items():
            self.targets_of.setdefault(source, []).append(target_key)

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED_BY: self.ctx.name,
            LABEL_VCLUSTER_NAMESPACE: self.ctx.host_namespace,
            LABEL_REPLICATED: self.direction,
        }

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())

    def ours(self, obj: Obj | None) -> bool:
        return mappings.carries(obj, self.labels)

    def _on_target_slice(self, old: Obj | None, new: Obj | None) -> None:
        for obj, present in ((old, False), (new, True)):
            if obj is None or not self.ours(obj):
                continue
            service = obj["metadata"].get("labels", {}).get(LABEL_SERVICE_NAME)
            if not service:
                continue
            skey = f"{obj['metadata']['namespace']}/{service}"
            if present:
                self.slices_of.setdefault(skey, set()).add(key_of(obj))
            else:
                self.slices_of.get(skey, set()).discard(key_of(obj))
            self.queue.add(skey)

    async def delete(self, kind: str, obj: Obj, forbidden: str = "") -> None:
        """Deletes an object made here, and only that very object (uid precondition).

        Without the rights to (a namespace the config no longer names), it logs `forbidden`
        or else a warning, and goes on."""
        if not self.ours(obj):
            return
        meta = obj["metadata"]
        try:
            deleted = await self.target.delete_exact(kind, obj)
        except ApiError as e:
            if e.status == 403 and forbidden:
                _log.info(forbidden, object=f"{meta.get('namespace')}/{meta['name']}")
            elif e.status == 403:
                _log.warning(
                    f"not allowed to delete replicated {kind} {meta.get('namespace')}/{meta['name']}; "
                    "remove it by hand or delete the virtual cluster",
                    error=str(e),
                )
            else:
                raise
        else:
            if deleted:
                _log.info(f"replicated {kind} removed", object=f"{meta.get('namespace')}/{meta['name']}")

    async def remove(self, key: str, service: Obj | None) -> None:
        """Removes the replica at `key`: its Service (if ours) and every slice of ours for it."""
        if service is not None:
            await self.delete("Service", service)
        await self.sync_slices(key, None, [], keep_refs=False)

    async def put_service(self, have: Obj, meta: Obj, spec: Obj) -> Obj:
        """Updates a Service made here to `spec` and `meta` when it differs; returns it."""
        hspec = have.get("spec") or {}
        in_place = {k: v for k, v in spec.items() if k not in ("clusterIP", "clusterIPs", "ports")}
        same = (
            is_subset(in_place, hspec)
            and is_subset(spec.get("ports") or [], hspec.get("ports") or [])
            and is_subset(meta["labels"], have["metadata"].get("labels"))
            and is_subset(meta.get("annotations") or {}, have["metadata"].get("annotations"))
            and (
                not meta.get("ownerReferences")
                or is_subset(meta["ownerReferences"], have["metadata"].get("ownerReferences"))
            )
        )
        if same:
            return have
        updated = copy.deepcopy(have)
        umeta = updated["metadata"]
        umeta["labels"] = {**(umeta.get("labels") or {}), **meta["labels"]}
        umeta["annotations"] = {**(umeta.get("annotations") or {}), **(meta.get("annotations") or {})}
        if meta.get("ownerReferences"):
            umeta["ownerReferences"] = meta["ownerReferences"]
        updated["spec"].update(in_place)
        if spec.get("ports"):
            updated["spec"]["ports"] = spec["ports"]
        else:
            updated["spec"].pop("ports", None)
        path = resource_of("Service").path(umeta["namespace"], umeta["name"])
        return await self.target.request("PUT", path, body=updated)

    async def sync_slices(self, key: str, service: Obj | None, sources: list[Obj], keep_refs: bool) -> None:
        """Makes our EndpointSlices of target Service `key` mirror `sources` (none without `service`)."""
        ns, name = split_key(key)
        desired: dict[str, Obj] = {}
        for source in sources:
            if service is None:
                break
            smeta = source["metadata"]
            origin = f"{smeta.get('namespace')}/{smeta['name']}"
            slice_name = f"{name}-{hashlib.sha256(origin.encode()).hexdigest()[:10]}"
            want: Obj = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": ns,
                    "labels": {
                        **self.labels,
                        LABEL_SERVICE_NAME: name,
                        LABEL_SLICE_MANAGER: REPLICATED_CONTROLLER,
                    },
                    "annotations": {ANNOTATION_SOURCE: origin},
                    "ownerReferences": [owner_reference(service)],
                },
                "addressType": source.get("addressType", "IPv4"),
                "endpoints": [_slice_endpoint(e, keep_refs) for e in source.get("endpoints") or []],
            }
            if source.get("ports"):
                want["ports"] = copy.deepcopy(source["ports"])
            desired[slice_name] = want
        for skey in sorted(self.slices_of.get(key, set())):
            have = self.target_slices.get(skey) if self.target_slices is not None else None
            if have is None or not self.ours(have):
                continue
            wanted = desired.pop(have["metadata"]["name"], None)
            if wanted is None or wanted["addressType"] != have.get("addressType"):
                await self.delete("EndpointSlice", have)  # a new one comes with the next reconcile
                continue
            if (
                is_subset(wanted["endpoints"], have.get("endpoints") or [])
                and is_subset(wanted.get("ports") or [], have.get("ports") or [])
                and is_subset(wanted["metadata"]["labels"], have["metadata"].get("labels"))
                and is_subset(wanted["metadata"]["ownerReferences"], have["metadata"].get("ownerReferences"))
            ):
                continue
            wanted["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
            await self.target.request(
                "PUT", resource_of("EndpointSlice").path(ns, wanted["metadata"]["name"]), body=wanted
            )
        for want in desired.values():
            try:
                await self.target.create(want, namespace=ns)
            except ApiError as e:
                if not e.conflict:
                    raise
                existing = await self.target.get_or_none("EndpointSlice", want["metadata"]["name"], ns)
                if existing is not None and not self.ours(existing):
                    _log.warning(
                        "an EndpointSlice vnest did not make holds a replicated slice's name; left alone",
                        slice=f"{ns}/{want['metadata']['name']}",
                    )
                    continue
                raise


class FromHostServices(_Replicator):
    """Host Services shown in the virtual cluster: selector-less, with the host's ClusterIP and slices."""

    kind = "FromHostService"
    direction = FROM_HOST

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx, ctx.virtual)
        self.virtual_services = ctx.informer("virtual", "Service")
        self.target_slices = ctx.informer("virtual", "EndpointSlice")
        # One Service (by name) and its slices (by label) per source, in the source's namespace only.
        self.source_services: dict[str, Informer] = {}
        self.source_slices: dict[str, Informer] = {}
        for source in self.targets_of:
            ns, name = split_key(source)
            self.source_services[source] = ctx.selected_informer(
                "host", "Service", ns, field_selector=f"metadata.name={name}"
            )
            self.source_slices[source] = ctx.selected_informer(
                "host", "EndpointSlice", ns, label_selector=f"{LABEL_SERVICE_NAME}={name}"
            )

    def setup(self) -> None:
        for source in self.targets_of:

            def on_source(old: Obj | None, new: Obj | None, source: str = source) -> None:
                for target in self.targets_of[source]:
                    self.queue.add(target)

            self.source_services[source].add_handlers(Handlers.diff(on_source))
            self.source_slices[source].add_handlers(Handlers.diff(on_source))
        self.virtual_services.add_handlers(Handlers.diff(self._on_virtual_service))
        if self.target_slices is not None:
            self.target_slices.add_handlers(Handlers.diff(self._on_target_slice))

    def _on_virtual_service(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is not None and (key_of(obj) in self.mappings or self.ours(obj)):
            self.queue.add(key_of(obj))

    def resync(self) -> None:
        for target in self.mappings:
            self.queue.add(target)
        for key, obj in list(self.virtual_services.store.items()):
            if self.ours(obj):
                self.queue.add(key)
        for key in list(self.slices_of):
            self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        vsvc = self.virtual_services.get(key)
        ours = vsvc if self.ours(vsvc) else None
        source = self.mappings.get(key)
        hsvc = self.source_services[source].get(source) if source else None
        if source is None or hsvc is None:
            if ours is not None or self.slices_of.get(key):
                await self.remove(key, ours)
            return
        if vsvc is not None and ours is None:
            await self.ctx.warn_once(
                vsvc,
                "SyncError",
                f"networking.replicateServices.fromHost maps host Service {source} to {key}, but Service "
                f"{key} exists and was not made by vnest; vnest leaves it alone",
            )
            return
        ns, name = split_key(key)
        spec = _service_spec(hsvc, with_ip=True)
        meta = {
            "name": name,
            "namespace": ns,
            "labels": self.labels,
            "annotations": {ANNOTATION_SOURCE: source},
        }
        if ours is not None and ours["metadata"].get("deletionTimestamp"):
            return  # made again when its DELETED event comes back
        if ours is not None and _needs_recreate(spec, ours):
            await self.delete("Service", ours)
            ours = None
        if ours is None:
            ours = await self._create(meta, spec)
        else:
            ours = await self.put_service(ours, meta, spec)
        sources = list(self.source_slices[source].store.values()) if spec["type"] != "ExternalName" else []
        await self.sync_slices(key, ours, sources, keep_refs=False)

    async def _create(self, meta: Obj, spec: Obj) -> Obj:
        ns = meta["namespace"]
        if await self.ctx.virtual.get_or_none("Namespace", ns) is None:
            try:
                await self.ctx.virtual.create(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
                _log.info("created the namespace of a replicated service", namespace=ns)
            except ApiError as e:
                if not e.conflict:
                    raise
        body = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
        try:
            created = await self.ctx.virtual.create(body, namespace=ns)
        except ApiError as e:
            if e.status == 422:
                # Most often the ClusterIP is still held by a virtual Service that services.py is
                # about to move to its host copy's IP: retried with backoff until it is free.
                _log.warning(
                    "cannot create a replicated Service yet", service=f"{ns}/{meta['name']}", error=str(e)
                )
            raise
        _log.info(
            "host Service replicated",
            service=f"{ns}/{meta['name']}",
            source=meta["annotations"][ANNOTATION_SOURCE],
        )
        created.setdefault("kind", "Service")
        created.setdefault("apiVersion", "v1")
        return created


class ToHostServices(_Replicator):
    """Virtual Services exposed in a host namespace: selector-less, with the host copy's slices."""

    kind = "ToHostService"
    direction = TO_HOST

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx, ctx.host)
        self.owner: OwnerReference | None = None
        self.recheck_at: dict[str, float] = {}  # targets held by someone else, looked at again then
        self.target_services: Informer | None = None
        if not self.mappings:
            return  # run() cleans up once; no informer needs rights the chart no longer grants
        self.virtual_services = ctx.informer("virtual", "Service")
        self.copies = ctx.informer("host", "Service")
        self.copy_slices = ctx.informer("host", "EndpointSlice")
        # Our replicas, wherever they are: a cluster-wide list by label is also how clean-up finds them.
        self.target_services = ctx.selected_informer("host", "Service", label_selector=self.selector)
        self.target_slices = ctx.selected_informer("host", "EndpointSlice", label_selector=self.selector)
        # The host copy's name -> the virtual source, to route the copy's slice events.
        self.source_of_copy = {ctx.host_name(*reversed(split_key(s))): s for s in self.targets_of}

    def setup(self) -> None:
        if self.target_services is None:
            return
        self.virtual_services.add_handlers(Handlers.diff(self._on_virtual_service))
        self.copies.add_handlers(Handlers.diff(self._on_copy))
        self.copy_slices.add_handlers(Handlers.diff(self._on_copy_slice))
        self.target_services.add_handlers(Handlers.each(self.enqueue))
        if self.target_slices is not None:
            self.target_slices.add_handlers(Handlers.diff(self._on_target_slice))

    def _on_virtual_service(self, old: Obj | None, new: Obj | None) -> None:
        self._on_source(key_of(event_object(old, new)))

    def _on_source(self, source: str | None) -> None:
        for target in self.targets_of.get(source or "", []):
            self.queue.add(target)

    def _on_copy(self, old: Obj | None, new: Obj | None) -> None:
        self._on_source(mappings.virtual_key_of(event_object(old, new)))

    def _on_copy_slice(self, old: Obj | None, new: Obj | None) -> None:
        for obj in (old, new):
            if obj is not None:
                self._on_source(
                    self.source_of_copy.get(obj["metadata"].get("labels", {}).get(LABEL_SERVICE_NAME))
                )

    def resync(self) -> None:
        if self.target_services is None:
            return
        for key in list(self.mappings) + list(self.target_services.store) + list(self.slices_of):
            self.queue.add(key)

    async def run(self) -> None:
        self.owner = await self._cluster_role()
        if self.target_services is None:
            try:
                await self._clean_up()
            except ApiError as e:
                _log.warning("cannot look for replicated host Services to clean up", error=str(e))
        await super().run()

    async def _cluster_role(self) -> OwnerReference | None:
        """toHost's ClusterRole, owner of every host replica (see the module's docstring)."""
        if not self.mappings:
            return None
        name = naming.to_host_cluster_role(self.ctx.name, self.ctx.host_namespace)
        return await cluster_role_owner(self.ctx, name, "replicated host Services")

    async def _clean_up(self) -> None:
        """With no toHost mapping left: removes every host replica made by an earlier config.

        toHost's ClusterRole went with the last mapping, so outside the host namespace the
        syncer may not even look; there the host's garbage collector removes the replicas
        with the ClusterRole that owned them."""
        gone = "replicated host object left to the host's garbage collector (its ClusterRole is gone)"
        for kind in ("Service", "EndpointSlice"):
            try:
                found = await self.ctx.host.list(kind, label_selector=self.selector)
            except ApiError as e:
                if e.status != 403:
                    raise
                found = await self.ctx.host.list(kind, self.ctx.host_namespace, label_selector=self.selector)
            for obj in found:
                await self.delete(kind, obj, forbidden=gone)

    async def reconcile(self, key: str) -> None:
        assert self.target_services is not None
        hsvc = self.target_services.get(key)
        source = self.mappings.get(key)
        vsvc = self.virtual_services.get(source) if source else None
        if source is None or vsvc is None or vsvc["metadata"].get("deletionTimestamp"):
            if hsvc is not None or self.slices_of.get(key):
                await self.remove(key, hsvc)
            return
        ns, name = split_key(key)
        spec = _service_spec(vsvc, with_ip=False)  # the host allocates its own ClusterIP
        annotations = {
            ANNOTATION_SOURCE: source,
            **mappings.origin_annotations(vsvc, vsvc["metadata"]["namespace"]),
        }
        meta: Obj = {"name": name, "namespace": ns, "labels": self.labels, "annotations": annotations}
        if self.owner is not None:
            meta["ownerReferences"] = [self.owner]
        if hsvc is not None and hsvc["metadata"].get("deletionTimestamp"):
            return
        if hsvc is not None and _needs_recreate(spec, hsvc):
            await self.delete("Service", hsvc)
            hsvc = None
        if hsvc is None:
            hsvc = await self._create(vsvc, meta, spec)
            if hsvc is None:
                return
        else:
            hsvc = await self.put_service(hsvc, meta, spec)
        copy_name = self.ctx.host_name(vsvc["metadata"]["name"], vsvc["metadata"]["namespace"])
        hcopy = self.copies.get(f"{self.ctx.host_namespace}/{copy_name}")
        sources = []
        if (
            hcopy is not None
            and self.ctx.owns(hcopy)
            and mappings.uid_matches(vsvc, hcopy)
            and spec["type"] != "ExternalName"
        ):
            sources = [
                s
                for s in self.copy_slices.store.values()
                if s["metadata"].get("labels", {}).get(LABEL_SERVICE_NAME) == copy_name
                and s["metadata"].get("labels", {}).get(LABEL_SLICE_MANAGER) != REPLICATED_CONTROLLER
            ]
        await self.sync_slices(key, hsvc, sources, keep_refs=True)

    async def _create(self, vsvc: Obj, meta: Obj, spec: Obj) -> Obj | None:
        ns, name = meta["namespace"], meta["name"]
        body = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
        try:
            created = await self.ctx.host.create(body, namespace=ns)
        except ApiError as e:
            if e.not_found:
                await self.ctx.warn_once(
                    vsvc,
                    "SyncError",
                    f"networking.replicateServices.toHost: host namespace {ns} does not exist; "
                    f"Service {key_of(vsvc)} is exposed there once it does",
                )
                raise
            if not e.conflict:
                raise
            existing = await self.ctx.host.get_or_none("Service", name, ns)
            if existing is None or self.ours(existing):
                raise  # our own, not in the cache yet: retried
            await self.ctx.warn_once(
                vsvc,
                "SyncError",
                f"networking.replicateServices.toHost maps {key_of(vsvc)} to host Service {ns}/{name}, which "
                "exists and was not made by vnest for this virtual cluster; vnest leaves it alone",
            )
            if self.recheck_at.get(key_of(existing), 0.0) <= time.monotonic():  # one timer per key
                self.recheck_at[key_of(existing)] = time.monotonic() + RECHECK
                self.queue.add_after(key_of(existing), RECHECK)
            return None
        _log.info("virtual Service exposed in the host", service=f"{ns}/{name}", source=key_of(vsvc))
        created.setdefault("kind", "Service")
        created.setdefault("apiVersion", "v1")
        return created
