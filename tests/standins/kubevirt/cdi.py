"""The host's stand-in for KubeVirt, for tests (not CDI): what CDI's DataVolume controller makes of a DataVolume.

Imitates containerized-data-importer's DataVolume controller (pkg/controller/datavolume/,
conditions.go for the conditions): a DataVolume gets a PersistentVolumeClaim of its own name,
controlled by it (so deleting the DataVolume deletes the claim through the garbage collector),
labelled as CDI labels its claims; the claim's spec is ``spec.pvc`` as given, or built from
``spec.storage`` (access modes, size, volume mode, storage class). While the claim is unbound the
DataVolume is ``Pending`` with a ``Bound: False`` condition ("PVC <name> Pending"); once it is
bound, the import is taken as done at once: phase ``Succeeded``, progress ``100.0%``, conditions
``Bound: True`` ("PVC <name> Bound"), ``Ready: True`` and ``Running: False`` (reason
``Completed``), ``claimName``.

Not imitated: importer, upload and clone pods (no data is ever written), storage profiles (a
``spec.storage`` without access modes gets ReadWriteOnce, without a size 1Gi), filesystem overhead,
WaitForFirstConsumer, populators, DataSources, garbage collection of finished DataVolumes. The
claim is bound by the stand-in's KWOK stage that plays a storage provisioner (stages.yaml), since
the KWOK local host has none.
"""

from __future__ import annotations

import copy
from typing import Any

from vnest.kube.client import Obj

from . import api

DEFAULT_SIZE = "1Gi"
DONE_PHASES = ("Succeeded", "WaitForFirstConsumer", "PendingPopulation")


def claim_for(dv: Obj) -> Obj:
    spec = dv.get("spec") or {}
    if spec.get("pvc"):
        claim_spec: dict[str, Any] = copy.deepcopy(spec["pvc"])
    else:
        storage = spec.get("storage") or {}
        claim_spec = {
            "accessModes": storage.get("accessModes") or ["ReadWriteOnce"],
            "resources": copy.deepcopy(storage.get("resources") or {}),
            "volumeMode": storage.get("volumeMode") or "Filesystem",
        }
        for field in ("storageClassName", "selector", "volumeName", "dataSource", "dataSourceRef"):
            if storage.get(field):
                claim_spec[field] = storage[field]
    requests = claim_spec.setdefault("resources", {}).setdefault("requests", {})
    requests.setdefault("storage", DEFAULT_SIZE)
    meta = dv["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {**(meta.get("labels") or {}), **api.CDI_CLAIM_LABELS},
            "annotations": {
                "cdi.kubevirt.io/storage.contentType": spec.get("contentType") or "kubevirt",
                "cdi.kubevirt.io/createdForDataVolume": meta["uid"],
            },
            "ownerReferences": [api.owner_ref(dv)],
        },
        "spec": claim_spec,
    }


def _condition(kind: str, status: str, message: str = "", reason: str = "") -> dict[str, Any]:
    stamp = api.now()
    return {
        "type": kind,
        "status": status,
        "message": message,
        "reason": reason,
        "lastTransitionTime": stamp,
        "lastHeartbeatTime": stamp,
    }


def status_for(dv: Obj, claim: Obj | None) -> dict[str, Any]:
    """The DataVolume's status as CDI would write it, given its claim (None: not made yet)."""
    old = api.status(dv)
    conditions: list[dict[str, Any]] = list(old.get("conditions") or [])
    name = dv["metadata"]["name"]
    new: dict[str, Any] = {k: v for k, v in old.items() if k not in ("conditions", "phase", "progress")}
    new.setdefault("restartCount", 0)
    bound = claim is not None and (claim.get("status") or {}).get("phase") == "Bound"
    if claim is None:
        new["phase"] = "Pending"
        updates = [_condition("Bound", "False", "No PVC found", "NotFound"), _condition("Ready", "False")]
    elif not bound:
        new["phase"] = "Pending"
        new["claimName"] = name
        updates = [
            _condition("Bound", "False", f"PVC {name} Pending", "Pending"),
            _condition("Ready", "False"),
        ]
    else:
        new["phase"] = "Succeeded"
        new["progress"] = "100.0%"
        new["claimName"] = name
        updates = [
            _condition("Bound", "True", f"PVC {name} Bound", "Bound"),
            _condition("Ready", "True"),
            _condition("Running", "False", "Import Complete", "Completed"),
        ]
    if not any(c.get("type") == "Running" for c in updates):
        updates.append(_condition("Running", "False"))
    for update in updates:
        conditions = _keep_times(conditions, update)
    new["conditions"] = conditions
    return new


def _keep_times(conditions: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """CDI's updateCondition: times move only when the status, message or reason does."""
    for i, c in enumerate(conditions):
        if c.get("type") != new["type"]:
            continue
        if (c.get("status"), c.get("message"), c.get("reason")) == (
            new["status"],
            new["message"],
            new["reason"],
        ):
            return conditions
        if c.get("status") == new["status"]:
            new = {**new, "lastTransitionTime": c.get("lastTransitionTime", new["lastTransitionTime"])}
        return [*conditions[:i], new, *conditions[i + 1 :]]
    return [*conditions, new]
