"""What a tenant's VirtualMachineInstance spec becomes on the host: every field that names or reaches
something is translated, checked or refused (SPEC.md section 7: every copied field is a door).

KubeVirt turns a VMI spec into a `virt-launcher` pod on the host, so the spec is held to what a
virtual pod is held to (vnest.syncer.resources.pods), plus what only VMs have:

- **names** of the VM's Secrets, ConfigMaps, PVCs and DataVolumes (volumes, cloud-init and sysprep
  sources, SSH keys and passwords of accessCredentials) become their host copies' names: a VM can
  only ever reach objects of its own virtual namespace, never a host object of the raw name;
- **volume types** are an allow-list: the ones above, and the ones that name nothing
  (containerDisk, emptyDisk, ephemeral of a claim, downwardMetrics). `hostDisk` is a host path and
  needs `policies.podSecurityStandard: privileged`, as a pod's hostPath does; a `serviceAccount`
  volume would put a token of the host's into the guest and is refused (a guest that needs the
  virtual API uses a Secret); anything newer is refused until vnest knows it;
- **devices** of the host (`hostDevices`, `gpus`: PCI and mediated devices the host admin assigned
  in the KubeVirt CR) need `privileged`, as a pod's host access does;
- **networks** other than the pod network (Multus `networkName`s) are refused: they name
  NetworkAttachmentDefinitions of the host;
- **scheduling** as for pods: the host's scheduler (schedulerName dropped), the priority class's
  host copy, pod (anti-)affinity and topology spread confined to this virtual cluster's pods of the
  same namespace, and the node selector of real node sync added;
- **DNS** `ClusterFirst` points at the virtual cluster's DNS, as for pods;
- **template metadata**: labels translated as a pod's (vnest's own keys hashed), annotations that
  steer KubeVirt or the host (`hooks.kubevirt.io/*` sidecar images, `k8s.v1.cni.cncf.io/*` networks,
  `kubevirt.io/*`) dropped.

The functions here are pure (no API calls): the syncers pass in what they need.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vnest.kube.client import Obj
from vnest.syncer import mappings

# Volume types that name an object of the VM's namespace, and where that name is.
_NAMED_VOLUMES: dict[str, tuple[tuple[str, ...], str]] = {
    # volume type: (path to the name, kind of the object named)
    "persistentVolumeClaim": (("claimName",), "PersistentVolumeClaim"),
    "dataVolume": (("name",), "DataVolume"),
    "secret": (("secretName",), "Secret"),
    "configMap": (("name",), "ConfigMap"),
    "memoryDump": (("claimName",), "PersistentVolumeClaim"),
}
_EPHEMERAL_CLAIM = ("ephemeral", "persistentVolumeClaim", "claimName")
# Cloud-init and sysprep sources: each names a Secret (or a ConfigMap for sysprep) of the namespace.
_CLOUD_INIT = ("cloudInitNoCloud", "cloudInitConfigDrive")
_CLOUD_INIT_SECRETS = ("secretRef", "userDataSecretRef", "networkDataSecretRef")
# Volume types that name nothing and reach nothing on the host.
_PLAIN_VOLUMES = {"containerDisk", "emptyDisk", "downwardMetrics", "ephemeral", "downwardAPI"}
_PRIVILEGED_VOLUMES = {"hostDisk"}
_ALLOWED_VOLUMES = {*_NAMED_VOLUMES, *_CLOUD_INIT, "sysprep", *_PLAIN_VOLUMES, *_PRIVILEGED_VOLUMES}
_HOST_DEVICE_LISTS = ("hostDevices", "gpus")
# Template annotations that steer KubeVirt or the host network: never from a tenant.
_DROPPED_ANNOTATION_DOMAINS = ("hooks.kubevirt.io", "k8s.v1.cni.cncf.io", "kubevirt.io")


class Refused(Exception):
    """A spec vnest will not put on the host; the message says which field and why."""


@dataclass
class References:
    """Names of the objects of its own namespace a VM or VMI uses, by kind."""

    by_kind: dict[str, set[str]] = field(
        default_factory=lambda: {"Secret": set(), "ConfigMap": set(), "PersistentVolumeClaim": set()}
    )

    def add(self, kind: str, name: str) -> None:
        self.by_kind.setdefault(kind, set()).add(name)


def _walk(value: Obj, path: tuple[str, ...]) -> tuple[Obj, str] | None:
    """(the dict holding the last key, the key) when every step of `path` is there."""
    holder: object = value
    for key in path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(holder, dict) and isinstance(holder.get(path[-1]), str) and holder[path[-1]]:
        return holder, path[-1]
    return None


def _name_slots(spec: Obj) -> list[tuple[Obj, str, str, str]]:
    """Every (holder, key, kind, where) of a VMI spec that names an object of its namespace."""
    slots: list[tuple[Obj, str, str, str]] = []
    for i, volume in enumerate(spec.get("volumes") or []):
        where = f"spec.volumes[{i}]"
        for kind_key, (path, kind) in _NAMED_VOLUMES.items():
            if isinstance(volume.get(kind_key), dict) and (slot := _walk(volume[kind_key], path)):
                slots.append((*slot, kind, f"{where}.{kind_key}"))
        if slot := _walk(volume, _EPHEMERAL_CLAIM):
            slots.append((*slot, "PersistentVolumeClaim", f"{where}.ephemeral"))
        for source in _CLOUD_INIT:
            for ref in _CLOUD_INIT_SECRETS:
                if slot := _walk(volume, (source, ref, "name")):
                    slots.append((*slot, "Secret", f"{where}.{source}.{ref}"))
        for kind_key, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
            if slot := _walk(volume, ("sysprep", kind_key, "name")):
                slots.append((*slot, kind, f"{where}.sysprep.{kind_key}"))
    for i, credential in enumerate(spec.get("accessCredentials") or []):
        for method in ("sshPublicKey", "userPassword"):
            if slot := _walk(credential, (method, "source", "secret", "secretName")):
                slots.append((*slot, "Secret", f"spec.accessCredentials[{i}].{method}"))
    return slots


def references(spec: Obj | None) -> References:
    """The Secrets, ConfigMaps and claims a VMI spec uses (DataVolumes count as their claims)."""
    refs = References()
    for holder, key, kind, _ in _name_slots(spec or {}):
        refs.add("PersistentVolumeClaim" if kind == "DataVolume" else kind, holder[key])
    return refs


def vm_references(vm: Obj) -> References:
    """A VirtualMachine's references: its template's, less the DataVolumes it makes itself."""
    spec = vm.get("spec") or {}
    refs = references(((spec.get("template") or {}).get("spec")) or {})
    for template in spec.get("dataVolumeTemplates") or []:
        refs.by_kind["PersistentVolumeClaim"].discard((template.get("metadata") or {}).get("name", ""))
    return refs


@dataclass(frozen=True)
class Rules:
    """What a translation needs from the virtual cluster around it."""

    namespace: str  # the VM's virtual namespace
    host_namespace: str
    host_name_in: Callable[[str, str], str]  # (name, virtual namespace) -> its host copy's name
    storage_class: Callable[[str | None], str | None]  # a storageClassName -> the host's
    privileged: bool  # policies.podSecurityStandard is privileged
    node_selector: dict[str, str]  # real node sync: pods and VMs stay on the selected nodes
    priority_class: Callable[[str | None], str | None]  # a priorityClassName -> the host's
    confine: Callable[[Obj], None]  # pod (anti-)affinity and topology spread, as a pod's
    point_dns: Callable[[Obj], None]  # ClusterFirst -> the virtual cluster's DNS
    remap_field: Callable[[Obj], None]  # downward API fields that would tell host names

    def host_name(self, name: str) -> str:
        return self.host_name_in(name, self.namespace)


def vmi_spec(spec: Obj, rules: Rules, where: str = "spec") -> Obj:
    """The host's VMI spec for a tenant's one; raises Refused naming the field."""
    out = copy.deepcopy(spec)
    for i, volume in enumerate(out.get("volumes") or []):
        types = [k for k in volume if k != "name"]
        for type_ in types:
            if type_ not in _ALLOWED_VOLUMES:
                raise Refused(
                    f"{where}.volumes[{i}].{type_}: this volume type does not sync to the host "
                    f"(allowed: {', '.join(sorted(_ALLOWED_VOLUMES - _PRIVILEGED_VOLUMES))}; "
                    "hostDisk with policies.podSecurityStandard: privileged)"
                )
            if type_ in _PRIVILEGED_VOLUMES and not rules.privileged:
                raise Refused(
                    f"{where}.volumes[{i}].{type_}: a host path; allowed only with "
                    "policies.podSecurityStandard: privileged (as a pod's hostPath)"
                )
        for item in (volume.get("downwardAPI") or {}).get("fields") or []:
            rules.remap_field(item)
    for holder, key, _kind, _ in _name_slots(out):
        holder[key] = rules.host_name(holder[key])
    for i, volume in enumerate(out.get("volumes") or []):
        if "serviceAccount" in volume:
            raise Refused(
                f"{where}.volumes[{i}].serviceAccount: the guest would get a token of the host's "
                "ServiceAccount; put a token of the virtual cluster in a Secret instead"
            )
    devices = ((out.get("domain") or {}).get("devices")) or {}
    for device_list in _HOST_DEVICE_LISTS:
        if devices.get(device_list) and not rules.privileged:
            raise Refused(
                f"{where}.domain.devices.{device_list}: devices of the host; allowed only with "
                "policies.podSecurityStandard: privileged"
            )
    for i, network in enumerate(out.get("networks") or []):
        if "multus" in network:
            raise Refused(
                f"{where}.networks[{i}].multus: Multus networks name NetworkAttachmentDefinitions of the "
                "host; only the pod network syncs"
            )
    out.pop("schedulerName", None)
    priority = rules.priority_class(out.pop("priorityClassName", None))
    if priority:
        out["priorityClassName"] = priority
    rules.confine(out)
    if rules.node_selector:
        out["nodeSelector"] = {**(out.get("nodeSelector") or {}), **rules.node_selector}
    rules.point_dns(out)
    return out


def matcher(value: Obj | None, namespaced_kind: str, rules: Rules) -> Obj | None:
    """An instancetype or preference matcher: a namespaced one names its host copy; a cluster-wide
    one is the host's catalogue (sizes and defaults the host admin publishes), named as it is.
    The revision is KubeVirt's to fill in (a tenant's would name any ControllerRevision)."""
    if not value:
        return value
    out = copy.deepcopy(value)
    out.pop("revisionName", None)
    if out.get("kind") == namespaced_kind and out.get("name"):
        out["name"] = rules.host_name(out["name"])
    return out


def data_volume_spec(spec: Obj, rules: Rules, where: str = "spec") -> Obj:
    """The host's DataVolume spec (CDI) for a tenant's one (or a VM's dataVolumeTemplate's)."""
    out = copy.deepcopy(spec)
    source = out.get("source") or {}
    for kind in ("pvc", "snapshot"):
        ref = source.get(kind)
        if isinstance(ref, dict) and ref.get("name"):
            # A clone of a claim (or snapshot) of this virtual cluster: its host copy, in the host namespace.
            ref["name"] = rules.host_name_in(ref["name"], ref.get("namespace") or rules.namespace)
            ref["namespace"] = rules.host_namespace
    if out.get("sourceRef"):
        raise Refused(
            f"{where}.sourceRef: DataSources are not synced, and one of the host's would hand the tenant "
            "a host volume; use source (http, registry, pvc of this cluster, blank, ...)"
        )
    for claim in ("pvc", "storage"):
        template = out.get(claim)
        if not isinstance(template, dict):
            continue
        if template.get("volumeName"):
            raise Refused(f"{where}.{claim}.volumeName: a DataVolume may not pick a host PersistentVolume")
        for ref in ("dataSource", "dataSourceRef"):
            if template.get(ref):
                raise Refused(f"{where}.{claim}.{ref}: use the DataVolume's source instead")
        template.pop("selector", None)  # it would select the host's volumes
        if template.get("storageClassName"):
            template["storageClassName"] = rules.storage_class(template["storageClassName"])
    return out


def template_annotations(meta: Obj) -> dict[str, str]:
    """A VMI template's annotations as they go to the host (and on to the launcher pod)."""
    return {k: v for k, v in mappings.copied_annotations(meta).items() if not _steers_kubevirt(k)}


def _steers_kubevirt(key: str) -> bool:
    if "/" not in key:
        return False
    domain = key.split("/", 1)[0]
    return any(domain == d or domain.endswith("." + d) for d in _DROPPED_ANNOTATION_DOMAINS)


def names_back(value: object, namespace: str, vcluster: str) -> object:
    """A host status with host names turned back into the tenant's: `<name>-x-<ns>-x-<vcluster>`
    becomes `<name>` wherever it appears in a string (conditions' messages name DataVolumes and
    claims; migrations name launcher pods, `virt-launcher-<vmi>-<suffix>`, which vnest's reflections
    are named as with the tenant's VMI). A name too long to carry the suffix (shortened with a
    digest) is left as it is."""
    suffix = f"-x-{re.escape(namespace)}-x-{re.escape(vcluster)}"
    pattern = re.compile(rf"([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?){suffix}(?![-a-z0-9])")
    # KubeVirt's launcher pods are named after the (host) VMI, with a suffix of their own.
    launcher = re.compile(
        rf"(virt-launcher-[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?){suffix}(-[a-z0-9]+)(?![-a-z0-9])"
    )

    def walk(v: object) -> object:
        if isinstance(v, str):
            return pattern.sub(lambda m: m.group(1), launcher.sub(lambda m: m.group(1) + m.group(2), v))
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)
