"""Fake nodes: one virtual Node for each host node that runs pods of this virtual cluster.

The virtual cluster must not see the host's nodes (their names, capacity and
other tenants' pods), yet a bound pod needs a Node. As vCluster's default, a
fake node carries the host node's name and made-up, generous capacity; it is
created when the first pod lands on that node and removed when the last one
leaves. The node lifecycle controller is off in the virtual cluster, so
nothing marks these nodes NotReady.
"""

from __future__ import annotations

import asyncio
import copy

from vnest import log
from vnest.kube.client import ApiError, Obj
from vnest.syncer.engine import SyncContext, now

_log = log.get("syncer.nodes")

FAKE_LABEL = "vnest.io/fake-node"
GC_EVERY = 30.0
CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}


class FakeNodes:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.version = ""  # the virtual API server's, learned at start
        # Where the syncer serves the fake nodes' kubelet API (vnest.syncer.kubelet).
        self.kubelet_address = "127.0.0.1"
        self.kubelet_port = 0
        self.known: set[str] = set()
        self._lock = asyncio.Lock()
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

    def _status(self) -> Obj:
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
            "addresses": [{"type": "InternalIP", "address": self.kubelet_address}],
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

    async def ensure(self, name: str) -> None:
        if name in self.known:
            return
        async with self._lock:
            if name in self.known:
                return
            node = await self.ctx.virtual.get_or_none("Node", name)
            if node is None:
                try:
                    node = await self.ctx.virtual.create(self._node(name))
                except ApiError as e:
                    if not e.conflict:
                        raise
                    node = await self.ctx.virtual.get("Node", name)
            updated = copy.deepcopy(node)
            updated["status"] = self._status()
            await self.ctx.virtual.request("PUT", f"/api/v1/nodes/{name}/status", body=updated)
            self.known.add(name)
            _log.info("fake node ready", node=name)

    async def refresh(self) -> None:
        """Rewrites every fake node's status, for the kubelet endpoint this syncer serves."""
        self.known.clear()
        for node in await self.ctx.virtual.list("Node", label_selector=f"{FAKE_LABEL}=true"):
            await self.ensure(node["metadata"]["name"])

    async def collect_garbage(self) -> None:
        """Removes fake nodes no virtual pod is bound to any more."""
        in_use = {p["spec"].get("nodeName") for p in self.pods.store.values()}
        for node in await self.ctx.virtual.list("Node", label_selector=f"{FAKE_LABEL}=true"):
            name = node["metadata"]["name"]
            if name not in in_use:
                self.known.discard(name)
                await self.ctx.virtual.delete("Node", name)
                _log.info("fake node removed", node=name)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(GC_EVERY)
            try:
                await self.collect_garbage()
            except ApiError as e:
                _log.warning("fake node garbage collection failed", error=str(e))
