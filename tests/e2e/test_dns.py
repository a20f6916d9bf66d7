"""The embedded DNS server, running in the control plane, answering from the syncer's caches."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import httpx

from vnest import binaries, naming
from vnest.dns import coredns
from vnest.procs import free_port, wait_until

HOST = "vnest-host"


def _dns_port(env, name: str) -> int:
    status = Path(env.vars["VNEST_HOME"]) / "clusters" / name / name / "data" / "status.json"
    return json.loads(status.read_text())["dnsPort"]


def _query(port: int, qname: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(qname, rdtype), "127.0.0.1", port=port, timeout=2)


def _metrics(url: str) -> dict[str, float]:
    """A Prometheus text page as {"name{labels}": value}."""
    lines = httpx.get(url, timeout=5).raise_for_status().text.splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}


def _kubectl(env, name: str, *args: str) -> str:
    return env.vnest("connect", name, "-n", name, "--", env.kubectl_path, *args).stdout


def test_services_resolve_within_a_second_and_only_in_their_own_cluster(host_env):
    env = host_env
    for name in ("dns-a", "dns-b"):
        env.vnest("create", name, "-n", name, "--no-connect")
    try:
        port_a, port_b = _dns_port(env, "dns-a"), _dns_port(env, "dns-b")
        _kubectl(env, "dns-a", "create", "namespace", "shop")
        _kubectl(env, "dns-a", "create", "service", "clusterip", "web", "-n", "shop", "--tcp=80:80")
        created = time.monotonic()
        qname = "web.shop.svc.cluster.local"

        def answered() -> list[str] | None:
            reply = _query(port_a, qname)
            return [r.address for rrset in reply.answer for r in rrset] or None

        ips = wait_until(answered, 1.0, f"{qname} to resolve", interval=0.05)
        assert time.monotonic() - created < 1.0
        virtual_ip = json.loads(_kubectl(env, "dns-a", "get", "service", "web", "-n", "shop", "-o", "json"))[
            "spec"
        ]
        assert ips in ([virtual_ip["clusterIP"]], virtual_ip.get("clusterIPs"))
        # The other virtual cluster knows nothing of it.
        assert _query(port_b, qname).rcode() == dns.rcode.NXDOMAIN

        _kubectl(env, "dns-a", "delete", "service", "web", "-n", "shop")
        wait_until(
            lambda: _query(port_a, qname).rcode() == dns.rcode.NXDOMAIN, 1.0, "the deletion", interval=0.05
        )

        # The control plane's metrics endpoint counts what was just asked.
        described = json.loads(env.vnest("describe", "dns-a", "-n", "dns-a", "-o", "json").stdout)
        metrics = _metrics(described["endpoints"]["metrics"])
        assert metrics['vnest_dns_queries_total{qtype="A"}'] >= 2
        assert metrics['vnest_dns_results_total{result="answered"}'] >= 1
        assert metrics['vnest_dns_results_total{result="nxdomain"}'] >= 1
        assert metrics["vnest_dns_request_duration_seconds_count"] >= 2
        assert metrics['vnest_syncer_reconciles_total{kind="Service"}'] >= 1
        assert metrics['vnest_syncer_cached_objects{informer="virtual Service"}'] >= 2

        # Synced pods point at the virtual kube-dns Service, whose host copy selects the control-plane pod.
        kube_dns = json.loads(
            _kubectl(env, "dns-a", "get", "service", "kube-dns", "-n", "kube-system", "-o", "json")
        )
        host = json.loads(
            env.kubectl(
                "--context",
                HOST,
                "get",
                "service",
                "kube-dns-x-kube-system-x-dns-a",
                "-n",
                "dns-a",
                "-o",
                "json",
            ).stdout
        )
        assert host["spec"]["clusterIP"] == kube_dns["spec"]["clusterIP"]
        assert host["spec"]["selector"] == naming.control_plane_pod_selector("dns-a")
        assert {(p["protocol"], p["targetPort"]) for p in host["spec"]["ports"]} == {
            ("UDP", naming.DNS_POD_PORT),
            ("TCP", naming.DNS_POD_PORT),
        }
    finally:
        for name in ("dns-a", "dns-b"):
            env.vnest("delete", name, "-n", name, check=False)


def _host_kubectl(env, *args: str) -> str:
    return env.kubectl("--context", HOST, *args).stdout


def _values(env, name: str, text: str) -> str:
    path = env.root / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_names_the_virtual_cluster_lacks_fall_back_to_the_host_dns_when_allowed(host_env):
    env = host_env
    fallback = _values(env, "fallback", "networking:\n  advanced:\n    fallbackHostCluster: true\n")
    env.vnest("create", "fb-on", "-n", "fb-on", "--no-connect", "-f", fallback)
    env.vnest("create", "fb-off", "-n", "fb-off", "--no-connect")
    try:
        _host_kubectl(env, "create", "namespace", "fb-shop")
        _host_kubectl(env, "create", "service", "clusterip", "till", "-n", "fb-shop", "--tcp=80:80")
        host_ip = json.loads(_host_kubectl(env, "get", "service", "till", "-n", "fb-shop", "-o", "json"))[
            "spec"
        ]["clusterIP"]
        qname = "till.fb-shop.svc.cluster.local"

        def resolved() -> list[str] | None:
            reply = _query(_dns_port(env, "fb-on"), qname)
            return [r.address for rrset in reply.answer for r in rrset] or None

        # The host DNS (CoreDNS on the local host) may take a moment to see the new Service.
        assert wait_until(resolved, 10.0, f"{qname} to resolve through the host DNS") == [host_ip]
        assert _query(_dns_port(env, "fb-off"), qname).rcode() == dns.rcode.NXDOMAIN
        # A name the virtual cluster has is answered from it, fallback or not.
        _kubectl(env, "fb-on", "create", "service", "clusterip", "till", "-n", "default", "--tcp=80:80")
        own = wait_until(
            lambda: (
                [
                    r.address
                    for rrset in _query(_dns_port(env, "fb-on"), "till.default.svc.cluster.local").answer
                    for r in rrset
                ]
                or None
            ),
            1.0,
            "the virtual Service to resolve",
            interval=0.05,
        )
        assert own != [host_ip]
    finally:
        _host_kubectl(env, "delete", "namespace", "fb-shop", "--wait=false")
        for name in ("fb-on", "fb-off"):
            env.vnest("delete", name, "-n", name, check=False)


def test_coredns_mode_deploys_coredns_in_the_virtual_cluster(host_env, tmp_path):
    env = host_env
    name = "cdns"
    values = _values(
        env,
        name,
        "networking:\n  dns:\n    mode: coredns\n  advanced:\n    fallbackHostCluster: true\n",
    )
    env.vnest("create", name, "-n", name, "--no-connect", "-f", values)
    coredns_proc = None
    try:
        # No embedded server in this mode.
        assert (
            json.loads(env.vnest("describe", name, "-n", name, "-o", "json").stdout)["endpoints"]["dns"]
            is None
        )

        def available() -> bool:
            out = _kubectl(env, name, "get", "deployment", "coredns", "-n", "kube-system", "-o", "json")
            return json.loads(out).get("status", {}).get("availableReplicas") == 1

        # KWOK runs the synced CoreDNS pod on the host; its status comes back to the Deployment.
        wait_until(available, 60.0, "the coredns Deployment to be available")
        kube_dns = json.loads(
            _kubectl(env, name, "get", "service", "kube-dns", "-n", "kube-system", "-o", "json")
        )
        assert kube_dns["spec"]["selector"] == {"k8s-app": "kube-dns"}
        host_dns = json.loads(
            _host_kubectl(env, "get", "service", "kube-dns-x-kube-system-x-cdns", "-n", name, "-o", "json")
        )
        # Synced like any Service: same IP, the CoreDNS pods' translated selector (not the control plane).
        assert host_dns["spec"]["clusterIP"] == kube_dns["spec"]["clusterIP"]
        assert host_dns["spec"]["selector"] != naming.control_plane_pod_selector(name)
        host_pods = json.loads(
            _host_kubectl(
                env,
                "get",
                "pods",
                "-n",
                name,
                "-l",
                ",".join(f"{k}={v}" for k, v in host_dns["spec"]["selector"].items()),
                "-o",
                "json",
            )
        )["items"]
        assert len(host_pods) == 1 and host_pods[0]["status"]["phase"] == "Running"
        # A workload's ClusterFirst DNS is CoreDNS's Service.
        _kubectl(env, name, "run", "client", "--image=busybox", "--restart=Never")
        client = wait_until(
            lambda: (
                _host_kubectl(
                    env,
                    "get",
                    "pod",
                    "client-x-default-x-cdns",
                    "-n",
                    name,
                    "-o",
                    "json",
                    "--ignore-not-found",
                )
                or None
            ),
            30.0,
            "the client pod on the host",
        )
        assert json.loads(client)["spec"]["dnsConfig"]["nameservers"] == [kube_dns["spec"]["clusterIP"]]

        # The Corefile in the ConfigMap is what vnest renders, forwarding to the host DNS.
        host_dns_address = json.loads(
            _host_kubectl(env, "get", "service", "kube-dns", "-n", "kube-system", "-o", "json")
        )["metadata"]["annotations"][naming.ANNOTATION_LOCAL_ADDRESS]
        config = json.loads(
            _kubectl(env, name, "get", "configmap", "coredns", "-n", "kube-system", "-o", "json")
        )
        assert config["data"]["Corefile"] == coredns.corefile("cluster.local", host_dns_address, True)

        # ... and the pinned CoreDNS really serves the virtual cluster with it. No container runtime
        # here, so the test runs the binary on this machine as the pod would run it, pointed at
        # the virtual API by kubeconfig instead of the in-cluster config.
        kubeconfig = tmp_path / "virtual.kubeconfig"
        kubeconfig.write_text(env.vnest("connect", name, "-n", name, "--print").stdout)
        port, health, ready, metrics = (free_port() for _ in range(4))
        corefile = tmp_path / "Corefile"
        corefile.write_text(
            coredns.corefile(
                "cluster.local",
                host_dns_address,
                True,
                port=port,
                bind="127.0.0.1",
                kubeconfig=str(kubeconfig),
                health_port=health,
                ready_port=ready,
                metrics_port=metrics,
            )
        )
        log = (tmp_path / "coredns.log").open("w")
        coredns_proc = subprocess.Popen(
            [str(binaries.ensure().coredns), "-conf", str(corefile)], stdout=log, stderr=subprocess.STDOUT
        )
        _kubectl(env, name, "create", "service", "clusterip", "web", "-n", "default", "--tcp=80:80")
        web_ip = json.loads(_kubectl(env, name, "get", "service", "web", "-o", "json"))["spec"]["clusterIP"]

        def answer(qname: str) -> list[str] | None:
            try:
                reply = _query(port, qname)
            except (OSError, dns.exception.Timeout):
                return None
            return [r.address for rrset in reply.answer for r in rrset] or None

        assert wait_until(lambda: answer("web.default.svc.cluster.local"), 30.0, "CoreDNS to answer") == [
            web_ip
        ]
        # The host's own kubernetes Service, through the fallback.
        host_kubernetes = json.loads(_host_kubectl(env, "get", "service", "kubernetes", "-o", "json"))
        assert answer("kubernetes.default.svc.cluster.local") != [host_kubernetes["spec"]["clusterIP"]]
        _host_kubectl(env, "create", "service", "clusterip", "only-on-host", "-n", "default", "--tcp=80:80")
        host_ip = json.loads(_host_kubectl(env, "get", "service", "only-on-host", "-o", "json"))["spec"][
            "clusterIP"
        ]
        assert wait_until(
            lambda: answer("only-on-host.default.svc.cluster.local"),
            15.0,
            "the host name through the fallback",
        ) == [host_ip]
    finally:
        if coredns_proc is not None:
            coredns_proc.terminate()
            coredns_proc.wait(10)
        _host_kubectl(env, "delete", "service", "only-on-host", "-n", "default", "--ignore-not-found")
        env.vnest("delete", name, "-n", name, check=False)


_RECORDS = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres, ports: [{name: pg, containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  clusterIP: None
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {kubernetes.io/service-name: manual, endpointslice.kubernetes.io/managed-by: test}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - addresses: [10.77.0.1]
    conditions: {ready: true}
  - addresses: [10.77.0.2]
    conditions: {ready: false}
"""


def test_every_record_type_from_a_real_virtual_cluster(host_env):
    """The index fed by real informers: headless, StatefulSet hostnames, SRV, CNAME, PTR."""
    env = host_env
    name = "dns-rec"
    env.vnest("create", name, "-n", name, "--no-connect")
    try:
        manifest = env.root / "records.yaml"
        manifest.write_text(_RECORDS)
        _kubectl(env, name, "apply", "-f", str(manifest))
        port = _dns_port(env, name)

        def pods_ready() -> dict[str, str] | None:
            pods = json.loads(_kubectl(env, name, "get", "pods", "-l", "app=db", "-o", "json"))["items"]
            ips = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods}
            ready = all(
                c["status"] == "True"
                for p in pods
                for c in p["status"].get("conditions", [])
                if c["type"] == "Ready"
            )
            return ips if len(ips) == 2 and all(ips.values()) and ready else None

        # KWOK runs the synced pods on the host; their IPs and readiness come back.
        ips = wait_until(pods_ready, 60.0, "the StatefulSet's pods to be ready")

        def addresses(qname: str, rdtype: str = "A") -> list[str]:
            reply = _query(port, qname, rdtype)
            return sorted(r.to_text() for rrset in reply.answer for r in rrset)

        domain = "default.svc.cluster.local"
        assert wait_until(
            lambda: addresses(f"db.{domain}") == sorted(ips.values()),
            10.0,
            "the headless service's endpoints",
        )
        assert addresses(f"db-0.db.{domain}") == [ips["db-0"]]
        assert addresses(f"_pg._tcp.db.{domain}", "SRV") == [
            f"0 50 5432 db-0.db.{domain}.",
            f"0 50 5432 db-1.db.{domain}.",
        ]
        assert addresses(f"ext.{domain}", "CNAME") == ["db.example.com."]
        # Ready endpoints only.
        assert addresses(f"manual.{domain}") == ["10.77.0.1"]
        assert addresses(dns.reversename.from_address(ips["db-1"]).to_text(), "PTR") == [f"db-1.db.{domain}."]
        kubernetes_ip = json.loads(_kubectl(env, name, "get", "service", "kubernetes", "-o", "json"))["spec"][
            "clusterIP"
        ]
        assert addresses(dns.reversename.from_address(kubernetes_ip).to_text(), "PTR") == [
            f"kubernetes.{domain}."
        ]
        assert _query(port, f"nothing.{domain}").rcode() == dns.rcode.NXDOMAIN
        # NODATA: the name exists, the type does not.
        reply = _query(port, f"db-0.db.{domain}", "TXT")
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    finally:
        env.vnest("delete", name, "-n", name, check=False)
