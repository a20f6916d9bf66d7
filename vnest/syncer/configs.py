"""ConfigMaps and Secrets: only those the synced pods (and Ingresses) use (all of them with `all: true`).

A host copy appears when the first pod that references it does, follows every
edit of the virtual object, and goes when no pod references it any more. The
virtual `kube-root-ca.crt` of each namespace becomes e.g.
`kube-root-ca.crt-x-default-x-NAME` on the host, beside (never over) the
host namespace's own. Service-account token Secrets are copied as Opaque: the
host would reject their type, and it has no such ServiceAccount.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

from vnest.kube.client import Obj
from vnest.syncer.engine import CopySyncer, SyncContext, is_subset
from vnest.syncer.informer import Informer, key_of
from vnest.syncer.ingresses import tls_secrets
from vnest.syncer.pods import references


class ReferenceIndex:
    """Which virtual objects (pods, ingresses) reference which objects of one kind ("ns/name" -> keys)."""

    def __init__(self, names: Callable[[Obj], set[str]]) -> None:
        self.names = names
        self.by_object: dict[str, set[str]] = defaultdict(set)
        self.by_pod: dict[str, set[str]] = {}

    def update(self, old: Obj | None, new: Obj | None) -> set[str]:
        """Records a referrer's change; returns the object keys whose referenced-ness may have changed."""
        pod_key = key_of(new or old)  # type: ignore[arg-type]
        before = self.by_pod.pop(pod_key, set())
        after: set[str] = set()
        if new is not None:
            ns = new["metadata"]["namespace"]
            after = {f"{ns}/{name}" for name in self.names(new)}
            self.by_pod[pod_key] = after
        for key in before - after:
            self.by_object[key].discard(pod_key)
            if not self.by_object[key]:
                del self.by_object[key]
        for key in after:
            self.by_object[key].add(pod_key)
        return before ^ after

    def referenced(self, key: str) -> bool:
        return bool(self.by_object.get(key))


class ConfigSyncer(CopySyncer):
    """Shared by ConfigMaps and Secrets: their syncing differs only in data fields and types."""

    config_key: ClassVar[str]

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        self.sync_all = bool(ctx.values["sync"]["toHost"][self.config_key].get("all"))
        self.indexes: list[tuple[Informer, ReferenceIndex]] = [
            (ctx.informer("virtual", "Pod"), ReferenceIndex(lambda pod: references(pod)[self.kind]))
        ]

    def setup(self) -> None:
        super().setup()
        for informer, index in self.indexes:

            def on_change(old: Obj | None, new: Obj | None, index: ReferenceIndex = index) -> None:
                for key in index.update(old, new):
                    self.queue.add(key)

            informer.add_handler(on_change)

    def wanted(self, vkey: str) -> bool:
        return self.sync_all or any(index.referenced(vkey) for _, index in self.indexes)

    def payload(self, vobj: Obj) -> Obj:
        return {k: vobj[k] for k in ("data", "binaryData", "immutable") if k in vobj}

    def translate(self, vobj: Obj) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": self.kind,
            "metadata": self.ctx.host_metadata(vobj),
            **self.payload(vobj),
        }

    async def update_host(self, vobj: Obj, hobj: Obj, desired: Obj) -> None:
        if (
            is_subset(desired["metadata"]["labels"], hobj["metadata"].get("labels"))
            and is_subset(desired["metadata"]["annotations"], hobj["metadata"].get("annotations"))
            and all(desired.get(k) == hobj.get(k) for k in ("data", "binaryData"))
        ):
            return
        if hobj.get("immutable"):
            await self.delete_host(hobj)  # recreated, with the new data, when its DELETED event comes back
            return
        desired["metadata"]["resourceVersion"] = hobj["metadata"]["resourceVersion"]
        await self.ctx.host.request(
            "PUT", self.resource.path(self.ctx.host_namespace, hobj["metadata"]["name"]), body=desired
        )


class ConfigMapSyncer(ConfigSyncer):
    kind = "ConfigMap"
    config_key = "configMaps"


class SecretSyncer(ConfigSyncer):
    kind = "Secret"
    config_key = "secrets"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx)
        if ctx.values["sync"]["toHost"]["ingresses"]["enabled"]:
            # TLS Secrets of synced Ingresses are needed on the host too.
            self.indexes.append((ctx.informer("virtual", "Ingress"), ReferenceIndex(tls_secrets)))

    def payload(self, vobj: Obj) -> Obj:
        out = super().payload(vobj)
        out.pop("binaryData", None)
        kind = vobj.get("type", "Opaque")
        out["type"] = "Opaque" if kind == "kubernetes.io/service-account-token" else kind
        return out

    def _on_host(self, old: Obj | None, new: Obj | None) -> None:
        # Pod token Secrets are the pod syncer's, not copies of virtual Secrets.
        obj = new or old
        if obj and obj["metadata"].get("annotations", {}).get("vnest.io/object-kind") == "PodToken":
            return
        super()._on_host(old, new)

    async def reconcile(self, vkey: str) -> None:
        hobj = self.host.get(self.ctx.host_key(vkey))
        if (
            hobj is not None
            and hobj["metadata"].get("annotations", {}).get("vnest.io/object-kind") == "PodToken"
        ):
            return
        await super().reconcile(vkey)
