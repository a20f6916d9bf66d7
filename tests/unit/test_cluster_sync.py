"""Cluster-scoped sync without a cluster: names, translations, ownership and the from-host copies.

Syncers are built on a SyncContext whose clients talk to in-memory API servers (tests/unit/kubeapi.py),
which record what is sent; their informers are never run, the tests fill the caches themselves.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.unit.kubeapi import FakeApiServer
from tests.unit.syncing import context
from vnest import naming
from vnest.config.load import load_config
from vnest.config.models import VClusterConfig
from vnest.errors import UsageError
from vnest.kube.client import resource_of
from vnest.kube.objects import OwnerReference
from vnest.syncer import registry
from vnest.syncer.engine import SyncContext, same
from vnest.syncer.mappings import LABEL_FAKE_VOLUME as FAKE_VOLUME_LABEL
from vnest.syncer.mappings import LABEL_FROM_HOST, hashed_label_key
from vnest.syncer.resources.fromhost import (
    FromHostClasses,
    IngressClassesFromHost,
    PriorityClassesFromHost,
    StorageClassesFromHost,
    from_host_enabled,
    selector_string,
)
from vnest.syncer.resources.persistentvolumes import PersistentVolumeSyncer
from vnest.syncer.resources.pods import PodSyncer
from vnest.syncer.resources.priorityclasses import PriorityClassSyncer, pod_priority_class
from vnest.syncer.resources.pvcs import PersistentVolumeClaimSyncer
from vnest.syncer.resources.storageclasses import StorageClassSyncer, host_storage_class

NAME, NS = "vc", "team-host"
OWNER: OwnerReference = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "name": "r",
    "uid": "r-uid",
}


def _config(*sets: str) -> VClusterConfig:
    return load_config([], list(sets))


def _ctx(*sets: str, virtual: FakeApiServer | None = None, host: FakeApiServer | None = None) -> SyncContext:
    return context(*sets, virtual=virtual, host=host)


class _NoNodes:
    async def ensure(self, name: str, host_ip: str = "") -> None:
        raise AssertionError("translation binds no node")


def _pods(ctx: SyncContext) -> PodSyncer:
    return PodSyncer(ctx, None, _NoNodes(), {})


def _from_host_syncers(ctx: SyncContext) -> list[FromHostClasses]:
    """The registry's from-host class kinds, built as the syncer builds them."""
    deps = registry.Deps(ctx, None, _NoNodes(), None, {})
    made = [k.make(deps) for k in registry.KINDS if k.scope == "from-host" and k.name.startswith("FromHost")]
    return [s for s in made if isinstance(s, FromHostClasses)]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def _last(server: FakeApiServer) -> tuple[str, str, Any]:
    """The last request the server got: method, path and body."""
    request = server.requests[-1]
    return request.method, request.path, request.body


def _obj(kind: str, name: str, uid: str = "", labels: dict | None = None, **fields) -> dict:
    meta: dict[str, Any] = {"name": name, "uid": uid or f"{name}-uid", "resourceVersion": "1"}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": resource_of(kind).group_version, "kind": kind, "metadata": meta, **fields}


def _host_copy(ctx: SyncContext, kind: str, vobj: dict, **fields) -> dict:
    name = naming.host_cluster_scoped_name(vobj["metadata"]["name"], ctx.host_namespace, ctx.name)
    labels = {naming.LABEL_MANAGED_BY: ctx.name, naming.LABEL_VCLUSTER_NAMESPACE: ctx.host_namespace}
    hobj = _obj(kind, name, uid=f"host-{name}", labels=labels, **fields)
    hobj["metadata"]["annotations"] = {
        naming.ANNOTATION_NAME: vobj["metadata"]["name"],
        naming.ANNOTATION_UID: vobj["metadata"]["uid"],
    }
    return hobj


# ---- names and ownership -----------------------------------------------------------------


def test_cluster_scoped_names_follow_spec_section_4():
    assert naming.host_cluster_scoped_name("fast", "team-host", "vc") == "vnest-fast-x-team-host-x-vc"
    ctx = _ctx("sync.toHost.storageClasses.enabled=true")
    assert StorageClassSyncer(ctx).translate(_obj("StorageClass", "fast"))["metadata"]["name"] == (
        "vnest-fast-x-team-host-x-vc"
    )


def test_ownership_needs_the_cluster_and_its_host_namespace():
    ctx = _ctx()
    assert ctx.cluster.selector == "vnest.io/managed-by=vc,vnest.io/vcluster-namespace=team-host"
    mine = {naming.LABEL_MANAGED_BY: "vc", naming.LABEL_VCLUSTER_NAMESPACE: "team-host"}
    assert ctx.cluster.owns(_obj("PriorityClass", "p", labels=mine))
    # The same virtual cluster name in another host namespace is another tenant.
    other = {**mine, naming.LABEL_VCLUSTER_NAMESPACE: "other-host"}
    assert not ctx.cluster.owns(_obj("PriorityClass", "p", labels=other))
    assert not ctx.cluster.owns(_obj("PriorityClass", "p", labels={naming.LABEL_MANAGED_BY: "vc"}))
    assert not ctx.cluster.owns(None)


# ---- PriorityClasses -----------------------------------------------------------------------


def test_priority_class_copy_is_capped_labelled_and_never_the_default():
    ctx = _ctx("sync.toHost.priorityClasses.enabled=true")
    syncer = PriorityClassSyncer(ctx)
    syncer.owner = OWNER
    vobj = _obj(
        "PriorityClass",
        "high",
        labels={"team": "a", naming.LABEL_MANAGED_BY: "someone-else"},
        value=2_000_000_000,
        globalDefault=True,
        description="urgent",
        preemptionPolicy="Never",
    )
    vobj["metadata"]["annotations"] = {"note": "x", "vnest.io/object-name": "forged"}
    out = syncer.translate(vobj)
    assert out["apiVersion"] == "scheduling.k8s.io/v1"
    assert out["value"] == 1_000_000_000
    assert "globalDefault" not in out
    assert out["description"] == "urgent" and out["preemptionPolicy"] == "Never"
    meta = out["metadata"]
    assert meta["name"] == "vnest-high-x-team-host-x-vc"
    assert meta["labels"] == {
        "team": "a",
        hashed_label_key(naming.LABEL_MANAGED_BY): "someone-else",  # a tenant cannot forge ownership
        naming.LABEL_MANAGED_BY: "vc",
        naming.LABEL_VCLUSTER_NAMESPACE: "team-host",
    }
    assert meta["annotations"] == {
        "note": "x",
        naming.ANNOTATION_NAME: "high",
        naming.ANNOTATION_NAMESPACE: "",
        naming.ANNOTATION_UID: "high-uid",
        naming.ANNOTATION_KIND: "PriorityClass",
    }
    assert meta["ownerReferences"] == [OWNER]
    assert syncer.translate(_obj("PriorityClass", "low", value=-5))["value"] == -5


def test_system_priority_classes_are_copied_capped_never_the_hosts_own():
    syncer = PriorityClassSyncer(_ctx("sync.toHost.priorityClasses.enabled=true"))
    for system in ("system-node-critical", "system-cluster-critical"):
        assert syncer.wanted(system, _obj("PriorityClass", system))
        copy = syncer.translate(_obj("PriorityClass", system, value=2_000_001_000))
        assert copy["metadata"]["name"] == f"vnest-{system}-x-team-host-x-vc"
        assert copy["value"] == 1_000_000_000  # below the host's own system classes'
    assert syncer.wanted("high", _obj("PriorityClass", "high"))


@pytest.mark.parametrize(
    ("sets", "name", "expected"),
    [
        ([], "high", None),
        ([], "system-node-critical", None),
        (["sync.toHost.priorityClasses.enabled=true"], "high", "vnest-high-x-team-host-x-vc"),
        # Never the host's own system classes: the tenant's capped copies of them.
        (
            ["sync.toHost.priorityClasses.enabled=true"],
            "system-node-critical",
            "vnest-system-node-critical-x-team-host-x-vc",
        ),
        (
            ["sync.toHost.priorityClasses.enabled=true"],
            "system-cluster-critical",
            "vnest-system-cluster-critical-x-team-host-x-vc",
        ),
        (["sync.toHost.priorityClasses.enabled=true"], None, None),
        (["sync.fromHost.priorityClasses.enabled=true"], "high", "high"),
        (["sync.fromHost.priorityClasses.enabled=true"], "system-node-critical", None),
    ],
)
def test_pod_priority_class_name(sets, name, expected):
    assert pod_priority_class(_ctx(*sets), name) == expected


def test_pods_carry_the_translated_priority_class_and_no_priority():
    vpod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
        "spec": {
            "containers": [{"name": "web", "image": "nginx"}],
            "priorityClassName": "high",
            "priority": 1000,
            "preemptionPolicy": "PreemptLowerPriority",
        },
    }
    on = _pods(_ctx("sync.toHost.priorityClasses.enabled=true")).translate(vpod)["spec"]
    assert on["priorityClassName"] == "vnest-high-x-team-host-x-vc"
    assert "priority" not in on and "preemptionPolicy" not in on  # the host computes them from its class
    off = _pods(_ctx()).translate(vpod)["spec"]
    assert "priorityClassName" not in off and "priority" not in off


# ---- StorageClasses ------------------------------------------------------------------------


def test_storage_class_copy_keeps_its_fields_but_not_the_default_flag():
    syncer = StorageClassSyncer(_ctx("sync.toHost.storageClasses.enabled=true"))
    vobj = _obj(
        "StorageClass",
        "fast",
        provisioner="example.com/fast",
        parameters={"type": "ssd"},
        reclaimPolicy="Retain",
        volumeBindingMode="WaitForFirstConsumer",
        allowVolumeExpansion=True,
        mountOptions=["noatime"],
    )
    vobj["metadata"]["annotations"] = {
        "storageclass.kubernetes.io/is-default-class": "true",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    out = syncer.translate(vobj)
    assert out["apiVersion"] == "storage.k8s.io/v1"
    for field in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode", "mountOptions"):
        assert out[field] == vobj[field]
    assert out["allowVolumeExpansion"] is True
    assert "storageclass.kubernetes.io/is-default-class" not in out["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in out["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("sets", "name", "expected"),
    [
        ([], "fast", "fast"),
        (["sync.toHost.storageClasses.enabled=true"], "fast", "vnest-fast-x-team-host-x-vc"),
        (["sync.toHost.storageClasses.enabled=true"], "", ""),
        (["sync.toHost.storageClasses.enabled=true"], None, None),
    ],
)
def test_storage_class_references(sets, name, expected):
    assert host_storage_class(_ctx(*sets), name) == expected


def _pvc(**spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop", "uid": "c1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec},
    }


def test_pvcs_name_the_host_copy_of_their_class_when_classes_sync():
    on = PersistentVolumeClaimSyncer(_ctx("sync.toHost.storageClasses.enabled=true"))
    assert (
        on.translate(_pvc(storageClassName="fast"))["spec"]["storageClassName"]
        == "vnest-fast-x-team-host-x-vc"
    )
    assert on.translate(_pvc(storageClassName=""))["spec"]["storageClassName"] == ""
    assert "storageClassName" not in on.translate(_pvc())["spec"]
    off = PersistentVolumeClaimSyncer(_ctx())
    assert off.translate(_pvc(storageClassName="fast"))["spec"]["storageClassName"] == "fast"


def test_update_rewrites_only_what_differs_and_recreates_for_immutable_fields(host_api):
    ctx = _ctx("sync.toHost.storageClasses.enabled=true", host=host_api)
    syncer = StorageClassSyncer(ctx)
    vobj = _obj(
        "StorageClass", "fast", provisioner="p", reclaimPolicy="Delete", volumeBindingMode="Immediate"
    )
    desired = syncer.translate(vobj)
    hobj = copy.deepcopy(desired)
    hobj["metadata"]["uid"] = "h1"
    hobj = host_api.seed(hobj)
    _run(syncer.update_host(vobj, hobj, syncer.translate(vobj)))
    assert host_api.requests == []

    changed = syncer.translate({**vobj, "allowVolumeExpansion": True})
    _run(syncer.update_host(vobj, hobj, changed))
    method, path, body = _last(host_api)
    assert (method, path) == ("PUT", "/apis/storage.k8s.io/v1/storageclasses/vnest-fast-x-team-host-x-vc")
    assert body["allowVolumeExpansion"] is True
    assert body["metadata"]["resourceVersion"] == hobj["metadata"]["resourceVersion"]
    assert host_api.get("StorageClass", "vnest-fast-x-team-host-x-vc")["allowVolumeExpansion"] is True

    _run(syncer.update_host(vobj, hobj, syncer.translate({**vobj, "provisioner": "other"})))
    method, path, body = _last(host_api)
    assert method == "DELETE" and body["preconditions"] == {"uid": "h1"}
    assert host_api.get("StorageClass", "vnest-fast-x-team-host-x-vc") is None


def test_a_host_object_not_ours_is_left_alone_and_reported(virtual_api, host_api):
    ctx = _ctx("sync.toHost.storageClasses.enabled=true", virtual=virtual_api, host=host_api)
    syncer = StorageClassSyncer(ctx)
    vobj = _obj("StorageClass", "fast", provisioner="p")
    # Another virtual cluster of the same name, in another host namespace, made it: our create gets a 409.
    theirs = host_api.seed(
        _obj(
            "StorageClass",
            "vnest-fast-x-team-host-x-vc",
            labels={naming.LABEL_MANAGED_BY: "vc", naming.LABEL_VCLUSTER_NAMESPACE: "elsewhere"},
        )
    )
    assert _run(syncer.patcher.create(vobj, syncer.translate(vobj))) is None
    _run(syncer.patcher.delete(theirs))
    assert [r.method for r in host_api.requests] == ["POST", "GET"]
    assert host_api.get("StorageClass", "vnest-fast-x-team-host-x-vc") == theirs
    events = virtual_api.requests
    assert len(events) == 1 and events[0].body["reason"] == "SyncError"
    assert events[0].body["involvedObject"]["name"] == "fast"


# ---- PersistentVolumes ---------------------------------------------------------------------


def _pv(name: str, labels: dict | None = None, **spec) -> dict:
    base = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "nfs": {"server": "s", "path": "/x"},
    }
    return _obj("PersistentVolume", name, labels=labels, spec={**base, **spec})


def test_pv_copy_translates_claim_and_class():
    ctx = _ctx("sync.toHost.persistentVolumes.enabled=true", "sync.toHost.storageClasses.enabled=true")
    syncer = PersistentVolumeSyncer(ctx)
    vpv = _pv(
        "share",
        storageClassName="manual",
        claimRef={"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "c1"},
    )
    out = syncer.translate(vpv)
    assert out["metadata"]["name"] == "vnest-share-x-team-host-x-vc"
    assert out["spec"]["nfs"] == {"server": "s", "path": "/x"}
    assert out["spec"]["storageClassName"] == "vnest-manual-x-team-host-x-vc"
    assert out["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-host",
        "name": "data-x-shop-x-vc",
    }
    plain = PersistentVolumeSyncer(_ctx("sync.toHost.persistentVolumes.enabled=true")).translate(
        _pv("share", storageClassName="manual")
    )
    assert plain["spec"]["storageClassName"] == "manual" and "claimRef" not in plain["spec"]


def test_the_pvc_syncers_fake_volumes_are_never_copied():
    ctx = _ctx("sync.toHost.persistentVolumes.enabled=true")
    syncer = PersistentVolumeSyncer(ctx)
    syncer.virtual.store["pvc-123"] = _pv("pvc-123", labels={FAKE_VOLUME_LABEL: "true"})
    syncer.virtual.store["share"] = _pv("share")
    assert not syncer.wanted("pvc-123", syncer.virtual.store["pvc-123"])
    assert syncer.wanted("share", syncer.virtual.store["share"])
    # Without the label, still not copied: one of this cluster's host claims is bound to that host volume.
    syncer.virtual.store["pvc-456"] = _pv("pvc-456")
    assert syncer.wanted("pvc-456", syncer.virtual.store["pvc-456"])
    hpvc = {
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data-x-shop-x-vc",
            "namespace": NS,
            "uid": "h1",
            "labels": {"vnest.io/managed-by": NAME},
        },
        "spec": {"volumeName": "pvc-456"},
    }
    _run(_with_loop(lambda: syncer._on_host_claim(None, hpvc)))
    assert not syncer.wanted("pvc-456", syncer.virtual.store["pvc-456"])
    _run(_with_loop(lambda: syncer._on_host_claim(hpvc, None)))
    assert syncer.wanted("pvc-456", syncer.virtual.store["pvc-456"])


async def _with_loop(fn):
    return fn()  # handlers queue keys, which needs a running loop


def test_pv_status_comes_back_with_the_claim_in_virtual_names(virtual_api):
    ctx = _ctx("sync.toHost.persistentVolumes.enabled=true", virtual=virtual_api)
    syncer = PersistentVolumeSyncer(ctx)
    vpv = virtual_api.seed(_pv("share"))
    hpvc = {
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data-x-shop-x-vc",
            "namespace": NS,
            "uid": "host-claim",
            "labels": {naming.LABEL_MANAGED_BY: NAME},
            "annotations": {
                naming.ANNOTATION_NAME: "data",
                naming.ANNOTATION_NAMESPACE: "shop",
                naming.ANNOTATION_UID: "c1",
            },
        },
        "spec": {},
    }
    syncer.host_claims.store[f"{NS}/data-x-shop-x-vc"] = hpvc
    hpv = _host_copy(ctx, "PersistentVolume", vpv, spec=copy.deepcopy(vpv["spec"]), status={"phase": "Bound"})
    hpv["spec"]["claimRef"] = {"namespace": NS, "name": "data-x-shop-x-vc", "uid": "host-claim"}
    _run(syncer.status_back(vpv, hpv))
    (m1, p1, spec_put), (m2, p2, status_put) = [(r.method, r.path, r.body) for r in virtual_api.requests]
    assert (m1, p1) == ("PUT", "/api/v1/persistentvolumes/share")
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop",
        "name": "data",
        "uid": "c1",
    }
    assert spec_put["spec"]["claimRef"] == claim
    assert (m2, p2) == ("PUT", "/api/v1/persistentvolumes/share/status")
    assert status_put["status"] == {"phase": "Bound"}
    stored = virtual_api.get("PersistentVolume", "share")
    assert stored["spec"]["claimRef"] == claim and stored["status"] == {"phase": "Bound"}
    # A claim of another tenant (not ours) is never told.
    syncer.host_claims.store[f"{NS}/data-x-shop-x-vc"]["metadata"]["labels"] = {
        naming.LABEL_MANAGED_BY: "other"
    }
    assert syncer.virtual_claim(hpv) is None


def test_claims_bound_to_a_tenant_volume_copy_bind_to_the_virtual_volume():
    ctx = _ctx("sync.toHost.persistentVolumes.enabled=true")
    pvcs = PersistentVolumeClaimSyncer(ctx)
    vpv = _pv("share")
    hpv = _host_copy(ctx, "PersistentVolume", vpv)
    assert pvcs.host_volumes is not None and pvcs.virtual_volumes is not None
    pvcs.host_volumes.store[hpv["metadata"]["name"]] = hpv
    pvcs.virtual_volumes.store["share"] = vpv
    assert pvcs.virtual_volume_of("vnest-share-x-team-host-x-vc") == "share"
    assert pvcs.virtual_volume_of("pvc-123") is None  # the host's own volume: a fake one is shown
    # Pre-bound to the tenant's volume: the host claim names its copy.
    assert pvcs.translate(_pvc(volumeName="share"))["spec"]["volumeName"] == "vnest-share-x-team-host-x-vc"
    assert "volumeName" not in pvcs.translate(_pvc(volumeName="unknown"))["spec"]
    assert PersistentVolumeClaimSyncer(_ctx()).virtual_volume_of("vnest-share-x-team-host-x-vc") is None


# ---- from host -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, "!vnest.io/managed-by"),
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2,!vnest.io/managed-by"),
        (
            {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                    {"key": "zone", "operator": "NotIn", "values": ["x"]},
                    {"key": "shared", "operator": "Exists"},
                    {"key": "private", "operator": "DoesNotExist"},
                ]
            },
            "tier in (gold,silver),zone notin (x),shared,!private,!vnest.io/managed-by",
        ),
    ],
)
def test_selectors_never_select_what_vnest_made(selector, expected):
    assert selector_string(selector) == expected


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([], False),  # auto, without a virtual scheduler
        (["sync.fromHost.storageClasses.enabled=true"], True),
        (["controlPlane.advanced.virtualScheduler.enabled=true"], True),
        (["controlPlane.distro.k8s.scheduler.enabled=true"], True),
        (
            [
                "controlPlane.advanced.virtualScheduler.enabled=true",
                "sync.toHost.storageClasses.enabled=true",
            ],
            False,
        ),
        (
            [
                "controlPlane.advanced.virtualScheduler.enabled=true",
                "sync.toHost.persistentVolumeClaims.enabled=false",
            ],
            False,
        ),
        (
            [
                "controlPlane.advanced.virtualScheduler.enabled=true",
                "sync.fromHost.storageClasses.enabled=false",
            ],
            False,
        ),
    ],
)
def test_storage_classes_auto_is_vclusters(sets, expected):
    if any("cheduler" in s for s in sets):
        sets = [*sets, "sync.fromHost.nodes.enabled=true"]  # what a virtual scheduler needs
    assert from_host_enabled(_config(*sets), "storage_classes") is expected


@pytest.mark.parametrize("kind", ["priorityClasses", "storageClasses"])
def test_a_class_syncs_one_way_only(kind):
    with pytest.raises(UsageError) as err:
        load_config([], [f"sync.toHost.{kind}.enabled=true", f"sync.fromHost.{kind}.enabled=true"])
    assert str(err.value).startswith(f"sync.fromHost.{kind}.enabled: cannot be true while sync.toHost.{kind}")
    load_config([], ["sync.toHost.storageClasses.enabled=true"])  # with fromHost's default, auto


def test_selector_config_is_checked():
    with pytest.raises(UsageError) as err:
        load_config([], ["sync.fromHost.ingressClasses.selector.matchExpressions=[{key: a, operator: In}]"])
    assert "matchExpressions[0].values: required with operator In" in str(err.value)


def _from_host(syncer_class, *sets: str, virtual: FakeApiServer | None = None):
    return syncer_class(_ctx(*sets, virtual=virtual))


def test_from_host_copy_carries_the_host_fields_and_our_labels():
    syncer = _from_host(StorageClassesFromHost, "sync.fromHost.storageClasses.enabled=true")
    hobj = _obj("StorageClass", "standard", labels={"tier": "std", "vnest.io/x": "y"}, provisioner="p")
    hobj["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    want = syncer.translate(hobj)
    assert want["metadata"] == {
        "name": "standard",
        "labels": {"tier": "std", naming.LABEL_MANAGED_BY: NAME, LABEL_FROM_HOST: "true"},
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    }
    assert want["provisioner"] == "p"


def test_from_host_reconcile_creates_reverts_and_deletes(virtual_api):
    syncer = _from_host(
        PriorityClassesFromHost, "sync.fromHost.priorityClasses.enabled=true", virtual=virtual_api
    )
    assert syncer.host is not None and syncer.virtual is not None
    hobj = _obj("PriorityClass", "batch", labels={"tier": "b"}, value=100, description="host's")
    syncer.host.store["batch"] = hobj
    calls = virtual_api.requests

    _run(syncer.reconcile("batch"))
    assert (calls[-1].method, calls[-1].path) == ("POST", "/apis/scheduling.k8s.io/v1/priorityclasses")
    made = virtual_api.get("PriorityClass", "batch")
    assert made is not None

    # In line with the host: nothing to do.
    syncer.virtual.store["batch"] = made
    _run(syncer.reconcile("batch"))
    assert len(calls) == 1

    # A tenant's edit is reverted.
    edited = copy.deepcopy(made)
    edited["description"] = "mine now"
    edited["metadata"]["labels"]["extra"] = "1"
    syncer.virtual.store["batch"] = edited = virtual_api.seed(edited)  # the tenant's write
    _run(syncer.reconcile("batch"))
    method, path, body = _last(virtual_api)
    assert (method, path) == ("PUT", "/apis/scheduling.k8s.io/v1/priorityclasses/batch")
    assert body["description"] == "host's" and "extra" not in body["metadata"]["labels"]
    assert body["metadata"]["resourceVersion"] == edited["metadata"]["resourceVersion"]

    # The host's value changed (a new object): the copy is deleted, and made again when its
    # DELETED event comes back.
    syncer.virtual.store["batch"] = virtual_api.get("PriorityClass", "batch")
    syncer.host.store["batch"] = {**hobj, "value": 200}
    _run(syncer.reconcile("batch"))
    method, _, body = _last(virtual_api)
    assert method == "DELETE" and body["preconditions"] == {"uid": made["metadata"]["uid"]}
    del syncer.virtual.store["batch"]
    _run(syncer.reconcile("batch"))
    assert calls[-1].method == "POST" and virtual_api.get("PriorityClass", "batch")["value"] == 200

    # The host object gone: so goes the copy.
    syncer.virtual.store["batch"] = virtual_api.get("PriorityClass", "batch")
    del syncer.host.store["batch"]
    _run(syncer.reconcile("batch"))
    assert calls[-1].method == "DELETE"
    assert virtual_api.get("PriorityClass", "batch") is None


def test_from_host_never_touches_a_tenants_object_of_the_same_name(virtual_api):
    syncer = _from_host(
        IngressClassesFromHost, "sync.fromHost.ingressClasses.enabled=true", virtual=virtual_api
    )
    assert syncer.host is not None and syncer.virtual is not None
    syncer.host.store["nginx"] = _obj("IngressClass", "nginx", spec={"controller": "k8s.io/ingress-nginx"})
    tenants = virtual_api.seed(_obj("IngressClass", "nginx", spec={"controller": "example.com/mine"}))
    syncer.virtual.store["nginx"] = tenants
    _run(syncer.reconcile("nginx"))
    _run(syncer.reconcile("nginx"))
    calls = virtual_api.requests
    assert len(calls) == 1  # one event, no change
    assert (
        calls[0].method == "POST"
        and calls[0].body["kind"] == "Event"
        and calls[0].body["reason"] == "SyncError"
    )
    # Nor is it deleted when the host object goes.
    del syncer.host.store["nginx"]
    _run(syncer.reconcile("nginx"))
    assert len(calls) == 1
    assert virtual_api.get("IngressClass", "nginx") == tenants


def test_system_priority_classes_stay_the_virtual_clusters_own(virtual_api):
    syncer = _from_host(
        PriorityClassesFromHost, "sync.fromHost.priorityClasses.enabled=true", virtual=virtual_api
    )
    assert syncer.host is not None
    syncer.host.store["system-node-critical"] = _obj(
        "PriorityClass", "system-node-critical", value=2000001000
    )
    _run(syncer.reconcile("system-node-critical"))
    assert virtual_api.requests == []


def test_a_kind_turned_off_only_cleans_up_its_copies(virtual_api):
    ctx = _ctx(virtual=virtual_api)
    kinds = {s.kind: s for s in _from_host_syncers(ctx)}
    assert set(kinds) == {
        "FromHostStorageClass",
        "FromHostIngressClass",
        "FromHostRuntimeClass",
        "FromHostPriorityClass",
    }
    syncer = kinds["FromHostRuntimeClass"]
    assert syncer.host not in ctx.informers.values()  # never run: the chart grants no access
    copy_ = _obj("RuntimeClass", "gvisor", labels={naming.LABEL_MANAGED_BY: NAME, LABEL_FROM_HOST: "true"})
    theirs = _obj("RuntimeClass", "kata", labels={})
    virtual_api.seed(copy_)
    theirs = virtual_api.seed(theirs)
    _run(syncer._clean_up())
    deletes = [r for r in virtual_api.requests if r.method == "DELETE"]
    assert [(r.path, r.body["preconditions"]) for r in deletes] == [
        ("/apis/node.k8s.io/v1/runtimeclasses/gvisor", {"uid": "gvisor-uid"})
    ]
    assert virtual_api.objects("RuntimeClass") == [theirs]


def test_same_treats_empty_as_absent():
    assert same(None, False) and same({}, None) and same([], None) and same(0, None)
    assert not same(1, 2) and not same({"a": 1}, {})
