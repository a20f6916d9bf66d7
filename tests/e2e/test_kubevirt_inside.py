"""KubeVirt installed inside a virtual cluster (the seed's demo 2 and 3): its pods are ordinary pods to sync.

KubeVirt's operator, virt-api and virt-controller are Deployments, virt-handler a privileged
DaemonSet with host paths, and every VM a `virt-launcher` pod asking for KubeVirt's device-plugin
resources. vnest syncs them as it syncs any pod, so what reaches the host is what the pod security
level allows: with `policies.podSecurityStandard: privileged` virt-handler's shape arrives whole
(privileged, hostPID, host paths with bidirectional mount propagation); at `baseline` it is
refused, while a launcher pod's shape (non-root, NET_BIND_SERVICE, emptyDirs, device-plugin
resources) passes. The shapes below are KubeVirt's (pkg/virt-operator/resource/generate/components
daemonsets.go and pkg/virt-controller/services/template.go), trimmed to what isolation decides on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from vnest import naming
from vnest.procs import wait_until

from .vcluster import HOST, VirtualCluster

WAIT = 60

HANDLER: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "virt-handler-x7k2p",
        "namespace": "kubevirt",
        "labels": {"kubevirt.io": "virt-handler", "prometheus.kubevirt.io": "true"},
    },
    "spec": {
        "hostPID": True,
        "serviceAccountName": "default",
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "containers": [
            {
                "name": "virt-handler",
                "image": "quay.io/kubevirt/virt-handler:v1.7.0",
                "securityContext": {"privileged": True, "seLinuxOptions": {"level": "s0"}},
                "volumeMounts": [
                    {"name": "kubelet-pods", "mountPath": "/pods", "mountPropagation": "Bidirectional"},
                    {
                        "name": "virt-share-dir",
                        "mountPath": "/var/run/kubevirt",
                        "mountPropagation": "Bidirectional",
                    },
                    {"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"},
                ],
            }
        ],
        "volumes": [
            {"name": "kubelet-pods", "hostPath": {"path": "/var/lib/kubelet/pods"}},
            {"name": "virt-share-dir", "hostPath": {"path": "/var/run/kubevirt"}},
            {"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
        ],
    },
}

LAUNCHER: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "virt-launcher-testvm-abcde",
        "namespace": "vms",
        "labels": {
            "kubevirt.io": "virt-launcher",
            "vm.kubevirt.io/name": "testvm",
            "kubevirt.io/domain": "testvm",
        },
        "annotations": {
            "kubevirt.io/domain": "testvm",
            "kubectl.kubernetes.io/default-container": "compute",
            "post.hook.backup.velero.io/container": "compute",
        },
    },
    "spec": {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 107,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "compute",
                "image": "quay.io/kubevirt/virt-launcher:v1.7.0",
                "command": ["/usr/bin/virt-launcher-monitor", "--name", "testvm", "--namespace", "vms"],
                "resources": {
                    "requests": {
                        "cpu": "100m",
                        "memory": "300Mi",
                        "devices.kubevirt.io/kvm": "1",
                        "devices.kubevirt.io/tun": "1",
                    },
                    "limits": {"devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "runAsUser": 107,
                },
                "volumeMounts": [
                    {"name": "private", "mountPath": "/var/run/kubevirt-private"},
                    {"name": "ephemeral-disks", "mountPath": "/var/run/kubevirt-ephemeral-disks"},
                    {
                        "name": "container-disks",
                        "mountPath": "/var/run/kubevirt/container-disks",
                        "mountPropagation": "HostToContainer",
                    },
                ],
            }
        ],
        "volumes": [
            {"name": "private", "emptyDir": {}},
            {"name": "ephemeral-disks", "emptyDir": {}},
            {"name": "container-disks", "emptyDir": {}},
        ],
    },
}


@pytest.fixture
def make_cluster(host_env):
    made: list[VirtualCluster] = []

    def make(name: str, level: str) -> VirtualCluster:
        values = host_env.root / f"{name}.yaml"
        values.write_text(yaml.safe_dump({"policies": {"podSecurityStandard": level}}))
        host_env.vnest("create", name, "-n", f"{name}-host", "--no-connect", "-f", str(values))
        made.append(VirtualCluster(host_env, name, f"{name}-host"))
        return made[-1]

    yield make
    for vc in made:
        host_env.vnest("delete", vc.name, "-n", vc.namespace, check=False)
    host_env.kubectl("config", "use-context", HOST)


def _host_pod(env, vc: VirtualCluster, pod: dict) -> dict | None:
    name = naming.host_name(pod["metadata"]["name"], pod["metadata"]["namespace"], vc.name)
    out = env.kubectl("--context", HOST, "get", "pod", name, "-n", vc.namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _apply(vc: VirtualCluster, *pods: dict) -> None:
    for pod in pods:
        vc.kubectl("create", "namespace", pod["metadata"]["namespace"], check=False)
        vc.apply(pod)


def test_kubevirts_own_pods_sync_whole_at_the_privileged_level(host_env, make_cluster):
    vc = make_cluster("kv-inside", "privileged")
    _apply(vc, HANDLER, LAUNCHER)

    handler = wait_until(lambda: _host_pod(host_env, vc, HANDLER), WAIT, "virt-handler's host pod")
    spec = handler["spec"]
    assert spec["hostPID"] is True
    container = spec["containers"][0]
    assert container["securityContext"]["privileged"] is True
    mounts = [m for m in container["volumeMounts"] if not m["name"].startswith("kube-api-access")]
    assert {m["name"]: m.get("mountPropagation") for m in mounts} == {
        "kubelet-pods": "Bidirectional",
        "virt-share-dir": "Bidirectional",
        "device-plugin": None,
    }
    assert {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v} == {
        "kubelet-pods": "/var/lib/kubelet/pods",
        "virt-share-dir": "/var/run/kubevirt",
        "device-plugin": "/var/lib/kubelet/device-plugins",
    }

    launcher = wait_until(lambda: _host_pod(host_env, vc, LAUNCHER), WAIT, "the launcher's host pod")
    meta = launcher["metadata"]
    assert (
        meta["labels"]["kubevirt.io"] == "virt-launcher" and meta["labels"]["vm.kubevirt.io/name"] == "testvm"
    )
    for key, value in LAUNCHER["metadata"]["annotations"].items():
        assert meta["annotations"][key] == value
    compute = launcher["spec"]["containers"][0]
    assert compute["resources"] == LAUNCHER["spec"]["containers"][0]["resources"]
    assert compute["command"] == LAUNCHER["spec"]["containers"][0]["command"]
    assert {v["name"] for v in launcher["spec"]["volumes"]} >= {
        "private",
        "ephemeral-disks",
        "container-disks",
    }


def test_at_baseline_virt_handler_is_refused_and_a_launcher_passes(host_env, make_cluster):
    vc = make_cluster("kv-baseline", "baseline")
    # KubeVirt's install labels its namespace privileged: the virtual API server then admits
    # virt-handler, and the syncer's check against the host's level is what stands.
    vc.kubectl("create", "namespace", "kubevirt")
    vc.kubectl("label", "namespace", "kubevirt", "pod-security.kubernetes.io/enforce=privileged")
    _apply(vc, HANDLER, LAUNCHER)

    wait_until(lambda: _host_pod(host_env, vc, LAUNCHER), WAIT, "the launcher's host pod")
    events = wait_until(
        lambda: [
            e
            for e in json.loads(vc.kubectl("get", "events", "-n", "kubevirt", "-o", "json"))["items"]
            if e["reason"] == "PodSecurity" and e["involvedObject"]["name"] == HANDLER["metadata"]["name"]
        ],
        WAIT,
        "the PodSecurity event on virt-handler",
    )
    assert "privileged" in events[0]["message"] and "hostPath" in events[0]["message"]
    assert _host_pod(host_env, vc, HANDLER) is None
