"""The DNS index on its own: records from raw Kubernetes objects, NXDOMAIN vs NODATA, updates.

The builders here produce objects shaped like what the API server returns (metadata with
uid and resourceVersion, status fields); test_dns_server.py uses them too.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import dns.name
import dns.rcode
import dns.rdatatype as T

from vnest.dns import DnsIndex, DnsMetrics, pod_dns_config
from vnest.dns.index import SERVICE_NAME_LABEL, dashed

_rv = itertools.count(1000)


def _meta(name: str, ns: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ns,
        "uid": str(uuid.uuid4()),
        "resourceVersion": str(next(_rv)),
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": labels or {},
    }


def service(name: str, ns: str = "default", ips: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """A Service; ``ips=["None"]`` makes it headless."""
    ips = ["10.96.0.10"] if ips is None else ips
    body: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": ips[0] if ips else "",
        "clusterIPs": ips,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        "selector": {"app": name},
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    body.update(spec)
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": _meta(name, ns, {"app": name}),
        "spec": body,
        "status": {"loadBalancer": {}},
    }


def external_name(name: str, target: str, ns: str = "default") -> dict[str, Any]:
    svc = service(name, ns, ips=[], type="ExternalName", externalName=target)
    for key in ("clusterIP", "clusterIPs", "selector", "ipFamilies", "ipFamilyPolicy"):
        svc["spec"].pop(key, None)
    return svc


def endpoint(
    ip: str, ready: bool | None = True, hostname: str | None = None, pod: str = ""
) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "nodeName": "node-1"}
    if ready is not None:
        ep["conditions"] = {"ready": ready, "serving": ready, "terminating": False}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default", "uid": str(uuid.uuid4())}
    return ep


def endpointslice(
    svc: str,
    endpoints: list[dict[str, Any]],
    ns: str = "default",
    name: str | None = None,
    ports: list[dict[str, Any]] | None = None,
    family: str = "IPv4",
) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": _meta(
            name or f"{svc}-{uuid.uuid4().hex[:5]}",
            ns,
            {
                SERVICE_NAME_LABEL: svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        ),
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def pod(name: str, ip: str, ns: str = "default", phase: str = "Running", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _meta(name, ns),
        "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-1", **spec},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2"},
    }


def q(ix: DnsIndex, name: str, rdtype: int = T.A):
    return ix.lookup(dns.name.from_text(name), rdtype)


def texts(answer) -> set[str]:
    return {rdata.to_text() for rrset in answer.answer for rdata in rrset}


# ---- records ---------------------------------------------------------------------------------


def test_clusterip_service_and_dual_stack():
    ix = DnsIndex()
    ix.on_service(None, service("web", ips=["10.96.0.10", "fd00::10"]))
    assert texts(q(ix, "web.default.svc.cluster.local")) == {"10.96.0.10"}
    assert texts(q(ix, "web.default.svc.cluster.local", T.AAAA)) == {"fd00::10"}
    assert texts(q(ix, "WEB.Default.svc.Cluster.Local")) == {"10.96.0.10"}  # DNS is case-blind
    a = q(ix, "web.default.svc.cluster.local")
    assert a.in_cluster and a.rcode == dns.rcode.NOERROR and a.answer[0].ttl == 30


def test_headless_service_answers_ready_endpoints_and_hostnames():
    ix = DnsIndex()
    ix.on_service(None, service("db", ips=["None"], ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    ports = [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    eps = [
        endpoint("10.0.0.5", hostname="db-0", pod="db-0"),
        endpoint("10.0.0.6", ready=False, hostname="db-1", pod="db-1"),
        endpoint("10.0.0.7", ready=None),  # no conditions: ready
    ]
    ix.on_endpointslice(None, endpointslice("db", eps, ports=ports))
    assert texts(q(ix, "db.default.svc.cluster.local")) == {"10.0.0.5", "10.0.0.7"}
    assert texts(q(ix, "db-0.db.default.svc.cluster.local")) == {"10.0.0.5"}
    assert q(ix, "db-1.db.default.svc.cluster.local").rcode == dns.rcode.NXDOMAIN  # not ready
    assert texts(q(ix, "10-0-0-7.db.default.svc.cluster.local")) == {"10.0.0.7"}
    srv = q(ix, "_pg._tcp.db.default.svc.cluster.local", T.SRV)
    assert texts(srv) == {
        "0 50 5432 db-0.db.default.svc.cluster.local.",
        "0 50 5432 10-0-0-7.db.default.svc.cluster.local.",
    }
    assert {r.to_text() for rrset in srv.additional for r in rrset} == {"10.0.0.5", "10.0.0.7"}
    assert texts(q(ix, "5.0.0.10.in-addr.arpa", T.PTR)) == {"db-0.db.default.svc.cluster.local."}


def test_headless_service_with_several_slices_and_no_ready_endpoint():
    ix = DnsIndex()
    ix.on_service(None, service("db", ips=["None"]))
    assert q(ix, "db.default.svc.cluster.local").rcode == dns.rcode.NOERROR  # exists: NODATA
    a = endpointslice("db", [endpoint("10.0.0.5")], name="db-a")
    b = endpointslice("db", [endpoint("fd00::5")], name="db-b", family="IPv6")
    ix.on_endpointslice(None, a)
    ix.on_endpointslice(None, b)
    assert texts(q(ix, "db.default.svc.cluster.local")) == {"10.0.0.5"}
    assert texts(q(ix, "db.default.svc.cluster.local", T.AAAA)) == {"fd00::5"}
    ix.on_endpointslice(a, None)
    assert not q(ix, "db.default.svc.cluster.local").answer


def test_srv_for_named_ports_of_a_clusterip_service():
    ix = DnsIndex()
    ports = [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"port": 9999, "protocol": "TCP"},  # unnamed: no SRV
    ]
    ix.on_service(None, service("web", ports=ports))
    assert texts(q(ix, "_http._tcp.web.default.svc.cluster.local", T.SRV)) == {
        "0 100 80 web.default.svc.cluster.local."
    }
    assert texts(q(ix, "_dns._udp.web.default.svc.cluster.local", T.SRV)) == {
        "0 100 53 web.default.svc.cluster.local."
    }
    assert q(ix, "_http._udp.web.default.svc.cluster.local", T.SRV).rcode == dns.rcode.NXDOMAIN
    # an empty non-terminal exists
    assert q(ix, "_tcp.web.default.svc.cluster.local", T.SRV).rcode == dns.rcode.NOERROR


def test_external_name_is_a_cname_followed_inside_the_cluster():
    ix = DnsIndex()
    ix.on_service(None, external_name("ext", "example.test"))
    ix.on_service(None, external_name("alias", "web.default.svc.cluster.local"))
    ix.on_service(None, service("web"))
    a = q(ix, "ext.default.svc.cluster.local")
    assert texts(a) == {"example.test."} and a.chase == dns.name.from_text("example.test")
    a = q(ix, "alias.default.svc.cluster.local")
    assert texts(a) == {"web.default.svc.cluster.local.", "10.96.0.10"} and a.chase is None
    assert texts(q(ix, "ext.default.svc.cluster.local", T.CNAME)) == {"example.test."}


def test_pods_and_ptr():
    ix = DnsIndex()
    ix.on_pod(None, pod("p", "10.0.1.9"))
    ix.on_pod(None, pod("done", "10.0.1.10", phase="Succeeded"))
    ix.on_service(None, service("web"))
    assert texts(q(ix, "10-0-1-9.default.pod.cluster.local")) == {"10.0.1.9"}
    assert q(ix, "10-0-1-9.other.pod.cluster.local").rcode == dns.rcode.NXDOMAIN  # verified
    assert q(ix, "10-0-1-10.default.pod.cluster.local").rcode == dns.rcode.NXDOMAIN
    assert texts(q(ix, "9.1.0.10.in-addr.arpa", T.PTR)) == {"10-0-1-9.default.pod.cluster.local."}
    assert texts(q(ix, "10.0.96.10.in-addr.arpa", T.PTR)) == {"web.default.svc.cluster.local."}
    assert not q(ix, "1.2.3.4.in-addr.arpa", T.PTR).in_cluster  # unknown IPs go upstream


def test_insecure_pod_mode_answers_any_dashed_ip():
    ix = DnsIndex(pods="insecure")
    assert texts(q(ix, "10-9-8-7.anything.pod.cluster.local")) == {"10.9.8.7"}
    assert texts(q(ix, "fd00--7.anything.pod.cluster.local", T.AAAA)) == {"fd00::7"}
    assert q(ix, "not-an-ip.anything.pod.cluster.local").rcode == dns.rcode.NXDOMAIN


def test_nxdomain_nodata_and_the_zone():
    ix = DnsIndex("vc.example")
    ix.on_service(None, service("web", ns="team"))
    cases = {
        ("web.team.svc.vc.example", T.A): (dns.rcode.NOERROR, True),
        ("web.team.svc.vc.example", T.AAAA): (dns.rcode.NOERROR, False),
        ("web.team.svc.vc.example", T.TXT): (dns.rcode.NOERROR, False),
        ("team.svc.vc.example", T.A): (dns.rcode.NOERROR, False),
        ("svc.vc.example", T.A): (dns.rcode.NOERROR, False),
        ("pod.vc.example", T.A): (dns.rcode.NOERROR, False),
        ("vc.example", T.SOA): (dns.rcode.NOERROR, True),
        ("dns-version.vc.example", T.TXT): (dns.rcode.NOERROR, True),
        ("nope.team.svc.vc.example", T.A): (dns.rcode.NXDOMAIN, False),
        ("web.other.svc.vc.example", T.A): (dns.rcode.NXDOMAIN, False),
        ("x.web.team.svc.vc.example", T.A): (dns.rcode.NXDOMAIN, False),
        ("foo.vc.example", T.A): (dns.rcode.NXDOMAIN, False),
    }
    for (name, rdtype), (rcode, has_answer) in cases.items():
        a = q(ix, name, rdtype)
        assert (a.rcode, bool(a.answer)) == (rcode, has_answer), (name, T.to_text(rdtype))
        assert a.in_cluster
        if not has_answer:
            assert a.authority and a.authority[0].rdtype == T.SOA  # for negative caching
    assert not q(ix, "web.team.svc.cluster.local").in_cluster  # another domain


def test_updates_and_deletes_leave_nothing_behind():
    ix = DnsIndex()
    empty = (set(ix._contrib), dict(ix._below), set(ix._rrsets))
    svc = service("web")
    ix.on_service(None, svc)
    changed = service("web", ips=["10.96.0.99"])
    ix.on_service(svc, changed)
    assert texts(q(ix, "web.default.svc.cluster.local")) == {"10.96.0.99"}
    assert not q(ix, "10.0.96.10.in-addr.arpa", T.PTR).in_cluster  # the old PTR went
    headless = service("db", ips=["None"])
    eps = endpointslice("db", [endpoint("10.0.0.5", hostname="db-0")])
    ix.on_endpointslice(None, eps)  # a slice may come before its service
    ix.on_service(None, headless)
    assert texts(q(ix, "db-0.db.default.svc.cluster.local")) == {"10.0.0.5"}
    moved = endpointslice("other", eps["endpoints"], name=eps["metadata"]["name"])
    ix.on_endpointslice(eps, moved)
    assert q(ix, "db-0.db.default.svc.cluster.local").rcode == dns.rcode.NXDOMAIN
    ix.on_pod(None, p := pod("p", "10.0.1.9", ns="team"))
    for old in (changed, headless):
        ix.on_service(old, None)
    ix.on_endpointslice(moved, None)
    ix.on_pod(p, None)
    assert (set(ix._contrib), dict(ix._below), set(ix._rrsets)) == empty
    assert q(ix, "web.default.svc.cluster.local").rcode == dns.rcode.NXDOMAIN
    assert q(ix, "default.svc.cluster.local").rcode == dns.rcode.NXDOMAIN


def test_bad_objects_are_skipped_not_raised():
    ix = DnsIndex()
    ix.on_service(None, service("bad", ports=[{"name": "x" * 70, "port": 1}]))  # label too long
    ix.on_pod(None, pod("p", "not-an-ip"))
    ix.on_endpointslice(None, endpointslice("gone", [endpoint("garbage")]))
    ix.on_service(None, service("ok"))
    assert texts(q(ix, "ok.default.svc.cluster.local")) == {"10.96.0.10"}


def test_two_indexes_are_separate():
    a, b = DnsIndex(), DnsIndex()
    a.on_service(None, service("only-a"))
    assert q(b, "only-a.default.svc.cluster.local").rcode == dns.rcode.NXDOMAIN


def test_pod_dns_config():
    assert pod_dns_config("team", "10.96.0.10", "cluster.local") == {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["10.96.0.10"],
            "searches": ["team.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            "options": [{"name": "ndots", "value": "5"}],
        },
    }


def test_metrics_text():
    m = DnsMetrics(labels={"vcluster": "a"})
    m.query("A", "answered", 0.0002)
    m.query("other", "nxdomain", 3.0)
    m.malformed()
    snap = m.snapshot()
    assert snap["queries"]["A"] == 1 and snap["results"]["malformed"] == 1
    assert (
        snap["latency_seconds"]["buckets"]["0.00025"] == 1 and snap["latency_seconds"]["buckets"]["+Inf"] == 2
    )
    text = m.prometheus_text()
    assert 'vnest_dns_queries_total{qtype="A",vcluster="a"} 1' in text
    assert 'vnest_dns_request_duration_seconds_bucket{le="+Inf",vcluster="a"} 2' in text
    assert 'vnest_dns_request_duration_seconds_count{vcluster="a"} 2' in text
    assert "# TYPE vnest_dns_request_duration_seconds histogram" in text


def test_dashed():
    assert dashed("10.0.0.1") == "10-0-0-1" and dashed("fd00::1") == "fd00--1"
