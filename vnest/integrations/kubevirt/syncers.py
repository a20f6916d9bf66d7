"""KubeVirt's kinds, synced to the host: each a custom resource syncer with its kind's translation.

On top of vnest.syncer.resources.customresources (CRD copied from the host, `<name>-x-<ns>-x-<vc>`
copies owned by the cluster's config Secret, status back, deletion both ways):

- **the tenant's object decides, the host's additions stay.** A copy is rewritten only when the
  translation of the tenant's object changes (its digest rides on the copy in `vnest.io/synced-spec`),
  never because the host's copy differs: KubeVirt's mutating webhooks add defaults to VMs, and
  rewriting those away would loop for ever;
- **VirtualMachines**: the VMI template translated and checked (vnest.integrations.kubevirt.translate),
  `dataVolumeTemplates` named as their host copies, instancetype and preference matchers; the
  template carries this cluster's labels and the VM's origin annotations, so the VMI and the
  `virt-launcher` pod KubeVirt makes from it on the host are known as this VM's. `virtctl start`
  and `stop` change `spec.runStrategy` on the host (KubeVirt's own subresources do): while the
  tenant's VM is as vnest last wrote it, the host's runStrategy flows back into it;
- **VirtualMachineInstances** are of two sorts. A tenant's own VMI is copied like any other
  object. The VMI KubeVirt makes on the host for a synced VM is *reflected*: a virtual VMI of the
  VM's name, owned by the virtual VM, with the tenant's template and the host's status (the
  virtual cluster runs no KubeVirt to make one). It goes when the host's does; deleted by the
  tenant, the host's is deleted (KubeVirt's VM controller then makes a new one, if the VM runs);
- **migrations** name their VMI's host copy; **pools** carry the VM translation in their
  template and a selector confined to this cluster (the pool's VMs run on the host, and are not
  reflected back); **clones** name their source and target's host copies; **DataVolumes** (CDI)
  have their sources and storage checked; **instancetypes** and **preferences** are copied as they are.

Every host status comes back with host names turned back into the tenant's (translate.names_back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from vnest import log, naming
from vnest.integrations.kubevirt import translate
from vnest.integrations.kubevirt.translate import Refused, Rules
from vnest.kube.client import Obj
from vnest.kube.objects import OwnerReference
from vnest.syncer import mappings
from vnest.syncer.engine import Handlers, Informer, SyncContext, is_subset
from vnest.syncer.mappings import (
    ANNOTATION_HOST_UID,
    ANNOTATION_KIND,
    ANNOTATION_UID,
    annotations_of,
    key_of,
    namespace_label_key,
)
from vnest.syncer.resources.customresources import CopiedKind, CustomResourceSyncer, payload

_log = log.get("syncer.kubevirt")

ANNOTATION_SYNCED = f"{naming.PREFIX}/synced-spec"  # digest of the translation last written to the host
VM_KIND = "VirtualMachine"


def digest(body: Obj) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Shared:
    """What every KubeVirt syncer of one virtual cluster gets."""

    ctx: SyncContext
    owner: OwnerReference | None  # of every host copy: the cluster's config Secret
    rules: Callable[[str], Rules]  # a virtual namespace -> how its objects translate
    namespace_labels: Callable[[str], dict[str, str]]  # a virtual namespace's labels, as pods carry them


class KubeVirtSyncer(CustomResourceSyncer):
    """A KubeVirt kind to the host: its translation (`host_payload`), refusals told to the tenant."""

    def __init__(self, shared: Shared, copied: CopiedKind) -> None:
        super().__init__(shared.ctx, copied.kind, copied.api_version, copied.status_subresource, shared.owner)
        self.shared = shared

    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        """Everything but metadata and status, as the host copy gets it; raises Refused."""
        return payload(vobj)

    def translate(self, vobj: Obj) -> Obj:
        body = self.host_payload(vobj, self.shared.rules(vobj["metadata"]["namespace"]))
        desired = super().translate(vobj)
        for key in [k for k in desired if k not in ("apiVersion", "kind", "metadata")]:
            del desired[key]
        desired.update(body)
        desired["metadata"]["annotations"][ANNOTATION_SYNCED] = digest(body)
        return desired

    async def _refused(self, vobj: Obj, problem: Refused) -> None:
        meta = vobj["metadata"]
        await self.ctx.warn_once(
            vobj,
            "SyncError",
            f"{self.kind} {meta['namespace']}/{meta['name']} is not synced to the host: {problem}",
        )

    async def to_host(self, vobj: Obj) -> None:
        try:
            await super().to_host(vobj)
        except Refused as e:
            await self._refused(vobj, e)

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        self.host_deleted.pop(key_of(vobj), None)  # back already
        try:
            desired = self.translate(vobj)
        except Refused as e:
            # The last good copy stays; the tenant is told why this change is not on the host.
            await self._refused(vobj, e)
        else:
            meta, hmeta = desired["metadata"], hobj["metadata"]
            if is_subset(meta["labels"], hmeta.get("labels")) and is_subset(
                meta["annotations"], hmeta.get("annotations")
            ):
                await self.host_changed(vobj, hobj)  # the tenant's object is as last written
            else:
                await self._update_host(hobj, desired)
        await self._status_back(vobj, hobj)

    async def host_changed(self, vobj: Obj, hobj: Obj) -> None:
        """The copy is the tenant's object as last written; what the host changed since may come back."""

    def virtual_status(self, vobj: Obj, hobj: Obj) -> Obj | None:
        status = translate.names_back(
            hobj.get("status") or None, vobj["metadata"]["namespace"], self.ctx.name
        )
        assert status is None or isinstance(status, dict)
        return status


class VirtualMachineTranslation:
    """A VirtualMachine's spec on the host: shared by VMs and the VM template of pools."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def spec(self, vm: Obj, spec: Obj, rules: Rules, origin: bool, where: str = "spec") -> Obj:
        """`origin`: the VMI template names the VM (a pool's VMs have names of the host's making)."""
        ctx, ns = self.shared.ctx, rules.namespace
        out = dict(spec)
        template = dict(spec.get("template") or {})
        tmeta = template.get("metadata") or {}
        labels = ctx.host_labels(tmeta.get("labels"), ns)
        labels.update(self.shared.namespace_labels(ns))
        annotations = translate.template_annotations(tmeta)
        if origin:
            annotations.update(mappings.origin_annotations(vm, ns))
        template["metadata"] = {"labels": labels, "annotations": annotations}
        template["spec"] = translate.vmi_spec(template.get("spec") or {}, rules, f"{where}.template.spec")
        out["template"] = template
        volume_templates = []
        for i, dvt in enumerate(spec.get("dataVolumeTemplates") or []):
            dmeta = dvt.get("metadata") or {}
            volume_templates.append(
                {
                    **dvt,
                    "metadata": {
                        "name": rules.host_name(dmeta.get("name", "")),
                        "labels": ctx.host_labels(dmeta.get("labels"), ns),
                        "annotations": mappings.copied_annotations(dmeta),
                    },
                    "spec": translate.data_volume_spec(
                        dvt.get("spec") or {}, rules, f"{where}.dataVolumeTemplates[{i}].spec"
                    ),
                }
            )
        if volume_templates:
            out["dataVolumeTemplates"] = volume_templates
        for key, kind in (
            ("instancetype", "VirtualMachineInstancetype"),
            ("preference", "VirtualMachinePreference"),
        ):
            if spec.get(key):
                out[key] = translate.matcher(spec[key], kind, rules)
        return out


class VirtualMachineSyncer(KubeVirtSyncer):
    def __init__(self, shared: Shared, copied: CopiedKind) -> None:
        super().__init__(shared, copied)
        self.vm = VirtualMachineTranslation(shared)

    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        body["spec"] = self.vm.spec(vobj, vobj.get("spec") or {}, rules, origin=True)
        return body

    async def host_changed(self, vobj: Obj, hobj: Obj) -> None:
        # virtctl start/stop/restart on the host (through vnest's subresources or the host admin's)
        # change the host VM's run strategy: the tenant's VM shows it, then carries it.
        vspec, hspec = vobj.get("spec") or {}, hobj.get("spec") or {}
        changed = {k: hspec.get(k) for k in ("runStrategy", "running") if hspec.get(k) != vspec.get(k)}
        if changed:
            meta = vobj["metadata"]
            await self.ctx.virtual.patch(self.kind, meta["name"], {"spec": changed}, meta["namespace"])


def _made_by_vm(hobj: Obj) -> bool:
    """A host VMI that KubeVirt made for a synced VirtualMachine (its template names the VM)."""
    return annotations_of(hobj).get(ANNOTATION_KIND) == VM_KIND


def _is_reflection(vobj: Obj) -> bool:
    """A virtual VMI vnest made to show a VM's host VMI."""
    return ANNOTATION_HOST_UID in annotations_of(vobj)


class VirtualMachineInstanceSyncer(KubeVirtSyncer):
    def __init__(self, shared: Shared, copied: CopiedKind, vms: Informer | None) -> None:
        super().__init__(shared, copied)
        self.vms = vms  # the virtual VMs, when they sync: their VMIs are reflected
        # Virtual key -> host uid of reflections the tenant deleted (their host VMIs go too).
        self.deleted_reflections: dict[str, str] = {}

    def setup(self) -> None:
        super().setup()
        self.virtual.add_handlers(Handlers(on_delete=self._on_virtual_deleted))
        if self.vms is not None:
            self.vms.add_handlers(Handlers.each(self.enqueue))  # a VM's VMI is named as the VM

    def _on_virtual_deleted(self, vobj: Obj) -> None:
        if uid := annotations_of(vobj).get(ANNOTATION_HOST_UID):
            self.deleted_reflections[key_of(vobj)] = uid

    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        body["spec"] = translate.vmi_spec(vobj.get("spec") or {}, rules)
        return body

    def same_object(self, vobj: Obj, hobj: Obj) -> bool:
        if _made_by_vm(hobj):
            return bool(annotations_of(vobj).get(ANNOTATION_HOST_UID) == hobj["metadata"]["uid"])
        return not _is_reflection(vobj) and mappings.uid_matches(vobj, hobj)

    async def to_host(self, vobj: Obj) -> None:
        if _is_reflection(vobj):
            await self._delete_virtual(vobj)  # its host VMI is gone: the VM stopped
            return
        await super().to_host(vobj)

    async def to_virtual(self, hobj: Obj) -> None:
        if not _made_by_vm(hobj):
            await super().to_virtual(hobj)  # a copy of a tenant's VMI that is gone: deleted
            return
        key = mappings.virtual_key_of(hobj)
        if key is None or hobj["metadata"].get("deletionTimestamp"):
            return
        if self.deleted_reflections.get(key) == hobj["metadata"]["uid"]:
            del self.deleted_reflections[key]
            await self.patcher.delete(hobj)  # as `kubectl delete vmi` does on a real cluster
            return
        vm = self.vms.get(key) if self.vms is not None else None
        if vm is None or vm["metadata"]["uid"] != annotations_of(hobj).get(ANNOTATION_UID):
            return  # the VM is gone: the host's garbage collector takes its VMI
        await self.ctx.virtual.create(self._reflection(vm, hobj))

    async def replaced(self, vobj: Obj, hobj: Obj) -> None:
        if _is_reflection(vobj):
            await self._delete_virtual(vobj)  # of an earlier host VMI: made again for this one
        elif _made_by_vm(hobj):
            meta = vobj["metadata"]
            await self.ctx.warn_once(
                vobj,
                "SyncError",
                f"VirtualMachineInstance {meta['namespace']}/{meta['name']} is not synced to the host: "
                f"VirtualMachine {meta['name']} runs its own instance under that name",
            )
        else:
            await super().replaced(vobj, hobj)

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        if _made_by_vm(hobj):
            await self._status_back(vobj, hobj)  # the VM's spec is what is synced, not the reflection's
        else:
            await super().sync(vobj, hobj)

    def _reflection(self, vm: Obj, hobj: Obj) -> Obj:
        meta = vm["metadata"]
        template = (vm.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        annotations = {k: v for k, v in (tmeta.get("annotations") or {}).items()}
        annotations[ANNOTATION_HOST_UID] = hobj["metadata"]["uid"]
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": vm["apiVersion"],
                        "kind": VM_KIND,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }


class MigrationSyncer(KubeVirtSyncer):
    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        spec = dict(body.get("spec") or {})
        if spec.get("vmiName"):
            spec["vmiName"] = rules.host_name(spec["vmiName"])
        body["spec"] = spec
        return body


class PoolSyncer(KubeVirtSyncer):
    def __init__(self, shared: Shared, copied: CopiedKind) -> None:
        super().__init__(shared, copied)
        self.vm = VirtualMachineTranslation(shared)

    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        spec = dict(body.get("spec") or {})
        ns = rules.namespace
        template = dict(spec.get("virtualMachineTemplate") or {})
        tmeta = template.get("metadata") or {}
        template["metadata"] = {
            "labels": self.ctx.host_labels(tmeta.get("labels"), ns),
            "annotations": translate.template_annotations(tmeta),
        }
        template["spec"] = self.vm.spec(
            vobj, template.get("spec") or {}, rules, origin=False, where="spec.virtualMachineTemplate.spec"
        )
        spec["virtualMachineTemplate"] = template
        selector = spec.get("selector") or {}
        spec["selector"] = {
            **selector,
            "matchLabels": self.ctx.host_selector(selector.get("matchLabels") or {}, ns),
            "matchExpressions": [
                {**e, "key": mappings.translate_label_key(e["key"])}
                for e in selector.get("matchExpressions") or []
            ],
        }
        body["spec"] = spec
        return body


class CloneSyncer(KubeVirtSyncer):
    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        spec = dict(body.get("spec") or {})
        for end in ("source", "target"):
            if isinstance(spec.get(end), dict) and spec[end].get("name"):
                spec[end] = {**spec[end], "name": rules.host_name(spec[end]["name"])}
        body["spec"] = spec
        return body


class DataVolumeSyncer(KubeVirtSyncer):
    def host_payload(self, vobj: Obj, rules: Rules) -> Obj:
        body = payload(vobj)
        body["spec"] = translate.data_volume_spec(vobj.get("spec") or {}, rules)
        return body


def namespace_labels(namespaces: Informer) -> Callable[[str], dict[str, str]]:
    """A virtual namespace's labels as its pods carry them on the host (NetworkPolicy namespaceSelectors)."""

    def labels(ns: str) -> dict[str, str]:
        namespace = namespaces.get(ns) or {}
        return {
            namespace_label_key(k): v for k, v in (namespace.get("metadata", {}).get("labels") or {}).items()
        }

    return labels
