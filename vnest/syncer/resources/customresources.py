"""Custom resources (`sync.toHost.customResources`), after vCluster's: the kind is the host's.

Each enabled key `<plural>.<group>` (or `<plural>.<group>/<version>`) names a
CustomResourceDefinition that must exist on the host, where some controller acts
on the objects. When the syncer starts, before any informer runs:
- the CRD is read from the host (a one-shot GET; the chart's ClusterRole grants
  `get` on exactly the configured names). Missing, cluster-scoped, unreadable or
  without the asked version, the syncer stops with an error naming the key (its
  log, and a Warning event on the host's `vc-config-NAME` Secret): as in vCluster,
  the virtual cluster does not run half of its config. The supervisor restarts the
  syncer, so installing the CRD on the host heals it.
- the CRD is applied into the virtual cluster with only that version (the host's
  storage version unless the key names one), served and stored, without the
  host's conversion webhook (which the virtual API server cannot reach) and
  without host metadata (uid, resourceVersion, managedFields, owners, status),
  labelled `vnest.io/managed-by=<vcluster>` and `vnest.io/from-host=true` so it is
  known to be a copy. Versions the virtual CRD already stores objects in stay
  (no longer the storage version), as vCluster keeps them. A tenant's own CRD of that name
  is replaced by the host's definition: the config says the kind is the host's.
- the syncer waits until the virtual API server reports it Established.

Then each kind is an ordinary ToHostSyncer: a virtual object becomes
`<name>-x-<namespace>-x-<vcluster>` in the host namespace with the usual labels
and annotations and every top-level field but `metadata` and `status` copied;
edits follow; `status` flows back from the host (through the status subresource
when the CRD has one). Only namespaced kinds sync (the config refuses
`scope: Cluster`, as vCluster does). Deletion goes both ways: the virtual object
deleted, its host copy goes (uid precondition); the host copy deleted while the
syncer runs, the virtual object goes too (as in vCluster; one deleted while the
syncer was down is created again). A host object at the target name without the
managed-by label is never touched; the virtual object gets a SyncError event.
Host copies are owned (ownerReferences) by the host Secret `vc-config-NAME`, so
the host's garbage collector removes them with the virtual cluster, even those of
a kind since dropped from the config (which the syncer may no longer touch).
The CRD copy is made at start only: a CRD changed on the host is picked up when
the syncer next starts, as in vCluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from dataclasses import dataclass

from vnest import log, naming
from vnest.config.models import VClusterConfig
from vnest.errors import VnestError
from vnest.kube.client import ApiError, Obj, Resource, register, resource_of
from vnest.kube.objects import OwnerReference, owner_reference
from vnest.syncer import mappings
from vnest.syncer.engine import Handlers, SyncContext, ToHostSyncer, is_subset, now
from vnest.syncer.mappings import LABEL_FROM_HOST, LABEL_MANAGED_BY, is_own_key

_log = log.get("syncer.customresources")

CRD_KIND = "CustomResourceDefinition"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
register(CRD_KIND, Resource(CRD_API_VERSION, "customresourcedefinitions", namespaced=False))
ESTABLISH_TIMEOUT = 60.0
CONFIG_KEY = "sync.toHost.customResources"
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


class CustomResourceError(VnestError):
    """A configured custom resource kind that cannot sync: the syncer stops with it."""


@dataclass(frozen=True)
class Key:
    """One `sync.toHost.customResources` key: `<plural>.<group>[/<version>]`."""

    key: str
    plural: str
    group: str
    version: str | None

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @classmethod
    def parse(cls, key: str) -> Key:
        name, _, version = key.partition("/")
        plural, _, group = name.partition(".")
        return cls(key, plural, group, version or None)


def enabled_keys(config: VClusterConfig) -> list[Key]:
    """The configured kinds that sync, in the config's order."""
    return [Key.parse(k) for k, v in config.sync.to_host.custom_resources.items() if v.enabled]


def chosen_version(crd: Obj, key: Key, where: str = "") -> Obj:
    """The CRD version to serve and store in the virtual cluster: the key's, else the host's storage one."""
    versions = crd["spec"].get("versions") or []
    wanted = key.version or next((v["name"] for v in versions if v.get("storage")), None)
    for version in versions:
        if version["name"] == wanted:
            chosen: Obj = version
            return chosen
    have = ", ".join(v["name"] for v in versions) or "none"
    raise CustomResourceError(
        f"{where or CONFIG_KEY + '.' + key.key}: the host's CustomResourceDefinition {key.crd_name} has no version "
        f"{wanted or '(storage)'} (it has: {have})"
    )


def has_status(version: Obj) -> bool:
    return "status" in (version.get("subresources") or {})


def _metadata_map(values: dict[str, str] | None, dropped: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: v for k, v in (values or {}).items() if not is_own_key(k) and k not in dropped}


def virtual_crd(host_crd: Obj, key: Key, vcluster: str, existing: Obj | None = None) -> Obj:
    """The CRD to apply in the virtual cluster: the host's, with one version and no host-specific parts.

    `existing` is the virtual CRD as it is now, if any: versions it still stores objects in
    (status.storedVersions) are kept, served but not stored, or the API server would refuse.
    """
    meta = host_crd["metadata"]
    spec = copy.deepcopy(host_crd["spec"])
    version = copy.deepcopy(chosen_version(host_crd, key))
    version["served"] = True
    version["storage"] = True
    versions = [version]
    if existing is not None:
        stored = set((existing.get("status") or {}).get("storedVersions") or [])
        for old in existing["spec"].get("versions") or []:
            if old["name"] in stored and old["name"] != version["name"]:
                versions.append({**copy.deepcopy(old), "storage": False})
    spec["versions"] = versions
    spec.pop("conversion", None)  # a host webhook the virtual API server cannot reach; None converts
    spec["preserveUnknownFields"] = False
    labels = _metadata_map(meta.get("labels"))
    labels.update({LABEL_MANAGED_BY: vcluster, LABEL_FROM_HOST: "true"})
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": CRD_KIND,
        "metadata": {
            "name": meta["name"],
            "labels": labels,
            "annotations": _metadata_map(meta.get("annotations"), _DROPPED_ANNOTATIONS),
        },
        "spec": spec,
    }


def condition(crd: Obj, type_: str) -> Obj | None:
    return next(
        (c for c in (crd.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None
    )


def payload(obj: Obj) -> Obj:
    """What a custom resource's host copy takes from the virtual object: all but metadata and status."""
    return {
        k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")
    }


class CustomResourceSyncer(ToHostSyncer):
    """One configured custom resource kind, virtual to host."""

    def __init__(
        self,
        ctx: SyncContext,
        kind: str,
        api_version: str,
        status_subresource: bool,
        owner: OwnerReference | None = None,
    ) -> None:
        super().__init__(ctx, kind)  # each configured kind is a syncer of its own
        self.api_version = api_version
        self.status_subresource = status_subresource
        self.owner = owner
        # Virtual key -> virtual uid of host copies seen deleted while this syncer runs: those
        # take their virtual objects along (a copy missing at start is simply created again).
        self.host_deleted: dict[str, str] = {}

    def host_handlers(self) -> Handlers:
        each = super().host_handlers()
        return Handlers(each.on_add, each.on_update, self._on_host_deleted)

    def _on_host_deleted(self, hobj: Obj) -> None:
        if self.mapping.owns(hobj):
            vkey = mappings.virtual_key_of(hobj)
            uid = mappings.annotations_of(hobj).get(mappings.ANNOTATION_UID)
            if vkey and uid:
                self.host_deleted[vkey] = uid
        self.enqueue_virtual(hobj)

    def translate(self, vobj: Obj) -> Obj:
        metadata = self.ctx.host_metadata(vobj)
        if self.owner is not None:
            metadata["ownerReferences"] = [dict(self.owner)]
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, **payload(vobj)}

    def _deleted_on_host(self, vobj: Obj) -> bool:
        """Whether the host deleted this very object's copy (then the virtual object goes too)."""
        key = mappings.key_of(vobj)
        if self.host_deleted.get(key) == vobj["metadata"]["uid"]:
            return True
        self.host_deleted.pop(key, None)  # not the copy of this virtual object
        return False

    async def deleting(self, vobj: Obj, hobj: Obj | None) -> bool:
        if hobj is not None:
            self.host_deleted.pop(mappings.key_of(vobj), None)  # back already
            await self.patcher.delete(hobj)
        elif self._deleted_on_host(vobj):
            await self._delete_virtual(vobj)
        return True

    async def to_host(self, vobj: Obj) -> None:
        if self._deleted_on_host(vobj):
            await self._delete_virtual(vobj)
        else:
            await super().to_host(vobj)

    async def forget(self, key: str) -> None:
        self.host_deleted.pop(key, None)

    async def _delete_virtual(self, vobj: Obj) -> None:
        await self.ctx.virtual.delete_exact(self.kind, vobj)
        self.host_deleted.pop(mappings.key_of(vobj), None)

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        self.host_deleted.pop(mappings.key_of(vobj), None)  # back already
        await self._update_host(hobj, self.translate(vobj))
        await self._status_back(vobj, hobj)

    async def _update_host(self, hobj: Obj, desired: Obj) -> None:
        meta, hmeta = desired["metadata"], hobj["metadata"]
        if (
            payload(desired) == payload(hobj)
            and is_subset(meta["labels"], hmeta.get("labels"))
            and is_subset(meta["annotations"], hmeta.get("annotations"))
        ):
            return
        updated: Obj = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {**hmeta, "labels": meta["labels"], "annotations": meta["annotations"]},
            **payload(desired),
        }
        if "status" in hobj:
            updated["status"] = hobj["status"]  # the host's to write, never the tenant's
        await self.patcher.update(hobj, updated)

    def virtual_status(self, vobj: Obj, hobj: Obj) -> Obj | None:
        """The status the virtual object is to show: the host copy's."""
        status: Obj | None = hobj.get("status") or None
        return status

    async def _status_back(self, vobj: Obj, hobj: Obj) -> None:
        status = self.virtual_status(vobj, hobj)
        if status == (vobj.get("status") or None):
            return
        body = {k: v for k, v in vobj.items() if k != "status"}
        if status is not None:
            body["status"] = status
        # Without a status subresource, status is part of the object: the whole of it is written.
        subresource = "status" if self.status_subresource else ""
        await self.ctx.virtual.replace(body, subresource)


# ---- start-up: the CRDs, from the host into the virtual cluster --------------------------


async def _ensure_virtual_crd(ctx: SyncContext, host_crd: Obj, key: Key, where: str) -> Obj:
    """Creates or updates the CRD copy in the virtual cluster; returns it once Established."""
    name = key.crd_name
    path = resource_of(CRD_KIND).path(None, name)
    for _ in range(5):  # conflicts: someone else wrote it in between
        existing = await ctx.virtual.get_or_none(CRD_KIND, name)
        desired = virtual_crd(host_crd, key, ctx.name, existing)
        try:
            if existing is None:
                await ctx.virtual.create(desired)
            else:
                if existing["metadata"].get("labels", {}).get(LABEL_FROM_HOST) != "true":
                    _log.warning(f"virtual CRD {name} was not a copy of the host's; replacing its definition")
                desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                await ctx.virtual.request("PUT", path, body=desired)
            break
        except ApiError as e:
            if not e.conflict:
                raise CustomResourceError(
                    f"{where}: the virtual API server refused the copy of CRD {name}: {e}"
                ) from e
    deadline = time.monotonic() + ESTABLISH_TIMEOUT
    while True:
        crd = await ctx.virtual.get(CRD_KIND, name)
        established, names = condition(crd, "Established"), condition(crd, "NamesAccepted")
        if established and established.get("status") == "True":
            return crd
        if names and names.get("status") == "False":
            raise CustomResourceError(
                f"{where}: the virtual cluster does not accept the names of CRD {name}: "
                f"{names.get('message', '')}"
            )
        if time.monotonic() > deadline:
            raise CustomResourceError(
                f"{where}: CRD {name} is not Established in the virtual cluster after "
                f"{ESTABLISH_TIMEOUT:.0f}s: {(established or {}).get('message', 'no condition yet')}"
            )
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class CopiedKind:
    """A host kind whose CRD is now served in the virtual cluster."""

    kind: str
    api_version: str
    status_subresource: bool


async def read_host_crd(ctx: SyncContext, key: Key, where: str) -> Obj | None:
    """The host's CRD of a key; None when the host has none (raises on any other failure)."""
    try:
        crd: Obj = await ctx.host.get(CRD_KIND, key.crd_name)
        return crd
    except ApiError as e:
        if e.not_found:
            return None
        if e.status == 403:
            raise CustomResourceError(
                f"{where}: the syncer may not read CustomResourceDefinition {key.crd_name} on the host "
                "(the chart's ClusterRole grants it; was the cluster created with this config?)"
            ) from None
        raise CustomResourceError(f"{where}: cannot read the host's CRD {key.crd_name}: {e}") from e


async def copy_crd(ctx: SyncContext, key: Key, where: str, host_crd: Obj) -> CopiedKind:
    """Serves a host CRD (one namespaced version of it) in the virtual cluster, Established."""
    if host_crd["spec"].get("scope") != "Namespaced":
        raise CustomResourceError(
            f"{where}: CustomResourceDefinition {key.crd_name} is cluster-scoped on the host; only "
            "namespaced custom resources sync to the host (as in vCluster)"
        )
    version = chosen_version(host_crd, key, where)
    kind = host_crd["spec"]["names"]["kind"]
    api_version = f"{key.group}/{version['name']}"
    try:
        register(kind, Resource(api_version, key.plural))
    except VnestError as e:
        raise CustomResourceError(f"{where}: {e}") from None
    await _ensure_virtual_crd(ctx, host_crd, key, where)
    _log.info(
        "host kind served in the virtual cluster",
        crd=key.crd_name,
        kind=kind,
        version=version["name"],
        status=has_status(version),
    )
    return CopiedKind(kind, api_version, has_status(version))


async def _setup(ctx: SyncContext, key: Key, owner: OwnerReference | None) -> CustomResourceSyncer:
    where = f"{CONFIG_KEY}.{key.key}"
    host_crd = await read_host_crd(ctx, key, where)
    if host_crd is None:
        raise CustomResourceError(
            f"{where}: the host has no CustomResourceDefinition {key.crd_name}; the kind must be "
            "installed on the host first (vnest copies its definition from there, as vCluster does)"
        )
    copied = await copy_crd(ctx, key, where, host_crd)
    return CustomResourceSyncer(ctx, copied.kind, copied.api_version, copied.status_subresource, owner)


async def report(ctx: SyncContext, secret: Obj | None, message: str) -> None:
    """A Warning event on the host's config Secret: where a host admin looks, beside the syncer log."""
    if secret is None:
        return
    meta = secret["metadata"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": ctx.host_namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": meta["name"],
            "namespace": ctx.host_namespace,
            "uid": meta["uid"],
        },
        "reason": "CustomResourceSyncFailed",
        "message": message,
        "type": "Warning",
        "source": {"component": "vnest-syncer"},
        "firstTimestamp": now(),
        "lastTimestamp": now(),
        "count": 1,
    }
    with contextlib.suppress(ApiError):
        await ctx.host.create(event, namespace=ctx.host_namespace)


async def syncers(ctx: SyncContext) -> list[CustomResourceSyncer]:
    """One syncer per enabled kind, each CRD copied and Established first; raises if any cannot sync."""
    keys = enabled_keys(ctx.config)
    if not keys:
        return []
    secret = await ctx.host.get_or_none("Secret", naming.config_secret(ctx.name), ctx.host_namespace)
    if (problem := naming.foreign_control_plane_object(secret, ctx.name, "config")) is not None:
        raise CustomResourceError(problem)  # it would own the host copies
    # The host copies' owner: the cluster's config Secret, which goes when the cluster is deleted.
    owner = owner_reference(secret) if secret is not None else None
    out = []
    for key in keys:
        try:
            out.append(await _setup(ctx, key, owner))
        except CustomResourceError as e:
            _log.error(str(e))
            await report(ctx, secret, str(e))
            raise
    return out
