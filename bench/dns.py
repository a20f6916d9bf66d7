"""What the embedded DNS server answers per second, and how fast, on this machine.

Three processes on loopback, so that the client, the server and the upstream do not share
one event loop (they do share this machine's CPUs, which the results' nproc tells):
  - the client (this process): one UDP socket, C concurrent workers, each sending a query
    and waiting for its answer before the next (closed loop); per query, the time from
    send to answer; after a 0.5 s warm-up, D seconds of counting;
  - the vnest DNS server (a subprocess): a DnsIndex fed like the syncer feeds it, with
    1000 ClusterIP services in 20 namespaces, a headless service and 2000 pods, then a
    DnsServer on 127.0.0.1; a second one with its response cache off shows the cost of a
    full parse-lookup-render per query;
  - a fake upstream resolver (a subprocess): a blocking socket loop that answers every
    query with one A record, built from the query's bytes (no DNS library in its loop).

Targets, each at concurrency 1 and 16:
  - cluster name: ``web-7.ns-3.svc.cluster.local`` A from vnest (response cache on, the
    default), and the same with the response cache off;
  - upstream name: ``www.example.test`` A through vnest, forwarded to the fake upstream;
  - baseline: ``www.example.test`` A straight at the fake upstream with the same client
    loop: what the client and loopback cost on their own, so the difference to the
    upstream row is what forwarding through vnest adds.
Also the server process's CPU time per query (user+system, from /proc via psutil).

Run: .venv/bin/python bench/dns.py [--duration 3] [--out bench/results/dns.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

# This file is named dns.py: with its folder first on sys.path (as for any script), `import dns`
# would import this file instead of dnspython. Look there only after dnspython is in.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
import dns.message  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.version  # noqa: E402

sys.path.append(str(_HERE))
from common import machine_facts, write_json  # noqa: E402

CLUSTER_NAME = "web-7.ns-3.svc.cluster.local."
UPSTREAM_NAME = "www.example.test."
CONCURRENCY = (1, 16)
WARMUP = 0.5
QUERY_TIMEOUT = 1.0


# ---- the fake upstream (subprocess) ------------------------------------------------------------


def run_upstream() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.1")
    while True:
        data, addr = sock.recvfrom(4096)
        end = 12
        while end < len(data) and data[end]:
            end += data[end] + 1
        end += 5  # the root label, type and class
        if len(data) < end:
            continue
        flags = bytes([0x80 | (data[2] & 0x01), 0x80])  # QR, RD echoed, RA
        sock.sendto(data[:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00" + data[12:end] + record, addr)


# ---- the vnest server (subprocess) -------------------------------------------------------------


def run_server(upstream: str, cache: int) -> None:
    from vnest.dns import DnsIndex, DnsServer

    def meta(name: str, ns: str, **labels: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": ns,
            "uid": f"{ns}-{name}",
            "resourceVersion": "1",
            "labels": labels,
        }

    index = DnsIndex()
    for i in range(1000):
        ns, ip = f"ns-{i % 20}", f"10.96.{i // 250}.{i % 250 + 1}"
        spec = {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
        index.on_service(None, {"metadata": meta(f"web-{i // 20}", ns), "spec": spec})
    index.on_service(
        None, {"metadata": meta("db", "ns-0"), "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}
    )
    endpoints = [{"addresses": [f"10.244.9.{i}"], "hostname": f"db-{i}"} for i in range(1, 11)]
    labels = {"kubernetes.io/service-name": "db"}
    index.on_endpointslice(
        None, {"metadata": meta("db-x", "ns-0", **labels), "addressType": "IPv4", "endpoints": endpoints}
    )
    for i in range(2000):
        ip = f"10.244.{i // 250}.{i % 250 + 1}"
        index.on_pod(None, {"metadata": meta(f"pod-{i}", f"ns-{i % 20}"), "status": {"podIP": ip}})

    async def main() -> None:
        server = DnsServer(index, upstreams=[upstream], response_cache=cache)
        print(await server.start(), flush=True)
        await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(main())


# ---- the client (this process) -----------------------------------------------------------------


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        fut = self.pending.pop(data[:2], None)
        if fut is not None and not fut.done():
            fut.set_result(data)


async def measure(port: int, name: str, concurrency: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port))
    tail = dns.message.make_query(name, dns.rdatatype.A, use_edns=False).to_wire()[2:]
    ids = itertools.count()
    latencies: list[float] = []
    errors = 0
    recording = False
    stop_at = loop.time() + WARMUP + duration

    async def worker() -> None:
        nonlocal errors
        while loop.time() < stop_at:
            qid = struct.pack("!H", next(ids) & 0xFFFF)
            fut = loop.create_future()
            client.pending[qid] = fut
            timer = loop.call_later(QUERY_TIMEOUT, fut.cancel)
            started = time.perf_counter()
            transport.sendto(qid + tail)
            try:
                resp = await fut
            except asyncio.CancelledError:
                client.pending.pop(qid, None)
                errors += recording
                continue
            took = time.perf_counter() - started
            timer.cancel()
            ok = resp[3] & 0x0F == 0 and resp[6:8] != b"\x00\x00"  # NOERROR with an answer
            if recording:
                if ok:
                    latencies.append(took)
                else:
                    errors += 1

    workers = [loop.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(WARMUP)
    recording = True
    started = time.perf_counter()
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    transport.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    return {
        "queries": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "qps": round(len(latencies) / elapsed),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


def spawn(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start")
    return proc, int(line)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds counted per row")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dns.json")
    parser.add_argument(
        "--role", choices=["client", "upstream", "server"], default="client", help=argparse.SUPPRESS
    )
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        run_upstream()
        return 0
    if args.role == "server":
        run_server(args.upstream, args.cache)
        return 0

    procs: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = spawn("--role", "upstream")
        procs.append(upstream)
        upstream_addr = f"127.0.0.1:{upstream_port}"
        cached, cached_port = spawn("--role", "server", "--upstream", upstream_addr)
        procs.append(cached)
        uncached, uncached_port = spawn("--role", "server", "--upstream", upstream_addr, "--cache", "0")
        procs.append(uncached)
        targets = [
            ("cluster name, vnest", cached, cached_port, CLUSTER_NAME),
            ("cluster name, vnest, no response cache", uncached, uncached_port, CLUSTER_NAME),
            ("upstream name, vnest -> fake upstream", cached, cached_port, UPSTREAM_NAME),
            ("upstream name, fake upstream directly (baseline)", upstream, upstream_port, UPSTREAM_NAME),
        ]
        load_before = os.getloadavg()
        rows = []
        for label, proc, port, name in targets:
            ps = psutil.Process(proc.pid)
            for concurrency in CONCURRENCY:
                cpu_before = cpu_seconds(ps)
                row = asyncio.run(measure(port, name, concurrency, args.duration))
                cpu = cpu_seconds(ps) - cpu_before
                # warm-up queries are in the CPU time too; divide by all of them
                total = row["queries"] * (1 + WARMUP / args.duration)
                row["server_cpu_us_per_query"] = round(cpu / total * 1e6, 1) if total else None
                rows.append({"target": label, "name": name, "concurrency": concurrency, **row})
        load_after = os.getloadavg()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)

    result = {
        "benchmark": "dns",
        "command": ".venv/bin/python bench/dns.py"
        + ("" if args.duration == 3.0 else f" --duration {args.duration}"),
        "params": {
            "duration_seconds": args.duration,
            "warmup_seconds": WARMUP,
            "concurrency": list(CONCURRENCY),
            "transport": "UDP, loopback",
            "index": "1000 ClusterIP services in 20 namespaces, 1 headless service (10 endpoints), 2000 pods",
        },
        "machine": {**machine_facts(), "dnspython": dns.version.version},
        "load_average_1_5_15m": {"before": list(load_before), "after": list(load_after)},
        "results": rows,
    }
    print_table(rows)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'target':<50} {'conc':>4} {'qps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'srv us/q':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        cpu = r["server_cpu_us_per_query"]
        print(
            f"{r['target']:<50} {r['concurrency']:>4} {r['qps']:>7} {r['p50_ms']:>7.3f} "
            f"{r['p99_ms']:>7.3f} {r['errors']:>6} {cpu if cpu is not None else '-':>8}"
        )


if __name__ == "__main__":
    sys.exit(main())
