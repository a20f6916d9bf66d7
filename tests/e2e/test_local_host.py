"""The embedded local host behaves like a real cluster: nodes, scheduling, pod IPs, services, logs."""

import json
import time
from pathlib import Path

from tests.conftest import SESSION_HOST_PORT
from vnest import naming
from vnest.host.kwok import SIMULATED_LOG
from vnest.host.local import CONTEXT, Ports, resolve
from vnest.procs import wait_until

DNS_PORT = Ports.starting_at(SESSION_HOST_PORT).dns


def _json(env, *args):
    return json.loads(env.kubectl("--context", CONTEXT, *args, "-o", "json").stdout)


def test_two_ready_nodes(host_env):
    nodes = _json(host_env, "get", "nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["worker1", "worker2"]
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert node["spec"]["podCIDR"].startswith("10.244.")


def test_current_context_is_the_host(host_env):
    assert host_env.kubectl("config", "current-context").stdout.strip() == CONTEXT


def test_deployment_runs_with_distinct_pod_ips_behind_a_service(host_env):
    ns = f"e2e-{int(time.time() * 1000)}"
    k = host_env.kubectl
    k("--context", CONTEXT, "create", "namespace", ns)
    k("--context", CONTEXT, "create", "deployment", "web", "-n", ns, "--image=nginx", "--replicas=3")
    k("--context", CONTEXT, "create", "service", "clusterip", "web", "--tcp=80:80", "-n", ns)

    def running_pods():
        pods = _json(host_env, "get", "pods", "-n", ns, "-l", "app=web")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return running if len(running) == 3 else None

    pods = wait_until(running_pods, 60, "3 Running pods")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3
    assert all(ip.startswith("10.244.") for ip in ips)
    assert {p["spec"]["nodeName"] for p in pods} <= {"worker1", "worker2"}

    service = _json(host_env, "get", "service", "web", "-n", ns)
    assert service["spec"]["clusterIP"].startswith("10.96.")

    def endpoint_ips():
        slices = _json(host_env, "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web")
        found = {a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]}
        return found if found == ips else None

    wait_until(endpoint_ips, 30, "the service's endpoints to list the 3 pod IPs")
    endpoints = _json(host_env, "get", "endpoints", "web", "-n", ns)
    assert {a["ip"] for s in endpoints["subsets"] for a in s["addresses"]} == ips

    pod = pods[0]["metadata"]["name"]
    logs = k("--context", CONTEXT, "logs", pod, "-n", ns).stdout
    assert logs == SIMULATED_LOG
    out = k("--context", CONTEXT, "exec", pod, "-n", ns, "--", "echo", "hello from exec").stdout
    assert out == "hello from exec\n"
    # A pod's command runs on this machine, so as nobody, in a scratch folder nobody owns:
    # what a tenant or a conformance spec runs cannot write outside it.
    probe = "/vnest-kwok-exec-probe"
    unconfined = k(
        "--context",
        CONTEXT,
        "exec",
        pod,
        "-n",
        ns,
        "--",
        "sh",
        "-c",
        f"id -u; pwd; touch {probe}",
        check=False,
    )
    uid, workdir = unconfined.stdout.split()[:2]
    assert uid == "65534" and Path(workdir).name.startswith("vnest-kwok-exec-")
    assert unconfined.returncode != 0 and not Path(probe).exists()
    written = k("--context", CONTEXT, "exec", pod, "-n", ns, "--", "sh", "-c", "echo ok > here && cat here")
    assert written.stdout == "ok\n"
    k("--context", CONTEXT, "delete", "namespace", ns, "--wait=false")


def test_cluster_dns_answers_on_the_seventh_port(host_env):
    assert DNS_PORT == SESSION_HOST_PORT + 6
    kubernetes = _json(host_env, "get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert resolve("kubernetes.default.svc.cluster.local", DNS_PORT) == [kubernetes]
    status = json.loads(host_env.vnest("host", "status", "-o", "json").stdout)
    assert status["dns"] == f"127.0.0.1:{DNS_PORT}"
    assert status["components"]["coredns"]["running"]


def test_a_new_service_resolves_within_seconds(host_env):
    ns = f"e2e-dns-{int(time.time() * 1000)}"
    k = host_env.kubectl
    k("--context", CONTEXT, "create", "namespace", ns)
    k("--context", CONTEXT, "create", "service", "clusterip", "api", "--tcp=8080:8080", "-n", ns)
    ip = _json(host_env, "get", "service", "api", "-n", ns)["spec"]["clusterIP"]
    assert wait_until(lambda: resolve(f"api.{ns}.svc.cluster.local", DNS_PORT), 3, "the new Service") == [ip]
    k("--context", CONTEXT, "delete", "namespace", ns, "--wait=false")


def test_kube_dns_service_says_where_the_dns_is_served(host_env):
    svc = _json(host_env, "get", "service", "kube-dns", "-n", "kube-system")
    assert svc["metadata"]["annotations"][naming.ANNOTATION_LOCAL_ADDRESS] == f"127.0.0.1:{DNS_PORT}"
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    ports = {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")}
    # The Service's own name resolves to its ClusterIP through the host DNS.
    assert resolve("kube-dns.kube-system.svc.cluster.local", DNS_PORT) == [svc["spec"]["clusterIP"]]
