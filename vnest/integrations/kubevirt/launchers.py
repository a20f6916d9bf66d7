"""The host's `virt-launcher` pods, reflected as virtual pods: `kubectl get pods` in the virtual cluster
shows a running VM's launcher as it would on a cluster running KubeVirt (the seed's demo does).

KubeVirt makes the launcher pod on the host from the VMI (its labels, so this cluster's); the
reflection is a virtual pod named `virt-launcher-<vmi>-<suffix>` (the host pod's suffix), owned by
the virtual VMI, bound to the host pod's node (a fake node, as for any synced pod), with the host
pod's container names and images and its status. Nothing of the host pod's spec beyond that comes
back: its command line, volumes and environment are KubeVirt's on the host, named with host names.

A reflection carries `vnest.io/reflects: <host pod>`: the pod syncer never copies it to the host
(vnest.syncer.resources.pods), and the syncer's kubelet serves its logs from that host pod. It
goes when the host pod goes; deleted by the tenant while the host pod runs, it is made again
(a launcher pod is KubeVirt's to delete: stop the VM).
"""

from __future__ import annotations

from vnest import log
from vnest.integrations.kubevirt.syncers import VirtualMachineInstanceSyncer
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Controller, Handlers, SyncContext
from vnest.syncer.mappings import ANNOTATION_REFLECTS, LABEL_MANAGED_BY, annotations_of, key_of, split_key
from vnest.syncer.resources.pods import POD_STATUS_FIELDS, Nodes

_log = log.get("syncer.kubevirt")

LAUNCHER_LABEL = "kubevirt.io"
LAUNCHER_VALUE = "virt-launcher"


def virtual_name(host_pod: str, host_vmi: str, virtual_vmi: str) -> str:
    """`virt-launcher-<host vmi>-<suffix>` -> `virt-launcher-<virtual vmi>-<suffix>`."""
    prefix = f"{LAUNCHER_VALUE}-{host_vmi}-"
    suffix = host_pod[len(prefix) :] if host_pod.startswith(prefix) else host_pod.rsplit("-", 1)[-1]
    return f"{LAUNCHER_VALUE}-{virtual_vmi}-{suffix}"[:253]


def owner_vmi(hpod: Obj) -> str | None:
    for ref in hpod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "VirtualMachineInstance" and ref.get("controller"):
            return str(ref["name"])
    return None


class LauncherPods(Controller):
    kind = "VirtLauncherPod"

    def __init__(self, ctx: SyncContext, vmis: VirtualMachineInstanceSyncer, nodes: Nodes) -> None:
        super().__init__()
        self.ctx = ctx
        self.vmis = vmis
        self.nodes = nodes
        self.host = ctx.selected_informer(
            "host",
            "Pod",
            ctx.host_namespace,
            label_selector=f"{LAUNCHER_LABEL}={LAUNCHER_VALUE},{LABEL_MANAGED_BY}={ctx.name}",
        )
        self.virtual = ctx.informer("virtual", "Pod")
        # host pod key -> virtual key of its reflection, as the virtual cache shows them
        self.reflections: dict[str, str] = {}

    def setup(self) -> None:
        self.host.add_handlers(Handlers.each(self.enqueue))
        self.virtual.add_handlers(Handlers.diff(self._on_virtual))
        # A VMI's reflection appears after its launcher pod may have: its pods are looked at again.
        self.vmis.virtual.add_handlers(Handlers(on_add=self._on_vmi))

    def _host_key(self, vpod: Obj) -> str | None:
        host_pod = annotations_of(vpod).get(ANNOTATION_REFLECTS)
        return f"{self.ctx.host_namespace}/{host_pod}" if host_pod else None

    def _on_virtual(self, old: Obj | None, new: Obj | None) -> None:
        for vpod in (old, new):
            if vpod is not None and (hkey := self._host_key(vpod)):
                if new is None:
                    self.reflections.pop(hkey, None)
                else:
                    self.reflections[hkey] = key_of(new)
                self.queue.add(hkey)

    def _on_vmi(self, vmi: Obj) -> None:
        for hkey, hpod in list(self.host.store.items()):
            if owner_vmi(hpod) == self.ctx.host_name(vmi["metadata"]["name"], vmi["metadata"]["namespace"]):
                self.queue.add(hkey)

    def resync(self) -> None:
        for host_key in list(self.host.store):
            self.queue.add(host_key)
        for vpod in list(self.virtual.store.values()):
            if hkey := self._host_key(vpod):
                self.reflections[hkey] = key_of(vpod)
                self.queue.add(hkey)

    async def reconcile(self, key: str) -> None:
        hpod = self.host.get(key)
        known = self.reflections.get(key)
        reflection = self.virtual.get(known) if known else None
        if hpod is None or hpod["metadata"].get("deletionTimestamp"):
            if reflection is not None:
                await self.ctx.virtual.delete_exact("Pod", reflection, grace=0)
            return
        host_vmi = owner_vmi(hpod)
        hvmi = self.vmis.host.get(f"{self.ctx.host_namespace}/{host_vmi}") if host_vmi else None
        vkey = mappings.virtual_key_of(hvmi) if hvmi is not None and self.vmis.mapping.owns(hvmi) else None
        vvmi = self.vmis.virtual.get(vkey) if vkey else None
        if host_vmi is None or vvmi is None:
            return  # not (yet) a VMI of this cluster's: a pool's VMs are not reflected
        ns, vmi_name = split_key(key_of(vvmi))
        name = virtual_name(hpod["metadata"]["name"], host_vmi, vmi_name)
        if reflection is None:
            reflection = self.virtual.get(f"{ns}/{name}")
            if (
                reflection is not None
                and annotations_of(reflection).get(ANNOTATION_REFLECTS) != hpod["metadata"]["name"]
            ):
                await self.ctx.warn_once(
                    reflection,
                    "SyncError",
                    f"pod {ns}/{name} is in the way of VirtualMachineInstance {vmi_name}'s launcher pod; "
                    "vnest leaves it alone",
                )
                return
        if reflection is None:
            node = hpod["spec"].get("nodeName")
            if not node:
                return  # reflected once scheduled: a virtual pod names its node
            await self.nodes.ensure(node)
            try:
                await self.ctx.virtual.create(self._reflection(hpod, vvmi, name, node))
            except ApiError as e:
                if not e.conflict:
                    raise
            return
        status = {k: v for k, v in (hpod.get("status") or {}).items() if k != "qosClass"}  # immutable
        if (
            status
            and {k: v for k, v in (reflection.get("status") or {}).items() if k != "qosClass"} != status
        ):
            gone = {*POD_STATUS_FIELDS, *(reflection.get("status") or {})} - status.keys() - {"qosClass"}
            await self.ctx.virtual.patch(
                "Pod",
                reflection["metadata"]["name"],
                {"status": {**dict.fromkeys(gone), **status}},
                ns,
                "status",
            )

    def _reflection(self, hpod: Obj, vvmi: Obj, name: str, node: str) -> Obj:
        vmeta = vvmi["metadata"]
        labels = {
            **(vmeta.get("labels") or {}),
            LAUNCHER_LABEL: LAUNCHER_VALUE,
            "vm.kubevirt.io/name": vmeta["name"],
            "kubevirt.io/created-by": vmeta["uid"],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": vmeta["namespace"],
                "labels": labels,
                "annotations": {
                    ANNOTATION_REFLECTS: hpod["metadata"]["name"],
                    "kubevirt.io/domain": vmeta["name"],
                },
                "ownerReferences": [
                    {
                        "apiVersion": vvmi["apiVersion"],
                        "kind": vvmi["kind"],
                        "name": vmeta["name"],
                        "uid": vmeta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                # Names, images and resources (the pod's QoS class is computed from them, and the
                # host's status carries it): nothing that names the host.
                "containers": [
                    {"name": c["name"], "image": c["image"], "resources": c.get("resources") or {}}
                    for c in hpod["spec"].get("containers") or []
                ],
            },
        }
