"""Real nodes: containerd, kubelet and kube-proxy in namespaces of their own, real containers.

One host with two real nodes serves the session (tests/conftest.py `real_host_env`).
"""

from __future__ import annotations

import json

from tests.real.pods import page_through_port_forward, run_to_completion
from vnest.host import netns
from vnest.procs import wait_until

HOST = "vnest-host"


def _kubectl(env, *args: str, check: bool = True, timeout: float = 120) -> str:
    return env.kubectl("--context", HOST, *args, check=check, timeout=timeout).stdout


def _run_to_completion(env, name: str, image: str, *command: str, namespace: str = "default") -> str:
    """Runs a pod on the host to its end and returns its log."""
    return run_to_completion(lambda *args: _kubectl(env, "-n", namespace, *args), name, image, *command)


def _nginx(env, namespace: str = "default") -> str:
    """An nginx Deployment and its Service; returns the Service's ClusterIP."""
    existing = _kubectl(env, "get", "deployment", "web", "-n", namespace, "--ignore-not-found", "-o", "name")
    if not existing.strip():
        _kubectl(env, "create", "deployment", "web", "-n", namespace, "--image=nginx", "--replicas=2")
        _kubectl(env, "expose", "deployment", "web", "-n", namespace, "--port=80")
    _kubectl(env, "rollout", "status", "deployment/web", "-n", namespace, "--timeout=180s", timeout=200)
    return _kubectl(env, "get", "service", "web", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}")


def test_two_real_nodes_ready_with_the_pinned_kubelet_and_containerd(real_host_env):
    nodes = json.loads(_kubectl(real_host_env, "get", "nodes", "-o", "json"))["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["worker1", "worker2"]
    for i, node in enumerate(nodes, start=1):
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.36.3"
        assert info["containerRuntimeVersion"].startswith("containerd://1.")
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert {"type": "InternalIP", "address": netns.node_ip(i)} in node["status"]["addresses"]
        assert node["spec"]["podCIDR"] == f"10.244.{i}.0/24"
        assert not node["spec"].get("taints")


def test_nginx_answers_on_its_cluster_ip_and_its_dns_name_from_a_pod(real_host_env):
    env = real_host_env
    cluster_ip = _nginx(env)
    pods = json.loads(_kubectl(env, "get", "pods", "-l", "app=web", "-o", "json"))["items"]
    # Spread over both nodes, with addresses from each node's own range: cross-node routing works.
    assert {p["spec"]["nodeName"] for p in pods} <= {"worker1", "worker2"}
    for pod in pods:
        index = pod["spec"]["nodeName"].removeprefix("worker")
        assert pod["status"]["podIP"].startswith(f"10.244.{index}.")
    by_ip = _run_to_completion(
        env, "curl-ip", "curlimages/curl", "curl", "-sS", "--max-time", "10", f"http://{cluster_ip}"
    )
    assert "Welcome to nginx!" in by_ip
    by_name = _run_to_completion(
        env,
        "curl-dns",
        "curlimages/curl",
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://web.default.svc.cluster.local",
    )
    assert "Welcome to nginx!" in by_name
    # The API server is reached from pods at the kubernetes Service, through kube-proxy and the hub.
    api = _run_to_completion(
        env,
        "curl-api",
        "curlimages/curl",
        "curl",
        "-sSk",
        "--max-time",
        "10",
        "https://kubernetes.default/livez",
    )
    assert "ok" in api or "Unauthorized" in api or "forbidden" in api.lower()


def test_a_pod_cannot_reach_the_registry_the_nodes_pull_from(real_host_env):
    """A tenant's pod could otherwise push its own image over `nginx:latest` for every node."""
    probe = "curl -sS -m 5 http://10.89.0.1:5000/v2/_catalog; rc=$?; echo; echo curl-exit=$rc"
    out = _run_to_completion(real_host_env, "registry-probe", "curlimages/curl", "sh", "-c", probe)
    assert "curl-exit=0" not in out and "repositories" not in out, out
    # The nodes still pull: a new image reference resolves on both of them.
    _run_to_completion(real_host_env, "pull-check", "busybox", "true")


def test_logs_exec_and_port_forward_reach_the_real_container(real_host_env):
    env = real_host_env
    cluster_ip = _nginx(env)
    _run_to_completion(
        env,
        "curl-log",
        "curlimages/curl",
        "curl",
        "-sS",
        "--max-time",
        "10",
        f"http://{cluster_ip}/from-curl-log",
    )
    wait_until(
        lambda: "GET /from-curl-log" in _kubectl(env, "logs", "-l", "app=web", "--tail=-1", "--prefix"),
        30,
        "nginx's access log line",
    )
    pod = _kubectl(env, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}")
    hostname = _kubectl(env, "exec", pod, "--", "cat", "/etc/hostname").strip()
    assert hostname == pod
    page = page_through_port_forward(
        [env.kubectl_path, "--context", HOST], env.vars, f"pod/{pod}", "the port-forward"
    )
    assert "Welcome to nginx!" in page


def test_the_seed_demo_on_real_nodes_with_a_virtual_cluster(real_host_env):
    """The seed's commands inside a process-driver cluster, its pods running for real on the host."""
    from tests.e2e.vcluster import VirtualCluster

    env = real_host_env
    env.vnest(
        "create",
        "my-vcluster",
        "--namespace",
        "vcluster1",
        "--driver",
        "process",
        "--no-connect",
        timeout=300,
    )
    vc = VirtualCluster(env, "my-vcluster", "vcluster1")
    try:
        vc.kubectl("create", "namespace", "nginx1")
        vc.kubectl("create", "deployment", "nginx-vcluster1", "-n", "nginx1", "--image=nginx", "--replicas=2")
        vc.kubectl("create", "service", "clusterip", "nginx-vcluster1", "--tcp=80:80", "-n", "nginx1")
        vc.kubectl("rollout", "status", "deployment/nginx-vcluster1", "-n", "nginx1", "--timeout=180s")
        host_service = "nginx-vcluster1-x-nginx1-x-my-vcluster"
        cluster_ip = wait_until(
            lambda: _kubectl(
                env, "get", "service", host_service, "-n", "vcluster1", "-o", "jsonpath={.spec.clusterIP}"
            ),
            60,
            "the host copy of the Service",
        )
        page = _run_to_completion(
            env,
            "curl-pod",
            "curlimages/curl",
            "curl",
            "-sS",
            "--max-time",
            "10",
            f"http://{cluster_ip}/seed-demo",
        )
        assert "404 Not Found" in page and "nginx" in page
        page = _run_to_completion(
            env, "curl-pod", "curlimages/curl", "curl", "-sS", "--max-time", "10", f"http://{cluster_ip}"
        )
        assert "Welcome to nginx!" in page
        # Through the virtual API: logs and exec reach the real containers on the host.
        wait_until(
            lambda: (
                "GET /seed-demo"
                in vc.kubectl("logs", "-n", "nginx1", "deployment/nginx-vcluster1", "--all-pods=true")
            ),
            30,
            "nginx's access log line through the virtual API",
        )
        pod = vc.kubectl("get", "pods", "-n", "nginx1", "-o", "jsonpath={.items[0].metadata.name}")
        assert "nginx" in vc.kubectl("exec", "-n", "nginx1", pod, "--", "cat", "/etc/nginx/nginx.conf")

        # A StatefulSet-style pod: its /etc/hosts names its virtual FQDN (vnest's init container),
        # and its token, mounted from a Secret made after the kubelet got the pod, is bound to it.
        vc.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "nginx1"},
                "spec": {
                    "hostname": "web-0",
                    "subdomain": "nginx",
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                },
            }
        )
        vc.kubectl("wait", "-n", "nginx1", "pod/web-0", "--for=condition=Ready", "--timeout=180s")
        hosts = vc.kubectl("exec", "-n", "nginx1", "web-0", "--", "cat", "/etc/hosts")
        assert "web-0.nginx.nginx1.svc.cluster.local\tweb-0" in hosts and "vcluster1" not in hosts, hosts
        token = vc.kubectl(
            "exec",
            "-n",
            "nginx1",
            "web-0",
            "--",
            "cat",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        )
        review = env.root / "review.json"
        review.write_text(
            json.dumps(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
            )
        )
        status = json.loads(vc.kubectl("create", "-f", str(review), "-o", "json"))["status"]
        assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["web-0"]
    finally:
        env.vnest("delete", "my-vcluster", "--namespace", "vcluster1", check=False, timeout=300)
        _kubectl(env, "delete", "pod", "curl-pod", "--ignore-not-found", check=False)
