"""The real nodes' configuration, rendered without running anything."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vnest.errors import VnestError
from vnest.host import cgroups, netns, nodes
from vnest.host.local import LocalHost, Ports, hub_dns_endpoints


def _spec(tmp_path: Path, index: int = 2) -> nodes.NodeSpec:
    return nodes.NodeSpec(
        name=f"worker{index}",
        index=index,
        prefix=netns.prefix_for(16443),
        folder=tmp_path / f"worker{index}",
        apiserver_port=16443,
        registry_port=5000,
        pause_image="registry.k8s.io/pause:3.10.2",
        cluster_dns="10.96.0.10",
        cluster_domain="cluster.local",
        pod_cidr_all="10.244.0.0/16",
    )


def test_names_and_addresses_follow_the_port_and_the_index(tmp_path):
    spec = _spec(tmp_path)
    assert spec.netns == "vnest16443-worker2"
    assert netns.hub_name(spec.prefix) == "vnest16443-hub"
    assert spec.ip == "10.89.0.12"
    assert spec.pod_cidr == "10.244.2.0/24"
    assert spec.node_manifest()["spec"] == {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}
    # Unix socket paths are limited to 107 bytes, whatever VNEST_HOME is.
    assert len(str(spec.containerd_socket)) + len(".ttrpc") < 100


def test_kubelet_runs_on_cgroup_v1_inside_vnests_own_cgroup(tmp_path):
    config = _spec(tmp_path).kubelet_config(tmp_path / "ca.crt")
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"].startswith(cgroups.own_parent().rstrip("/") + "/")
    assert config["cgroupRoot"].endswith("/vnest16443-worker2")
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["address"] == "10.89.0.12"
    assert config["clusterDNS"] == ["10.96.0.10"]


def test_containerd_uses_only_the_local_registry_and_the_nodes_own_folders(tmp_path):
    spec = _spec(tmp_path)
    config = tomllib.loads(spec.containerd_config())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10.2"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["registry"]["config_path"] == str(spec.folder / "certs.d")
    assert config["root"].startswith(str(spec.folder))
    assert config["state"].startswith(str(spec.run_dir))
    hosts = tomllib.loads(spec.registry_hosts())
    assert hosts["server"] == "http://10.89.0.1:5000"  # no fallback to the public registry
    assert list(hosts["host"]) == ["http://10.89.0.1:5000"]


def test_pod_network_is_the_nodes_range_without_nat(tmp_path):
    spec = _spec(tmp_path)
    bridge, portmap = spec.cni_config()["plugins"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(spec.folder))
    assert portmap["type"] == "portmap"
    assert spec.cni_config()["name"] == spec.network_name == "vnest16443"


def test_pods_reach_dns_at_the_hub():
    slice_ = hub_dns_endpoints()
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert slice_["endpoints"][0]["addresses"] == [netns.HUB_IP]
    assert {(p["port"], p["protocol"]) for p in slice_["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_ports_are_eight_with_the_registry_last():
    ports = Ports.starting_at(16443)
    assert ports.registry == 16450
    assert ports.named()["registry"] == 16450


def test_an_unknown_runtime_or_a_changed_one_is_refused(tmp_path):
    host = LocalHost(tmp_path / "host")
    with pytest.raises(VnestError, match="--runtime must be one of containerd, kwok"):
        host._choose_runtime("docker", None)
