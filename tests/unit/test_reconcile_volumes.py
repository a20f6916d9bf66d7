"""PersistentVolumeClaims and PersistentVolumes, table by table (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    ABSENT,
    NS,
    ROLE,
    Change,
    Row,
    cn,
    engine_rows,
    hn,
    host_copy,
    obj,
    plain_copy,
    restarted_writes_nothing,
    table,
    with_meta,
)
from vnest.syncer.mappings import (
    FAKE_VOLUME_DRIVER,
    LABEL_FAKE_VOLUME,
    LABEL_MANAGED_BY,
    LABEL_VCLUSTER_NAMESPACE,
)

pytestmark = pytest.mark.unit

PVS = "sync.toHost.persistentVolumes.enabled=true"
REQUEST = {"requests": {"storage": "1Gi"}}


def pvc(name: str = "data", ns: str = "default", *, size: str = "1Gi", **spec: Any) -> dict:
    base = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    return obj("PersistentVolumeClaim", name, ns, spec={**base, **spec})


def hpvc(vpvc: dict, *, status: dict | None = None, **spec: Any) -> dict:
    """The host copy of `vpvc`, with its spec as the syncer sends it plus `spec`."""
    hspec = {k: v for k, v in vpvc["spec"].items() if k != "volumeName"}
    return host_copy(vpvc, spec={**hspec, **spec}, status=status)


DATA = pvc()
HDATA = hn("data")
BOUND = {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}
FAKE_PV = obj(
    "PersistentVolume",
    "pvc-123",
    labels={LABEL_FAKE_VOLUME: "true"},
    spec={
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "flexVolume": {"driver": FAKE_VOLUME_DRIVER},
    },
)


def pv(name: str = "share", *, labels: dict | None = None, status: dict | None = None, **spec: Any) -> dict:
    base = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "nfs": {"server": "nfs", "path": "/x"},
    }
    extra: dict[str, Any] = {"status": status} if status else {}
    return obj("PersistentVolume", name, labels=labels, spec={**base, **spec}, **extra)


SHARE = pv()
HSHARE = cn("share")

PVC_SHARED = engine_rows(
    "PersistentVolumeClaim",
    DATA,
    copy_of=hpvc,
    update="PATCH",
    changes=[
        Change("resize-patched", pvc(size="2Gi"), {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        Change(
            "label-change-followed",
            with_meta(DATA, labels={"team": "a"}),
            {"metadata": {"labels": {"team": "a"}}},
        ),
    ],
    not_ours={"spec": {"resources": REQUEST}},
    refusal=(403, 'persistentvolumeclaims "{}" is forbidden: exceeded quota'),
)

PVC_ROWS = [
    pytest.param(
        Row(
            virtual=[
                pvc(
                    selector={"matchLabels": {"tier": "gold"}},
                    dataSource={"kind": "PersistentVolumeClaim", "name": "origin"},
                    storageClassName="fast",
                )
            ],
            host_has={
                ("PersistentVolumeClaim", HDATA): {
                    "metadata": {"labels": {LABEL_MANAGED_BY: "vc"}},
                    "spec": {
                        "selector": ABSENT,
                        "volumeName": ABSENT,
                        "storageClassName": "fast",
                        "dataSource": {"kind": "PersistentVolumeClaim", "name": hn("origin")},
                        "resources": REQUEST,
                    },
                }
            },
            host_writes=["POST persistentvolumeclaims"],
        ),
        id="create-the-copy-selector-dropped-clone-source-translated",
    ),
    pytest.param(
        Row(
            virtual=[
                pvc(
                    dataSource={
                        "kind": "VolumeSnapshot",
                        "name": "snap",
                        "apiGroup": "snapshot.storage.k8s.io",
                    }
                )
            ],
            host_has={("PersistentVolumeClaim", HDATA): {"spec": {"dataSource": ABSENT}}},
        ),
        id="snapshot-source-dropped",
    ),
    pytest.param(
        Row(
            virtual=[pvc(storageClassName="fast")],
            sets=["sync.toHost.storageClasses.enabled=true"],
            host_has={("PersistentVolumeClaim", HDATA): {"spec": {"storageClassName": cn("fast")}}},
        ),
        id="class-names-its-host-copy-when-classes-sync",
    ),
    pytest.param(
        Row(
            virtual=[DATA],
            host=[hpvc(DATA, volumeName="pvc-123", status=BOUND)],
            virtual_has={
                ("PersistentVolumeClaim", "default/data"): {
                    "spec": {"volumeName": "pvc-123"},
                    "status": BOUND,
                },
                ("PersistentVolume", "pvc-123"): {
                    "metadata": {"labels": {LABEL_FAKE_VOLUME: "true"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "claimRef": {"namespace": "default", "name": "data", "uid": "data-uid"},
                        "flexVolume": {"driver": FAKE_VOLUME_DRIVER},
                        "persistentVolumeReclaimPolicy": "Delete",
                    },
                    "status": {"phase": "Bound"},
                },
            },
            host_writes=[],
        ),
        id="bound-on-the-host-fake-virtual-volume-and-status-back",
    ),
    pytest.param(
        Row(
            virtual=[DATA, SHARE],
            host=[plain_copy(SHARE), hpvc(DATA, volumeName=HSHARE, status=BOUND)],
            sets=[PVS],
            virtual_has={
                ("PersistentVolumeClaim", "default/data"): {"spec": {"volumeName": "share"}, "status": BOUND}
            },
            virtual_lacks=[("PersistentVolume", HSHARE)],
            host_writes=[],
        ),
        id="bound-to-the-copy-of-a-tenants-volume-bound-to-that-volume",
    ),
    pytest.param(
        Row(
            host=[hpvc(DATA, volumeName="pvc-123", status=BOUND)],
            virtual=[FAKE_PV],
            host_lacks=[("PersistentVolumeClaim", HDATA)],
            virtual_lacks=[("PersistentVolume", "pvc-123")],
        ),
        id="virtual-gone-copy-and-fake-volume-deleted",
    ),
    pytest.param(
        Row(
            virtual=[
                with_meta(
                    pvc(volumeName="pvc-123"),
                    deletionTimestamp="2024-01-01T00:00:00Z",
                    finalizers=["kubernetes.io/pvc-protection"],
                ),
                FAKE_PV,
            ],
            host=[hpvc(DATA, volumeName="pvc-123", status=BOUND)],
            host_lacks=[("PersistentVolumeClaim", HDATA)],
            virtual_lacks=[("PersistentVolume", "pvc-123")],
        ),
        id="virtual-deleting-copy-and-fake-volume-deleted",
    ),
]

PV_SHARED = engine_rows(
    "PersistentVolume",
    SHARE,
    sets=[PVS],
    changes=[
        Change(
            "capacity-change-put", pv(capacity={"storage": "2Gi"}), {"spec": {"capacity": {"storage": "2Gi"}}}
        )
    ],
    not_ours={},
    squatters={
        "same-cluster-name-other-host-namespace-not-ours": {
            LABEL_MANAGED_BY: "vc",
            LABEL_VCLUSTER_NAMESPACE: "elsewhere",
        }
    },
    refusal=(422, 'PersistentVolume "{}" is invalid: spec.nfs.server'),
)

PV_ROWS = [
    pytest.param(
        Row(
            virtual=[
                pv(
                    claimRef={
                        "kind": "PersistentVolumeClaim",
                        "namespace": "shop",
                        "name": "data",
                        "uid": "c1",
                    }
                )
            ],
            sets=[PVS],
            host_has={
                ("PersistentVolume", "vnest-share-x-team-host-x-vc"): {
                    "metadata": {
                        "labels": {LABEL_MANAGED_BY: "vc", LABEL_VCLUSTER_NAMESPACE: NS},
                        "ownerReferences": [{"kind": "ClusterRole", "name": ROLE, "uid": "role-uid"}],
                    },
                    "spec": {
                        "nfs": {"server": "nfs", "path": "/x"},
                        "claimRef": {"namespace": NS, "name": hn("data", "shop"), "uid": ABSENT},
                    },
                }
            },
            host_writes=["POST persistentvolumes"],
        ),
        id="create-the-copy-owned-by-the-clusterrole-claim-translated",
    ),
    pytest.param(
        Row(virtual=[FAKE_PV], sets=[PVS], host_lacks=[("PersistentVolume", cn("pvc-123"))], host_writes=[]),
        id="the-pvc-syncers-fake-volumes-never-copied",
    ),
    pytest.param(
        Row(
            virtual=[
                with_meta(
                    SHARE,
                    deletionTimestamp="2024-01-01T00:00:00Z",
                    finalizers=["kubernetes.io/pv-protection"],
                )
            ],
            sets=[PVS],
            virtual_lacks=[("PersistentVolume", "share")],
            host_writes=[],
        ),
        id="deleting-without-a-copy-protection-finalizer-released",
    ),
    pytest.param(
        Row(
            virtual=[pv(persistentVolumeReclaimPolicy="Delete", status={"phase": "Released"})],
            sets=[PVS],
            virtual_lacks=[("PersistentVolume", "share")],
            host_lacks=[("PersistentVolume", HSHARE)],
            host_writes=[],
        ),
        id="reclaimed-on-the-host-released-virtual-volume-deleted",
    ),
]


test_persistent_volume_claims = table("PersistentVolumeClaim", PVC_SHARED, PVC_ROWS)


test_persistent_volumes = table("PersistentVolume", PV_SHARED, PV_ROWS)


def test_a_restarted_volume_syncer_writes_nothing() -> None:
    restarted_writes_nothing(
        ("PersistentVolumeClaim", "PersistentVolume"), Row(virtual=[DATA, SHARE], sets=[PVS])
    )
