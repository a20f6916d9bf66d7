"""The production path on real nodes: the chart and vnest's image, the control plane as pod NAME-0.

The seed's demo with `--driver kubernetes` on the session's real host: what runs is exactly what
a platform team installs on its own cluster (SPEC.md section 8).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.vcluster import VirtualCluster
from tests.real.pods import page_through_port_forward, run_to_completion
from tests.real.test_real_nodes import _kubectl, _run_to_completion
from vnest.procs import wait_until

NAME, NAMESPACE = "my-vcluster", "prod1"
HOST_SERVICE = f"nginx-vcluster1-x-nginx1-x-{NAME}"


def _virtual_run(vc: VirtualCluster, name: str, image: str, *command: str) -> str:
    """Runs a pod to its end inside the virtual cluster; returns its log."""
    return run_to_completion(vc.kubectl, name, image, *command)


@pytest.fixture(scope="module")
def seed(real_host_env) -> Iterator[VirtualCluster]:
    """The seed's demo with the kubernetes driver; the cluster is deleted at the end."""
    env = real_host_env
    env.vnest(
        "create", NAME, "--namespace", NAMESPACE, "--driver", "kubernetes", "--no-connect",
        "--set", "networking.advanced.fallbackHostCluster=true", timeout=600,
    )  # fmt: skip
    vc = VirtualCluster(env, NAME, NAMESPACE)
    try:
        vc.kubectl("create", "namespace", "nginx1")
        vc.kubectl("create", "deployment", "nginx-vcluster1", "-n", "nginx1", "--image=nginx", "--replicas=2")
        vc.kubectl("create", "service", "clusterip", "nginx-vcluster1", "--tcp=80:80", "-n", "nginx1")
        vc.kubectl("rollout", "status", "deployment/nginx-vcluster1", "-n", "nginx1", "--timeout=180s")
        yield vc
    finally:
        env.vnest("delete", NAME, "--namespace", NAMESPACE, check=False, timeout=300)


def test_the_control_plane_runs_as_a_pod_from_vnests_image_with_its_datastore_on_a_volume(seed):
    env = seed.env
    pod = json.loads(_kubectl(env, "get", "pod", f"{NAME}-0", "-n", NAMESPACE, "-o", "json"))
    assert pod["status"]["phase"] == "Running"
    (syncer,) = [c for c in pod["spec"]["containers"] if c["name"] == "syncer"]
    assert syncer["image"] == "vnest:0.1.0"
    assert {p["name"] for p in syncer["ports"]} >= {"https", "dns", "dns-tcp", "metrics"}
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    claim = json.loads(_kubectl(env, "get", "pvc", f"data-{NAME}-0", "-n", NAMESPACE, "-o", "json"))
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "standard"


def test_the_control_plane_pods_metrics_port_serves_the_syncers_metrics(seed):
    env = seed.env
    pod_ip = _kubectl(env, "get", "pod", f"{NAME}-0", "-n", NAMESPACE, "-o", "jsonpath={.status.podIP}")
    metrics = _run_to_completion(
        env,
        "curl-metrics",
        "curlimages/curl",
        "curl",
        "-sS",
        "--max-time",
        "10",
        f"http://{pod_ip}:9180/metrics",
    )
    assert "vnest_syncer_reconciles_total{kind=" in metrics and 'kind="Pod' in metrics


def test_nginx_answers_a_host_pod_on_the_clusterip_and_a_virtual_pod_by_its_virtual_name(seed):
    env = seed.env
    cluster_ip = _kubectl(
        env, "get", "service", HOST_SERVICE, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"
    )
    assert cluster_ip == seed.kubectl(
        "get", "service", "nginx-vcluster1", "-n", "nginx1", "-o", "jsonpath={.spec.clusterIP}"
    )
    from_host = _run_to_completion(
        env, "curl-pod", "curlimages/curl", "curl", "-sS", "--max-time", "10", f"http://{cluster_ip}"
    )
    assert "Welcome to nginx!" in from_host
    # Inside: the virtual cluster's DNS (in NAME-0) answers the virtual name.
    from_virtual = _virtual_run(
        seed,
        "curl-virtual",
        "curlimages/curl",
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://nginx-vcluster1.nginx1/from-virtual",
    )
    assert "404 Not Found" in from_virtual
    wait_until(
        lambda: (
            "GET /from-virtual"
            in seed.kubectl("logs", "-n", "nginx1", "deployment/nginx-vcluster1", "--all-pods=true")
        ),
        30,
        "nginx's access log line through the virtual API",
    )


def test_a_virtual_nodeport_answers_at_the_virtual_nodes_address_and_port(seed):
    """Where upstream clients look (conformance's NodePort specs): the virtual Service's nodePort
    on the virtual node's InternalIP. Without the fix the node's address was the control-plane
    pod's, and the host picked a nodePort of its own."""
    seed.kubectl("create", "service", "nodeport", "nginx-np", "--tcp=80:80", "-n", "nginx1")
    seed.kubectl("set", "selector", "service", "nginx-np", "app=nginx-vcluster1", "-n", "nginx1")
    node_port = seed.kubectl(
        "get", "service", "nginx-np", "-n", "nginx1", "-o", "jsonpath={.spec.ports[0].nodePort}"
    )
    host_service = f"nginx-np-x-nginx1-x-{NAME}"
    host_port = wait_until(
        lambda: _kubectl(
            seed.env,
            "get",
            "service",
            host_service,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ),
        30,
        "the host copy of the NodePort Service",
    )
    assert node_port and host_port == node_port
    pod = json.loads(seed.kubectl("get", "pods", "-n", "nginx1", "-o", "json"))["items"][0]
    node = json.loads(seed.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json"))
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    control_plane_ip = _kubectl(
        seed.env, "get", "pod", f"{NAME}-0", "-n", NAMESPACE, "-o", "jsonpath={.status.podIP}"
    )
    assert addresses["InternalIP"] == pod["status"]["hostIP"] != control_plane_ip
    assert addresses["InternalDNS"] == control_plane_ip  # the syncer's kubelet API: logs, exec
    answer = _virtual_run(
        seed, "curl-nodeport", "curlimages/curl", "curl", "-sS", "--max-time", "10",
        f"http://{addresses['InternalIP']}:{node_port}",
    )  # fmt: skip
    assert "Welcome to nginx!" in answer


def test_dns_falls_back_to_the_host_cluster_from_a_real_pod(seed):
    # fallbackHostCluster: a name the virtual cluster lacks is asked of the host's DNS.
    env = seed.env
    if not _kubectl(env, "get", "service", "only-on-host", "--ignore-not-found", "-o", "name").strip():
        _kubectl(env, "create", "service", "clusterip", "only-on-host", "--tcp=80:80")
    ip = _kubectl(env, "get", "service", "only-on-host", "-o", "jsonpath={.spec.clusterIP}")
    answer = _virtual_run(
        seed, "nslookup-host", "busybox", "nslookup", "only-on-host.default.svc.cluster.local"
    )
    assert ip in answer


def test_exec_and_port_forward_through_the_virtual_api_reach_the_real_container(seed):
    pod = seed.kubectl("get", "pods", "-n", "nginx1", "-o", "jsonpath={.items[0].metadata.name}")
    assert seed.kubectl("exec", "-n", "nginx1", pod, "--", "cat", "/etc/hostname").strip() == pod
    page = page_through_port_forward(
        [*seed.connect_argv(), "-n", "nginx1"],
        seed.env.vars,
        f"pod/{pod}",
        "the port-forward through the virtual API",
    )
    assert "Welcome to nginx!" in page


def test_a_deleted_control_plane_pod_comes_back_with_its_data(seed):
    env = seed.env
    seed.kubectl("create", "configmap", "keep-me", "--from-literal=kept=yes")
    uid = _kubectl(env, "get", "pod", f"{NAME}-0", "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}")
    _kubectl(env, "delete", "pod", f"{NAME}-0", "-n", NAMESPACE)
    wait_until(
        lambda: (
            _kubectl(
                env, "get", "pod", f"{NAME}-0", "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}", check=False
            )
            not in ("", uid)
        ),
        60,
        "a new control-plane pod",
    )
    _kubectl(
        env, "wait", "--for=condition=Ready", f"pod/{NAME}-0", "-n", NAMESPACE, "--timeout=120s", timeout=130
    )
    assert seed.kubectl("get", "configmap", "keep-me", "-o", "jsonpath={.data.kept}") == "yes"
    seed.kubectl("rollout", "status", "deployment/nginx-vcluster1", "-n", "nginx1", "--timeout=120s")


def test_pause_and_resume_keep_the_tenants_objects_and_bring_the_pods_back(seed):
    env = seed.env
    env.vnest("pause", NAME, "--namespace", NAMESPACE, timeout=300)
    wait_until(
        lambda: not _kubectl(env, "get", "pods", "-n", NAMESPACE, "-o", "name").strip(),
        120,
        "every pod of the paused cluster to go",
    )
    env.vnest("resume", NAME, "--namespace", NAMESPACE, timeout=300)
    seed.kubectl("rollout", "status", "deployment/nginx-vcluster1", "-n", "nginx1", "--timeout=180s")
    hosts = _kubectl(env, "get", "pods", "-n", NAMESPACE, "-l", f"vnest.io/managed-by={NAME}", "-o", "name")
    assert len(hosts.split()) >= 2


def test_coredns_mode_answers_real_pods(real_host_env):
    env = real_host_env
    env.vnest(
        "create", "dns2", "--namespace", "dns2", "--driver", "kubernetes", "--no-connect",
        "--set", "networking.dns.mode=coredns", timeout=600,
    )  # fmt: skip
    vc = VirtualCluster(env, "dns2", "dns2")
    try:
        vc.kubectl("rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=180s")
        vc.kubectl("create", "service", "clusterip", "probe", "--tcp=80:80")
        ip = vc.kubectl("get", "service", "probe", "-o", "jsonpath={.spec.clusterIP}")
        answer = _virtual_run(vc, "nslookup-probe", "busybox", "nslookup", "probe.default.svc.cluster.local")
        assert ip in answer
    finally:
        env.vnest("delete", "dns2", "--namespace", "dns2", check=False, timeout=300)


def test_delete_leaves_nothing_of_the_cluster_on_the_host(real_host_env):
    env = real_host_env
    env.vnest("create", "gone", "--namespace", "gone1", "--driver", "kubernetes", "--no-connect", timeout=600)
    vc = VirtualCluster(env, "gone", "gone1")
    vc.kubectl("create", "deployment", "web", "--image=nginx")
    vc.kubectl("rollout", "status", "deployment/web", "--timeout=120s")
    volume = _kubectl(env, "get", "pvc", "data-gone-0", "-n", "gone1", "-o", "jsonpath={.spec.volumeName}")
    env.vnest("delete", "gone", "--namespace", "gone1", timeout=300)

    def left() -> list[str]:
        names = _kubectl(
            env, "get", "all,pvc,secrets,configmaps,serviceaccounts", "-n", "gone1", "-o", "name"
        )
        # What Kubernetes itself puts in every namespace stays.
        return [n for n in names.split() if n not in ("configmap/kube-root-ca.crt", "serviceaccount/default")]

    wait_until(lambda: not left(), 120, "the host namespace to empty")
    wait_until(
        lambda: not _kubectl(env, "get", "pv", volume, "--ignore-not-found", "-o", "name").strip(),
        60,
        "the volume to go",
    )
