"""Cluster-scoped sync against the real local host: PriorityClasses, StorageClasses and PVs to the host,
the host's Storage/Ingress/Runtime/PriorityClasses into the virtual cluster, and nothing with the defaults."""

from __future__ import annotations

import functools
import json

import pytest

from vnest import naming
from vnest.procs import wait_until

from .vcluster import VirtualCluster

HOST = "vnest-host"
WAIT = 60
CLUSTER_KINDS = "priorityclasses,storageclasses,persistentvolumes,ingressclasses,runtimeclasses"


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


class Cluster(VirtualCluster):
    """A virtual cluster made for one test, deleted after it with every host object labelled for it."""

    def __init__(self, env, name: str, namespace: str, values: dict | None = None) -> None:
        super().__init__(env, name, namespace)
        args = ["create", name, "-n", namespace, "--no-connect"]
        if values is not None:
            path = env.root / f"{name}-values.json"  # JSON is YAML
            path.write_text(json.dumps(values))
            args += ["-f", str(path)]
        env.vnest(*args)

    def host_name(self, name: str) -> str:
        return naming.host_cluster_scoped_name(name, self.namespace, self.name)

    def delete(self) -> None:
        self.env.vnest("delete", self.name, "-n", self.namespace, check=False)
        # The ClusterRole owned the copies, so the host's garbage collector removes them; a failed
        # test must not leave any either way.
        host_delete(self.env, CLUSTER_KINDS, "-l", f"{naming.LABEL_MANAGED_BY}={self.name}")


def host_get(env, kind: str, name: str, namespace: str | None = None) -> dict | None:
    scope = ["-n", namespace] if namespace else []
    proc = env.kubectl("--context", HOST, "get", kind, name, *scope, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def host_apply(env, obj: dict) -> None:
    path = env.root / f"host-{obj['kind']}-{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    env.kubectl("--context", HOST, "apply", "-f", str(path))


def host_delete(env, kind: str, *names: str) -> None:
    env.kubectl("--context", HOST, "delete", kind, *names, "--ignore-not-found", "--wait=false", check=False)


def _pod(name: str, priority_class: str, claim: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": name, "image": "nginx"}], "priorityClassName": priority_class}
    if claim:
        spec["containers"][0]["volumeMounts"] = [{"name": "d", "mountPath": "/d"}]
        spec["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def test_priority_storage_classes_and_volumes_sync_to_the_host(env):
    values = {
        "sync": {
            "toHost": {
                "priorityClasses": {"enabled": True},
                "storageClasses": {"enabled": True},
                "persistentVolumes": {"enabled": True},
            }
        }
    }
    # A host object at a copy's name that someone else made is never touched and is reported, and a
    # tenant's label edit follows: tests/unit/test_reconcile_classes.py (test_priority_classes rows).
    vc = Cluster(env, "cs-to", "cs-to-host", values)
    try:
        role = host_get(env, "clusterrole", naming.cluster_role("cs-to", "cs-to-host"))
        assert role is not None

        # PriorityClasses: translated name, our labels, the value, owned by the ClusterRole.
        vc.apply(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "cs-high", "labels": {"tier": "gold"}},
                "value": 900_000,
                "globalDefault": True,
                "description": "tenant high",
            }
        )
        hpc = wait_until(lambda: host_get(env, "priorityclass", vc.host_name("cs-high")), WAIT, "the host PC")
        assert hpc["metadata"]["name"] == "vnest-cs-high-x-cs-to-host-x-cs-to"
        assert hpc["metadata"]["labels"] == {
            "tier": "gold",
            naming.LABEL_MANAGED_BY: "cs-to",
            naming.LABEL_VCLUSTER_NAMESPACE: "cs-to-host",
        }
        assert hpc["metadata"]["annotations"][naming.ANNOTATION_NAME] == "cs-high"
        assert hpc["metadata"]["annotations"][naming.ANNOTATION_KIND] == "PriorityClass"
        assert hpc["value"] == 900_000 and hpc["description"] == "tenant high"
        assert not hpc.get("globalDefault")  # never the host's default
        assert hpc["metadata"]["ownerReferences"][0]["uid"] == role["metadata"]["uid"]
        # The virtual cluster's own system classes go too, capped: never above the host's.
        for system in ("system-node-critical", "system-cluster-critical"):
            copy = wait_until(
                functools.partial(host_get, env, "priorityclass", vc.host_name(system)), WAIT, system
            )
            assert copy["value"] == 1_000_000_000

        # Pods name the host copy (a system class's too); the host computes their priority.
        vc.apply(_pod("prio", "cs-high"))
        vc.apply(_pod("crit", "system-cluster-critical"))
        hpod = wait_until(
            lambda: host_get(env, "pod", "prio-x-default-x-cs-to", "cs-to-host"), WAIT, "the host pod"
        )
        assert hpod["spec"]["priorityClassName"] == "vnest-cs-high-x-cs-to-host-x-cs-to"
        assert hpod["spec"]["priority"] == 900_000
        crit = wait_until(
            lambda: host_get(env, "pod", "crit-x-default-x-cs-to", "cs-to-host"), WAIT, "the critical pod"
        )
        assert crit["spec"]["priorityClassName"] == vc.host_name("system-cluster-critical")
        assert crit["spec"]["priority"] == 1_000_000_000  # was the host's 2000000000 before

        # StorageClasses: translated, without the default flag.
        vc.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "cs-manual",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/no-provisioner",
                "parameters": {"speed": "fast"},
                "reclaimPolicy": "Retain",
                "volumeBindingMode": "Immediate",
            }
        )
        hsc = wait_until(
            lambda: host_get(env, "storageclass", vc.host_name("cs-manual")), WAIT, "the host SC"
        )
        assert hsc["provisioner"] == "kubernetes.io/no-provisioner"
        assert hsc["parameters"] == {"speed": "fast"} and hsc["reclaimPolicy"] == "Retain"
        assert "storageclass.kubernetes.io/is-default-class" not in hsc["metadata"].get("annotations", {})
        assert hsc["metadata"]["labels"][naming.LABEL_VCLUSTER_NAMESPACE] == "cs-to-host"

        # A tenant's PV: on the host under the translated name, with the translated class.
        vc.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "cs-share"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "cs-manual",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": "/tmp/vnest-e2e-cs-share"},
                },
            }
        )
        hpv = wait_until(lambda: host_get(env, "pv", vc.host_name("cs-share")), WAIT, "the host PV")
        assert hpv["metadata"]["name"] == "vnest-cs-share-x-cs-to-host-x-cs-to"
        assert hpv["spec"]["storageClassName"] == "vnest-cs-manual-x-cs-to-host-x-cs-to"
        assert hpv["spec"]["hostPath"]["path"] == "/tmp/vnest-e2e-cs-share"
        assert hpv["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "cs-to"

        # A claim of that class binds on the host to that PV, and in the virtual cluster to the tenant's PV.
        vc.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": "default"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "cs-manual",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        hpvc = wait_until(
            lambda: host_get(env, "pvc", "data-x-default-x-cs-to", "cs-to-host"), WAIT, "the host PVC"
        )
        assert hpvc["spec"]["storageClassName"] == "vnest-cs-manual-x-cs-to-host-x-cs-to"
        wait_until(
            lambda: (vc.get("pvc", "data", "default") or {}).get("status", {}).get("phase") == "Bound",
            WAIT,
            "the virtual PVC to be Bound",
        )
        assert vc.get_existing("pvc", "data", "default")["spec"]["volumeName"] == "cs-share"
        vpv = wait_until(
            lambda: (pv := vc.get("pv", "cs-share")) and pv.get("status", {}).get("phase") == "Bound" and pv,
            WAIT,
            "the virtual PV to be Bound",
        )
        assert vpv["spec"]["claimRef"]["namespace"] == "default" and vpv["spec"]["claimRef"]["name"] == "data"
        assert vpv["spec"]["claimRef"]["uid"] == vc.get_existing("pvc", "data", "default")["metadata"]["uid"]
        assert vc.get("pv", hpv["metadata"]["name"]) is None  # no fake PV for the tenant's own volume
        bound = host_get(env, "pv", vc.host_name("cs-share"))
        assert bound is not None
        assert bound["spec"]["claimRef"]["name"] == "data-x-default-x-cs-to"

        # Deletes: each host copy goes with its virtual object.
        vc.kubectl("delete", "pod", "prio", "crit", "--wait=false")
        vc.kubectl("delete", "priorityclass", "cs-high")
        wait_until(
            lambda: host_get(env, "priorityclass", vc.host_name("cs-high")) is None, WAIT, "the host PC to go"
        )
        vc.kubectl("delete", "pvc", "data", "--wait=false")
        vc.kubectl("delete", "pv", "cs-share", "--wait=false")
        wait_until(lambda: host_get(env, "pv", vc.host_name("cs-share")) is None, WAIT, "the host PV to go")
        wait_until(lambda: vc.get("pv", "cs-share") is None, WAIT, "the virtual PV to go")
        vc.kubectl("delete", "storageclass", "cs-manual")
        wait_until(
            lambda: host_get(env, "storageclass", vc.host_name("cs-manual")) is None,
            WAIT,
            "the host SC to go",
        )
    finally:
        vc.delete()


def test_host_classes_are_copied_in_read_only(env):
    label = {"vnest-e2e": "cs-from"}
    host_objects: list[dict] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "cs-e2e-sc", "labels": label},
            "provisioner": "example.com/e2e",
            "reclaimPolicy": "Delete",
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "cs-e2e-ic", "labels": label},
            "spec": {"controller": "example.com/ingress"},
        },
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "cs-e2e-rc", "labels": {**label, "sandbox": "yes"}},
            "handler": "runsc",
        },
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "cs-e2e-rc-other", "labels": label},  # outside the selector
            "handler": "kata",
        },
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "cs-e2e-pc", "labels": label},
            "value": 4242,
            "description": "the host's",
        },
        {
            # Another tenant's copy on the host: vnest's, not the host's, so never shown.
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "cs-e2e-pc-tenant", "labels": {naming.LABEL_MANAGED_BY: "someone"}},
            "value": 1,
        },
    ]
    for obj in host_objects:
        host_apply(env, obj)
    values = {
        "sync": {
            "fromHost": {
                "storageClasses": {"enabled": True},
                "ingressClasses": {"enabled": True},
                "runtimeClasses": {"enabled": True, "selector": {"matchLabels": {"sandbox": "yes"}}},
                "priorityClasses": {"enabled": True},
            }
        }
    }
    vc = Cluster(env, "cs-from", "cs-from-host", values)
    try:
        copies = {
            (kind, name): wait_until(
                functools.partial(vc.get, kind, name), WAIT, f"the copy of {kind} {name}"
            )
            for kind, name in (
                ("storageclass", "cs-e2e-sc"),
                ("ingressclass", "cs-e2e-ic"),
                ("runtimeclass", "cs-e2e-rc"),
                ("priorityclass", "cs-e2e-pc"),
            )
        }
        for obj in copies.values():
            assert obj["metadata"]["labels"][naming.LABEL_MANAGED_BY] == "cs-from"
            assert obj["metadata"]["labels"]["vnest.io/from-host"] == "true"
            assert obj["metadata"]["labels"]["vnest-e2e"] == "cs-from"
        assert copies[("storageclass", "cs-e2e-sc")]["provisioner"] == "example.com/e2e"
        assert copies[("ingressclass", "cs-e2e-ic")]["spec"]["controller"] == "example.com/ingress"
        assert copies[("runtimeclass", "cs-e2e-rc")]["handler"] == "runsc"
        assert copies[("priorityclass", "cs-e2e-pc")]["value"] == 4242
        assert vc.get("runtimeclass", "cs-e2e-rc-other") is None  # not selected
        assert vc.get("priorityclass", "cs-e2e-pc-tenant") is None  # vnest's, not the host's

        # The host is the source of truth: a deleted copy comes back. (A tenant's edits reverted, and a
        # tenant's own object of a host class's name left alone and reported, outliving the host's:
        # tests/unit/test_reconcile_classes.py, test_classes_from_host rows.)
        vc.kubectl("delete", "ingressclass", "cs-e2e-ic")
        wait_until(lambda: vc.get("ingressclass", "cs-e2e-ic"), WAIT, "the deleted copy to come back")

        # Host deletions remove the copies.
        host_delete(env, "storageclass", "cs-e2e-sc")
        host_delete(env, "priorityclass", "cs-e2e-pc")
        wait_until(lambda: vc.get("storageclass", "cs-e2e-sc") is None, WAIT, "the StorageClass copy to go")
        wait_until(lambda: vc.get("priorityclass", "cs-e2e-pc") is None, WAIT, "the PriorityClass copy to go")
    finally:
        vc.delete()
        for obj in host_objects:
            host_delete(env, obj["kind"].lower(), obj["metadata"]["name"])


def test_defaults_sync_no_cluster_scoped_objects(env):
    host_apply(
        env,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "cs-e2e-default-sc"},
            "provisioner": "example.com/e2e",
        },
    )
    vc = Cluster(env, "cs-off", "cs-off-host")
    try:
        # No ClusterRole: the defaults need nothing beyond the namespace.
        assert host_get(env, "clusterrole", naming.cluster_role("cs-off", "cs-off-host")) is None
        vc.apply(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "cs-high"},
                "value": 1000,
            }
        )
        vc.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "cs-manual"},
                "provisioner": "kubernetes.io/no-provisioner",
            }
        )
        vc.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "cs-share"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": "/tmp/vnest-e2e-cs-off"},
                },
            }
        )
        # A pod naming the class: its host copy is the barrier that the syncer has seen all of the above.
        vc.apply(_pod("prio", "cs-high"))
        hpod = wait_until(
            lambda: host_get(env, "pod", "prio-x-default-x-cs-off", "cs-off-host"), WAIT, "the host pod"
        )
        assert "priorityClassName" not in hpod["spec"]  # the class is not on the host: none is named
        out = env.kubectl(
            "--context", HOST, "get", CLUSTER_KINDS, "-l", f"{naming.LABEL_MANAGED_BY}=cs-off", "-o", "json"
        ).stdout
        assert json.loads(out)["items"] == []
        for kind, name in (
            ("priorityclass", "cs-high"),
            ("storageclass", "cs-manual"),
            ("pv", "cs-share"),
        ):
            assert host_get(env, kind, naming.host_cluster_scoped_name(name, "cs-off-host", "cs-off")) is None
        # fromHost storageClasses is "auto": off without the virtual scheduler.
        assert vc.get("storageclass", "cs-e2e-default-sc") is None
    finally:
        vc.delete()
        host_delete(env, "storageclass", "cs-e2e-default-sc")
