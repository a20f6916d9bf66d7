"""What the embedded DNS server answers per second, and how fast, on this machine, vs CoreDNS.

Processes on loopback, so that the client, the servers and the upstream do not share one
event loop (they do share this machine's CPUs, which the results' nproc tells):
  - the client (this process): one UDP socket, C concurrent workers, each sending a query
    and waiting for its answer before the next (closed loop); per query, the time from
    send to answer; after a 0.5 s warm-up, D seconds of counting; every row three times, in
    rounds, and the median round kept (this machine's speed drifts over a run);
  - the vnest DNS server (a subprocess): a DnsIndex fed like the syncer feeds it, with
    1000 ClusterIP services in 20 namespaces, a headless service and 2000 pods, then a
    DnsServer on 127.0.0.1; a second one with its response cache off shows the cost of a
    full parse-lookup-render per query;
  - a fake upstream resolver (a subprocess): a blocking socket loop that answers every
    query with one A record, built from the query's bytes (no DNS library in its loop);
  - the competitor, CoreDNS as a Kubernetes cluster runs it: the pinned binary
    (`binaries.ensure().coredns`), serving the same names from a real API server. The
    benchmark starts a local host of its own (`vnest host up --nodes 1 --port P`, in a
    temporary VNEST_HOME/KUBECONFIG; etcd, kube-apiserver, ...; torn down at the end, also
    on failure) and creates in it, with one `kubectl apply`, the objects vnest's index
    holds: namespaces ns-0..ns-19, the same 1000 ClusterIP services (ClusterIPs allocated
    by the API server, so they differ from the index's made-up ones), the headless
    service ns-0/db and its EndpointSlice. Not the 2000 pods: with `pods insecure`, as
    clusters run it, CoreDNS answers pod names from the IP in the name and never reads
    pods. Two CoreDNS processes read them through the kubernetes plugin, each with a
    cluster's Corefile (`bind 127.0.0.1`, `errors`, `kubernetes cluster.local in-addr.arpa
    ip6.arpa` with `pods insecure` and ttl 30, `forward .` to the fake upstream, `loop`,
    `loadbalance`; no health, ready or metrics ports): one with `cache 30`, as clusters run
    it, one without `cache`. The host's own CoreDNS (no cache, TTL 1) is not measured.
Before counting, each server must answer each of its names NOERROR with one A record
(CoreDNS the cluster name with the service's real ClusterIP); else the run fails.

Targets, each at concurrency 1 and 16:
  - cluster name: ``web-7.ns-3.svc.cluster.local`` A from vnest (response cache on, the
    default), and the same with the response cache off; from CoreDNS with its cache,
    and without;
  - upstream name: ``www.example.test`` A through vnest, forwarded to the fake upstream,
    with its default cache of forwarded answers (5 s at most: after the first query, these
    are cache hits) and with caches off (forwarded every time); through CoreDNS with its
    cache (also hits) and without (forwarded every time);
  - baseline: ``www.example.test`` A straight at the fake upstream with the same client
    loop: what the client and loopback cost on their own, so the difference to the
    upstream rows is what forwarding through vnest or CoreDNS adds.
Also each server process's CPU time per query (user+system, from /proc via psutil; CoreDNS's
over all its threads) and the RSS of the vnest servers and of the CoreDNS processes, idle
after their index or informer caches are loaded and again after the queries. A vnest server
here is a process of its own; in a virtual cluster it lives in the syncer's process.
The local host's processes stay up (idle) while every row is measured, vnest's too.

Run: .venv/bin/python bench/dns.py [--duration 3] [--port 56443] [--out bench/results/dns.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import yaml

# This file is named dns.py: with its folder first on sys.path (as for any script), `import dns`
# would import this file instead of dnspython. Look there only after dnspython is in.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.version  # noqa: E402

sys.path.append(str(_HERE))
from common import BenchError, Env, idle, isolated_env, local_host, machine_facts, memory_of, write_json  # noqa: E402

from vnest import binaries  # noqa: E402

CLUSTER_NAME = "web-7.ns-3.svc.cluster.local."
UPSTREAM_NAME = "www.example.test."
CONCURRENCY = (1, 16)
WARMUP = 0.5
ROUNDS = 3
QUERY_TIMEOUT = 1.0
HOST_CONTEXT = "vnest-host"  # the context `vnest host up` merges into $KUBECONFIG
COREDNS_TTL = 30  # the kubernetes plugin's TTL; vnest's index answers with 30 s too
COREDNS_CACHE = 30  # `cache 30`, kubeadm's Corefile
READY_TIMEOUT = 60.0


# ---- the objects both servers answer for -------------------------------------------------------

NAMESPACES = [f"ns-{i}" for i in range(20)]
SERVICE_PORTS = [{"name": "http", "port": 80, "protocol": "TCP"}]
HEADLESS_NAMESPACE, HEADLESS_NAME, HEADLESS_SLICE = "ns-0", "db", "db-x"
HEADLESS_ENDPOINTS = [{"addresses": [f"10.244.9.{i}"], "hostname": f"db-{i}"} for i in range(1, 11)]
SLICE_LABELS = {"kubernetes.io/service-name": HEADLESS_NAME}


def cluster_ip_services() -> list[tuple[str, str, str]]:
    """(namespace, name, ClusterIP in vnest's index) of the 1000 ClusterIP services."""
    return [(f"ns-{i % 20}", f"web-{i // 20}", f"10.96.{i // 250}.{i % 250 + 1}") for i in range(1000)]


def host_objects() -> list[dict[str, Any]]:
    """The same objects as API objects for the host, which allocates the ClusterIPs itself."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES
    ]
    for ns, name, _ in cluster_ip_services():
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"type": "ClusterIP", "ports": SERVICE_PORTS},
            }
        )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": HEADLESS_NAME, "namespace": HEADLESS_NAMESPACE},
            "spec": {"clusterIP": "None"},
        }
    )
    objs.append(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": HEADLESS_SLICE, "namespace": HEADLESS_NAMESPACE, "labels": SLICE_LABELS},
            "addressType": "IPv4",
            "endpoints": HEADLESS_ENDPOINTS,
        }
    )
    return objs


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
    for ns, name, ip in cluster_ip_services():  # the host gets the same ones (host_objects)
        spec = {"clusterIP": ip, "clusterIPs": [ip], "ports": SERVICE_PORTS}
        index.on_service(None, {"metadata": meta(name, ns), "spec": spec})
    headless = {"clusterIP": "None", "clusterIPs": ["None"]}
    index.on_service(None, {"metadata": meta(HEADLESS_NAME, HEADLESS_NAMESPACE), "spec": headless})
    index.on_endpointslice(
        None,
        {
            "metadata": meta(HEADLESS_SLICE, HEADLESS_NAMESPACE, **SLICE_LABELS),
            "addressType": "IPv4",
            "endpoints": HEADLESS_ENDPOINTS,
        },
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


def settle(idle_percent: float = 15.0, timeout: float = 60.0) -> float:
    """Waits until this machine's CPUs are mostly idle (the host's controllers are still busy
    with the objects just applied, which would weigh on whichever rows come first); returns
    the seconds waited."""
    started = time.monotonic()
    while psutil.cpu_percent(interval=0.5) > idle_percent:
        if time.monotonic() - started > timeout:
            print(f"warning: the machine stayed busier than {idle_percent}% for {timeout:.0f}s", flush=True)
            break
    return round(time.monotonic() - started, 2)


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


def rss_mib(proc: subprocess.Popen) -> dict[str, Any]:
    mem = memory_of(psutil.Process(proc.pid))
    return {"rss_mib": mem.rss_mib, "pss_mib": mem.pss_mib}


def ask(port: int, name: str) -> list[str]:
    """The A records of one answer; raises unless it is NOERROR with exactly one A record."""
    query = dns.message.make_query(name, dns.rdatatype.A, use_edns=False)
    try:
        resp = dns.query.udp(query, "127.0.0.1", port=port, timeout=QUERY_TIMEOUT)
    except (dns.exception.DNSException, OSError) as e:
        raise BenchError(f"127.0.0.1:{port} did not answer {name}: {e!r}") from e
    ips = [rd.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    if resp.rcode() != dns.rcode.NOERROR or len(ips) != 1:
        raise BenchError(f"127.0.0.1:{port} answered {name} {dns.rcode.to_text(resp.rcode())} {ips}")
    return ips


# ---- CoreDNS against the local host ------------------------------------------------------------


def kubectl(*args: str, input: str | None = None, timeout: float = 600) -> str:
    """kubectl of the pinned build against the benchmark's own host (its context in $KUBECONFIG)."""
    argv = [str(binaries.ensure().kubectl), "--context", HOST_CONTEXT, *args]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def load_host(env: Env) -> dict[str, Any]:
    """Creates host_objects() with one `kubectl apply`; returns what it took and web-7.ns-3's IP."""
    path = env.root / "dns-objects.yaml"
    objs = host_objects()
    path.write_text(yaml.dump_all(objs, Dumper=yaml.CSafeDumper, sort_keys=False))
    started = time.monotonic()
    kubectl("apply", "-f", str(path))
    seconds = time.monotonic() - started
    # every service of ours is there (the headless one too)
    namespaces = kubectl("get", "services", "-A", "-o", "jsonpath={.items[*].metadata.namespace}").split()
    ours = len([ns for ns in namespaces if ns in NAMESPACES])
    if ours != len(cluster_ip_services()) + 1:
        raise BenchError(f"the host has {ours} services in ns-*, expected {len(cluster_ip_services()) + 1}")
    ns, name = CLUSTER_NAME.split(".")[1], CLUSTER_NAME.split(".")[0]
    ip = kubectl("get", "service", name, "-n", ns, "-o", "jsonpath={.spec.clusterIP}").strip()
    return {"objects": len(objs), "apply_seconds": round(seconds, 2), "cluster_ip": ip}


def free_port() -> int:
    """A loopback port free for both UDP and TCP (CoreDNS serves both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def corefile(port: int, kubeconfig: Path, upstream_port: int, cache: bool) -> str:
    """A cluster's Corefile (kubeadm's, minus its health, ready and metrics ports), on loopback."""
    return "\n".join(
        [
            f".:{port} {{",
            "    bind 127.0.0.1",
            "    errors",
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {",
            f"        kubeconfig {kubeconfig} {HOST_CONTEXT}",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            f"        ttl {COREDNS_TTL}",
            "    }",
            f"    forward . 127.0.0.1:{upstream_port}",
            *([f"    cache {COREDNS_CACHE}"] if cache else []),
            "    loop",
            "    loadbalance",
            "}",
            "",
        ]
    )


def start_coredns(env: Env, label: str, text: str) -> subprocess.Popen:
    conf = env.root / f"Corefile.{label}"
    conf.write_text(text)
    with (env.root / f"coredns.{label}.log").open("wb") as log:
        return subprocess.Popen(
            [str(binaries.ensure().coredns), "-conf", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=env.root,
        )


def wait_coredns(env: Env, label: str, proc: subprocess.Popen, port: int, ip: str) -> float:
    """Seconds until CoreDNS answers the cluster name with the service's real ClusterIP."""
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < READY_TIMEOUT:
        if proc.poll() is not None:
            break
        try:
            if ask(port, CLUSTER_NAME) == [ip]:
                return time.monotonic() - started
        except Exception as e:  # not listening yet, SERVFAIL while its informers sync, ...
            last = e
        time.sleep(0.2)
    log = (env.root / f"coredns.{label}.log").read_text(errors="replace")[-3000:]
    state = "exited" if proc.poll() is not None else f"did not answer {CLUSTER_NAME} with {ip}"
    raise BenchError(f"coredns ({label}) {state} (last: {last}); its log ends:\n{log}")


# ---- the run -----------------------------------------------------------------------------------


def run(env: Env, duration: float) -> dict[str, Any]:
    """Everything but the local host, which the caller has started; stops what it starts."""
    host = load_host(env)
    procs: list[subprocess.Popen] = []
    try:
        upstream, upstream_port = spawn("--role", "upstream")
        procs.append(upstream)
        upstream_addr = f"127.0.0.1:{upstream_port}"
        cached, cached_port = spawn("--role", "server", "--upstream", upstream_addr)
        procs.append(cached)
        uncached, uncached_port = spawn("--role", "server", "--upstream", upstream_addr, "--cache", "0")
        procs.append(uncached)
        corefiles, ready = {}, {}
        coredns: dict[str, tuple[subprocess.Popen, int]] = {}
        for label, cache in (("cache", True), ("nocache", False)):
            port = free_port()
            corefiles[label] = corefile(port, env.kubeconfig, upstream_port, cache)
            proc = start_coredns(env, label, corefiles[label])
            procs.append(proc)
            coredns[label] = (proc, port)
        for label, (proc, port) in coredns.items():
            ready[label] = round(wait_coredns(env, label, proc, port, host["cluster_ip"]), 2)
        settled = settle()
        cd_cached, cd_cached_port = coredns["cache"]
        cd_uncached, cd_uncached_port = coredns["nocache"]
        targets = [
            ("cluster name, vnest", cached, cached_port, CLUSTER_NAME),
            ("cluster name, vnest, no response cache", uncached, uncached_port, CLUSTER_NAME),
            (f"cluster name, CoreDNS (cache {COREDNS_CACHE})", cd_cached, cd_cached_port, CLUSTER_NAME),
            ("cluster name, CoreDNS, no cache", cd_uncached, cd_uncached_port, CLUSTER_NAME),
            ("upstream name, vnest (5 s cache) -> fake upstream", cached, cached_port, UPSTREAM_NAME),
            ("upstream name, vnest, no cache -> fake upstream", uncached, uncached_port, UPSTREAM_NAME),
            (
                f"upstream name, CoreDNS (cache {COREDNS_CACHE}) -> fake upstream",
                cd_cached,
                cd_cached_port,
                UPSTREAM_NAME,
            ),
            (
                "upstream name, CoreDNS, no cache -> fake upstream",
                cd_uncached,
                cd_uncached_port,
                UPSTREAM_NAME,
            ),
            ("upstream name, fake upstream directly (baseline)", upstream, upstream_port, UPSTREAM_NAME),
        ]
        for _, _, port, name in targets:  # fail before counting, not with a row of errors
            ask(port, name)
        servers = {
            "vnest DNS server": cached,
            "vnest DNS server, no response cache": uncached,
            f"CoreDNS (cache {COREDNS_CACHE})": cd_cached,
            "CoreDNS, no cache": cd_uncached,
        }
        idle(1.0)
        memory = {label: {"idle": rss_mib(proc)} for label, proc in servers.items()}
        load_before = os.getloadavg()
        # Every row once per round, rounds one after the other: this machine's speed drifts over
        # a run (by up to half, from neighbours' load), and rows measured in one stretch would
        # carry that drift into the comparison. Each row reports its median round.
        rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(ROUNDS):
            for label, proc, port, name in targets:
                ps = psutil.Process(proc.pid)
                for concurrency in CONCURRENCY:
                    cpu_before = cpu_seconds(ps)
                    row = asyncio.run(measure(port, name, concurrency, duration))
                    row["cpu"] = cpu_seconds(ps) - cpu_before
                    rounds.setdefault((label, concurrency), []).append(row)
        rows = []
        for label, _, _, name in targets:
            for concurrency in CONCURRENCY:
                runs = rounds[(label, concurrency)]
                median = sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]
                row = {k: v for k, v in median.items() if k != "cpu"}
                row["qps_rounds"] = [r["qps"] for r in runs]
                # warm-up queries are in the CPU time too; divide by all of them
                total = sum(r["queries"] for r in runs) * (1 + WARMUP / duration)
                cpu = sum(r["cpu"] for r in runs)
                row["server_cpu_us_per_query"] = round(cpu / total * 1e6, 1) if total else None
                rows.append({"target": label, "name": name, "concurrency": concurrency, **row})
        load_after = os.getloadavg()
        for label, proc in servers.items():
            memory[label]["after_queries"] = rss_mib(proc)
        for label, (proc, _) in coredns.items():
            if proc.poll() is not None:
                raise BenchError(f"coredns ({label}) exited during the run with {proc.returncode}")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    return {
        "host": host,
        "coredns_ready_seconds": ready,
        "settle_seconds": settled,
        "corefile": corefiles["cache"],
        "memory": memory,
        "load": (load_before, load_after),
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds counted per row and round")
    parser.add_argument(
        "--port", type=int, default=56443, help="first of the seven ports of the benchmark's own host"
    )
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

    versions = binaries.ensure().versions
    facts = machine_facts()
    started = time.monotonic()
    try:
        with isolated_env(prefix="vnd-") as env, local_host(args.port, nodes=1) as host_up_seconds:
            out = run(env, args.duration)
    except BenchError as e:
        print(f"dns benchmark FAILED: {e}", file=sys.stderr)
        return 1
    wall = time.monotonic() - started

    rows = out["rows"]
    load_before, load_after = out["load"]
    corefile_text = out["corefile"]
    result = {
        "benchmark": "dns",
        "command": ".venv/bin/python bench/dns.py"
        + ("" if args.duration == 3.0 else f" --duration {args.duration}")
        + ("" if args.port == 56443 else f" --port {args.port}"),
        "params": {
            "duration_seconds": args.duration,
            "warmup_seconds": WARMUP,
            "rounds": ROUNDS,
            "concurrency": list(CONCURRENCY),
            "transport": "UDP, loopback",
            "index": "1000 ClusterIP services in 20 namespaces, 1 headless service (10 endpoints), 2000 pods",
            "coredns": {
                "version": versions["coredns"],
                "objects": "the index's namespaces, services and EndpointSlice, in a real API server; "
                "no pods (`pods insecure` does not read them)",
                "host": f"vnest host up --nodes 1 --port {args.port}",
                "host_up_seconds": round(host_up_seconds, 2),
                "kubectl_apply_seconds": out["host"]["apply_seconds"],
                "api_objects": out["host"]["objects"],
                "cluster_name_ip": out["host"]["cluster_ip"],  # the API server's, not the index's
                "ready_seconds": out["coredns_ready_seconds"],
                # the "no cache" one is the same without its `cache` line; ports are per run
                "corefile": corefile_text.replace(str(env.kubeconfig), "$KUBECONFIG"),
            },
            "port": args.port,
            # waited before counting, until the CPUs were under 15% busy (the host's
            # controllers digest the applied objects first)
            "settle_seconds": out["settle_seconds"],
        },
        "machine": {**facts, "dnspython": dns.version.version, "coredns": versions["coredns"]},
        "load_average_1_5_15m": {"before": list(load_before), "after": list(load_after)},
        "wall_seconds": round(wall, 1),
        "memory_mib": out["memory"],
        "results": rows,
    }
    print_table(rows)
    print_memory(out["memory"])
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def print_memory(memory: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(f"\n{'server process':<50} {'idle RSS MiB':>12} {'after MiB':>9}")
    for label, m in memory.items():
        print(f"{label:<50} {m['idle']['rss_mib']:>12.1f} {m['after_queries']['rss_mib']:>9.1f}")


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
