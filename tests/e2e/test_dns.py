"""The embedded DNS server, running in the control plane, answering from the syncer's caches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from vnest import naming
from vnest.procs import wait_until

HOST = "vnest-host"


def _dns_port(env, name: str) -> int:
    status = Path(env.vars["VNEST_HOME"]) / "clusters" / name / name / "data" / "status.json"
    return json.loads(status.read_text())["dnsPort"]


def _query(port: int, qname: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(qname, rdtype), "127.0.0.1", port=port, timeout=2)


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
