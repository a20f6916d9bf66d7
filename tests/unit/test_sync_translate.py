"""Unit tests of pure syncer translations: EndpointSlices of selector-less Services, ServiceAccounts."""

from __future__ import annotations

import copy
import pathlib
import subprocess
from typing import Any

import pytest

from tests.unit.kubeapi import FakeApiServer
from vnest import naming
from vnest.config import defaults
from vnest.config.models import VClusterConfig
from vnest.syncer.engine import SyncContext
from vnest.syncer.mappings import ENDPOINTS_CONTROLLER as CONTROLLER
from vnest.syncer.resources.endpoints import (
    dependencies,
    translate_endpoint,
    translate_slice,
)
from vnest.syncer.resources.pods import REWRITE_HOSTS_CONTAINER, PodSyncer, pin_to_node, virtual_status
from vnest.syncer.resources.serviceaccounts import (
    host_service_account,
    pod_service_account,
    translate_service_account,
)

pytestmark = pytest.mark.unit

VC, HOST_NS = "vc", "vc-host"


def _ctx(values: dict | None = None) -> SyncContext:
    config = VClusterConfig.model_validate(values or defaults())
    return SyncContext(
        VC, HOST_NS, FakeApiServer().client(), FakeApiServer().client(), config
    )  # translations only


class _NoNodes:
    async def ensure(self, name: str, host_ip: str = "") -> None:
        raise AssertionError("translation binds no node")


def _pods(ctx: SyncContext) -> PodSyncer:
    return PodSyncer(ctx, None, _NoNodes(), {})


def _host_pod(ns: str, name: str) -> str | None:
    return naming.host_name(name, ns, VC) if name.startswith("synced") else None


def _host_node(name: str) -> bool:
    return name == "worker1"


def test_defaults_match_vcluster():
    to_host = defaults()["sync"]["toHost"]
    assert to_host["endpoints"]["enabled"] is True
    assert to_host["serviceAccounts"]["enabled"] is False


# --- EndpointSlices ------------------------------------------------------------------------


def test_endpoint_pod_ref_names_the_host_pod_and_node_is_kept_when_the_host_has_it():
    endpoint = {
        "addresses": ["10.0.0.5"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "hostname": "db-0",
        "zone": "z1",
        "nodeName": "worker1",
        "targetRef": {"kind": "Pod", "namespace": "data", "name": "synced-db", "uid": "u1"},
        "deprecatedTopology": {"kubernetes.io/hostname": "worker1"},
    }
    before = copy.deepcopy(endpoint)
    out = translate_endpoint(endpoint, "data", HOST_NS, _host_pod, _host_node)
    assert out == {
        "addresses": ["10.0.0.5"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "hostname": "db-0",
        "zone": "z1",
        "nodeName": "worker1",
        "targetRef": {"kind": "Pod", "namespace": HOST_NS, "name": "synced-db-x-data-x-vc"},
    }
    assert endpoint == before  # the cached virtual object is never changed


def test_endpoint_refs_and_nodes_the_host_does_not_have_are_dropped():
    endpoint = {
        "addresses": ["10.0.0.6"],
        "nodeName": "made-up",
        "targetRef": {"kind": "Pod", "name": "not-synced"},
    }
    assert translate_endpoint(endpoint, "data", HOST_NS, _host_pod, _host_node) == {"addresses": ["10.0.0.6"]}
    other_kind = {"addresses": ["10.0.0.7"], "targetRef": {"kind": "Node", "name": "synced-n"}}
    assert translate_endpoint(other_kind, "data", HOST_NS, _host_pod, _host_node) == {
        "addresses": ["10.0.0.7"]
    }


def test_endpoint_pod_ref_without_namespace_means_the_slices_namespace():
    endpoint = {"addresses": ["10.0.0.8"], "targetRef": {"kind": "Pod", "name": "synced-a"}}
    out = translate_endpoint(endpoint, "web", HOST_NS, _host_pod, _host_node)
    assert out is not None
    assert out["targetRef"]["name"] == "synced-a-x-web-x-vc"


def _vslice(**extra) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "db-1",
            "namespace": "data",
            "uid": "slice-uid",
            "labels": {
                "kubernetes.io/service-name": "db",
                "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io",
                "vnest.io/managed-by": "forged",
                "team": "a",
            },
            "annotations": {"note": "x"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        **extra,
    }


HSVC = {"metadata": {"name": "db-x-data-x-vc", "namespace": HOST_NS, "uid": "svc-uid"}}


def test_slice_on_the_host_belongs_to_the_host_service_and_to_vnest():
    out = translate_slice(_ctx(), _vslice(), HSVC, _host_pod, _host_node)
    meta = out["metadata"]
    assert meta["name"] == "db-1-x-data-x-vc"
    assert meta["namespace"] == HOST_NS
    labels = meta["labels"]
    assert labels["kubernetes.io/service-name"] == "db-x-data-x-vc"
    # The host's mirroring controller would delete a slice it believes is its own.
    assert labels["endpointslice.kubernetes.io/managed-by"] == CONTROLLER
    assert labels[naming.LABEL_MANAGED_BY] == VC  # the tenant's forged one is hashed away
    assert labels["vnest.io/namespace"] == "data"
    assert labels["team"] == "a"
    assert meta["annotations"][naming.ANNOTATION_NAME] == "db-1"
    assert meta["annotations"][naming.ANNOTATION_NAMESPACE] == "data"
    assert meta["annotations"][naming.ANNOTATION_UID] == "slice-uid"
    assert meta["annotations"][naming.ANNOTATION_KIND] == "EndpointSlice"
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Service", "name": "db-x-data-x-vc", "uid": "svc-uid"}
    ]
    assert out["addressType"] == "IPv4"
    assert out["endpoints"] == [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}]
    assert out["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]


def test_slice_without_ports_or_endpoints():
    vslice = _vslice(endpoints=None)
    del vslice["ports"]
    out = translate_slice(_ctx(), vslice, HSVC, _host_pod, _host_node)
    assert out["endpoints"] == []
    assert "ports" not in out


def test_slice_dependencies_name_its_service_pods_and_nodes():
    vslice = _vslice(
        endpoints=[
            {"addresses": ["1.1.1.1"], "targetRef": {"kind": "Pod", "name": "a"}, "nodeName": "n1"},
            {"addresses": ["1.1.1.2"], "targetRef": {"kind": "Pod", "namespace": "other", "name": "b"}},
            {"addresses": ["1.1.1.3"], "targetRef": {"kind": "Node", "name": "n2"}},
        ]
    )
    assert dependencies(vslice) == {
        ("Service", "data/db"),
        ("Pod", "data/a"),
        ("Pod", "other/b"),
        ("Node", "n1"),
        ("Address", "1.1.1.1"),
        ("Address", "1.1.1.2"),
        ("Address", "1.1.1.3"),
    }


def test_endpoints_keep_only_the_addresses_the_host_may_route():
    from vnest.syncer.addresses import AllowList

    allowed = AllowList(["192.0.2.0/24", "2001:db8::/32"])
    own_pods = {"10.244.1.5"}

    def ok(address: str) -> bool:
        return address in own_pods or address in allowed

    endpoints = [
        {"addresses": ["10.244.1.5"], "conditions": {"ready": True}},  # this cluster's pod
        {"addresses": ["10.96.0.1"]},  # the host API server's Service IP: dropped
        {"addresses": ["192.0.2.7", "10.244.2.9"]},  # allowed, and another tenant's pod: dropped
        {"addresses": ["db.example.com"]},  # not an address the host routes
    ]
    out = translate_slice(_ctx(), _vslice(endpoints=endpoints), HSVC, _host_pod, _host_node, ok)
    assert [e["addresses"] for e in out["endpoints"]] == [["10.244.1.5"], ["192.0.2.7"]]
    assert "2001:db8::1" in allowed and "2001:db9::1" not in allowed and "192.0.3.1" not in allowed
    assert allowed.split(["192.0.2.1", "8.8.8.8"]) == (["192.0.2.1"], ["8.8.8.8"])


# --- ServiceAccounts -------------------------------------------------------------------------


def test_service_account_copy_never_mounts_and_drops_secret_references():
    vsa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "runner", "namespace": "ci", "uid": "sa-uid", "labels": {"a": "b"}},
        "secrets": [{"name": "runner-token-abcde"}],
        "imagePullSecrets": [{"name": "registry"}],
        "automountServiceAccountToken": True,
    }
    out = translate_service_account(_ctx(), vsa)
    assert out["metadata"]["name"] == "runner-x-ci-x-vc"
    assert out["metadata"]["labels"] == {"a": "b", naming.LABEL_MANAGED_BY: VC, "vnest.io/namespace": "ci"}
    assert out["metadata"]["annotations"][naming.ANNOTATION_KIND] == "ServiceAccount"
    assert out["automountServiceAccountToken"] is False
    assert "secrets" not in out and "imagePullSecrets" not in out


def test_pod_service_account_defaults_like_the_api_server():
    assert pod_service_account({"spec": {}}) == "default"
    assert pod_service_account({"spec": {"serviceAccount": "old"}}) == "old"
    assert pod_service_account({"spec": {"serviceAccountName": "new", "serviceAccount": "new"}}) == "new"
    pod = {"metadata": {"name": "p", "namespace": "ci"}, "spec": {"serviceAccountName": "runner"}}
    assert host_service_account(_ctx(), pod) == "runner-x-ci-x-vc"


def _vpod() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ci", "uid": "pod-uid"},
        "spec": {
            "serviceAccountName": "runner",
            "serviceAccount": "runner",
            "automountServiceAccountToken": True,
            "containers": [{"name": "c", "image": "nginx"}],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                }
            ],
        },
    }


@pytest.mark.parametrize("sync", [False, True])
def test_host_pod_runs_as_the_copy_of_its_service_account_only_with_the_sync(sync):
    values = defaults()
    values["sync"]["toHost"]["serviceAccounts"]["enabled"] = sync
    hpod = _pods(_ctx(values)).translate(_vpod())
    spec = hpod["spec"]
    if sync:
        assert spec["serviceAccountName"] == "runner-x-ci-x-vc"
    else:
        assert "serviceAccountName" not in spec  # the host namespace's default
    assert "serviceAccount" not in spec
    # Never a host token: the token comes from the virtual API server through a host Secret.
    assert spec["automountServiceAccountToken"] is False
    sources = spec["volumes"][0]["projected"]["sources"]
    assert not any("serviceAccountToken" in s for s in sources)
    assert sources[0]["secret"]["name"] == naming.host_name("vnest-token-p", "ci", VC)  # the pod's own


# --- Pods with their node named ------------------------------------------------------------


def test_a_named_node_becomes_a_required_affinity_so_the_host_scheduler_still_checks_it():
    vpod = _vpod()
    vpod["spec"]["nodeName"] = "worker1"
    vpod["spec"]["schedulerName"] = "tenant-scheduler"
    spec = _pods(_ctx()).translate(vpod)["spec"]
    assert "nodeName" not in spec and "schedulerName" not in spec
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker1"]}]}
        ]
    }
    assert vpod["spec"]["nodeName"] == "worker1"  # the cached virtual pod is never changed


def test_a_pod_without_a_node_gets_no_affinity():
    assert "affinity" not in _pods(_ctx()).translate(_vpod())["spec"]


def test_pinning_joins_every_term_of_the_pods_own_node_affinity():
    spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]},
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
            }
        }
    }
    pin_to_node(spec, "worker1")
    node_affinity = spec["affinity"]["nodeAffinity"]
    pinned = {"key": "metadata.name", "operator": "In", "values": ["worker1"]}
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}], "matchFields": [pinned]},
        {"matchFields": [pinned]},  # a name the tenant asked for elsewhere is replaced, as DaemonSets do
    ]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 1, "preference": {}}
    ]


# --- every reference a pod makes is translated --------------------------------------------------


def _strings(obj: object) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_no_raw_name_of_a_referenced_object_survives_translation():
    from vnest.syncer.resources.pods import SECRET_REFERENCES, references

    volumes = [
        {"name": "cm", "configMap": {"name": "ref-cm-volume"}},
        {"name": "sec", "secret": {"secretName": "ref-secret-volume"}},
        {"name": "pvc", "persistentVolumeClaim": {"claimName": "ref-claim"}},
        {
            "name": "projected",
            "projected": {
                "sources": [
                    {"configMap": {"name": "ref-cm-projected"}},
                    {"secret": {"name": "ref-secret-projected"}},
                ]
            },
        },
    ]
    for kind, path in SECRET_REFERENCES.items():
        source: dict = {"driver": "x"} if kind == "csi" else {}
        holder = source
        for key in path[:-1]:
            holder = holder.setdefault(key, {})
        holder[path[-1]] = f"ref-secret-{kind.lower()}"
        volumes.append({"name": kind.lower(), kind: source})
    container = {
        "name": "c",
        "image": "x",
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "ref-cm-env", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "ref-secret-env", "key": "k"}}},
        ],
        "envFrom": [
            {"configMapRef": {"name": "ref-cm-envfrom"}},
            {"secretRef": {"name": "ref-secret-envfrom"}},
        ],
    }
    vpod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ci", "uid": "u"},
        "spec": {
            "containers": [container],
            "initContainers": [{**copy.deepcopy(container), "name": "i"}],
            "ephemeralContainers": [{**copy.deepcopy(container), "name": "e"}],
            "volumes": volumes,
            "imagePullSecrets": [{"name": "ref-secret-pull"}],
        },
    }
    raw = {s for s in _strings(vpod["spec"]) if s.startswith("ref-")}
    assert len(raw) == 10 + len(SECRET_REFERENCES)
    # Every one is copied to the host (the ConfigMap and Secret syncers follow `references`) ...
    assert set().union(*references(vpod).values()) == raw
    # ... and named by its host copy's name: no raw name is left for the host to resolve.
    out = _strings(_pods(_ctx()).translate(vpod)["spec"])
    assert not raw & set(out)
    assert {naming.host_name(name, "ci", VC) for name in raw} <= set(out)


def test_a_pods_hostname_is_its_virtual_name_as_kubelet_would_cut_it():
    from vnest.syncer.resources.pods import pod_hostname

    assert pod_hostname("nginx-vcluster1-b9c66cb6b-7kg6h") == "nginx-vcluster1-b9c66cb6b-7kg6h"
    assert pod_hostname("a" * 62 + "-b") == "a" * 62  # 63 characters, the trailing dash cut
    assert pod_hostname("web.v1") is None  # a dot is no label: kubelet's own rule applies


def _runtime_class(name: str, handler: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "handler": handler}


OFFERING = {"sync": {"fromHost": {"runtimeClasses": {"enabled": True}}}}


def _offering(host: list[dict], virtual: list[dict]) -> PodSyncer:
    pods = _pods(_ctx(OFFERING))
    assert pods.runtime_classes.offered is not None and pods.runtime_classes.virtual is not None
    pods.runtime_classes.offered.store.update({c["metadata"]["name"]: c for c in host})
    pods.runtime_classes.virtual.store.update({c["metadata"]["name"]: c for c in virtual})
    return pods


def _with_class(name: str, overhead: dict | None = None) -> dict:
    vpod = _vpod()
    vpod["spec"]["runtimeClassName"] = name
    if overhead:
        vpod["spec"]["overhead"] = overhead
    return vpod


def test_without_an_offer_a_runtime_class_name_passes_as_vcluster_passes_it():
    spec = _pods(_ctx()).translate(_with_class("gvisor", {"cpu": "10m"}))["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert "overhead" not in spec  # the host's RuntimeClass admission sets it from the host's class


def test_a_tenants_runtime_class_maps_to_the_offered_host_class_of_its_handler():
    host = [
        _runtime_class("b-runc", "runc"),
        _runtime_class("a-runc", "runc"),
        _runtime_class("kata", "kata"),
    ]
    pods = _offering(host, [_runtime_class("mine", "runc"), _runtime_class("kata", "kata")])
    assert pods.translate(_with_class("mine"))["spec"]["runtimeClassName"] == "a-runc"  # first by name
    assert pods.translate(_with_class("kata"))["spec"]["runtimeClassName"] == "kata"  # its own name first
    assert pods.runtime_classes.host_class("mine").problem is None


def test_a_runtime_class_no_offered_class_serves_is_refused_by_name_and_handler():
    # The tenant names its class like a host class the offer leaves out: it gets nothing of it.
    pods = _offering([_runtime_class("runc", "runc")], [_runtime_class("nvidia", "nvidia")])
    outcome = pods.runtime_classes.host_class("nvidia")
    assert outcome.name is None and outcome.problem is not None
    assert "'nvidia'" in outcome.problem and "sync.fromHost.runtimeClasses" in outcome.problem
    gone = pods.runtime_classes.host_class("deleted-since")  # tried again when a class of that name comes
    assert (
        gone.name is None
        and gone.problem == "spec.runtimeClassName: there is no RuntimeClass 'deleted-since'"
    )


def test_only_a_virtual_jobs_pods_are_marked_for_completion():
    job = {"apiVersion": "batch/v1", "kind": "Job", "name": "once", "uid": "u", "controller": True}
    vpod = _vpod()
    vpod["metadata"]["ownerReferences"] = [job]
    hpod = _pods(_ctx()).translate(vpod)
    assert hpod["metadata"]["annotations"][naming.ANNOTATION_OWNER_SET_KIND] == "Job"
    assert "ownerReferences" not in hpod["metadata"]
    for other in ({**job, "controller": False}, {**job, "apiVersion": "example.com/v1"}):
        vpod["metadata"]["ownerReferences"] = [other]
        assert (
            naming.ANNOTATION_OWNER_SET_KIND not in _pods(_ctx()).translate(vpod)["metadata"]["annotations"]
        )
    vpod["metadata"]["ownerReferences"] = []
    vpod["metadata"]["annotations"] = {naming.ANNOTATION_OWNER_SET_KIND: "Job"}  # forged by the tenant
    assert naming.ANNOTATION_OWNER_SET_KIND not in _pods(_ctx()).translate(vpod)["metadata"]["annotations"]


def test_kwoks_completion_stage_for_virtual_jobs_selects_by_the_annotation():
    from vnest.host.kwok import virtual_job_pod_complete

    upstream: dict[str, Any] = {
        "metadata": {"name": "pod-complete"},
        "spec": {
            "selector": {
                "matchExpressions": [
                    {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                    {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
                ]
            },
            "next": {"statusTemplate": "phase: Succeeded"},
        },
    }
    stage = virtual_job_pod_complete(upstream)
    assert stage["metadata"]["name"] != "pod-complete" and stage["spec"]["next"] == upstream["spec"]["next"]
    keys = [e["key"] for e in stage["spec"]["selector"]["matchExpressions"]]
    assert keys == [".status.phase", '.metadata.annotations["vnest.io/owner-set-kind"]']
    assert upstream["spec"]["selector"]["matchExpressions"][1]["key"].startswith(".metadata.ownerReferences")


# --- a StatefulSet pod's /etc/hosts --------------------------------------------------------


def _stateful_pod(**spec: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "team", "uid": "u1"},
        "spec": {
            "hostname": "web-0",
            "subdomain": "nginx",
            "containers": [{"name": "c", "image": "nginx"}],
            **spec,
        },
    }


def test_a_pod_with_a_subdomain_gets_its_virtual_fqdn_written_into_etc_hosts():
    spec = _pods(_ctx()).translate(_stateful_pod(initContainers=[{"name": "setup", "image": "x"}]))["spec"]
    writer, setup = spec["initContainers"]
    assert writer["name"] == REWRITE_HOSTS_CONTAINER and setup["name"] == "setup"
    assert writer["image"] == "docker.io/library/busybox:1.37"
    # The names are arguments of the script, never part of it.
    assert writer["command"][-3:] == ["web-0", "nginx", "web-0.nginx.team.svc.cluster.local"]
    assert writer["securityContext"]["runAsNonRoot"] is True
    assert writer["resources"] == {
        "limits": {"cpu": "30m", "memory": "64Mi"},
        "requests": {"cpu": "30m", "memory": "64Mi"},
    }
    hosts = {"name": "vnest-hosts", "mountPath": "/etc/hosts", "subPath": "hosts", "readOnly": False}
    assert hosts in setup["volumeMounts"] and hosts in spec["containers"][0]["volumeMounts"]
    assert {"name": "vnest-hosts", "emptyDir": {}} in spec["volumes"]


def _run_hosts_script(command: list[str], where: pathlib.Path, kubelets: str) -> str:
    """Runs the init container's command here, on `kubelets` as /etc/hosts: the file it writes."""
    (where / "etc-hosts").write_text(kubelets)
    (where / "out").mkdir(exist_ok=True)
    script = (
        command[2].replace("/etc/hosts", str(where / "etc-hosts")).replace("/vnest-hosts", str(where / "out"))
    )
    subprocess.run([command[0], command[1], script, *command[3:]], check=True)
    return (where / "out" / "hosts").read_text()


def test_the_hosts_script_puts_the_virtual_fqdn_in_place_of_the_hosts(tmp_path):
    spec = _pods(_ctx()).translate(_stateful_pod())["spec"]
    kubelets = (
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
        "10.1.2.3\tweb-0.nginx.vc-host.svc.cluster.local\tweb-0\n"
        "# Entries added by HostAliases.\n10.96.0.1\tkubernetes\tkubernetes.default\n"
    )
    written = _run_hosts_script(spec["initContainers"][0]["command"], tmp_path, kubelets)
    assert written == kubelets.replace(
        "web-0.nginx.vc-host.svc.cluster.local", "web-0.nginx.team.svc.cluster.local"
    )


@pytest.mark.parametrize(
    "case",
    ["no-subdomain", "disabled", "tenant-mounts-its-own", "host-network"],
)
def test_etc_hosts_is_left_to_the_kubelet(case):
    values = defaults()
    vpod = _stateful_pod()
    if case == "no-subdomain":
        del vpod["spec"]["subdomain"]
    if case == "disabled":
        values["sync"]["toHost"]["pods"]["rewriteHosts"]["enabled"] = False
    if case == "host-network":
        vpod["spec"]["hostNetwork"] = True
    if case == "tenant-mounts-its-own":
        vpod["spec"]["containers"][0]["volumeMounts"] = [{"name": "h", "mountPath": "/etc/hosts"}]
        vpod["spec"]["volumes"] = [{"name": "h", "configMap": {"name": "hosts"}}]
    spec = _pods(_ctx(values)).translate(vpod)["spec"]
    mounts = spec["containers"][0].get("volumeMounts") or []
    if case == "tenant-mounts-its-own":
        assert mounts == [{"name": "h", "mountPath": "/etc/hosts"}]  # only its container keeps its own
        assert spec["initContainers"][0]["name"] == REWRITE_HOSTS_CONTAINER
    else:
        assert not spec.get("initContainers")
        assert not any(m["mountPath"] == "/etc/hosts" for m in mounts)


def test_the_virtual_pods_qos_class_stays_whatever_the_hosts_is():
    vpod = _stateful_pod()
    vpod["status"] = {"qosClass": "BestEffort"}
    hpod: dict = {"metadata": {}, "spec": {}}
    out = virtual_status({"phase": "Running", "qosClass": "Burstable"}, vpod, hpod)
    assert out == {"phase": "Running", "qosClass": "BestEffort"}  # the API server refuses a change


def test_the_hosts_writers_status_is_not_the_tenants():
    vpod = _stateful_pod()
    vpod["metadata"]["generation"] = 1
    hpod = {"metadata": {"generation": 1}, "spec": {}}
    status = {
        "phase": "Running",
        "initContainerStatuses": [{"name": REWRITE_HOSTS_CONTAINER, "ready": True}],
        "containerStatuses": [{"name": "c", "ready": True}],
    }
    assert virtual_status(status, vpod, hpod) == {
        "phase": "Running",
        "containerStatuses": [{"name": "c", "ready": True}],
    }


def test_names_reach_the_hosts_script_as_data_never_as_shell(tmp_path):
    """The API server validates hostname and subdomain as DNS labels, but the script does not rely
    on it: a name that would run a command if it were part of the script is only compared."""
    attack = f"$(touch {tmp_path}/pwned)"
    spec = _pods(_ctx()).translate(_stateful_pod(hostname=attack, subdomain="`id`"))["spec"]
    command = spec["initContainers"][0]["command"]
    kubelets = "10.1.2.3\tweb-0.nginx.vc-host.svc.cluster.local\tweb-0\n"
    assert _run_hosts_script(command, tmp_path, kubelets) == kubelets
    assert not (tmp_path / "pwned").exists()
    # The same name put into the script's text runs.
    _run_hosts_script(
        [*command[:2], command[2].replace('"$1"', f'"{attack}"'), *command[3:]], tmp_path, kubelets
    )
    assert (tmp_path / "pwned").exists()
