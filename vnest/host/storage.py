"""Node-local volumes for the local host's real nodes: the default StorageClass and its provisioner.

A PVC of class ``standard`` (the default) waits until a pod that uses it is scheduled (the class
binds WaitForFirstConsumer), then gets a ``local`` PersistentVolume in a folder of that node
(``nodes/<node>/volumes/<pv>`` under the host's folder), bound to the node by its affinity, as
kind's local-path provisioner does. A released volume is deleted with its folder. The
control plane's datastore (the chart's PVC) lives there, so a restarted `NAME-0` finds its data.

Hand-written, and small: it polls the API on loopback once a second (a local host has few
claims), so it needs no image, no helper pods and no informer; `vnest host down` removes the
folders with the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path
from typing import Any

from vnest import log
from vnest.kube.client import ApiError, KubeClient, Obj
from vnest.kube.objects import claim_reference

_log = log.get("storage")

CLASS = "standard"
PROVISIONER = "local-path.vnest.io"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
POLL = 1.0


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def volume_for(claim: Obj, node: str, folder: Path) -> dict[str, Any]:
    """The local PersistentVolume for a claim whose first pod went to ``node``."""
    name = f"pvc-{claim['metadata']['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"].get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "volumeMode": claim["spec"].get("volumeMode") or "Filesystem",
            "claimRef": claim_reference(claim),
            "local": {"path": str(folder / node / "volumes" / name)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
        },
    }


class Provisioner:
    def __init__(self, client: KubeClient, nodes_folder: Path) -> None:
        self.client = client
        self.nodes_folder = nodes_folder

    async def once(self) -> None:
        volumes = {v["metadata"]["name"]: v for v in await self.client.list("PersistentVolume")}
        for claim in await self.client.list("PersistentVolumeClaim"):
            node = claim["metadata"].get("annotations", {}).get(SELECTED_NODE)
            if (
                claim["spec"].get("storageClassName") != CLASS
                or claim.get("status", {}).get("phase") != "Pending"
                or claim["spec"].get("volumeName")
                or not node
                or f"pvc-{claim['metadata']['uid']}" in volumes
            ):
                continue
            volume = volume_for(claim, node, self.nodes_folder)
            Path(volume["spec"]["local"]["path"]).mkdir(parents=True, exist_ok=True)
            await self.client.create(volume)
            _log.info(
                "provisioned", volume=volume["metadata"]["name"], node=node, claim=claim["metadata"]["name"]
            )
        for name, volume in volumes.items():
            ours = volume["metadata"].get("annotations", {}).get(PROVISIONED_BY) == PROVISIONER
            if ours and volume.get("status", {}).get("phase") == "Released":
                shutil.rmtree(volume["spec"]["local"]["path"], ignore_errors=True)
                await self.client.delete("PersistentVolume", name)
                _log.info("deleted", volume=name)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except (ApiError, OSError) as e:
                _log.warning("provisioning pass failed", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)


async def serve(kubeconfig_path: Path, nodes_folder: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient.from_kubeconfig(kubeconfig_path) as client:
        await Provisioner(client, nodes_folder).run(stop)
