"""The embedded DNS server: answers a virtual cluster's names from a DnsIndex, forwards the rest.

UDP and TCP on the same port. Answers for the cluster domain are computed synchronously in
the protocol callback (no task per query), so a flood of names that must go upstream cannot
delay them; forwards run as tasks, at most ``max_inflight`` at once, and a query beyond that
gets SERVFAIL at once instead of queueing.

What goes where:
- a name the index is authoritative for (under the cluster domain, or the reverse name of a
  known IP) is answered locally, with AA set and TTL 30 s (kube-dns's default; negative
  answers carry the SOA with a 5 s minimum);
- a name under the cluster domain that does not exist goes to ``fallback`` (the host
  cluster's DNS, ``networking.advanced.fallbackHostCluster``), so the host's own
  ``<svc>.<ns>.svc.<domain>`` resolves too; without a fallback it is NXDOMAIN. Such names never
  go to ``upstreams``;
- every other name goes to ``fallback`` first, then to ``upstreams`` in order (default: the
  nameservers of /etc/resolv.conf), within ``timeout`` seconds in all; the answer is relayed
  as the upstream sent it (rcode included), SERVFAIL when none answers in time, and REFUSED
  when there is nowhere to forward to (``upstreams=[]`` and no fallback);
- an ExternalName's CNAME to an outside name is followed upstream, as a recursive resolver
  would, and the upstream's records appended after the CNAME.

UDP answers larger than 512 bytes (or the client's EDNS size, at most 1232, the 2020 DNS flag
day's value that avoids IP fragmentation) are sent empty with TC set, so the client retries over
TCP. Malformed UDP packets are dropped; a malformed TCP message, or a length prefix that lies,
closes that connection. The UDP socket keeps the kernel's default receive buffer on purpose:
under a flood, a bigger one only makes queries wait longer behind it (an answer that comes
after the client's timeout is worth nothing), while a drop is retried by the client's
resolver at once. Plain queries are read without dnspython, and negative answers and forwards
are written without it too, since they are what a flood of random names costs. Responses to
local names are cached by the query's bytes until the index changes, which skips parsing and
rendering for repeated questions.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import random
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from vnest import log
from vnest.dns.index import Answer, DnsIndex
from vnest.dns.metrics import DnsMetrics, qtype_label

_log = log.get("dns")

UDP_DEFAULT = 512
UDP_MAX = 1232
TCP_MAX = 65535
OUR_PAYLOAD = 1232
# Upstream answers for names outside the cluster domain are kept this long at most (less when
# their TTL says so). Short, because the TTLs are passed on unchanged rather than counted down
# (that would mean parsing every cached answer): a client may hold a record this much longer
# than its TTL said. Names inside the cluster domain that fall back to the host are never
# kept: a virtual Service created under that name must win at once.
FORWARD_CACHE_SECONDS = 5.0


def parse_address(text: str, default_port: int = 53) -> tuple[str, int]:
    """``"10.0.0.10"``, ``"10.0.0.10:5353"``, ``"fd00::a"`` or ``"[fd00::a]:5353"`` → (ip, port)."""
    text = text.strip()
    port = default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad DNS server address {text!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host = text
    ipaddress.ip_address(host)  # a resolver is named by address: resolving its name needs DNS
    if not 0 < port < 65536:
        raise ValueError(f"bad port in DNS server address {text!r}")
    return host, port


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                out.append(parts[1].split("%")[0])  # drop an IPv6 zone index
    return out


def _question_bytes(name: dns.name.Name, rdtype: int, rdclass: int) -> bytes:
    """The question section as an upstream echoes it, lowercased (servers may randomize case)."""
    return name.to_digestable() + struct.pack("!HH", rdtype, rdclass)


_OPT = b"\x00" + struct.pack("!HHIH", dns.rdatatype.OPT, OUR_PAYLOAD, 0, 0)


def _parse_plain(data: bytes) -> tuple[tuple[bytes, ...], int, int, int, int | None] | None:
    """(name key, end of question, qtype, qclass, EDNS payload or None) of a plain query: opcode
    QUERY, one question with an uncompressed name, nothing else but maybe an OPT record.
    None for anything else, which dnspython then parses (and rejects, if it is malformed)."""
    if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00" or data[10]:
        return None
    arcount = data[11]
    labels = []
    pos, size = 12, len(data)
    while True:
        if pos >= size:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None  # a compression pointer, or a label type nobody uses
        labels.append(data[pos + 1 : pos + 1 + length].lower())
        pos += 1 + length
    if pos - 12 + 1 > 255:
        return None
    qend = pos + 5
    if qend > size:
        return None
    rdtype, rdclass = struct.unpack_from("!HH", data, pos + 1)
    labels.append(b"")
    payload = None
    if arcount == 1:
        # an OPT record: root name, type 41, class = payload size, ttl, rdata length
        if size < qend + 11 or data[qend] != 0:
            return None
        otype, payload, _, rdlen = struct.unpack_from("!HHIH", data, qend + 1)
        if otype != dns.rdatatype.OPT or qend + 11 + rdlen != size:
            return None
    elif arcount != 0 or qend != size:
        return None
    return tuple(labels), qend, rdtype, rdclass, payload


def _raw_reply(
    data: bytes,
    qend: int,
    rcode: int,
    edns: bool,
    aa: bool = False,
    tc: bool = False,
    authority: bytes = b"",
    nscount: int = 0,
) -> bytes:
    """A response to a plain query with no answer records: header, its question, maybe an SOA."""
    flags = 0x80 | (data[2] & 0x01) | (0x04 if aa else 0) | (0x02 if tc else 0)  # QR, RD echoed
    header = data[:2] + bytes([flags, 0x80 | (rcode & 0x0F)])  # RA
    counts = struct.pack("!HHHH", 1, 0, nscount, 1 if edns else 0)
    return header + counts + data[12:qend] + authority + (_OPT if edns else b"")


def _raw_address_reply(data: bytes, qend: int, answer: Answer, edns: bool, limit: int) -> bytes | None:
    """The answer to a plain A or AAAA query that the index answers with addresses of the very
    name asked (a Service's ClusterIPs, a headless Service's endpoints, a pod), built without
    dnspython: this is most of a cluster's DNS traffic, and it must stay cheap when the response
    cache was just emptied by a change in the index. None when the answer is anything else, or
    too big for the client (the full path then truncates it)."""
    if len(answer.answer) != 1 or answer.authority or answer.additional or answer.chase is not None:
        return None
    rrset = answer.answer[0]
    if rrset.rdtype == dns.rdatatype.A:
        addresses = [socket.inet_aton(rd.address) for rd in rrset]
    elif rrset.rdtype == dns.rdatatype.AAAA:
        addresses = [socket.inet_pton(socket.AF_INET6, rd.address) for rd in rrset]
    else:
        return None
    # Each record names the question's name by a pointer to it (offset 12), so the client's
    # spelling (DNS 0x20 case randomization) comes back as it was sent.
    head = b"\xc0\x0c" + struct.pack("!HHI", rrset.rdtype, dns.rdataclass.IN, rrset.ttl)
    records = b"".join(head + struct.pack("!H", len(a)) + a for a in addresses)
    flags = 0x84 | (data[2] & 0x01)  # QR, AA, RD echoed
    header = data[:2] + bytes([flags, 0x80]) + struct.pack("!HHHH", 1, len(addresses), 0, 1 if edns else 0)
    wire = header + data[12:qend] + records + (_OPT if edns else b"")
    return wire if len(wire) <= limit else None


class _UpstreamProtocol(asyncio.DatagramProtocol):
    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            self.upstream.received(data)
        except Exception:
            _log.debug("dns: bad upstream packet", exc_info=True)

    def error_received(self, exc: Exception) -> None:
        self.upstream.failed(exc)


class _Upstream:
    """One upstream resolver over one connected UDP socket, queries told apart by their ID.

    A connected socket only hears from that address, and the ID is random per query; with
    the question checked too, a stray or spoofed packet does not complete a query. TCP is used
    only when the upstream truncates.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[asyncio.Future[bytes], bytes]] = {}

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _UpstreamProtocol(self), remote_addr=(self.host, self.port), family=family
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.failed(ConnectionError("closed"))

    async def query(self, wire: bytes, question: bytes, timeout: float) -> bytes:
        if self.transport is None or self.transport.is_closing():
            await self.open()
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        qid = random.getrandbits(16)
        while qid in self.pending:
            qid = random.getrandbits(16)
        fut: asyncio.Future[bytes] = loop.create_future()
        self.pending[qid] = (fut, question)
        try:
            self.transport.sendto(struct.pack("!H", qid) + wire[2:])
            resp = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(qid, None)
        if resp[2] & 0x02:  # TC: the whole answer only comes over TCP
            resp = await asyncio.wait_for(self._tcp(wire, question), max(0.01, deadline - loop.time()))
        return resp

    async def _tcp(self, wire: bytes, question: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            resp = await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if len(resp) < 12 or resp[:2] != wire[:2] or not self._matches(resp, question):
            raise ConnectionError(f"upstream {self} sent an unrelated TCP answer")
        return resp

    @staticmethod
    def _matches(resp: bytes, question: bytes) -> bool:
        return bool(resp[2] & 0x80) and resp[12 : 12 + len(question)].lower() == question

    def received(self, data: bytes) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get(struct.unpack("!H", data[:2])[0])
        if entry is None:
            return  # late (timed out) or not ours
        fut, question = entry
        if self._matches(data, question) and not fut.done():
            fut.set_result(data)

    def failed(self, exc: Exception) -> None:
        """An ICMP error on the socket: fail what waits now rather than at its timeout."""
        for fut, _ in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(exc)


@dataclass
class _Forward:
    """A query that needs the network: what ``_complete`` needs to answer it."""

    query: dns.message.Message | None  # None: parsed by _parse_plain, see qend and edns
    wire: bytes
    targets: list[_Upstream]
    qtype: str
    limit: int
    started: float
    local: Answer | None = None  # set when following an ExternalName's CNAME
    chase: dns.name.Name | None = None
    qend: int = 0
    edns: bool = False
    cacheable: bool = False  # a name outside the cluster domain: its answer may be kept


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self.server._on_udp(data, addr)
        except Exception:  # never let one packet take the endpoint down
            _log.warning("dns: failed to handle a UDP query", exc_info=True)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from clients that went away


class DnsServer:
    """Serves one DnsIndex over UDP and TCP on ``listen``:``port`` (0: a free port)."""

    def __init__(
        self,
        index: DnsIndex,
        listen: str = "127.0.0.1",
        port: int = 0,
        upstreams: list[str] | None = None,
        fallback: str | None = None,
        timeout: float = 2.0,
        *,
        max_inflight: int = 256,
        max_tcp_connections: int = 256,
        tcp_idle_timeout: float = 10.0,
        max_tcp_message: int = 8192,
        response_cache: int = 4096,
        metrics: DnsMetrics | None = None,
    ) -> None:
        self.index = index
        self.listen = listen
        self.port = port
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_message = max_tcp_message
        self.metrics = metrics or DnsMetrics()
        names = resolv_conf_nameservers() if upstreams is None else upstreams
        self._fallback = _Upstream(*parse_address(fallback)) if fallback else None
        self._upstreams = [_Upstream(*parse_address(u)) for u in names]
        self._outside = ([self._fallback] if self._fallback else []) + self._upstreams
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._inflight = 0
        self.inflight_peak = 0  # tests check the cap held
        self._cache: dict[tuple[bool, bytes], tuple[bytes, str, str]] = {}
        self._cache_size = response_cache
        self._cache_generation = -1
        # (udp, query after its ID) -> (answer after its ID, expiry on the loop clock, qtype)
        self._forwarded: dict[tuple[bool, bytes], tuple[bytes, float, str]] = {}
        self._soa_cached: tuple[dns.rrset.RRset, bytes] | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> int:
        """Binds UDP and TCP on the same port and returns it."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        for attempt in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.listen, self.port), family=family
            )
            port: int = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.listen, port, family=family)
                break
            except OSError:
                self._udp.close()
                if self.port or attempt == 19:
                    raise  # the asked port is taken for TCP; with port 0 try another free one
        for upstream in self._outside:
            await upstream.open()
        self.port = port
        _log.debug("dns: serving", address=f"{self.listen}:{port}", upstreams=[str(u) for u in self._outside])
        return port

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for upstream in self._outside:
            upstream.close()

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- UDP -----------------------------------------------------------------------------

    def _on_udp(self, data: bytes, addr: tuple[Any, ...]) -> None:
        started = time.perf_counter()
        out = self._prepare(data, True, started)
        if out is None:
            return
        if isinstance(out, bytes):
            self._send_udp(out, addr)
            return
        if self._inflight >= self.max_inflight:
            self._send_udp(self._overloaded(out), addr)
            return
        self._begin_forward()
        task = asyncio.get_running_loop().create_task(self._forward_udp(out, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_udp(self, wire: bytes, addr: tuple[Any, ...]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(wire, addr)

    async def _forward_udp(self, fwd: _Forward, addr: tuple[Any, ...]) -> None:
        try:
            wire = await self._complete(fwd)
        except Exception:
            _log.warning("dns: forwarding failed", exc_info=True)
            wire = self._overloaded(fwd)
        finally:
            self._end_forward()
        self._send_udp(wire, addr)

    def _begin_forward(self) -> None:
        self._inflight += 1
        self.inflight_peak = max(self.inflight_peak, self._inflight)
        self.metrics.inflight_forwards = self._inflight

    def _end_forward(self) -> None:
        self._inflight -= 1
        self.metrics.inflight_forwards = self._inflight

    # ---- TCP -----------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_tcp_connections:
            writer.close()
            return
        self._writers.add(writer)
        self.metrics.tcp_connections = len(self._writers)
        try:
            await self._tcp_loop(reader, writer)
        except Exception:
            _log.debug("dns: TCP connection failed", exc_info=True)
        finally:
            self._writers.discard(writer)
            self.metrics.tcp_connections = len(self._writers)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _tcp_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return  # idle, or the client is done
            (length,) = struct.unpack("!H", prefix)
            if length < 12 or length > self.max_tcp_message:
                self.metrics.malformed()
                return
            try:
                # a prefix promising more than ever comes: the wait ends, and so does the connection
                data = await asyncio.wait_for(reader.readexactly(length), self.timeout)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                self.metrics.malformed()
                return
            started = time.perf_counter()
            out = self._prepare(data, False, started)
            if out is None:
                return  # malformed: what follows cannot be trusted to be framed right
            if not isinstance(out, bytes):
                if self._inflight >= self.max_inflight:
                    out = self._overloaded(out)
                else:
                    self._begin_forward()
                    try:
                        out = await self._complete(out)
                    finally:
                        self._end_forward()
            writer.write(struct.pack("!H", len(out)) + out)
            await asyncio.wait_for(writer.drain(), self.tcp_idle_timeout)

    # ---- answering -----------------------------------------------------------------------

    def _prepare(self, data: bytes, udp: bool, started: float) -> bytes | _Forward | None:
        """The answer when it is known now; a _Forward when it needs the network; None: drop."""
        if len(data) < 12 or data[2] & 0x80:  # too short, or a response: answering could loop
            self.metrics.malformed()
            return None
        if self._cache_generation != self.index.generation:
            self._cache.clear()
            self._cache_generation = self.index.generation
        cache_key = (udp, data[2:])
        hit = self._cache.get(cache_key)
        if hit is not None:
            tail, qtype, result = hit
            self.metrics.query(qtype, result, time.perf_counter() - started)
            return data[:2] + tail
        kept = self._forwarded.get(cache_key)
        if kept is not None:
            if kept[1] > started:
                self.metrics.query(kept[2], "forwarded", time.perf_counter() - started)
                return data[:2] + kept[0]
            del self._forwarded[cache_key]
        fast = self._fast(data, udp, started, cache_key)
        if fast is not None:
            return fast
        try:
            query = dns.message.from_wire(data)
        except Exception:
            self.metrics.malformed()
            return None
        limit = TCP_MAX
        if udp:
            limit = max(UDP_DEFAULT, min(query.payload, UDP_MAX)) if query.edns >= 0 else UDP_DEFAULT
        if query.opcode() != dns.opcode.QUERY:
            return self._reply(query, dns.rcode.NOTIMP, "refused", "other", limit, started)
        if len(query.question) != 1:
            return self._reply(query, dns.rcode.FORMERR, "malformed", "other", limit, started)
        question = query.question[0]
        qtype = qtype_label(question.rdtype)
        if question.rdclass != dns.rdataclass.IN:
            return self._reply(query, dns.rcode.REFUSED, "refused", qtype, limit, started)
        answer = self.index.lookup(question.name, question.rdtype)
        if not answer.in_cluster:
            if not self._outside:
                return self._reply(query, dns.rcode.REFUSED, "refused", qtype, limit, started)
            return _Forward(query, data, self._outside, qtype, limit, started, cacheable=True)
        if (
            answer.rcode == dns.rcode.NXDOMAIN
            and not answer.answer
            and self._fallback is not None
            and self.index.in_domain(question.name)
        ):
            return _Forward(query, data, [self._fallback], qtype, limit, started)
        if answer.chase is not None and self._outside and question.rdtype != dns.rdatatype.CNAME:
            return _Forward(query, data, self._outside, qtype, limit, started, answer, answer.chase)
        wire, result = self._render(query, answer, limit)
        self._keep(cache_key, wire, qtype, result)
        self.metrics.query(qtype, result, time.perf_counter() - started)
        return wire

    def _keep(self, cache_key: tuple[bool, bytes], wire: bytes, qtype: str, result: str) -> None:
        """Keeps an in-cluster answer until the index changes."""
        if self._cache_size > 0:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # crude, but bounded: a flood of new names cannot grow it
            self._cache[cache_key] = (wire[2:], qtype, result)

    def _fast(
        self, data: bytes, udp: bool, started: float, cache_key: tuple[bool, bytes]
    ) -> bytes | _Forward | None:
        """Plain queries without dnspython: most of a random-name flood's cost is parsing and
        rendering, and negative answers and forwards need neither. None: take the full path."""
        plain = _parse_plain(data)
        if plain is None:
            return None
        key, qend, rdtype, rdclass, payload = plain
        if rdclass != dns.rdataclass.IN:
            return None
        edns = payload is not None
        limit = TCP_MAX
        if udp:
            limit = max(UDP_DEFAULT, min(payload, UDP_MAX)) if payload is not None else UDP_DEFAULT
        qtype = qtype_label(rdtype)
        answer = self.index.lookup_key(key, rdtype)
        if not answer.in_cluster:
            if not self._outside:
                self.metrics.query(qtype, "refused", time.perf_counter() - started)
                return _raw_reply(data, qend, dns.rcode.REFUSED, edns)
            return _Forward(
                None, data, self._outside, qtype, limit, started, qend=qend, edns=edns, cacheable=True
            )
        if (
            answer.rcode == dns.rcode.NXDOMAIN
            and self._fallback is not None
            and not answer.answer
            and self.index.key_in_domain(key)
        ):
            return _Forward(None, data, [self._fallback], qtype, limit, started, qend=qend, edns=edns)
        if answer.answer and answer.rcode == dns.rcode.NOERROR:
            wire = _raw_address_reply(data, qend, answer, edns, limit)
            if wire is None:
                return None  # records to render: dnspython does it, and the cache keeps the result
            self._keep(cache_key, wire, qtype, "answered")
            self.metrics.query(qtype, "answered", time.perf_counter() - started)
            return wire
        if answer.answer or answer.additional or answer.chase is not None:
            return None
        if answer.rcode not in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
            return None
        soa = self._soa_wire()
        wire = _raw_reply(data, qend, answer.rcode, edns, aa=True, authority=soa, nscount=1)
        result = "nxdomain" if answer.rcode == dns.rcode.NXDOMAIN else "nodata"
        self.metrics.query(qtype, result, time.perf_counter() - started)
        return wire

    def _soa_wire(self) -> bytes:
        soa = self.index.soa
        if self._soa_cached is None or self._soa_cached[0] is not soa:
            buf = io.BytesIO()
            soa.to_wire(buf)
            self._soa_cached = (soa, buf.getvalue())
        return self._soa_cached[1]

    def _render(self, query: dns.message.Message, answer: Answer, limit: int) -> tuple[bytes, str]:
        response = dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)
        response.flags |= dns.flags.AA
        response.set_rcode(answer.rcode)
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        response.additional = list(answer.additional)
        if answer.rcode == dns.rcode.NXDOMAIN:
            result = "nxdomain"
        elif answer.rcode != dns.rcode.NOERROR:
            result = "servfail"
        elif answer.answer:
            result = "answered"
        else:
            result = "nodata"
        try:
            return response.to_wire(max_size=limit), result
        except dns.exception.TooBig:
            return self._truncated(query, answer.rcode), "truncated"

    def _truncated(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
        response = dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)
        response.flags |= dns.flags.TC
        response.set_rcode(rcode)
        return response.to_wire()

    def _reply(
        self,
        query: dns.message.Message,
        rcode: dns.rcode.Rcode,
        result: str,
        qtype: str,
        limit: int,
        started: float,
    ) -> bytes:
        response = dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)
        response.set_rcode(rcode)
        self.metrics.query(qtype, result, time.perf_counter() - started)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:  # a huge question section echoed back
            response.question = []
            return response.to_wire()

    def _overloaded(self, fwd: _Forward) -> bytes:
        if fwd.query is None:
            self.metrics.query(fwd.qtype, "servfail", time.perf_counter() - fwd.started)
            return _raw_reply(fwd.wire, fwd.qend, dns.rcode.SERVFAIL, fwd.edns)
        return self._reply(fwd.query, dns.rcode.SERVFAIL, "servfail", fwd.qtype, fwd.limit, fwd.started)

    async def _ask(self, targets: list[_Upstream], wire: bytes, question: bytes) -> bytes | None:
        """The first usable answer from ``targets`` in order, all within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        for i, upstream in enumerate(targets):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                resp = await upstream.query(wire, question, remaining / (len(targets) - i))
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                continue
            rcode = resp[3] & 0x0F
            if rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED) and i < len(targets) - 1:
                continue  # a later resolver may do better
            return resp
        return None

    async def _complete(self, fwd: _Forward) -> bytes:
        if fwd.chase is not None and fwd.local is not None:
            return await self._follow_cname(fwd)
        if fwd.query is None:
            question = fwd.wire[12 : fwd.qend].lower()
        else:
            q = fwd.query.question[0]
            question = _question_bytes(q.name, q.rdtype, q.rdclass)
        resp = await self._ask(fwd.targets, fwd.wire, question)
        if resp is None:
            return self._overloaded(fwd)
        wire = fwd.wire[:2] + resp[2:]
        if len(wire) > fwd.limit:
            if fwd.query is None:
                wire = _raw_reply(fwd.wire, fwd.qend, resp[3] & 0x0F, fwd.edns, tc=True)
            else:
                response = dns.message.make_response(fwd.query, recursion_available=True)
                response.flags |= dns.flags.TC
                response.set_rcode(dns.rcode.Rcode(resp[3] & 0x0F))
                wire = response.to_wire()
            self.metrics.query(fwd.qtype, "truncated", time.perf_counter() - fwd.started)
            return wire
        if fwd.cacheable and self._cache_size > 0:
            self._keep_forwarded(fwd, resp)
        self.metrics.query(fwd.qtype, "forwarded", time.perf_counter() - fwd.started)
        return wire

    def _keep_forwarded(self, fwd: _Forward, resp: bytes) -> None:
        """Keeps an upstream answer for FORWARD_CACHE_SECONDS at most, and never past its TTL."""
        rcode = resp[3] & 0x0F
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or resp[2] & 0x02:
            return  # failures and truncated answers are asked again
        try:
            message = dns.message.from_wire(resp)
        except Exception:
            return
        ttls = [rrset.ttl for rrset in (*message.answer, *message.authority)]
        if not ttls:
            return  # a negative answer without an SOA must not be cached (RFC 2308)
        seconds = min(FORWARD_CACHE_SECONDS, *ttls)
        if seconds <= 0:
            return
        if len(self._forwarded) >= self._cache_size:
            self._forwarded.clear()  # bounded, as the response cache
        udp = fwd.limit != TCP_MAX
        self._forwarded[(udp, fwd.wire[2:])] = (resp[2:], time.perf_counter() + seconds, fwd.qtype)

    async def _follow_cname(self, fwd: _Forward) -> bytes:
        assert fwd.local is not None and fwd.chase is not None and fwd.query is not None
        q = fwd.query.question[0]
        sub = dns.message.make_query(fwd.chase, q.rdtype)
        resp = await self._ask(fwd.targets, sub.to_wire(), _question_bytes(fwd.chase, q.rdtype, q.rdclass))
        answer = Answer(
            rcode=fwd.local.rcode,
            answer=list(fwd.local.answer),
            authority=list(fwd.local.authority),
            additional=list(fwd.local.additional),
        )
        if resp is not None:
            with contextlib.suppress(Exception):
                upstream = dns.message.from_wire(resp)
                if upstream.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    answer.rcode = upstream.rcode()
                    answer.answer.extend(upstream.answer)
                    answer.authority = list(upstream.authority)
        wire, result = self._render(fwd.query, answer, fwd.limit)
        result = "forwarded" if result != "truncated" else result
        self.metrics.query(fwd.qtype, result, time.perf_counter() - fwd.started)
        return wire
