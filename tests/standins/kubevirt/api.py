"""The host's stand-in for KubeVirt, for tests (not KubeVirt): the names and small helpers its parts share.

The label, annotation, finalizer and condition names are KubeVirt's own (kubevirt.io/api core/v1
types), so objects the stand-in makes look as KubeVirt's do to anything that reads them; the run
strategy and phase helpers imitate the methods of KubeVirt's API types (``vm.RunStrategy()``,
``vmi.IsFinal()``, ...).
"""

from __future__ import annotations

import datetime
from typing import Any

from vnest.kube.client import Obj, Resource, register

# Where the stand-in's kinds live in the API (KubeVirt's and CDI's groups and versions).
KINDS: dict[str, Resource] = {
    "VirtualMachine": Resource("kubevirt.io/v1", "virtualmachines"),
    "VirtualMachineInstance": Resource("kubevirt.io/v1", "virtualmachineinstances"),
    "VirtualMachineInstanceMigration": Resource("kubevirt.io/v1", "virtualmachineinstancemigrations"),
    "DataVolume": Resource("cdi.kubevirt.io/v1beta1", "datavolumes"),
}
CRD_NAMES = {
    "VirtualMachine": "virtualmachines.kubevirt.io",
    "VirtualMachineInstance": "virtualmachineinstances.kubevirt.io",
    "VirtualMachineInstanceMigration": "virtualmachineinstancemigrations.kubevirt.io",
    "DataVolume": "datavolumes.cdi.kubevirt.io",
}
CRD = Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False)
SAR = Resource("authorization.k8s.io/v1", "subjectaccessreviews", namespaced=False)

# KubeVirt's labels and annotations (kubevirt.io/api core/v1 types.go).
APP_LABEL = "kubevirt.io"  # "virt-launcher" on launcher pods
CREATED_BY_LABEL = "kubevirt.io/created-by"  # the VMI's uid, on its launcher pods
VM_NAME_LABEL = "vm.kubevirt.io/name"  # DeprecatedVirtualMachineNameLabel: the pod's host name
VMI_ID_LABEL = "vmi.kubevirt.io/id"
NODE_NAME_LABEL = "kubevirt.io/nodeName"
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
# Finalizers: the VMI controller's, and the VM controller's on its VMs and VMIs.
VMI_FINALIZER = "foregroundDeleteVirtualMachine"
VM_CONTROLLER_FINALIZER = "kubevirt.io/virtualMachineControllerFinalize"
UNPAUSED_POD_CONDITION = "kubevirt.io/virtual-machine-unpaused"

# CDI's labels on the claims it makes for DataVolumes (the stand-in's storage stage keys on the first).
CDI_CLAIM_LABELS = {
    "app": "containerized-data-importer",
    "app.kubernetes.io/component": "storage",
    "app.kubernetes.io/managed-by": "cdi-controller",
}

# The stand-in's launcher image: what `status.launcherContainerImageVersion` reports. No such image
# exists; KWOK nodes never pull.
LAUNCHER_IMAGE = "registry.invalid/kubevirt-standin/virt-launcher:v1.6.0"
VERSION = "v1.6.0-standin"

FINAL_PHASES = ("Succeeded", "Failed")


def register_kinds() -> None:
    for kind, resource in KINDS.items():
        register(kind, resource)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Obj) -> dict[str, Any]:
    m: dict[str, Any] = obj.setdefault("metadata", {})
    return m


def status(obj: Obj) -> dict[str, Any]:
    s: dict[str, Any] = obj.get("status") or {}
    return s


def run_strategy(vm: Obj) -> str:
    """vm.RunStrategy(): spec.runStrategy, else the legacy spec.running (true: Always), else Halted."""
    spec = vm.get("spec") or {}
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    return "Always" if spec.get("running") else "Halted"


def phase(vmi: Obj | None) -> str:
    return str(status(vmi).get("phase") or "") if vmi else ""


def is_final(vmi: Obj | None) -> bool:
    return phase(vmi) in FINAL_PHASES


def is_unprocessed(vmi: Obj) -> bool:
    return phase(vmi) in ("", "Pending")


def deleting(obj: Obj | None) -> bool:
    return bool(obj and obj.get("metadata", {}).get("deletionTimestamp"))


def condition(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    for c in status(obj or {}).get("conditions") or []:
        if c.get("type") == kind:
            found: dict[str, Any] = c
            return found
    return None


def condition_true(obj: Obj | None, kind: str) -> bool:
    c = condition(obj, kind)
    return bool(c and c.get("status") == "True")


def set_condition(conditions: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions with `new` in place of one of its type; the transition time kept when the
    status did not change (as KubeVirt's condition managers do)."""
    out = []
    replaced = False
    for c in conditions:
        if c.get("type") == new["type"]:
            if c.get("status") == new.get("status") and c.get("lastTransitionTime"):
                new = {**new, "lastTransitionTime": c["lastTransitionTime"]}
            out.append(new)
            replaced = True
        else:
            out.append(c)
    if not replaced:
        out.append(new)
    return out


def owner_ref(owner: Obj) -> dict[str, Any]:
    """metav1.NewControllerRef: a controller reference that blocks the owner's deletion."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: Obj, owner: Obj) -> bool:
    return any(
        r.get("controller") and r.get("uid") == owner["metadata"]["uid"]
        for r in obj.get("metadata", {}).get("ownerReferences") or []
    )


def key(obj: Obj) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


def status_error(code: int, reason: str, message: str, kind: str = "", name: str = "") -> Obj:
    """A metav1.Status as apimachinery's errors.New* build them."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind or name:
        body["details"] = {"name": name, "group": "kubevirt.io", "kind": kind}
    return body
