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

from vnest.kube.client import Obj
from vnest.syncer.engine import Handlers, Informer, SyncContext, ToHostSyncer, is_subset
from vnest.syncer.mappings import is_token_secret, key_of
from vnest.syncer.resources.ingresses import tls_secrets
from vnest.syncer.resources.pods import references


class ReferenceIndex:
    """Which virtual objects (pods, ingresses) reference which objects of one kind ("ns/name" -> keys)."""

    def __init__(self, names: Callable[[Obj], set[str]]) -> None:
        self.names = names
        self.by_object: dict[str, set[str]] = defaultdict(set)
        self.by_pod: dict[str, set[str]] = {}

    def update(self, old: Obj | None, new: Obj | None) -> set[str]:
        """Records a referrer's change; returns the object keys whose referenced-ness may have changed."""
        referrer = new if new is not None else old
        assert referrer is not None  # Handlers.diff never passes neither
        pod_key = key_of(referrer)
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


class ConfigSyncer(ToHostSyncer):
    """Shared by ConfigMaps and Secrets: their syncing differs only in data fields and types."""

    def __init__(self, ctx: SyncContext, sync_all: bool) -> None:
        super().__init__(ctx)
        self.sync_all = sync_all
        self.indexes: list[tuple[Informer, ReferenceIndex]] = [
            (ctx.informer("virtual", "Pod"), ReferenceIndex(lambda pod: references(pod)[self.kind]))
        ]

    def setup(self) -> None:
        super().setup()
        for informer, index in self.indexes:

            def on_change(old: Obj | None, new: Obj | None, index: ReferenceIndex = index) -> None:
                for key in index.update(old, new):
                    self.queue.add(key)

            informer.add_handlers(Handlers.diff(on_change))

    def wanted(self, key: str, vobj: Obj | None = None) -> bool:
        return self.sync_all or any(index.referenced(key) for _, index in self.indexes)

    def payload(self, vobj: Obj) -> Obj:
        return {k: vobj[k] for k in ("data", "binaryData", "immutable") if k in vobj}

    def translate(self, vobj: Obj) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": self.kind,
            "metadata": self.ctx.host_metadata(vobj),
            **self.payload(vobj),
        }

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        desired = self.translate(vobj)
        if (
            is_subset(desired["metadata"]["labels"], hobj["metadata"].get("labels"))
            and is_subset(desired["metadata"]["annotations"], hobj["metadata"].get("annotations"))
            and all(desired.get(k) == hobj.get(k) for k in ("data", "binaryData"))
        ):
            return
        if hobj.get("immutable"):
            await self.patcher.delete(hobj)  # recreated, with the new data, when its DELETED event comes back
            return
        await self.patcher.update(hobj, desired)


class ConfigMapSyncer(ConfigSyncer):
    kind = "ConfigMap"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx, ctx.config.sync.to_host.config_maps.all)


class SecretSyncer(ConfigSyncer):
    kind = "Secret"

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__(ctx, ctx.config.sync.to_host.secrets.all)
        if ctx.config.sync.to_host.ingresses.enabled:
            # TLS Secrets of synced Ingresses are needed on the host too.
            self.indexes.append((ctx.informer("virtual", "Ingress"), ReferenceIndex(tls_secrets)))

    def payload(self, vobj: Obj) -> Obj:
        out = super().payload(vobj)
        out.pop("binaryData", None)
        kind = vobj.get("type", "Opaque")
        out["type"] = "Opaque" if kind == "kubernetes.io/service-account-token" else kind
        return out

    def enqueue_virtual(self, hobj: Obj) -> None:
        # Token Secrets are the pods' (vnest.syncer.resources.tokens), not copies of virtual Secrets.
        if not is_token_secret(hobj):
            super().enqueue_virtual(hobj)

    async def handled_elsewhere(self, key: str) -> bool:
        return is_token_secret(self.host.get(self.mapping.host_key(key)))
