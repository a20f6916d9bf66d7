"""What every syncer of one virtual cluster shares: the two clients, the config, the informers.

Informers are shared per (side, kind, selection): a syncer that reads another kind
(pods read Namespaces, Secrets read Pods) reads the same cache as that kind's own
syncer, so each kind is listed and watched once.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from dataclasses import dataclass, field

from vnest import log
from vnest.config.models import VClusterConfig
from vnest.kube.client import ApiError, KubeClient, Obj, resource_of
from vnest.kube.objects import Event
from vnest.syncer import mappings
from vnest.syncer.engine.informer import Informer
from vnest.syncer.mappings import ClusterMapping, NamespacedMapping

_log = log.get("syncer")

# How many (object, message) warnings the context remembers so as to tell each only once.
WARNED_MAX = 10_000


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SyncContext:
    name: str  # the virtual cluster
    host_namespace: str
    virtual: KubeClient
    host: KubeClient
    config: VClusterConfig
    informers: dict[tuple[str, str], Informer] = field(default_factory=dict)
    host_service_ip: str = ""  # the ClusterIP of host Service NAME: where in-pod clients reach the API
    _warned: OrderedDict[tuple[str, str, str], None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.namespaced = NamespacedMapping(self.name, self.host_namespace)
        self.cluster = ClusterMapping(self.name, self.host_namespace)

    def informer(self, side: str, kind: str) -> Informer:
        """The shared informer of a side's default scope: every virtual object of the kind, or the host
        namespace's objects this virtual cluster manages."""
        key = (side, kind)
        if key not in self.informers:
            resource = resource_of(kind)
            if side == "virtual":
                self.informers[key] = Informer(self.virtual, resource, kind, name=f"virtual {kind}")
            else:
                self.informers[key] = Informer(
                    self.host,
                    resource,
                    kind,
                    namespace=self.host_namespace,
                    label_selector=self.namespaced.selector,
                    name=f"host {kind}",
                )
        return self.informers[key]

    def selected_informer(
        self,
        side: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        keep: bool = True,
    ) -> Informer:
        """A shared informer beyond a side's default scope: any namespace (None: all), any selectors.

        For syncers that read objects vnest does not manage (a host Service another team
        runs) or its own objects outside the host namespace; shared like `informer`.
        """
        where = f"{namespace or '*'}?{label_selector}&{field_selector}{'' if keep else ' (stream)'}"
        key = (f"{side} {where}", kind)
        if key not in self.informers:
            self.informers[key] = Informer(
                self.virtual if side == "virtual" else self.host,
                resource_of(kind),
                kind,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                name=f"{side} {kind} {where}",
                keep=keep,
            )
        return self.informers[key]

    def cluster_copies(self, kind: str) -> Informer:
        """This virtual cluster's host copies of a cluster-scoped kind, shared by all that read them."""
        return self.selected_informer("host", kind, None, label_selector=self.cluster.selector)

    # ---- names and metadata (see vnest.syncer.mappings) ----------------------------

    def host_name(self, name: str, namespace: str) -> str:
        return self.namespaced.host_name(name, namespace)

    def host_key(self, vkey: str) -> str:
        return self.namespaced.host_key(vkey)

    def owns(self, hobj: Obj | None) -> bool:
        return self.namespaced.owns(hobj)

    def host_labels(self, labels: dict[str, str] | None, namespace: str) -> dict[str, str]:
        return self.namespaced.host_labels(labels, namespace)

    def host_selector(self, selector: dict[str, str], namespace: str) -> dict[str, str]:
        """A service's selector on the host: the same labels, within this cluster's namespace only."""
        return self.namespaced.host_labels(selector, namespace)

    def host_metadata(self, vobj: Obj) -> Obj:
        return self.namespaced.host_metadata(vobj)

    # ---- telling the tenant ---------------------------------------------------------

    async def event(self, vobj: Obj, reason: str, message: str, type_: str = "Warning") -> None:
        """An event on the virtual object: how a tenant learns why something did not sync."""
        meta = vobj["metadata"]
        event: Event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": vobj.get("apiVersion", "v1"),
                "kind": vobj["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "vnest-syncer"},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        try:
            await self.virtual.create(dict(event))
        except ApiError as e:
            _log.debug("cannot record event", error=str(e))

    async def warn_once(self, vobj: Obj, reason: str, message: str) -> None:
        """A Warning event (and log line), told once per object and message: retries with backoff
        must not spam. Every syncer's warnings to the tenant go through here."""
        key = (mappings.key_of(vobj), vobj["metadata"].get("uid", ""), message)
        if key in self._warned:
            self._warned.move_to_end(key)
            return
        self._warned[key] = None
        if len(self._warned) > WARNED_MAX:
            self._warned.popitem(last=False)
        _log.warning(message)
        await self.event(vobj, reason, message)
