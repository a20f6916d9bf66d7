"""Cluster-scoped classes, table by table: PriorityClasses and StorageClasses to the host, the host's
classes into the virtual cluster (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    ABSENT,
    NS,
    OWNER,
    Change,
    Row,
    check,
    cn,
    engine_rows,
    obj,
    plain_copy,
    restarted_writes_nothing,
    run_row,
    table,
)
from vnest.syncer.mappings import (
    ANNOTATION_KIND,
    ANNOTATION_NAME,
    LABEL_FROM_HOST,
    LABEL_MANAGED_BY,
    LABEL_VCLUSTER_NAMESPACE,
)

pytestmark = pytest.mark.unit

OURS = {LABEL_MANAGED_BY: "vc", LABEL_VCLUSTER_NAMESPACE: NS}

# ---- PriorityClasses to the host -------------------------------------------------------------

PRIORITY = "sync.toHost.priorityClasses.enabled=true"


def pc(name: str = "high", value: int = 900_000, **fields: Any) -> dict:
    return obj("PriorityClass", name, value=value, **fields)


ANOTHER_TENANTS = {**OURS, LABEL_VCLUSTER_NAMESPACE: "other-host"}  # a copy of a cluster of the same name
HIGH = pc(description="tenant high", labels={"tier": "gold"})
HHIGH = cn("high")

PRIORITY_SHARED = engine_rows(
    "PriorityClass",
    HIGH,
    sets=[PRIORITY],
    changes=[
        Change("description-change-put", {**HIGH, "description": "changed"}, {"description": "changed"}),
    ],
    relabel={"tier": "silver"},
    not_ours={"labels": {"owner": "host-admin"}, "value": 7},
    squatters={
        "ownership-needs-both-labels-managed-by-alone-is-not-ours": {LABEL_MANAGED_BY: "vc"},
        "same-cluster-name-in-another-host-namespace-is-not-ours": ANOTHER_TENANTS,
    },
    never_deleted={"another-tenants-copy-never-deleted": ANOTHER_TENANTS},
    refusal=(403, 'priorityclasses.scheduling.k8s.io "{}" is forbidden: quota'),
)

PRIORITY_ROWS = [
    pytest.param(
        Row(
            virtual=[
                pc(value=2_000_000_000, globalDefault=True, description="urgent", labels={"tier": "gold"})
            ],
            sets=[PRIORITY],
            host_has={
                ("PriorityClass", "vnest-high-x-team-host-x-vc"): {
                    "metadata": {
                        "labels": {"tier": "gold", **OURS},
                        "annotations": {ANNOTATION_NAME: "high", ANNOTATION_KIND: "PriorityClass"},
                        "ownerReferences": [OWNER],
                    },
                    "value": 1_000_000_000,
                    "globalDefault": ABSENT,
                    "description": "urgent",
                }
            },
            host_writes=["POST priorityclasses"],
        ),
        id="create-capped-never-the-default-owned-by-the-clusterrole",
    ),
    pytest.param(
        Row(
            virtual=[pc("system-node-critical", 2_000_001_000)],
            sets=[PRIORITY],
            host_has={("PriorityClass", cn("system-node-critical")): {"value": 1_000_000_000}},
        ),
        id="the-virtual-clusters-system-class-copied-capped",
    ),
    pytest.param(
        Row(
            virtual=[HIGH],
            host=[plain_copy({**HIGH, "value": 5})],
            sets=[PRIORITY],
            host_has={("PriorityClass", HHIGH): {"value": 900_000}},
            host_writes=[f"DELETE priorityclasses/{HHIGH}", "POST priorityclasses"],
        ),
        id="immutable-value-drifted-on-the-host-recreated",
    ),
]


test_priority_classes = table("PriorityClass", PRIORITY_SHARED, PRIORITY_ROWS)


# ---- StorageClasses to the host --------------------------------------------------------------

STORAGE = "sync.toHost.storageClasses.enabled=true"
DEFAULT_CLASS = {"storageclass.kubernetes.io/is-default-class": "true"}


def sc(name: str = "fast", provisioner: str = "example.com/fast", **fields: Any) -> dict:
    return obj("StorageClass", name, provisioner=provisioner, **{"reclaimPolicy": "Delete", **fields})


FAST = sc()
HFAST = cn("fast")

STORAGE_SHARED = engine_rows(
    "StorageClass",
    FAST,
    sets=[STORAGE],
    changes=[
        Change("mutable-field-change-put", sc(allowVolumeExpansion=True), {"allowVolumeExpansion": True})
    ],
    not_ours={"provisioner": "theirs"},
    refusal=(422, 'StorageClass.storage.k8s.io "{}" is invalid: provisioner'),
)

STORAGE_ROWS = [
    pytest.param(
        Row(
            virtual=[
                sc(
                    annotations={**DEFAULT_CLASS, "note": "x"},
                    parameters={"type": "ssd"},
                    volumeBindingMode="WaitForFirstConsumer",
                )
            ],
            sets=[STORAGE],
            host_has={
                ("StorageClass", HFAST): {
                    "metadata": {
                        "labels": OURS,
                        "annotations": {"note": "x", "storageclass.kubernetes.io/is-default-class": ABSENT},
                        "ownerReferences": [OWNER],
                    },
                    "provisioner": "example.com/fast",
                    "parameters": {"type": "ssd"},
                    "volumeBindingMode": "WaitForFirstConsumer",
                }
            },
            host_writes=["POST storageclasses"],
        ),
        id="create-without-the-default-flag",
    ),
    pytest.param(
        Row(
            virtual=[FAST],
            host=[plain_copy({**FAST, "provisioner": "example.com/other"})],
            sets=[STORAGE],
            host_has={("StorageClass", HFAST): {"provisioner": "example.com/fast"}},
            host_writes=[f"DELETE storageclasses/{HFAST}", "POST storageclasses"],
        ),
        id="immutable-provisioner-drifted-recreated",
    ),
]


test_storage_classes = table("StorageClass", STORAGE_SHARED, STORAGE_ROWS)


def test_restarted_class_syncers_write_nothing() -> None:
    row = Row(virtual=[HIGH, sc(annotations=DEFAULT_CLASS)], sets=[PRIORITY, STORAGE])
    restarted_writes_nothing(("PriorityClass", "StorageClass"), row)


# ---- the host's classes, copied in -----------------------------------------------------------

FROM_HOST = {"labels": {LABEL_MANAGED_BY: "vc", LABEL_FROM_HOST: "true"}}


def copied(hobj: dict, **fields: Any) -> dict:
    """Our virtual copy of host object `hobj`."""
    labels = {**(hobj["metadata"].get("labels") or {}), **FROM_HOST["labels"]}
    out = obj(hobj["kind"], hobj["metadata"]["name"], uid=f"copy-{hobj['metadata']['name']}", labels=labels)
    return {**out, **{k: v for k, v in hobj.items() if k not in ("metadata", "apiVersion", "kind")}, **fields}


HOST_SC = obj(
    "StorageClass", "standard", labels={"tier": "std"}, provisioner="example.com/std", reclaimPolicy="Delete"
)
HOST_PC = obj("PriorityClass", "batch", labels={"tier": "batch"}, value=100, description="the host's")
HOST_IC = obj("IngressClass", "nginx", spec={"controller": "k8s.io/ingress-nginx"})
SANDBOX = obj("RuntimeClass", "gvisor", labels={"sandbox": "gvisor"}, handler="runsc")
PLAIN_RC = obj("RuntimeClass", "kata", handler="kata")


def enabled(field: str) -> str:
    return f"sync.fromHost.{field}.enabled=true"


FROM_HOST_ROWS = [
    pytest.param(
        "FromHostStorageClass",
        Row(
            host=[HOST_SC],
            sets=[enabled("storageClasses")],
            virtual_has={
                ("StorageClass", "standard"): {
                    "metadata": {"labels": {"tier": "std", **FROM_HOST["labels"]}},
                    "provisioner": "example.com/std",
                }
            },
            host_writes=[],
            virtual_writes=["POST storageclasses"],
        ),
        id="storage-class-copied-in",
    ),
    pytest.param(
        "FromHostPriorityClass",
        Row(
            host=[HOST_PC],
            virtual=[
                copied(
                    HOST_PC,
                    description="mine now",
                    metadata={
                        "name": "batch",
                        "uid": "copy-batch",
                        "labels": {**FROM_HOST["labels"], "tier": "changed", "extra": "1"},
                    },
                )
            ],
            sets=[enabled("priorityClasses")],
            virtual_has={
                ("PriorityClass", "batch"): {
                    "description": "the host's",
                    "metadata": {"labels": {"tier": "batch", "extra": ABSENT}},
                }
            },
            virtual_writes=["PUT priorityclasses/batch"],
        ),
        id="a-tenants-edit-of-a-copy-reverted",
    ),
    pytest.param(
        "FromHostPriorityClass",
        Row(
            host=[HOST_PC],
            virtual=[copied(HOST_PC, value=50)],
            sets=[enabled("priorityClasses")],
            virtual_has={("PriorityClass", "batch"): {"value": 100}},
            virtual_writes=["DELETE priorityclasses/batch", "POST priorityclasses"],
        ),
        id="immutable-value-changed-on-the-host-copy-made-again",
    ),
    pytest.param(
        "FromHostIngressClass",
        Row(
            host=[HOST_IC],
            virtual=[copied(HOST_IC)],
            sets=[enabled("ingressClasses")],
            virtual_writes=[],
        ),
        id="in-line-no-write",
    ),
    pytest.param(
        "FromHostIngressClass",
        Row(
            host=[HOST_IC],
            virtual=[obj("IngressClass", "nginx", spec={"controller": "example.com/mine"})],
            sets=[enabled("ingressClasses")],
            virtual_has={
                ("IngressClass", "nginx"): {
                    "spec": {"controller": "example.com/mine"},
                    "metadata": {"labels": ABSENT},
                }
            },
            events=[("SyncError", "host IngressClass nginx is not copied into the virtual cluster", "nginx")],
            virtual_writes=[],
        ),
        id="a-tenants-own-object-of-the-name-left-alone-and-reported",
    ),
    pytest.param(
        "FromHostIngressClass",
        Row(
            virtual=[obj("IngressClass", "nginx", spec={"controller": "example.com/mine"})],
            sets=[enabled("ingressClasses")],
            virtual_has={("IngressClass", "nginx"): {"spec": {"controller": "example.com/mine"}}},
            virtual_writes=[],
        ),
        id="a-tenants-own-object-outlives-the-hosts",
    ),
    pytest.param(
        "FromHostStorageClass",
        Row(
            virtual=[copied(HOST_SC)],
            sets=[enabled("storageClasses")],
            virtual_lacks=[("StorageClass", "standard")],
            virtual_writes=["DELETE storageclasses/standard"],
        ),
        id="host-object-gone-copy-deleted",
    ),
    pytest.param(
        "FromHostPriorityClass",
        Row(
            host=[
                obj("PriorityClass", "vnest-x", labels={LABEL_MANAGED_BY: "someone"}, value=1),
                obj("PriorityClass", "system-node-critical", value=2_000_001_000),
            ],
            sets=[enabled("priorityClasses")],
            virtual_lacks=[("PriorityClass", "vnest-x"), ("PriorityClass", "system-node-critical")],
            virtual_writes=[],
        ),
        id="vnests-own-copies-and-system-classes-never-copied-in",
    ),
    pytest.param(
        "FromHostRuntimeClass",
        Row(
            host=[SANDBOX, PLAIN_RC],
            sets=[
                enabled("runtimeClasses"),
                "sync.fromHost.runtimeClasses.selector.matchLabels.sandbox=gvisor",
            ],
            virtual_has={("RuntimeClass", "gvisor"): {"handler": "runsc"}},
            virtual_lacks=[("RuntimeClass", "kata")],
        ),
        id="only-what-the-selector-selects",
    ),
    pytest.param(
        "FromHostRuntimeClass",
        Row(
            host=[SANDBOX],
            virtual=[copied(SANDBOX), obj("RuntimeClass", "kata", handler="kata")],
            virtual_lacks=[("RuntimeClass", "gvisor")],
            virtual_has={("RuntimeClass", "kata"): {"handler": "kata"}},
            virtual_writes=["DELETE runtimeclasses/gvisor"],
        ),
        id="turned-off-only-its-copies-are-cleaned-up",
    ),
]


@pytest.mark.parametrize(("kind", "row"), FROM_HOST_ROWS)
def test_classes_from_host(kind: str, row: Row) -> None:
    check(row, run_row(kind, row))
