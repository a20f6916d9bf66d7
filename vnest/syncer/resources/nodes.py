"""Fake nodes: one virtual Node for each host node that runs pods of this virtual cluster.

The virtual cluster must not see the host's nodes (their names, capacity and
other tenants' pods), yet a bound pod needs a Node. As vCluster's default, a
fake node carries the host node's name and made-up, generous capacity; it is
created when the first pod lands on that node and removed when the last one
leaves. The node lifecycle controller is off in the virtual cluster, so
nothing marks these nodes NotReady, and nothing would lift the
`node.kubernetes.io/not-ready:NoSchedule` taint the API server's
TaintNodesByCondition admission puts on every new Node: the syncer removes it
itself. A fake node carries no other taint but the tenant's own: the syncer
has no right to read the host's nodes (fake nodes need no ClusterRole, as in
vCluster), and the host's taints hold anyway, since the host schedules the
pods. Real node sync (`HostNodes`) carries the host node's taints exactly.
"""

from __future__ import annotations

import asyncio
import copy

from vnest import log
from vnest.kube.client import ApiError, Obj
from vnest.syncer.engine import Handlers, SyncContext, Syncer, is_subset, now
from vnest.syncer.mappings import LABEL_FAKE_NODE, LABEL_HOST_NODE, labels_of

_log = log.get("syncer.nodes")

FAKE_LABEL = LABEL_FAKE_NODE
GC_EVERY = 30.0
# The node lifecycle controller's taints, which no one lifts in a virtual cluster.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}


class FakeNodes:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.version = ""  # the virtual API server's, learned at start
        # Where the syncer serves the fake nodes' kubelet API (vnest.syncer.kubelet).
        self.kubelet_address = "127.0.0.1"
        self.kubelet_port = 0
        self.known: dict[str, str] = {}  # node name -> the host IP its status was written with
        # One lock per node: the first pods on ten new nodes make their ten nodes at once, not in turn.
        self._locks: dict[str, asyncio.Lock] = {}
        self.pods = ctx.informer("virtual", "Pod")

    def _node(self, name: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    FAKE_LABEL: "true",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {},
        }

    def addresses(self, host_ip: str) -> list[Obj]:
        """InternalIP: the host node's (the syncer's until known); InternalDNS: the syncer's kubelet API."""
        return [
            {"type": "InternalIP", "address": host_ip or self.kubelet_address},
            {"type": "InternalDNS", "address": self.kubelet_address},
        ]

    def _status(self, host_ip: str) -> Obj:
        stamp = now()
        status: Obj = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "vnest fake node",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "addresses": self.addresses(host_ip),
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": self.version,
                "containerRuntimeVersion": "vnest://host",
                "kernelVersion": "",
                "osImage": "vnest fake node",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        }
        if self.kubelet_port:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.kubelet_port}}
        return status

    async def ensure(self, name: str, host_ip: str = "") -> None:
        """The fake node `name` exists, schedulable, at `host_ip` once a pod there has one."""
        if self._current(name, host_ip):
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            if self._current(name, host_ip):
                return
            host_ip = host_ip or self.known.get(name, "")
            node = await self.ctx.virtual.get_or_none("Node", name)
            if node is None:
                try:
                    node = await self.ctx.virtual.create(self._node(name))
                except ApiError as e:
                    if not e.conflict:
                        raise
                    node = await self.ctx.virtual.get("Node", name)
            taints = node.get("spec", {}).get("taints") or []
            kept = [t for t in taints if t.get("key") not in LIFECYCLE_TAINTS]
            if kept != taints:
                # Admission's not-ready taint; a tenant's own taints on its fake node stay.
                node = await self.ctx.virtual.replace({**node, "spec": {**node["spec"], "taints": kept}})
            updated = copy.deepcopy(node)
            updated["status"] = self._status(host_ip)
            await self.ctx.virtual.replace(updated, "status")
            self.known[name] = host_ip
            _log.info("fake node ready", node=name, host_ip=host_ip)

    def _current(self, name: str, host_ip: str) -> bool:
        return name in self.known and (not host_ip or self.known[name] == host_ip)

    async def refresh(self) -> None:
        """Rewrites every fake node's status, for the kubelet endpoint this syncer serves."""
        known, self.known = self.known, {}
        for node in await self.ctx.virtual.list("Node", label_selector=f"{FAKE_LABEL}=true"):
            name = node["metadata"]["name"]
            await self.ensure(name, known.get(name) or _internal_ip(node, self.kubelet_address))

    async def collect_garbage(self) -> None:
        """Removes fake nodes no virtual pod is bound to any more."""
        in_use = {p["spec"].get("nodeName") for p in self.pods.store.values()}
        for node in await self.ctx.virtual.list("Node", label_selector=f"{FAKE_LABEL}=true"):
            name = node["metadata"]["name"]
            if name not in in_use:
                self.known.pop(name, None)
                self._locks.pop(name, None)
                await self.ctx.virtual.delete("Node", name)
                _log.info("fake node removed", node=name)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(GC_EVERY)
            try:
                await self.collect_garbage()
            except ApiError as e:
                _log.warning("fake node garbage collection failed", error=str(e))


SYNCED_LABEL = LABEL_HOST_NODE


def _internal_ip(node: Obj, other_than: str) -> str:
    """The node's first InternalIP, unless it is `other_than` (the syncer's own); else ""."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address") != other_than:
            return str(address["address"])
    return ""


class HostNodes(Syncer):
    """Real node sync (`sync.fromHost.nodes.enabled`): the selected host nodes, mirrored into the virtual cluster.

    Names, labels, taints, capacity and conditions are the host node's; the
    addresses and kubelet endpoint are the syncer's, so that logs and exec
    still go through vnest's kubelet API rather than to the host's kubelets.
    Pods are confined to these nodes by the selector's labels (vnest.syncer.resources.pods).
    """

    kind = "Node"
    workers = 2

    def __init__(self, ctx: SyncContext, fake: FakeNodes) -> None:
        super().__init__()
        self.ctx = ctx
        self.fake = fake  # for the kubelet endpoint and version it advertises
        config = ctx.config.sync.from_host.nodes
        self.labels: dict[str, str] = {} if config.selector.all else dict(config.selector.labels)
        self.clear_images = config.clear_image_status
        self.host = ctx.selected_informer(
            "host", "Node", None, label_selector=",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        )
        self.virtual = ctx.informer("virtual", "Node")

    def setup(self) -> None:
        self.host.add_handlers(Handlers.each(self.enqueue))
        self.virtual.add_handlers(Handlers.each(self.enqueue))

    def resync(self) -> None:
        for key in list(self.host.store) + list(self.virtual.store):
            self.queue.add(key)

    def pair(self, key: str) -> tuple[Obj | None, Obj | None]:
        # Any virtual Node of a selected host node's name is made that node's copy (a fake node the
        # pods were bound to before real node sync was turned on included).
        return self.virtual.get(key), self.host.get(key)

    async def ensure(self, name: str, host_ip: str = "") -> None:
        """Pods bind only to selected nodes, which exist once synced; nothing to make up."""

    def _virtual(self, hnode: Obj) -> tuple[Obj, Obj]:
        meta = hnode["metadata"]
        labels = {**(meta.get("labels") or {}), SYNCED_LABEL: "true"}
        host_spec = hnode.get("spec", {})
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": meta["name"], "labels": labels},
            # Exactly the host's: none when it has none, so the not-ready taint admission put on
            # the virtual Node at create goes (nothing else in the virtual cluster would lift it).
            "spec": {
                "taints": copy.deepcopy(host_spec.get("taints") or []),
                "unschedulable": bool(host_spec.get("unschedulable")),
            },
        }
        status = copy.deepcopy(hnode.get("status") or {})
        # The host node's InternalIP, and the syncer's kubelet API as the only InternalDNS: no host
        # name or DNS address, which would send the virtual API server to the host's kubelet.
        status["addresses"] = self.fake.addresses(_internal_ip(hnode, ""))
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.fake.kubelet_port}}
        if self.clear_images:
            status.pop("images", None)
        return node, status

    async def to_host(self, vnode: Obj) -> None:
        """No selected host node of its name: a copy goes, any other virtual Node stays."""
        if labels_of(vnode).get(SYNCED_LABEL) == "true":
            await self.ctx.virtual.delete("Node", vnode["metadata"]["name"])

    async def to_virtual(self, hnode: Obj) -> None:
        node, status = self._virtual(hnode)
        await self._status(await self.ctx.virtual.create(node), status)

    async def sync(self, vnode: Obj, hnode: Obj) -> None:
        node, status = self._virtual(hnode)
        if not (
            is_subset(node["metadata"]["labels"], vnode["metadata"].get("labels"))
            and node["spec"]["taints"] == (vnode["spec"].get("taints") or [])
            and node["spec"]["unschedulable"] == bool(vnode["spec"].get("unschedulable"))
        ):
            updated = copy.deepcopy(vnode)
            updated["metadata"]["labels"] = {
                **vnode["metadata"].get("labels", {}),
                **node["metadata"]["labels"],
            }
            updated["spec"] = {**vnode.get("spec", {}), **node["spec"]}
            vnode = await self.ctx.virtual.replace(updated)
        await self._status(vnode, status)

    async def _status(self, vnode: Obj, status: Obj) -> None:
        if _status_differs(vnode.get("status") or {}, status):
            await self.ctx.virtual.replace({**vnode, "status": status}, "status")


def _status_differs(have: Obj, want: Obj) -> bool:
    # Heartbeat times change every few seconds on the host; copying each would only churn.
    def strip(status: Obj) -> Obj:
        out = copy.deepcopy(status)
        for condition in out.get("conditions") or []:
            condition.pop("lastHeartbeatTime", None)
        return out

    return strip(have) != strip(want)
