"""What syncing costs: N pods created in a virtual cluster vs the same N pods created on the host.

A pod created in a virtual cluster only runs once the syncer has copied it to the
host namespace (`<pod>-x-<ns>-x-<vcluster>`), the host has scheduled and started it,
and the syncer has bound the virtual pod and copied the status back. The baseline is
therefore the same pods (same spec, same count, same client, same concurrency)
created directly on the host, measured in the same run on the same host: everything
the host itself does (admission, scheduling, KWOK marking the pods Running) is in
both numbers, so their difference and ratio are what the virtual cluster adds — the
virtual API server, the syncer's round trips, the per-pod service-account token
Secret, the binding and the status copy.

Setup: an isolated VNEST_HOME/KUBECONFIG, a local host of its own
(`vnest host up --nodes 10`; KWOK nodes take 110 pods each) and one virtual cluster
(`vnest create bench -n bench --no-connect`, process driver). Then for each N:
  1. baseline: N bare nginx pods (label bench=run-N) POSTed to a fresh host
     namespace by 32 concurrent workers; seconds from the first POST until a watch
     (started before it) has seen all N in phase Running;
  2. virtual: the same N pods POSTed to a fresh namespace of the virtual cluster;
     seconds until the virtual cluster shows all N Running. Per pod, the latency
     from its POST's return to the ADDED event of its host copy on a watch of the
     host namespace (creationTimestamp has only 1 s resolution), mapped back by the
     vnest.io/object-name annotation: p50, p99, max;
  3. during the virtual run, the syncer process's CPU seconds (user+system delta)
     and peak RSS (sampled every 0.2 s), with the virtual kube-apiserver, kine and
     the host's kube-apiserver for context (the host's also during the baseline);
  4. per pod, the requests each API server served during the round (its own
     apiserver_request_total, everyone's requests: the benchmark's POSTs too), and the
     virtual API server's share of the latency (POST returned -> ADDED on a watch of it);
  5. both namespaces deleted and waited for (host copies and token Secrets too)
     before the next N.
Then the paced rounds (--paced, default 1000 pods): the same on both sides, but pod i
POSTed no sooner than i/--rate seconds after the first (default 100 pods/s), which is
how the POST -> host copy latency target is stated. Every round records `timeline`
([seconds, pods Running]) for bench/plot.py. With --profile DIR the syncer is sampled
by py-spy during each virtual round (collapsed stacks, DIR/syncer-N.txt).
The host is KWOK: no containers start, so both sides measure the API work only.
All times are stamped by one asyncio event loop that also runs the 32 creating
workers, so each stamp carries that loop's scheduling delay (tens of ms on a busy
2-CPU machine): a latency's "min" can come out slightly negative.

Run: .venv/bin/python bench/sync.py [--pods 100,500,1000] [--paced 1000] [--rate 100] [--port 56443]
     [--out bench/results/sync.json] [--profile DIR] [--set KEY=VALUE]...   (a config of the virtual cluster, e.g. policies.podSecurityStandard=privileged)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml
from common import (
    BenchError,
    Env,
    UsageSampler,
    controlplane_processes,
    host_processes,
    isolated_env,
    local_host,
    machine_facts,
    processes_mentioning,
    virtual_clusters,
    vnest_output,
    write_json,
)

from vnest import naming
from vnest.kube.client import ApiError, KubeClient, Obj

NAME = "bench"  # the virtual cluster, and its host namespace
NODES = 10
CONCURRENCY = 32
SAMPLE_SECONDS = 0.2
DEFAULT_OUT = Path(__file__).parent / "results" / "sync.json"


# The host's servers whose CPU a round records (on both sides: the virtual run costs the host too).
HOST_SERVERS = ("kube-apiserver", "etcd", "kwok", "kube-scheduler", "kube-controller-manager")


def busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, so far (every process: the benchmark's too)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def round_timeout(n: int) -> float:
    """How long one side of one round may take before it counts as failed."""
    return max(180.0, 0.6 * n)


def pod_manifest(name: str, n: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": f"run-{n}"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
    }


def pod_names(n: int) -> list[str]:
    return [f"pod-{i:04d}" for i in range(n)]


# ---- watching ---------------------------------------------------------------------------------


class PodWatch:
    """A list-then-watch of the pods of one namespace: when each was first seen, and first Running.

    Times are time.monotonic() when the event arrived. ``key`` names a pod (default:
    its name; for host copies, the virtual pod they stand for). Pods the initial list
    already holds are stamped at start, which is before any pod of a round exists.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        label_selector: str = "",
        key: Callable[[Obj], str | None] | None = None,
    ) -> None:
        self.client = client
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self.label_selector = label_selector
        self.key = key or (lambda pod: pod["metadata"]["name"])
        self.added: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.relists = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        rv = await self._list()
        self._task = asyncio.create_task(self._watch(rv))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A failed watch shows as pods never seen; its exception adds nothing.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def _list(self) -> str:
        body = await self.client.request("GET", self.path, params=self._params())
        now = time.monotonic()
        for pod in body["items"]:
            self._see(pod, now)
        return body["metadata"]["resourceVersion"]

    def _see(self, pod: Obj, now: float) -> None:
        key = self.key(pod)
        if key is None:
            return
        self.added.setdefault(key, now)
        if (pod.get("status") or {}).get("phase") == "Running" and key not in self.running:
            self.running[key] = now
        self._changed.set()

    async def _watch(self, rv: str) -> None:
        while True:
            params = {**self._params(), "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
            try:
                async for event in self.client.stream_lines(self.path, params):
                    now = time.monotonic()
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # 410 Gone: the rv was compacted away
                        raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._see(obj, now)
            except Exception:  # ApiError; an older vnest's client (benchmarked for a baseline) raised httpx's
                await asyncio.sleep(0.2)
                self.relists += 1
                rv = await self._list()

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 5.0))
        return True

    async def wait_running(self, names: list[str], timeout: float) -> bool:
        return await self.wait(lambda: all(n in self.running for n in names), timeout)


def virtual_key(pod: Obj) -> str | None:
    """The virtual pod ("ns/name") a host copy stands for."""
    ann = pod["metadata"].get("annotations") or {}
    name = ann.get(naming.ANNOTATION_NAME)
    return f"{ann.get(naming.ANNOTATION_NAMESPACE)}/{name}" if name else None


# ---- creating and deleting --------------------------------------------------------------------


async def create_pods(
    client: KubeClient, namespace: str, n: int, rate: float | None = None
) -> tuple[dict[str, float], int]:
    """POSTs N pods with CONCURRENCY workers, as fast as they go or, with `rate`, pod i no sooner
    than i/rate seconds after the first; returns when each POST returned, and the retries."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, name in enumerate(pod_names(n)):
        queue.put_nowait((i, name))
    returned: dict[str, float] = {}
    retries = 0
    start = time.monotonic()

    async def worker() -> None:
        nonlocal retries
        while not queue.empty():
            i, name = queue.get_nowait()
            if rate is not None and (wait := start + i / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            for attempt in range(6):
                try:
                    await client.create(pod_manifest(name, n), namespace=namespace)
                    break
                except ApiError as e:
                    if e.status in (0, 429) or e.status >= 500:
                        if attempt == 5:
                            raise
                        retries += 1
                        await asyncio.sleep(0.2 * 2**attempt)
                        continue
                    raise
            returned[name] = time.monotonic()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return returned, retries


async def fresh_namespace(client: KubeClient, namespace: str, timeout: float = 60.0) -> None:
    """Creates the namespace and waits for its default ServiceAccount (pods need it to be admitted)."""
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    deadline = time.monotonic() + timeout
    while await client.get_or_none("ServiceAccount", "default", namespace) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"namespace {namespace}: no default ServiceAccount after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def until(check: Callable[[], Any], what: str, timeout: float) -> float:
    """Polls an async check until it returns true; returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)
    return time.monotonic() - start


async def delete_namespace(client: KubeClient, namespace: str, timeout: float) -> float:
    await client.delete("Namespace", namespace)

    async def gone() -> bool:
        return await client.get_or_none("Namespace", namespace) is None

    return await until(gone, f"namespace {namespace} to be deleted", timeout)


async def host_copies(host: KubeClient, vnamespace: str) -> int:
    """Host pods and Secrets (the pods' token Secrets) the syncer made for a virtual namespace."""
    selector = f"{naming.LABEL_MANAGED_BY}={NAME},vnest.io/namespace={vnamespace}"
    pods = await host.list("Pod", NAME, label_selector=selector)
    secrets = await host.list("Secret", NAME, label_selector=selector)
    return len(pods) + len(secrets)


# ---- the API servers' own count of requests ---------------------------------------------------


_REQUEST_TOTAL = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def request_counts(client: KubeClient) -> dict[str, float]:
    """apiserver_request_total from the server's /metrics, summed by "VERB resource[/subresource]"."""
    counts: dict[str, float] = {}
    if hasattr(client, "text"):
        text = await client.text("/metrics")
    else:  # an older vnest's client, benchmarked for a baseline: httpx underneath
        text = (await client.http.get("/metrics")).text  # type: ignore[attr-defined]
    for line in text.splitlines():
        if m := _REQUEST_TOTAL.match(line):
            labels = dict(_LABEL.findall(m.group(1)))
            what = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            key = f"{labels.get('verb', '?')} {what}"
            counts[key] = counts.get(key, 0.0) + float(m.group(2))
    return counts


def per_pod(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """The requests a round made, per pod, largest first (WATCH and LIST counts are connections)."""
    diff = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / n for k in after}
    return {k: round(v, 2) for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v >= 0.01}


# ---- the rounds -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_ms(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(seconds, 50) * 1000, 1),
        "p99": round(percentile(seconds, 99) * 1000, 1),
        "max": round(max(seconds) * 1000, 1),
        "min": round(min(seconds) * 1000, 1),
    }


def syncer_log(env: Env) -> Path:
    return env.home / "clusters" / NAME / NAME / "data" / "logs" / "syncer.log"


def log_tail(path: Path, start: int, lines: int = 40) -> dict[str, Any]:
    """The syncer log written since byte ``start``: its warning/error lines and its last lines."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return {"error": str(e)}
    all_lines = text.splitlines()
    problems = [line for line in all_lines if any(w in line.lower() for w in ("error", "warn", "traceback"))]
    return {
        "lines_written": len(all_lines),
        "warning_or_error_lines": len(problems),
        "first_problems": problems[:20],
        "last_lines": all_lines[-lines:],
    }


def timeline(running: dict[str, float], start: float, points: int = 200) -> list[list[float]]:
    """[seconds since the first POST, pods Running then], at most `points` of them (for bench/plot.py)."""
    stamps = sorted(t - start for t in running.values())
    step = max(1, len(stamps) // points)
    out = [[round(t, 3), i + 1] for i, t in enumerate(stamps) if i % step == 0 or i == len(stamps) - 1]
    return [[0.0, 0], *out]


async def baseline_round(env: Env, host: KubeClient, n: int, rate: float | None = None) -> dict[str, Any]:
    namespace = f"base-{n}" if rate is None else f"base-paced-{n}"
    await fresh_namespace(host, namespace)
    watch = PodWatch(host, namespace)
    await watch.start()
    names = pod_names(n)
    host_procs = host_processes(env)
    procs = {f"host {k}": v for k, v in host_procs.items() if k in HOST_SERVERS}
    try:
        with UsageSampler(procs, SAMPLE_SECONDS) as usage:
            start, busy = time.monotonic(), busy_seconds()
            returned, retries = await create_pods(host, namespace, n, rate)
            created = max(returned.values()) - start
            ok = await watch.wait_running(names, round_timeout(n))
            busy = busy_seconds() - busy
    finally:
        await watch.stop()
    result: dict[str, Any] = {
        "namespace": namespace,
        "ok": ok,
        "create_seconds": round(created, 2),
        "create_retries": retries,
        "running": len([x for x in names if x in watch.running]),
        "cpu": usage.to_json(),
        # From the first POST to the last pod Running: the whole machine's busy CPU seconds (of
        # 2 per second on 2 cores). Near the limit, the round waited on CPU, not on anything else.
        "machine_busy_cpu_seconds": round(busy, 2),
    }
    if ok:
        result["seconds"] = round(max(watch.running[x] for x in names) - start, 2)
    result["timeline"] = timeline(watch.running, start)
    result["delete_seconds"] = round(await delete_namespace(host, namespace, round_timeout(n)), 2)
    return result


@contextlib.contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy samples the process while the block runs (collapsed stacks, for flame graphs)."""
    if out is None:
        yield
        return
    # The venv's py-spy (pip install py-spy), which PATH may not have.
    beside = Path(sys.executable).parent / "py-spy"
    spy = subprocess.Popen(
        [
            str(beside) if beside.exists() else "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


async def virtual_round(
    env: Env,
    host: KubeClient,
    virtual: KubeClient,
    n: int,
    profile: Path | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    namespace = f"run-{n}" if rate is None else f"run-paced-{n}"
    await fresh_namespace(virtual, namespace)
    names = pod_names(n)
    host_watch = PodWatch(host, NAME, f"{naming.LABEL_MANAGED_BY}={NAME}", key=virtual_key)
    virtual_watch = PodWatch(virtual, namespace)
    await host_watch.start()
    await virtual_watch.start()
    procs = controlplane_processes(env, NAME, NAME)
    watched = {
        k: procs[k] for k in ("syncer", "kube-apiserver", "kine", "kube-controller-manager") if k in procs
    }
    if "syncer" not in watched:
        raise BenchError(f"no syncer process under the supervisor: {sorted(procs)}")
    watched.update({f"host {k}": v for k, v in host_processes(env).items() if k in HOST_SERVERS})
    log = syncer_log(env)
    log_start = log.stat().st_size if log.exists() else 0
    virtual_before, host_before = await request_counts(virtual), await request_counts(host)
    try:
        with UsageSampler(watched, SAMPLE_SECONDS) as usage, profiled(procs["syncer"].pid, profile):
            start, busy = time.monotonic(), busy_seconds()
            returned, retries = await create_pods(virtual, namespace, n, rate)
            created = max(returned.values()) - start
            ok = await virtual_watch.wait_running(names, round_timeout(n))
            busy = busy_seconds() - busy
    finally:
        await host_watch.stop()
        await virtual_watch.stop()
    virtual_after, host_after = await request_counts(virtual), await request_counts(host)
    latencies = [
        host_watch.added[f"{namespace}/{x}"] - returned[x]
        for x in names
        if f"{namespace}/{x}" in host_watch.added
    ]
    result: dict[str, Any] = {
        "namespace": namespace,
        "ok": ok,
        "create_seconds": round(created, 2),
        "create_retries": retries,
        "host_copies_seen": len(latencies),
        "running": len([x for x in names if x in virtual_watch.running]),
        "watch_relists": {"host": host_watch.relists, "virtual": virtual_watch.relists},
        "cpu": usage.to_json(),
        # From the first POST to the last pod Running: the whole machine's busy CPU seconds (of
        # 2 per second on 2 cores). Near the limit, the round waited on CPU, not on anything else.
        "machine_busy_cpu_seconds": round(busy, 2),
        "syncer_pid_changed": procs["syncer"].pid
        != controlplane_processes(env, NAME, NAME).get("syncer", procs["syncer"]).pid,
        "syncer_log": log_tail(log, log_start, lines=40 if not ok else 5),
        # Everyone's requests (the benchmark's own POSTs and watches too), per pod of the round.
        "requests_per_pod": {
            "virtual": per_pod(virtual_before, virtual_after, n),
            "host": per_pod(host_before, host_after, n),
        },
    }
    if ok:
        result["seconds"] = round(max(virtual_watch.running[x] for x in names) - start, 2)
    result["timeline"] = timeline(virtual_watch.running, start)
    if latencies:
        result["host_create_latency_ms"] = latency_ms(latencies)
    # Of that, the part before the syncer could act: the virtual API server's watch delivering the pod
    # (to this benchmark's watch, as to the syncer's).
    seen = [virtual_watch.added[x] - returned[x] for x in names if x in virtual_watch.added]
    if seen:
        result["virtual_watch_latency_ms"] = latency_ms(seen)
    # Deleting the virtual namespace deletes its pods; the syncer removes their host copies.
    delete_start = time.monotonic()
    await delete_namespace(virtual, namespace, round_timeout(n))

    async def no_copies() -> bool:
        return await host_copies(host, namespace) == 0

    await until(no_copies, f"host copies of {namespace} to be deleted", round_timeout(n))
    result["delete_seconds"] = round(time.monotonic() - delete_start, 2)
    return result


async def rounds(
    env: Env, virtual_kubeconfig: Obj, counts: list[int], profile: Path | None, rate: float | None = None
) -> dict[str, Any]:
    """One round per N, both sides; with `rate`, pods are created at that rate rather than at once."""
    out: dict[str, Any] = {}
    paced = f" at {rate:g} pods/s" if rate else ""
    async with (
        KubeClient.from_kubeconfig(env.kubeconfig, "vnest-host", timeout=60) as host,
        KubeClient.from_dict(virtual_kubeconfig, timeout=60) as virtual,
    ):
        for n in counts:
            row: dict[str, Any] = {}
            out[str(n)] = row
            spy = profile / f"syncer-{n}{'-paced' if rate else ''}.txt" if profile else None
            try:
                print(f"N={n}{paced}: baseline on the host ...", flush=True)
                row["baseline_host"] = await baseline_round(env, host, n, rate)
                print(f"N={n}{paced}: in the virtual cluster ...", flush=True)
                row["virtual"] = await virtual_round(env, host, virtual, n, spy, rate)
            except (BenchError, ApiError) as e:
                # Recorded, not raised: the rounds before still count, and cleanup follows.
                row["error"] = str(e)
                row["syncer_log"] = log_tail(syncer_log(env), 0, lines=40)
                print(f"N={n}{paced}: FAILED: {e}", flush=True)
                break
            row.update(compare(row["baseline_host"], row["virtual"]))
            print_row(n, row)
    return out


def compare(base: dict[str, Any], virt: dict[str, Any]) -> dict[str, Any]:
    if "seconds" in base and "seconds" in virt and base["seconds"] > 0:
        return {"ratio_virtual_vs_baseline": round(virt["seconds"] / base["seconds"], 2)}
    return {"ratio_virtual_vs_baseline": None}


def measure(
    env: Env,
    counts: list[int],
    port: int,
    sets: list[str],
    profile: Path | None,
    paced: list[int],
    rate: float,
) -> dict[str, Any]:
    extra = [arg for s in sets for arg in ("--set", s)]
    with local_host(port, nodes=NODES) as host_up_seconds, virtual_clusters() as clusters:
        create_seconds = clusters.create(NAME, NAME, *extra)
        virtual_kubeconfig = yaml.safe_load(vnest_output("connect", NAME, "-n", NAME, "--print"))
        results = asyncio.run(rounds(env, virtual_kubeconfig, counts, profile))
        paced_results = asyncio.run(rounds(env, virtual_kubeconfig, paced, profile, rate)) if paced else {}
    return {
        "setup": {
            "host": f"vnest host up --nodes {NODES} --port {port}",
            "host_up_seconds": round(host_up_seconds, 2),
            "virtual_cluster": " ".join(["vnest", "create", NAME, "-n", NAME, "--no-connect", *extra]),
            "create_seconds": round(create_seconds, 2),
            "driver": "process",
            "pod": pod_manifest("pod-NNNN", 0)["spec"],
            "concurrency": CONCURRENCY,
        },
        "rounds": results,
        "paced": {"rate_pods_per_second": rate, "rounds": paced_results},
    }


# ---- reporting --------------------------------------------------------------------------------


HEADER = (
    f"{'N':>6} {'base s':>8} {'virt s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'syncer CPU s':>12} {'syncer MiB':>10} {'vAPI CPU s':>10} {'busy b/v':>9}"
)


def busy_share(side: dict[str, Any]) -> float | None:
    """How busy the machine's CPUs were during a side's round (1.0: all of them all the time)."""
    if not side.get("seconds"):
        return None
    return float(side["machine_busy_cpu_seconds"]) / (side["seconds"] * (os.cpu_count() or 1))


def print_row(n: int, r: dict[str, Any]) -> None:
    base, virt = r["baseline_host"], r["virtual"]
    lat = virt.get("host_create_latency_ms", {})
    syncer = virt["cpu"]["syncer"]
    vapi = virt["cpu"].get("kube-apiserver", {})

    def cell(v: Any, width: int, fmt: str = ".2f") -> str:
        return f"{'-' if v is None else format(v, fmt):>{width}}"

    print(
        f"{n:>6} {cell(base.get('seconds'), 8)} {cell(virt.get('seconds'), 8)} "
        f"{cell(r['ratio_virtual_vs_baseline'], 6)} {cell(lat.get('p50'), 8, '.0f')} "
        f"{cell(lat.get('p99'), 8, '.0f')} {cell(lat.get('max'), 8, '.0f')} "
        f"{cell(syncer['cpu_seconds'], 12)} {cell(syncer['peak_rss_mib'], 10, '.1f')} "
        f"{cell(vapi.get('cpu_seconds'), 10)} "
        f"{cell(busy_share(base), 4)}/{cell(busy_share(virt), 4)}",
        flush=True,
    )


def print_summary(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nvnest sync benchmark, {m['date']}: {m['nproc']} CPUs, {m['memory_total_mib']} MiB, "
        f"Python {m['python']}, Kubernetes {m['pins']['kubernetes']}, vnest {m['vnest_version']}"
    )
    load = r["load_average_1_5_15m"]
    print(f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}")
    print(
        "base/virt s: first POST to all N Running (host / virtual cluster); p50..max: virtual POST "
        "returned -> host copy ADDED; busy b/v: share of the machine's CPU time in use (base/virt)"
    )
    print(HEADER)
    for n, row in r["rounds"].items():
        if "error" not in row:
            print_row(int(n), row)
    if r["paced"]["rounds"]:
        print(f"created at {r['paced']['rate_pods_per_second']:g} pods/s (both sides):")
        for n, row in r["paced"]["rounds"].items():
            if "error" not in row:
                print_row(int(n), row)
    for label, rows in (("", r["rounds"]), (" paced", r["paced"]["rounds"])):
        for n, row in rows.items():
            if "error" in row:
                print(f"N={n}{label}: FAILED: {row['error']}")
                continue
            for side in ("baseline_host", "virtual"):
                if not row[side]["ok"]:
                    print(f"N={n}{label} {side}: NOT all Running ({row[side]['running']}/{n}) in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", default="100,500,1000", help="comma-separated pod counts N, one round each")
    parser.add_argument(
        "--port", type=int, default=56443, help="first of the seven ports of the benchmark's own host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config setting of the virtual cluster (vnest create --set), to measure what it costs",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the syncer with py-spy during each virtual round: DIR/syncer-N.txt (collapsed stacks)",
    )
    parser.add_argument(
        "--paced",
        default="1000",
        help="comma-separated pod counts of rounds created at --rate instead of at once ('' for none)",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="pods a second of the paced rounds")
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    try:
        paced = [int(x) for x in args.paced.split(",") if x.strip()]
    except ValueError:
        parser.error("--paced takes comma-separated integers")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        counts = [int(x) for x in args.pods.split(",") if x.strip()]
    except ValueError:
        parser.error("--pods takes comma-separated integers")
    if not counts or min(counts) < 1:
        parser.error("--pods needs counts of at least 1")
    if max(counts + paced) > NODES * 110 - 50:
        parser.error(f"at most {NODES * 110 - 50} pods fit on {NODES} KWOK nodes (110 each)")

    facts = machine_facts()
    load_before = os.getloadavg()
    started = time.monotonic()
    with isolated_env(prefix="vnb-") as env:
        root = str(env.root)
        result = measure(env, counts, args.port, args.set, args.profile, paced, args.rate)
    leftover = processes_mentioning(root)
    load_after = os.getloadavg()
    result = {
        "benchmark": "sync",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {
            "pods": counts,
            "port": args.port,
            "nodes": NODES,
            "concurrency": CONCURRENCY,
            "paced": paced,
            "rate": args.rate,
            "set": args.set,
        },
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": load_after},
        "wall_seconds": round(time.monotonic() - started, 1),
        "left_running_after_cleanup": len(leftover),
        **result,
    }
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    rounds_ok = all(
        "error" not in r and r["baseline_host"]["ok"] and r["virtual"]["ok"]
        for r in [*result["rounds"].values(), *result["paced"]["rounds"].values()]
    )
    return 0 if rounds_ok else 1


if __name__ == "__main__":
    sys.exit(main())
