"""Scale over time: a steady churn of pods and Services in a virtual cluster, for minutes on end.

The question is whether the syncer keeps up forever or slowly loses: memory that
grows with every object it has ever seen (a cache or a map entry never dropped), or
work queues that grow because each minute leaves a little more undone. Neither shows
in a short burst like bench/sync.py; both show as a slope over a long run at a
steady rate, which is what this measures.

Setup: an isolated VNEST_HOME/KUBECONFIG, a local KWOK host of its own
(`vnest host up --runtime kwok --nodes 3`) and one virtual cluster (`vnest create
soak -n soak --no-connect`, process driver). In its namespace `churn`:
  - pods: one bare nginx pod created every 1/--rate seconds (on a fixed schedule, not
    after the previous one returned), and once more than --pods exist the oldest is
    deleted (default grace period), so the population stays at --pods; each pod carries
    one of ten `group` labels;
  - Services: the same at --service-rate up to --services, each selecting one group,
    so Endpoints and EndpointSlices churn with the pods.
At most 32 requests are in flight; when the API is slower than the schedule the
churn falls behind and the lag is reported. A watch of the virtual namespace stamps
each pod's first Running; per minute of creation: pods created, reached Running,
deleted before Running, and the create->Running latency (POST returned -> Running
seen) p50/p90/p99/max. One asyncio loop stamps both ends, so a Running event handled
before the POST's response counts as latency slightly below zero.
Every --sample-seconds: the RSS of the control plane's processes (supervisor, syncer
when it runs as a process of its own, kube-apiserver, kine, kube-controller-manager;
"the syncer" is whichever process runs it: its own, else the supervisor), the syncer's
metrics (`vnest_syncer_queue_depth` per kind, reconciles and failures, cached objects:
the endpoint the control plane writes to data/status.json), and the populations
(virtual pods, host copies, Services on both sides), all in `timeline`. The queue depth
is the keys ready to be reconciled at that instant: keys in a worker's hands or waiting
out a retry's backoff are not in it (their failures are, in the failures counter).
At the end: the least-squares slope of each series after a warm-up (default 2
minutes, at most a third of the run), in MiB per hour for RSS and keys per hour for
queue depth, and the means of the first and last window (5 minutes, at most half of
what follows the warm-up). Then the churn stops and the run waits up to 60 s for the
queues to drain and the remaining pods to be Running ("drain").

Run: .venv/bin/python bench/soak.py [--minutes 30] [--rate 4] [--pods 200] [--service-rate 0.4]
     [--services 20] [--port 19443] [--out bench/results/soak.json]
     Develop with --minutes 2; the full soak is the default 30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from common import (
    MIB,
    BenchError,
    Env,
    controlplane_processes,
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

NAME = "soak"  # the virtual cluster, and its host namespace
NAMESPACE = "churn"  # in the virtual cluster
GROUPS = 10  # pod labels group=g0..g9; each Service selects one
IN_FLIGHT = 32
DRAIN_SECONDS = 60.0
WINDOW_SECONDS = 300.0
PODS_PER_NODE = 110
DEFAULT_OUT = Path(__file__).parent / "results" / "soak.json"
COMPONENTS = ("supervisor", "syncer", "kube-apiserver", "kine", "kube-controller-manager")


# ---- the pure parts: metrics text, statistics ---------------------------------------------------


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text format -> {metric: {label string: value}}; the label string is what was
    between the braces ("" for none), which is all this benchmark needs to tell kinds apart."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels, _, value = rest.rpartition("}")
        else:
            name, _, value = line.partition(" ")
            labels = ""
        try:
            out.setdefault(name.strip(), {})[labels] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def label(labels: str, key: str) -> str:
    """The value of one label in a label string such as `kind="Pod",x="y"`."""
    for part in labels.split(","):
        k, _, v = part.partition("=")
        if k.strip() == key:
            return v.strip().strip('"')
    return labels


def least_squares_slope(points: list[tuple[float, float]]) -> float | None:
    """The slope of the least-squares line through (t, value) points; None for fewer than two
    distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t


def series_stats(points: list[tuple[float, float]], warmup: float, window: float) -> dict[str, Any]:
    """Slope per hour after ``warmup`` seconds, and the means of the first and last ``window``
    seconds of what follows it (the window shrinks to half that span when the run is short)."""
    kept = [(t, v) for t, v in points if t >= warmup]
    if not kept:
        return {"samples": 0}
    start, end = kept[0][0], kept[-1][0]
    window = min(window, (end - start) / 2) if end > start else 0.0
    first = [v for t, v in kept if t <= start + window]
    last = [v for t, v in kept if t >= end - window]
    slope = least_squares_slope(kept)
    return {
        "samples": len(kept),
        "from_s": round(start, 1),
        "to_s": round(end, 1),
        "slope_per_hour": None if slope is None else round(slope * 3600, 2),
        "window_s": round(window, 1),
        "first_window_mean": round(statistics.fmean(first), 2),
        "last_window_mean": round(statistics.fmean(last), 2),
        "min": round(min(v for _, v in kept), 2),
        "max": round(max(v for _, v in kept), 2),
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---- the churn --------------------------------------------------------------------------------


@dataclass
class PodRecord:
    created: float  # time.monotonic() when the POST returned
    running: float | None = None  # first seen Running
    deleted: bool = False  # the churn deleted it


def pod_manifest(name: str, seq: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "soak", "group": f"g{seq % GROUPS}"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
    }


def service_manifest(name: str, seq: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"bench": "soak"}},
        "spec": {
            "selector": {"bench": "soak", "group": f"g{seq % GROUPS}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


class Churn:
    """Creates objects of one kind on a fixed schedule and deletes the oldest beyond a population."""

    def __init__(
        self,
        client: KubeClient,
        kind: str,
        prefix: str,
        manifest: Callable[[str, int], Obj],
        rate: float,
        population: int,
        limit: asyncio.Semaphore,
        on_created: Callable[[str], None] = lambda name: None,
        on_deleted: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.client, self.kind, self.prefix, self.manifest = client, kind, prefix, manifest
        self.rate, self.population, self.limit = rate, population, limit
        self.on_created, self.on_deleted = on_created, on_deleted
        self.live: deque[str] = deque()
        self.created = 0
        self.deleted = 0
        self.errors: dict[str, int] = {}
        self.first_errors: list[str] = []
        self.max_lag = 0.0
        self.late = 0  # operations started more than a second after their slot
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, start: float, until: float) -> None:
        if self.rate <= 0:
            return
        seq = 0
        while True:
            slot = start + seq / self.rate
            if slot >= until:
                break
            if slot > time.monotonic():
                await asyncio.sleep(slot - time.monotonic())
            await self.limit.acquire()
            lag = time.monotonic() - slot
            self.max_lag = max(self.max_lag, lag)
            self.late += lag > 1.0
            task = asyncio.create_task(self._one(seq))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            seq += 1
        if self.tasks:
            await asyncio.gather(*self.tasks)

    async def _one(self, seq: int) -> None:
        name = f"{self.prefix}-{seq:06d}"
        try:
            if await self._call(self.client.create(self.manifest(name, seq), namespace=NAMESPACE)):
                self.created += 1
                self.on_created(name)
                self.live.append(name)
            if len(self.live) > self.population:
                oldest = self.live.popleft()
                self.on_deleted(oldest)
                if await self._call(self.client.delete(self.kind, oldest, NAMESPACE)):
                    self.deleted += 1
        finally:
            self.limit.release()

    async def _call(self, call: Awaitable[Any]) -> bool:
        try:
            await call
        except ApiError as e:
            key = f"{e.status} {e.reason}".strip()
            self.errors[key] = self.errors.get(key, 0) + 1
            if len(self.first_errors) < 10:
                self.first_errors.append(str(e)[:300])
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate,
            "population": self.population,
            "created": self.created,
            "deleted": self.deleted,
            "max_schedule_lag_s": round(self.max_lag, 2),
            "started_over_1s_late": self.late,
            "errors": self.errors,
            "first_errors": self.first_errors,
        }


class PodWatch:
    """List-then-watch of the churn namespace's pods: which exist, and when each was first Running."""

    def __init__(self, client: KubeClient, records: dict[str, PodRecord]) -> None:
        self.client = client
        self.records = records
        self.path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        self.existing: set[str] = set()
        self.running_now: set[str] = set()
        self.early: dict[str, float] = {}
        self.relists = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        rv = await self._list()
        self._task = asyncio.create_task(self._watch(rv))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _list(self) -> str:
        body = await self.client.request("GET", self.path)
        self.existing.clear()
        self.running_now.clear()
        for pod in body["items"]:
            self._see(pod, time.monotonic())
        return str(body["metadata"]["resourceVersion"])

    def _see(self, pod: Obj, now: float) -> None:
        name = pod["metadata"]["name"]
        self.existing.add(name)
        if (pod.get("status") or {}).get("phase") == "Running":
            self.running_now.add(name)
            record = self.records.get(name)
            if record is None:  # Running seen before this loop got to its POST's response
                self.early.setdefault(name, now)
            elif record.running is None:
                record.running = now
        else:
            self.running_now.discard(name)

    async def _watch(self, rv: str) -> None:
        while True:
            params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
            try:
                async for event in self.client.stream_lines(self.path, params):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # 410 Gone: the rv was compacted away
                        raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._see(obj, time.monotonic())
                    elif event.get("type") == "DELETED":
                        self.existing.discard(obj["metadata"]["name"])
                        self.running_now.discard(obj["metadata"]["name"])
            except (ApiError, httpx.HTTPError):
                await asyncio.sleep(0.5)
                self.relists += 1
                rv = await self._list()


# ---- sampling ---------------------------------------------------------------------------------


def status_file(env: Env) -> Path:
    return env.home / "clusters" / NAME / NAME / "data" / "status.json"


def metrics_url(env: Env) -> str | None:
    """Where the control plane says its metrics endpoint listens (re-read each time: a restarted
    syncer picks a new port)."""
    try:
        port = json.loads(status_file(env).read_text()).get("metricsPort")
    except (OSError, ValueError):
        return None
    return f"http://127.0.0.1:{port}/metrics" if port else None


def rss_by_component(env: Env) -> tuple[dict[str, float], dict[str, int]]:
    """RSS MiB and pid of each control-plane process; "syncer" only when it runs on its own."""
    rss: dict[str, float] = {}
    pids: dict[str, int] = {}
    with contextlib.suppress(BenchError):
        for name, proc in controlplane_processes(env, NAME, NAME).items():
            if name not in COMPONENTS:
                continue
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                rss[name] = round(proc.memory_info().rss / MIB, 1)
                pids[name] = proc.pid
    return rss, pids


class Sampler:
    def __init__(
        self, env: Env, host: KubeClient, watch: PodWatch, records: dict[str, PodRecord], start: float
    ) -> None:
        self.env, self.host, self.watch, self.records, self.start = env, host, watch, records, start
        self.http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        self.timeline: list[dict[str, Any]] = []
        self.pids_seen: dict[str, set[int]] = {}
        self.metrics_failures = 0
        self.kinds: set[str] = set()
        self.informers: set[str] = set()

    async def close(self) -> None:
        await self.http.aclose()

    async def sample(self, phase: str) -> dict[str, Any]:
        now = time.monotonic()
        rss, pids = rss_by_component(self.env)
        for name, pid in pids.items():
            self.pids_seen.setdefault(name, set()).add(pid)
        row: dict[str, Any] = {"t": round(now - self.start, 1), "phase": phase, "rss_mib": rss}
        row["syncer_rss_mib"] = rss.get("syncer", rss.get("supervisor"))
        metrics = await self._metrics()
        if metrics is not None:
            depth = {label(k, "kind"): v for k, v in metrics.get("vnest_syncer_queue_depth", {}).items()}
            self.kinds.update(depth)
            row["queue_depth"] = {k: int(v) for k, v in sorted(depth.items())}
            row["queue_depth_total"] = int(sum(depth.values()))
            row["reconciles_total"] = int(sum(metrics.get("vnest_syncer_reconciles_total", {}).values()))
            failures = {
                label(k, "kind"): int(v)
                for k, v in metrics.get("vnest_syncer_reconcile_failures_total", {}).items()
            }
            row["reconcile_failures_total"] = sum(failures.values())
            row["reconcile_failures"] = {k: v for k, v in sorted(failures.items()) if v}
            cached = {
                label(k, "informer"): int(v)
                for k, v in metrics.get("vnest_syncer_cached_objects", {}).items()
            }
            row["cached_objects_total"] = sum(cached.values())
            row["cached_objects"] = dict(sorted(cached.items()))
            self.informers.update(cached)
        row["virtual_pods"] = len(self.watch.existing)
        row["virtual_pods_running"] = len(self.watch.running_now)
        selector = f"{naming.LABEL_MANAGED_BY}={NAME}"
        with contextlib.suppress(ApiError):
            row["host_pods"] = len(await self.host.list("Pod", NAME, label_selector=selector))
            row["host_services"] = len(await self.host.list("Service", NAME, label_selector=selector))
        self.timeline.append(row)
        return row

    async def _metrics(self) -> dict[str, dict[str, float]] | None:
        url = metrics_url(self.env)
        if url is None:
            self.metrics_failures += 1
            return None
        try:
            resp = await self.http.get(url)
            resp.raise_for_status()
        except httpx.HTTPError:
            self.metrics_failures += 1
            return None
        return parse_prometheus(resp.text)

    def series(self, key: str, component: str | None = None) -> list[tuple[float, float]]:
        out = []
        for row in self.timeline:
            value = row.get(key) if component is None else row.get(key, {}).get(component)
            if value is not None:
                out.append((row["t"], float(value)))
        return out


# ---- the run ----------------------------------------------------------------------------------


def per_minute(records: dict[str, PodRecord], start: float) -> list[dict[str, Any]]:
    """Per minute of creation: created, reached Running, deleted before Running, latency seconds."""
    minutes: dict[int, list[PodRecord]] = {}
    for record in records.values():
        minutes.setdefault(int((record.created - start) // 60), []).append(record)
    rows = []
    for minute in sorted(minutes):
        group = minutes[minute]
        latencies = [r.running - r.created for r in group if r.running is not None]
        row: dict[str, Any] = {
            "minute": minute,
            "created": len(group),
            "running": len(latencies),
            "deleted_before_running": sum(1 for r in group if r.running is None and r.deleted),
            "never_running": sum(1 for r in group if r.running is None and not r.deleted),
        }
        if latencies:
            row["latency_s"] = {
                "p50": round(percentile(latencies, 50), 2),
                "p90": round(percentile(latencies, 90), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(max(latencies), 2),
            }
        rows.append(row)
    return rows


def log_problems(env: Env) -> dict[str, Any]:
    """Warning/error lines of each control-plane log (the syncer's among them)."""
    out: dict[str, Any] = {}
    logs = env.home / "clusters" / NAME / NAME / "data" / "logs"
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        if path.stem not in ("syncer", "controlplane", "supervisor"):
            continue
        lines = path.read_text(errors="replace").splitlines()
        problems = [x for x in lines if any(w in x.lower() for w in ("error", "warn", "traceback"))]
        out[path.name] = {
            "lines": len(lines),
            "warning_or_error_lines": len(problems),
            "first": problems[:10],
        }
    return out


async def wait_namespace(client: KubeClient, timeout: float = 60.0) -> None:
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    deadline = time.monotonic() + timeout
    while await client.get_or_none("ServiceAccount", "default", NAMESPACE) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"namespace {NAMESPACE}: no default ServiceAccount after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def soak(env: Env, virtual_kubeconfig: Obj, args: argparse.Namespace) -> dict[str, Any]:
    async with (
        KubeClient.from_kubeconfig(env.kubeconfig, "vnest-host", timeout=60) as host,
        KubeClient.from_dict(virtual_kubeconfig, timeout=60) as virtual,
    ):
        await wait_namespace(virtual)
        records: dict[str, PodRecord] = {}
        watch = PodWatch(virtual, records)
        await watch.start()
        limit = asyncio.Semaphore(IN_FLIGHT)
        start = time.monotonic()
        until = start + args.minutes * 60

        def created(name: str) -> None:
            records[name] = PodRecord(time.monotonic(), watch.early.pop(name, None))

        def deleted(name: str) -> None:
            records[name].deleted = True

        pods = Churn(virtual, "Pod", "pod", pod_manifest, args.rate, args.pods, limit, created, deleted)
        services = Churn(virtual, "Service", "svc", service_manifest, args.service_rate, args.services, limit)
        sampler = Sampler(env, host, watch, records, start)

        async def sample_loop(stop: asyncio.Event) -> None:
            next_print = 60.0
            while not stop.is_set():
                row = await sampler.sample("churn")
                if row["t"] >= next_print:
                    next_print += 60
                    progress(row, records, start)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.sample_seconds)

        stop = asyncio.Event()
        sampling = asyncio.create_task(sample_loop(stop))
        try:
            await asyncio.gather(pods.run(start, until), services.run(start, until))
            churn_seconds = time.monotonic() - start
            stop.set()
            await sampling
            # Drain: the churn has stopped; how long until the queues are empty and the live pods Running.
            drain_start = time.monotonic()
            drained = False
            while time.monotonic() - drain_start < DRAIN_SECONDS:
                await asyncio.sleep(args.sample_seconds / 2)
                row = await sampler.sample("drain")
                live = set(pods.live)
                if row.get("queue_depth_total") == 0 and live <= watch.running_now:
                    drained = True
                    break
            drain_seconds = time.monotonic() - drain_start
        finally:
            stop.set()
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
            await watch.stop()
            await sampler.close()
        return analyse(args, sampler, pods, services, records, start, churn_seconds, drained, drain_seconds)


def analyse(
    args: argparse.Namespace,
    sampler: Sampler,
    pods: Churn,
    services: Churn,
    records: dict[str, PodRecord],
    start: float,
    churn_seconds: float,
    drained: bool,
    drain_seconds: float,
) -> dict[str, Any]:
    warmup = min(args.warmup * 60, churn_seconds / 3)
    churn_rows = [r for r in sampler.timeline if r["phase"] == "churn"]

    def stats(key: str, component: str | None = None) -> dict[str, Any]:
        points = []
        for row in churn_rows:
            value = row.get(key) if component is None else row.get(key, {}).get(component)
            if value is not None:
                points.append((row["t"], float(value)))
        return series_stats(points, warmup, WINDOW_SECONDS)

    components = sorted({c for row in churn_rows for c in row["rss_mib"]}, key=COMPONENTS.index)
    latencies = [r.running - r.created for r in records.values() if r.running is not None]
    minutes = per_minute(records, start)
    full = [m for m in minutes if (m["minute"] + 1) * 60 <= churn_seconds + 1 and "latency_s" in m]

    def latency_slope(p: str) -> float | None:
        """Seconds per hour by which the per-minute percentile grows, over whole minutes after the warm-up."""
        points = [(m["minute"] * 60.0, m["latency_s"][p]) for m in full if m["minute"] * 60 >= warmup]
        slope = least_squares_slope(points)
        return None if slope is None else round(slope * 3600, 2)

    restarts = {name: len(p) - 1 for name, p in sampler.pids_seen.items() if len(p) > 1}
    return {
        "churn_seconds": round(churn_seconds, 1),
        "warmup_s": round(warmup, 1),
        "syncer_process": "own process" if "syncer" in components else "in the supervisor",
        "slopes": {
            "syncer_rss_mib": stats("syncer_rss_mib"),
            "rss_mib": {c: stats("rss_mib", c) for c in components},
            "queue_depth_total": stats("queue_depth_total"),
            "queue_depth": {k: stats("queue_depth", k) for k in sorted(sampler.kinds)},
            "cached_objects_total": stats("cached_objects_total"),
            "cached_objects": {i: stats("cached_objects", i) for i in sorted(sampler.informers)},
            "reconcile_failures_total": stats("reconcile_failures_total"),
            "host_pods": stats("host_pods"),
        },
        "pods": {
            **pods.to_json(),
            "reached_running": len(latencies),
            "latency_s": {
                "p50": round(percentile(latencies, 50), 2),
                "p90": round(percentile(latencies, 90), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(max(latencies), 2),
            }
            if latencies
            else None,
            "latency_slope_s_per_hour": {"p50": latency_slope("p50"), "p99": latency_slope("p99")},
            "per_minute": minutes,
            "watch_relists": sampler.watch.relists,
        },
        "services": services.to_json(),
        "drain": {"drained": drained, "seconds": round(drain_seconds, 1)},
        "process_restarts": restarts,
        "metrics_scrape_failures": sampler.metrics_failures,
        "timeline": sampler.timeline,
    }


def progress(row: dict[str, Any], records: dict[str, PodRecord], start: float) -> None:
    minute = int(row["t"] // 60) - 1
    recent = [
        r.running - r.created
        for r in records.values()
        if r.running is not None and int((r.created - start) // 60) == minute
    ]
    p50 = f"{percentile(recent, 50):.2f}s" if recent else "-"
    print(
        f"  t={row['t']:6.0f}s syncer {row['syncer_rss_mib']} MiB, queue {row.get('queue_depth_total', '?')}, "
        f"virtual pods {row['virtual_pods']} ({row['virtual_pods_running']} Running), host pods "
        f"{row.get('host_pods', '?')}, minute {minute}: {len(recent)} Running, p50 {p50}, "
        f"failures so far {row.get('reconcile_failures_total', '?')}",
        flush=True,
    )


def measure(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    with local_host(args.port, nodes=args.nodes) as host_up_seconds, virtual_clusters() as clusters:
        create_seconds = clusters.create(NAME, NAME)
        virtual_kubeconfig = yaml.safe_load(vnest_output("connect", NAME, "-n", NAME, "--print"))
        print(f"churning for {args.minutes} min ...", flush=True)
        try:
            results = asyncio.run(soak(env, virtual_kubeconfig, args))
        except (BenchError, ApiError) as e:
            results = {"error": str(e)}
        results["logs"] = log_problems(env)
    return {
        "setup": {
            "host": f"vnest host up --runtime kwok --nodes {args.nodes} --port {args.port}",
            "host_up_seconds": round(host_up_seconds, 2),
            "virtual_cluster": f"vnest create {NAME} -n {NAME} --no-connect",
            "create_seconds": round(create_seconds, 2),
            "driver": "process",
            "pod": pod_manifest("pod-NNNNNN", 0)["spec"],
            "service": service_manifest("svc-NNNNNN", 0)["spec"],
            "in_flight": IN_FLIGHT,
        },
        **results,
    }


# ---- reporting --------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_summary(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nvnest soak benchmark, {m['date']}: {m['nproc']} CPUs, {m['memory_total_mib']} MiB, "
        f"Python {m['python']}, Kubernetes {m['pins']['kubernetes']}, vnest {m['vnest_version']}"
    )
    if "error" in r:
        print(f"FAILED: {r['error']}")
        return
    p = r["params"]
    load = r["load_average_1_5_15m"]
    print(
        f"{r['churn_seconds']:.0f} s of churn: {p['rate']} pods/s (population {p['pods']}), "
        f"{p['service_rate']} Services/s (population {p['services']}); warm-up {r['warmup_s']:.0f} s; "
        f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}"
    )
    print(f"the syncer runs in: {r['syncer_process']}")
    print(f"{'series':<34} {'slope/h':>10} {'first mean':>11} {'last mean':>10} {'min':>8} {'max':>8}")

    def line(name: str, s: dict[str, Any]) -> None:
        if s.get("samples"):
            print(
                f"{name:<34} {fmt(s['slope_per_hour'], '.2f'):>10} {fmt(s['first_window_mean']):>11} "
                f"{fmt(s['last_window_mean']):>10} {fmt(s['min']):>8} {fmt(s['max']):>8}"
            )

    slopes = r["slopes"]
    line("syncer RSS MiB", slopes["syncer_rss_mib"])
    for c, s in slopes["rss_mib"].items():
        line(f"  {c} RSS MiB", s)
    line("queue depth (all kinds)", slopes["queue_depth_total"])
    for k, s in slopes["queue_depth"].items():
        if s.get("max"):
            line(f"  queue depth {k}", s)
    line("cached objects (all informers)", slopes["cached_objects_total"])
    for i, s in slopes["cached_objects"].items():
        if s.get("slope_per_hour"):
            line(f"  cached {i}", s)
    line("reconcile failures (counter)", slopes["reconcile_failures_total"])
    line("host pods", slopes["host_pods"])
    pods = r["pods"]
    lat = pods["latency_s"] or {}
    print(
        f"pods: {pods['created']} created, {pods['deleted']} deleted, {pods['reached_running']} reached "
        f"Running; create->Running p50 {fmt(lat.get('p50'), '.2f')} s, p90 {fmt(lat.get('p90'), '.2f')}, "
        f"p99 {fmt(lat.get('p99'), '.2f')}, max {fmt(lat.get('max'), '.2f')}; errors {pods['errors'] or 'none'}; "
        f"max schedule lag {pods['max_schedule_lag_s']} s"
    )
    slope = pods["latency_slope_s_per_hour"]
    print(f"per-minute latency slope (s/h after the warm-up): p50 {slope['p50']}, p99 {slope['p99']}")
    print(
        f"{'minute':>6} {'created':>8} {'Running':>8} {'deleted first':>13} {'p50 s':>6} {'p99 s':>6} {'max s':>6}"
    )
    for row in pods["per_minute"]:
        lat = row.get("latency_s", {})
        print(
            f"{row['minute']:>6} {row['created']:>8} {row['running']:>8} {row['deleted_before_running']:>13} "
            f"{fmt(lat.get('p50'), '.2f'):>6} {fmt(lat.get('p99'), '.2f'):>6} {fmt(lat.get('max'), '.2f'):>6}"
        )
    s = r["services"]
    print(f"services: {s['created']} created, {s['deleted']} deleted, errors {s['errors'] or 'none'}")
    d = r["drain"]
    print(f"drain after the churn: {'done' if d['drained'] else 'NOT done'} in {d['seconds']} s")
    if r["process_restarts"]:
        print(f"process restarts: {r['process_restarts']}")
    for name, log in r.get("logs", {}).items():
        print(f"{name}: {log['lines']} lines, {log['warning_or_error_lines']} warning/error lines")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to churn")
    parser.add_argument("--rate", type=float, default=4.0, help="pods created per second")
    parser.add_argument("--pods", type=int, default=200, help="the pod population kept")
    parser.add_argument("--service-rate", type=float, default=0.4, help="Services created per second")
    parser.add_argument("--services", type=int, default=20, help="the Service population kept")
    parser.add_argument("--nodes", type=int, default=3, help="KWOK nodes of the host (110 pods each)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="sampling interval")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="minutes left out of the slopes (at most a third of the run)",
    )
    parser.add_argument(
        "--port", type=int, default=19443, help="first of the eight ports of the benchmark's own host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.pods < 1 or args.sample_seconds <= 0:
        parser.error("--minutes, --rate, --pods and --sample-seconds must be positive")
    # Terminating pods still hold their node's slot for a moment: keep some room.
    if args.pods > args.nodes * PODS_PER_NODE - 50:
        parser.error(f"at most {args.nodes * PODS_PER_NODE - 50} pods fit on {args.nodes} KWOK nodes")

    facts = machine_facts()
    load_before = os.getloadavg()
    started = time.monotonic()
    with isolated_env(prefix="vns-") as env:
        root = str(env.root)
        result = measure(env, args)
    leftover = processes_mentioning(root)
    result = {
        "benchmark": "soak",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {
            "minutes": args.minutes,
            "rate": args.rate,
            "pods": args.pods,
            "service_rate": args.service_rate,
            "services": args.services,
            "nodes": args.nodes,
            "sample_seconds": args.sample_seconds,
            "warmup_minutes": args.warmup,
            "port": args.port,
        },
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": os.getloadavg()},
        "wall_seconds": round(time.monotonic() - started, 1),
        "left_running_after_cleanup": len(leftover),
        **result,
    }
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 1 if "error" in result or not result.get("drain", {}).get("drained") else 0


if __name__ == "__main__":
    sys.exit(main())
