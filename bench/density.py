"""How many idle virtual clusters fit side by side: their memory, and whether each still answers.

The question (issue 12): what one idle virtual cluster costs in memory, all its processes
included, and whether N of them on one machine each still answer a user quickly. The baseline,
measured in the same run, is the host cluster itself answering the same request.

Measured, on one local host with KWOK nodes (`vnest host up --nodes 1`), process driver:
  1. the host alone: `kubectl get namespaces` against it (the baseline), and the machine's
     memory in use;
  2. one idle virtual cluster, before any other exists: the RSS and PSS of each of its
     processes (the control plane's process, which runs the syncer and the DNS server, kine,
     kube-apiserver, kube-controller-manager, ...) and their sum;
  3. N virtual clusters side by side, each in a namespace of its own (the others created one
     after the other), then after an idle pause: each one's RSS and PSS (per process too), the
     CPU its processes used during the pause, and the machine's memory in use;
  4. `kubectl get namespaces` against each of them and against the host, through the kubeconfig
     `vnest connect --kube-config` writes, ROUNDS times over all clusters (one request at a time,
     clusters in turn, the host once a round): p50 / p99 / max per target kind and per cluster.
     Each sample is a whole `kubectl` run (process start, TLS, discovery from its cache, the
     request), as a user sees it; the host's samples show what of that is kubectl's own.
RSS counts pages shared between processes (the `kube` multi-call binary's code, the Python
interpreter's libraries) once per process; PSS splits them among the processes sharing them, so
it falls as clusters are added: the single cluster's PSS (step 2) is what one cluster costs on a
machine that runs nothing else of the kind but the host (any other process mapping the same
binaries, another user's cluster say, lowers it too). USS, the pages no other process maps, is
recorded as well: what the cluster's processes would give back if they ended.

Run: .venv/bin/python bench/density.py [--clusters 20] [--rounds 20] [--port 36443]
     [--out bench/results/density.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from common import (
    MIB,
    Env,
    controlplane_footprint,
    controlplane_processes,
    host_footprint,
    idle,
    isolated_env,
    local_host,
    machine_facts,
    run_vnest,
    virtual_clusters,
    write_json,
)

IDLE_SECONDS = 30.0
DEFAULT_OUT = Path(__file__).parent / "results" / "density.json"


def cluster_name(i: int) -> str:
    return f"dens-{i}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20, help="virtual clusters side by side (N)")
    parser.add_argument("--rounds", type=int, default=20, help="kubectl requests per cluster")
    parser.add_argument(
        "--idle", type=float, default=IDLE_SECONDS, help="seconds to let clusters settle before measuring"
    )
    parser.add_argument(
        "--port", type=int, default=36443, help="first of the eight ports of the benchmark's own host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    if args.clusters < 1 or args.rounds < 1:
        parser.error("--clusters and --rounds must be at least 1")

    facts = machine_facts()
    load_before = os.getloadavg()
    with isolated_env("vnest-dens-") as env:
        measured = measure(env, args.clusters, args.rounds, args.port, args.idle)
    result = {
        "benchmark": "density",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {
            "clusters": args.clusters,
            "rounds": args.rounds,
            "port": args.port,
            "idle_seconds": args.idle,
        },
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": os.getloadavg()},
        **measured,
    }
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def used_mib() -> float:
    """The machine's memory in use: total minus what the kernel reports available."""
    vm = psutil.virtual_memory()
    return round((vm.total - vm.available) / MIB, 1)


def measure(env: Env, n: int, rounds: int, port: int, idle_seconds: float) -> dict[str, Any]:
    used_before = used_mib()
    with local_host(port, nodes=1):
        idle(idle_seconds / 3)
        host = host_footprint(env)
        used_host = used_mib()
        with virtual_clusters() as clusters:
            names = [cluster_name(i) for i in range(1, n + 1)]
            create_seconds = {names[0]: clusters.create(names[0], names[0])}
            idle(idle_seconds)
            one = controlplane_footprint(env, names[0], names[0])
            used_one = used_mib()

            for name in names[1:]:
                create_seconds[name] = clusters.create(name, name)
            cpu_start = {name: cpu_seconds(env, name) for name in names}
            idle(idle_seconds)
            idle_cpu = {name: round(cpu_seconds(env, name) - cpu_start[name], 2) for name in names}
            each = {name: controlplane_footprint(env, name, name) for name in names}
            used_all = used_mib()
            host_after = host_footprint(env)

            kubeconfigs = {name: env.root / f"{name}.kubeconfig" for name in names}
            for name, path in kubeconfigs.items():
                run_vnest("connect", name, "-n", name, "--kube-config", str(path))
            latency = get_namespaces_latency(env, kubeconfigs, rounds)

    rss = [f.rss_mib for f in each.values()]
    pss = [f.pss_mib for f in each.values() if f.pss_mib is not None]
    return {
        "host": {
            "command": f"vnest host up --nodes 1 --port {port}",
            "memory_idle": host.to_json(),
            "memory_with_virtual_clusters": host_after.to_json(),
        },
        "one_idle_cluster": {"create_seconds": round(create_seconds[names[0]], 2), "memory": one.to_json()},
        "side_by_side": {
            "clusters": n,
            "create_seconds_mean": round(statistics.mean(create_seconds.values()), 2),
            "create_seconds_max": round(max(create_seconds.values()), 2),
            "rss_mib_per_cluster_mean": round(statistics.mean(rss), 1),
            "rss_mib_per_cluster_max": round(max(rss), 1),
            "pss_mib_per_cluster_mean": round(statistics.mean(pss), 1) if pss else None,
            "pss_mib_total": round(sum(pss), 1) if pss else None,
            "idle_cpu_seconds_per_cluster_mean": round(statistics.mean(idle_cpu.values()), 2),
            "memory": {name: {**f.to_json(), "idle_cpu_seconds": idle_cpu[name]} for name, f in each.items()},
        },
        "machine_memory_used_mib": {
            "before_host": used_before,
            "host": used_host,
            "host_and_one_cluster": used_one,
            "host_and_all_clusters": used_all,
            "per_cluster_mean": round((used_all - used_host) / n, 1),
        },
        "kubectl_get_namespaces_seconds": latency,
    }


def cpu_seconds(env: Env, name: str) -> float:
    """User + system CPU seconds of a virtual cluster's processes so far."""
    total = 0.0
    for proc in set(controlplane_processes(env, name, name).values()):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def get_namespaces_latency(env: Env, kubeconfigs: dict[str, Path], rounds: int) -> dict[str, Any]:
    from vnest import binaries

    kubectl = str(binaries.ensure().kubectl)

    def sample(*args: str) -> float:
        start = time.monotonic()
        proc = subprocess.run(
            [kubectl, *args, "get", "namespaces"], capture_output=True, text=True, timeout=60
        )
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} get namespaces failed: {proc.stderr.strip()}")
        return seconds

    host_kubeconfig = str(env.kubeconfig)
    # One unmeasured request each first: kubectl caches discovery per server, as a user's would be.
    sample("--kubeconfig", host_kubeconfig, "--context", "vnest-host")
    for path in kubeconfigs.values():
        sample("--kubeconfig", str(path))
    host: list[float] = []
    virtual: dict[str, list[float]] = {name: [] for name in kubeconfigs}
    for _ in range(rounds):
        host.append(sample("--kubeconfig", host_kubeconfig, "--context", "vnest-host"))
        for name, path in kubeconfigs.items():
            virtual[name].append(sample("--kubeconfig", str(path)))
    every = [s for samples in virtual.values() for s in samples]
    return {
        "host": stats(host),
        "virtual_all": stats(every),
        "virtual_per_cluster_p50": {name: round(statistics.median(s), 3) for name, s in virtual.items()},
        "virtual_per_cluster_max": {name: round(max(s), 3) for name, s in virtual.items()},
    }


def stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "samples": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 3),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.mean(ordered), 3),
    }


def print_summary(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"vnest density benchmark, {m['date']}: {m['nproc']} CPUs, {m['memory_total_mib']} MiB, "
        f"Python {m['python']}, Kubernetes {m['pins']['kubernetes']}, vnest {m['vnest_version']}"
    )
    load = r["load_average_1_5_15m"]
    print(f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}")

    one = r["one_idle_cluster"]["memory"]
    print("\none idle virtual cluster, alone on the host         RSS MiB   PSS MiB   USS MiB")
    for p in one["processes"]:
        print(f"  {p['name']:<48} {p['rss_mib']:7.1f}   {_mib(p['pss_mib'])}   {_mib(p.get('uss_mib'))}")
    print(f"  {'total':<48} {one['rss_mib']:7.1f}   {_mib(one['pss_mib'])}   {_mib(one.get('uss_mib'))}")

    side = r["side_by_side"]
    print(
        f"\n{side['clusters']} idle virtual clusters side by side: RSS {side['rss_mib_per_cluster_mean']:.0f} MiB "
        f"per cluster (max {side['rss_mib_per_cluster_max']:.0f}), PSS {_mib(side['pss_mib_per_cluster_mean'])} "
        f"per cluster, {_mib(side['pss_mib_total'])} in all; idle CPU "
        f"{side['idle_cpu_seconds_per_cluster_mean']:.2f} s per cluster over {r['params']['idle_seconds']:.0f} s"
    )
    used = r["machine_memory_used_mib"]
    print(
        f"machine memory in use: {used['before_host']:.0f} MiB before, {used['host']:.0f} with the host, "
        f"{used['host_and_one_cluster']:.0f} with one cluster, {used['host_and_all_clusters']:.0f} with all "
        f"({used['per_cluster_mean']:.0f} per cluster)"
    )
    lat = r["kubectl_get_namespaces_seconds"]
    print("\nkubectl get namespaces, seconds     samples     p50     p99     max")
    for label, key in (("host (baseline)", "host"), ("virtual clusters", "virtual_all")):
        s = lat[key]
        print(f"  {label:<32} {s['samples']:7d} {s['p50']:7.3f} {s['p99']:7.3f} {s['max']:7.3f}")


def _mib(value: float | None) -> str:
    return f"{'-' if value is None else f'{value:.1f}':>7}"


if __name__ == "__main__":
    sys.exit(main())
