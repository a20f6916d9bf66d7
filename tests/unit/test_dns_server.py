"""The DNS server over real sockets on 127.0.0.1: answers, updates, forwarding, bad input.

Each test runs its own event loop (``asyncio.run``) with a DnsServer on a free loopback port
and queries it with dnspython's client, as a pod's resolver would. Upstream DNS servers are
played by FakeUpstream, on loopback too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype as T
import dns.rrset

from tests.unit.test_dns_index import endpoint, endpointslice, external_name, pod, service
from vnest.dns import DnsIndex, DnsServer
from vnest.dns import server as server_module

LOCAL = "127.0.0.1"


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers A for the names in ``records``, NXDOMAIN for other names, or nothing at all
    for names under ``blackhole`` (a resolver that never answers). TCP too, for TC retries."""

    def __init__(self, records: dict[str, str], blackhole: str | None = None, ttl: int = 60) -> None:
        self.ttl = ttl
        self.records = {dns.name.from_text(k): v for k, v in records.items()}
        self.blackhole = dns.name.from_text(blackhole) if blackhole else None
        self.seen: list[str] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        self.port = self._udp.get_extra_info("sockname")[1]
        return f"{LOCAL}:{self.port}"

    def close(self) -> None:
        if self._udp:
            self._udp.close()

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        name = query.question[0].name
        self.seen.append(name.to_text())
        if self.blackhole is not None and name.is_subdomain(self.blackhole):
            return None
        response = dns.message.make_response(query)
        if name in self.records and query.question[0].rdtype == T.A:
            response.answer.append(dns.rrset.from_text(name, self.ttl, "IN", "A", self.records[name]))
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        wire = self.answer(data)
        if wire is not None and self._udp is not None:
            self._udp.sendto(wire, addr)


def populated(domain: str = "cluster.local") -> DnsIndex:
    """A small virtual cluster: ClusterIP, headless StatefulSet-style, ExternalName, pods."""
    ix = DnsIndex(domain)
    ix.on_service(
        None,
        service(
            "web",
            ips=["10.96.0.10"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        ),
    )
    ix.on_service(None, service("db", ips=["None"], ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    ix.on_endpointslice(
        None,
        endpointslice(
            "db",
            [
                endpoint("10.244.0.5", hostname="db-0", pod="db-0"),
                endpoint("10.244.0.6", ready=False, hostname="db-1", pod="db-1"),
            ],
            ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        ),
    )
    ix.on_service(None, external_name("ext", "example.test"))
    ix.on_pod(None, pod("db-0", "10.244.0.5", hostname="db-0", subdomain="db"))
    ix.on_pod(None, pod("client", "10.244.0.9"))
    return ix


async def udp(port: int, name: str, rdtype: T.RdataType = T.A, **kw) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, rdtype, **kw), LOCAL, timeout=3, port=port)


async def tcp(port: int, name: str, rdtype: T.RdataType = T.A) -> dns.message.Message:
    return await dns.asyncquery.tcp(dns.message.make_query(name, rdtype), LOCAL, timeout=3, port=port)


def values(msg: dns.message.Message, rdtype: int | None = None) -> set[str]:
    return {r.to_text() for rrset in msg.answer if rdtype in (None, rrset.rdtype) for r in rrset}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# ---- answers -----------------------------------------------------------------------------------


def test_cluster_names_over_udp_and_tcp():
    async def main():
        async with DnsServer(populated(), upstreams=[]) as server:
            p = server.port
            for ask in (udp, tcp):
                r = await ask(p, "web.default.svc.cluster.local.")
                assert r.rcode() == dns.rcode.NOERROR and values(r) == {"10.96.0.10"}
                assert r.flags & dns.flags.AA and r.answer[0].ttl == 30
            r = await udp(p, "db.default.svc.cluster.local.")
            assert values(r) == {"10.244.0.5"}  # the not-ready endpoint is left out
            r = await udp(p, "db-0.db.default.svc.cluster.local.")
            assert values(r) == {"10.244.0.5"}
            r = await udp(p, "_pg._tcp.db.default.svc.cluster.local.", T.SRV)
            assert values(r) == {"0 100 5432 db-0.db.default.svc.cluster.local."}
            assert {x.to_text() for rrset in r.additional for x in rrset} == {"10.244.0.5"}
            r = await tcp(p, "_http._tcp.web.default.svc.cluster.local.", T.SRV)
            assert values(r) == {"0 100 80 web.default.svc.cluster.local."}
            r = await udp(p, "ext.default.svc.cluster.local.")
            assert values(r, T.CNAME) == {"example.test."}  # nowhere to follow it: CNAME only
            r = await udp(p, "10.0.96.10.in-addr.arpa.", T.PTR)
            assert values(r) == {"web.default.svc.cluster.local."}
            r = await udp(p, "9.0.244.10.in-addr.arpa.", T.PTR)
            assert values(r) == {"10-244-0-9.default.pod.cluster.local."}
            r = await udp(p, "10-244-0-9.default.pod.cluster.local.")
            assert values(r) == {"10.244.0.9"}
            r = await udp(p, "missing.default.svc.cluster.local.")
            assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
            assert r.authority[0].rdtype == T.SOA
            r = await udp(p, "web.default.svc.cluster.local.", T.AAAA)  # NODATA
            assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == T.SOA
            r = await udp(p, "web.default.svc.cluster.local.", use_edns=0)  # EDNS is echoed
            assert r.edns == 0 and values(r) == {"10.96.0.10"}
            r = await udp(p, "Missing.default.svc.cluster.local.", use_edns=0)  # negative answers too
            assert r.edns == 0 and r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == T.SOA
            assert r.question[0].name.labels[0] == b"Missing" and r.flags & dns.flags.AA
            snap = server.metrics.snapshot()
            assert snap["results"]["nxdomain"] == 2 and snap["results"]["nodata"] == 1
            assert snap["queries"]["SRV"] == 2 and snap["latency_seconds"]["count"] == 14

    run(main())


def test_address_answers_built_without_dnspython_equal_the_rendered_ones():
    """Plain A/AAAA queries take a raw path; with and without the response cache, and in
    every spelling, the reply is the one dnspython renders."""

    async def main():
        ix = populated()
        ix.on_service(None, service("v6", ips=["fd00::10"]))
        names = [
            ("web.default.svc.cluster.local.", T.A),
            ("WeB.DeFault.Svc.Cluster.Local.", T.A),
            ("db.default.svc.cluster.local.", T.A),
            ("db-0.db.default.svc.cluster.local.", T.A),
            ("10-244-0-9.default.pod.cluster.local.", T.A),
            ("v6.default.svc.cluster.local.", T.AAAA),
        ]
        async with (
            DnsServer(ix, upstreams=[], response_cache=0) as raw,
            DnsServer(ix, upstreams=[], response_cache=4096) as cached,
        ):
            for name, rdtype in names:
                for edns in (-1, 0):
                    for server in (raw, cached, cached):  # the second cached reply is a hit
                        query = dns.message.make_query(name, rdtype, use_edns=edns)
                        reply = await dns.asyncquery.udp(query, LOCAL, port=server.port, timeout=2)
                        assert reply.rcode() == dns.rcode.NOERROR and reply.answer
                        assert reply.flags & dns.flags.AA and reply.flags & dns.flags.RA
                        assert reply.flags & dns.flags.RD
                        assert reply.edns == edns
                        rrset = reply.answer[0]
                        assert rrset.name.to_text() == name  # the client's own spelling
                        assert rrset.rdtype == rdtype and rrset.ttl == 30
                        assert values(reply) == values(await udp(cached.port, name.lower(), rdtype))
            assert raw.metrics.snapshot()["results"]["answered"] == 12

    run(main())


def test_changes_are_answered_at_once():
    async def main():
        ix = DnsIndex()
        async with DnsServer(ix, upstreams=[]) as server:
            name = "late.team.svc.cluster.local."
            assert (await udp(server.port, name)).rcode() == dns.rcode.NXDOMAIN
            svc = service("late", ns="team", ips=["10.96.1.1"])
            started = time.monotonic()
            ix.on_service(None, svc)
            assert values(await udp(server.port, name)) == {"10.96.1.1"}
            changed = service("late", ns="team", ips=["10.96.1.2"])
            ix.on_service(svc, changed)
            assert values(await udp(server.port, name)) == {"10.96.1.2"}
            ix.on_service(changed, None)
            assert (await udp(server.port, name)).rcode() == dns.rcode.NXDOMAIN
            assert time.monotonic() - started < 1.0

    run(main())


def test_two_virtual_clusters_never_answer_each_others_names():
    async def main():
        a, b = DnsIndex(), DnsIndex()
        a.on_service(None, service("only-a", ips=["10.96.0.1"]))
        a.on_pod(None, pod("pa", "10.244.1.1"))
        b.on_service(None, service("only-b", ips=["10.96.0.2"]))
        async with DnsServer(a, upstreams=[]) as sa, DnsServer(b, upstreams=[]) as sb:
            assert values(await udp(sa.port, "only-a.default.svc.cluster.local.")) == {"10.96.0.1"}
            assert values(await udp(sb.port, "only-b.default.svc.cluster.local.")) == {"10.96.0.2"}
            assert (await udp(sb.port, "only-a.default.svc.cluster.local.")).rcode() == dns.rcode.NXDOMAIN
            assert (await udp(sa.port, "only-b.default.svc.cluster.local.")).rcode() == dns.rcode.NXDOMAIN
            assert (await udp(sb.port, "10-244-1-1.default.pod.cluster.local.")).rcode() == dns.rcode.NXDOMAIN
            r = await udp(sb.port, "1.1.244.10.in-addr.arpa.", T.PTR)
            assert not r.answer and r.rcode() == dns.rcode.REFUSED  # not b's: nowhere to forward

    run(main())


def test_truncated_udp_answer_is_retried_over_tcp():
    async def main():
        ix = DnsIndex()
        ix.on_service(None, service("big", ips=["None"]))
        eps = [endpoint(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(100)]
        ix.on_endpointslice(None, endpointslice("big", eps))
        async with DnsServer(ix, upstreams=[]) as server:
            query = dns.message.make_query("big.default.svc.cluster.local.", T.A)
            r = await dns.asyncquery.udp(query, LOCAL, timeout=3, port=server.port)
            assert r.flags & dns.flags.TC and not r.answer
            r, used_tcp = await dns.asyncquery.udp_with_fallback(query, LOCAL, timeout=3, port=server.port)
            assert used_tcp and len(values(r)) == 100
            assert (
                server.metrics.snapshot()["results"]["truncated"] == 2
            )  # the plain try and the fallback's first try

    run(main())


# ---- forwarding --------------------------------------------------------------------------------


def test_fallback_to_the_host_dns():
    async def main():
        host = FakeUpstream({"example.test.": "192.0.2.1", "hostsvc.default.svc.cluster.local.": "10.96.9.9"})
        address = await host.start()
        try:
            async with DnsServer(populated(), upstreams=[], fallback=address) as server:
                r = await udp(server.port, "example.test.")
                assert values(r) == {"192.0.2.1"} and r.rcode() == dns.rcode.NOERROR
                r = await tcp(server.port, "example.test.")
                assert values(r) == {"192.0.2.1"}
                # a host service name the virtual cluster does not know
                r = await udp(server.port, "hostsvc.default.svc.cluster.local.")
                assert values(r) == {"10.96.9.9"}
                r = await udp(server.port, "nothing.test.")
                assert r.rcode() == dns.rcode.NXDOMAIN  # the upstream's rcode, relayed
                # the ExternalName's target is followed through the upstream
                r = await udp(server.port, "ext.default.svc.cluster.local.")
                assert values(r) == {"example.test.", "192.0.2.1"}
                # names the virtual cluster has are answered here, not by the host
                seen = len(host.seen)
                assert values(await udp(server.port, "web.default.svc.cluster.local.")) == {"10.96.0.10"}
                assert len(host.seen) == seen
                assert server.metrics.snapshot()["results"]["forwarded"] == 5
        finally:
            host.close()

    run(main())


def test_upstream_answers_are_kept_briefly_but_host_cluster_names_are_not(monkeypatch):
    monkeypatch.setattr(server_module, "FORWARD_CACHE_SECONDS", 0.3)

    async def main():
        host = FakeUpstream({"example.test.": "192.0.2.1", "hostsvc.default.svc.cluster.local.": "10.96.9.9"})
        brief = FakeUpstream({"zero.test.": "192.0.2.2"}, ttl=0)
        address = await host.start()
        try:
            async with DnsServer(populated(), upstreams=[], fallback=address) as server:
                for _ in range(3):
                    assert values(await udp(server.port, "example.test.")) == {"192.0.2.1"}
                    assert values(await udp(server.port, "hostsvc.default.svc.cluster.local.")) == {
                        "10.96.9.9"
                    }
                    # NXDOMAIN without an SOA
                    assert (await udp(server.port, "nothing.test.")).rcode() == dns.rcode.NXDOMAIN
                assert host.seen.count("example.test.") == 1  # kept
                assert host.seen.count("hostsvc.default.svc.cluster.local.") == 3  # a cluster name: never
                assert host.seen.count("nothing.test.") == 3  # no SOA: never
                assert server.metrics.snapshot()["results"]["forwarded"] == 9
                # ... and only briefly: asked again once FORWARD_CACHE_SECONDS passed
                deadline = time.monotonic() + 5
                while host.seen.count("example.test.") == 1:
                    assert time.monotonic() < deadline, "the kept answer never expired"
                    await udp(server.port, "example.test.")
                    await asyncio.sleep(0.05)
            await brief.start()
            async with DnsServer(populated(), upstreams=[f"{LOCAL}:{brief.port}"]) as server:
                for _ in range(3):
                    assert values(await udp(server.port, "zero.test.")) == {"192.0.2.2"}
                assert brief.seen.count("zero.test.") == 3  # TTL 0: never kept
        finally:
            host.close()
            brief.close()

    run(main())


def test_without_fallback_cluster_names_never_leave():
    async def main():
        upstream = FakeUpstream(
            {"example.test.": "192.0.2.1", "hostsvc.default.svc.cluster.local.": "10.96.9.9"}
        )
        address = await upstream.start()
        try:
            async with DnsServer(populated(), upstreams=[address]) as server:
                assert values(await udp(server.port, "example.test.")) == {"192.0.2.1"}
                r = await udp(server.port, "hostsvc.default.svc.cluster.local.")
                assert r.rcode() == dns.rcode.NXDOMAIN
                assert upstream.seen == ["example.test."]
            async with DnsServer(populated(), upstreams=[]) as server:  # nowhere to forward
                r = await udp(server.port, "example.test.")
                assert r.rcode() == dns.rcode.REFUSED and not r.answer
                r = await udp(server.port, "hostsvc.default.svc.cluster.local.")
                assert r.rcode() == dns.rcode.NXDOMAIN
        finally:
            upstream.close()

    run(main())


def test_dead_fallback_then_upstream_and_servfail_on_timeout():
    async def main():
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind((LOCAL, 0))
        dead_address = f"{LOCAL}:{dead.getsockname()[1]}"
        dead.close()  # nothing listens there: ICMP port unreachable
        good = FakeUpstream({"example.test.": "192.0.2.1"})
        silent = FakeUpstream({}, blackhole=".")
        good_address, silent_address = await good.start(), await silent.start()
        try:
            async with DnsServer(populated(), upstreams=[good_address], fallback=dead_address) as server:
                started = time.monotonic()
                assert values(await udp(server.port, "example.test.")) == {"192.0.2.1"}
                assert time.monotonic() - started < 0.9  # the refusal moved on at once
            async with DnsServer(populated(), upstreams=[silent_address], timeout=0.3) as server:
                started = time.monotonic()
                r = await udp(server.port, "example.test.")
                assert r.rcode() == dns.rcode.SERVFAIL
                assert 0.25 < time.monotonic() - started < 2.0
        finally:
            good.close()
            silent.close()

    run(main())


# ---- bad input ---------------------------------------------------------------------------------


def _garbage() -> list[bytes]:
    query = dns.message.make_query("web.default.svc.cluster.local.", T.A).to_wire()
    response = bytearray(query)
    response[2] |= 0x80  # QR: a response, which must never be answered
    two_questions = bytearray(query)
    two_questions[5] = 2
    loop = query[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # a compression pointer to itself
    return [
        b"",
        b"\x00",
        os.urandom(11),
        bytes(response),
        bytes(two_questions),
        query[:-3],
        query + b"junk",
        loop,
        query[:12] + b"\x3f" + b"a" * 10,  # a label longer than the packet
        *(os.urandom(random.randint(12, 600)) for _ in range(200)),
    ]


def test_malformed_udp_packets_are_dropped():
    async def main():
        async with DnsServer(populated(), upstreams=[]) as server:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for packet in _garbage():
                    sock.sendto(packet, (LOCAL, server.port))
                    await asyncio.sleep(0)
            finally:
                sock.close()
            for _ in range(3):
                assert values(await udp(server.port, "web.default.svc.cluster.local.")) == {"10.96.0.10"}
            assert server.metrics.snapshot()["results"]["malformed"] >= 8

    run(main())


async def _tcp_exchange(port: int, payload: bytes, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5) if read else b""
    finally:
        writer.close()


def test_tcp_framing_lies_close_only_that_connection():
    async def main():
        async with DnsServer(populated(), upstreams=[], timeout=0.3) as server:
            p = server.port
            query = dns.message.make_query("web.default.svc.cluster.local.", T.A).to_wire()
            framed = struct.pack("!H", len(query)) + query
            # several queries on one connection, sent back to back
            reader, writer = await asyncio.open_connection(LOCAL, p)
            writer.write(framed * 3)
            for _ in range(3):
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                assert values(dns.message.from_wire(await reader.readexactly(n))) == {"10.96.0.10"}
            writer.close()
            # a prefix promising more than is sent: closed once the read times out
            assert await _tcp_exchange(p, struct.pack("!H", 300) + query) == b""
            # prefixes too small to be a DNS message, or longer than any query may be
            assert await _tcp_exchange(p, struct.pack("!H", 5) + query) == b""
            assert await _tcp_exchange(p, struct.pack("!H", 65535) + query) == b""
            # a prefix shorter than the message: what is read does not parse
            assert await _tcp_exchange(p, struct.pack("!H", len(query) - 4) + query) == b""
            # a good query, then garbage: the answer comes, then the connection closes
            out = await _tcp_exchange(p, framed + struct.pack("!H", 40) + os.urandom(40))
            assert values(dns.message.from_wire(out[2:])) == {"10.96.0.10"}
            # a client that connects and says nothing is not kept forever
            server.tcp_idle_timeout = 0.2
            assert await _tcp_exchange(p, b"") == b""
            # and the server still answers, on both transports
            assert values(await tcp(p, "web.default.svc.cluster.local.")) == {"10.96.0.10"}
            assert values(await udp(p, "web.default.svc.cluster.local.")) == {"10.96.0.10"}
            assert server.metrics.snapshot()["tcp_connections"] <= 1

    run(main())


def test_a_flood_of_random_names_does_not_starve_good_queries():
    async def main():
        upstream = FakeUpstream({"good.test.": "192.0.2.7"}, blackhole="flood.test.")
        address = await upstream.start()
        cap = 32
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setblocking(False)
        try:
            async with DnsServer(populated(), upstreams=[address], timeout=0.5, max_inflight=cap) as server:
                baseline_tasks = len(asyncio.all_tasks())
                peak_tasks = 0

                # built beforehand, so that sending is as cheap as an attacker's; half under the
                # cluster domain (NXDOMAIN here), half forwarded into a black hole
                flood_packets = [
                    dns.message.make_query(
                        f"{''.join(random.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=12))}."
                        + ("default.svc.cluster.local." if i % 2 else "flood.test."),
                        T.A,
                    ).to_wire()
                    for i in range(2000)
                ]

                async def send_flood() -> None:
                    nonlocal peak_tasks
                    for i, wire in enumerate(flood_packets):
                        # a full send buffer drops the packet, as it would for a real flood
                        with contextlib.suppress(BlockingIOError):
                            flood.sendto(wire, (LOCAL, server.port))
                        if i % 50 == 0:
                            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
                            # ~5000 queries/s offered, from this same process and loop
                            await asyncio.sleep(0.01)

                async def resolve(name: str) -> dns.message.Message:
                    # as a pod's resolver does: the server may drop UDP under overload, so retry
                    query = dns.message.make_query(name, T.A)
                    for _ in range(3):
                        with contextlib.suppress(dns.exception.Timeout):
                            return await dns.asyncquery.udp(query, LOCAL, timeout=0.5, port=server.port)
                    raise AssertionError(f"no answer for {name} in 3 tries")

                async def good_queries() -> list[float]:
                    took = []
                    for _ in range(20):
                        started = time.monotonic()
                        r = await resolve("web.default.svc.cluster.local.")
                        assert values(r) == {"10.96.0.10"}
                        r = await tcp(server.port, "db-0.db.default.svc.cluster.local.")
                        assert values(r) == {"10.244.0.5"}
                        took.append(time.monotonic() - started)
                        await asyncio.sleep(0.01)
                    return took

                _, took = await asyncio.gather(send_flood(), good_queries())
                assert max(took) < 2.0  # retries included
                assert server.inflight_peak <= cap
                assert peak_tasks <= baseline_tasks + cap + 5  # no task per flooded query
                await asyncio.sleep(0.6)  # the black-holed forwards time out
                assert values(await udp(server.port, "good.test.")) == {"192.0.2.7"}
                snap = server.metrics.snapshot()
                assert snap["results"]["nxdomain"] > 100 and snap["results"]["servfail"] > 100
                assert snap["inflight_forwards"] == 0
        finally:
            flood.close()
            upstream.close()

    run(main())


def test_prometheus_text_after_traffic():
    async def main():
        async with DnsServer(populated(), upstreams=[]) as server:
            await udp(server.port, "web.default.svc.cluster.local.")
            await udp(server.port, "nope.default.svc.cluster.local.")
            text = server.metrics.prometheus_text()
            assert 'vnest_dns_queries_total{qtype="A"} 2' in text
            assert 'vnest_dns_results_total{result="answered"} 1' in text
            assert 'vnest_dns_results_total{result="nxdomain"} 1' in text

    run(main())
