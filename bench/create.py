"""What a virtual cluster costs: seconds to create one, and the memory it keeps while idle.

The baseline is a real cluster, measured in the same run on the same machine: the
local host that `vnest host up --nodes 1` starts (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK). A virtual cluster exists to stand
in for a real one, so "how much cheaper than a cluster of one's own" is the question
its numbers answer; measuring both in one run keeps machine load, binaries and
versions identical on both sides.

Measured:
  1. the real cluster: `vnest host up` from start to return, then, after an idle
     pause, the RSS of each of its processes (found by their pid files);
  2. one idle virtual cluster (process driver): `vnest create` from start to return
     (it returns once the virtual API lists its system namespaces), then the RSS of
     its supervisor and every process under it (kine, kube-apiserver, ...);
  3. N virtual clusters side by side: the others created one after the other, then
     the RSS of all of them;
  4. where the machine can run real nodes, the production path: a second local host with
     one real node (`--runtime containerd`), `vnest create` with the kubernetes driver
     (the chart, pod NAME-0 from vnest's image), its seconds split into install -> pod
     scheduled -> API ready (from the pod's conditions, one-second resolution), and the
     memory of the real node: its daemons (containerd, kubelet, kube-proxy) and its
     containers (the control-plane pod) after an idle pause.
RSS counts pages shared between processes (the multi-call `kube` binary) once per
process; PSS, which splits them, is recorded too (it also splits them with any other
Kubernetes processes running on the machine, so it is lower on a busy one).

Run: .venv/bin/python bench/create.py [--clusters 5] [--port 46443] [--out bench/results/create.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil
from common import (
    Env,
    Footprint,
    controlplane_footprint,
    host_footprint,
    idle,
    isolated_env,
    kubectl_host,
    local_host,
    machine_facts,
    memory_of,
    recorded_pids,
    virtual_clusters,
    write_json,
)

IDLE_SECONDS = 10.0
DEFAULT_OUT = Path(__file__).parent / "results" / "create.json"


def cluster_name(i: int) -> str:
    return f"bench-{i}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=5, help="virtual clusters side by side (N)")
    parser.add_argument(
        "--port", type=int, default=46443, help="first of the seven ports of the benchmark's own host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    if args.clusters < 1:
        parser.error("--clusters must be at least 1")

    facts = machine_facts()
    # Other work on the machine skews the timings: the load says how busy it was.
    load_before = os.getloadavg()
    with isolated_env() as env:
        result = measure(env, args.clusters, args.port)
    with isolated_env() as env:
        result["production_path_real_node"] = measure_real(env, args.port + 100)
    load_after = os.getloadavg()
    result = {
        "benchmark": "create",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {"clusters": args.clusters, "port": args.port, "idle_seconds": IDLE_SECONDS},
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": load_after},
        **result,
    }
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def measure(env: Env, n: int, port: int) -> dict[str, Any]:
    with local_host(port, nodes=1) as host_up_seconds:
        idle(IDLE_SECONDS)
        host = host_footprint(env)

        with virtual_clusters() as clusters:
            # Each virtual cluster in a namespace of its own, named after it, as users do.
            seconds = {cluster_name(1): clusters.create(cluster_name(1), cluster_name(1))}
            idle(IDLE_SECONDS)
            one = controlplane_footprint(env, cluster_name(1), cluster_name(1))

            for i in range(2, n + 1):
                seconds[cluster_name(i)] = clusters.create(cluster_name(i), cluster_name(i))
            idle(IDLE_SECONDS)
            each = {name: controlplane_footprint(env, name, name) for name in seconds}
            # The host's own share: it stores the virtual clusters' host objects.
            host_after = host_footprint(env)

    create = list(seconds.values())
    total_rss = round(sum(f.rss_mib for f in each.values()), 1)
    total_pss = (
        None if any(f.pss_mib is None for f in each.values()) else sum(f.pss_mib for f in each.values())
    )
    return {
        "baseline_real_cluster": {
            "command": f"vnest host up --nodes 1 --port {port}",
            "up_seconds": round(host_up_seconds, 2),
            "memory_idle": host.to_json(),
            "memory_with_virtual_clusters": host_after.to_json(),
        },
        "virtual_cluster": {
            "command": "vnest create NAME -n NAME --no-connect",
            "driver": "process",
            "create_seconds": {name: round(s, 2) for name, s in seconds.items()},
            "create_seconds_mean": round(statistics.mean(create), 2),
            "create_seconds_max": round(max(create), 2),
            "memory_one_idle": one.to_json(),
            "memory_side_by_side": {name: f.to_json() for name, f in each.items()},
            "rss_mib_mean_per_cluster": round(total_rss / n, 1),
            "rss_mib_total": total_rss,
            "pss_mib_total": None if total_pss is None else round(total_pss, 1),
        },
        "comparison": {
            "create_mean_vs_host_up": round(statistics.mean(create) / host_up_seconds, 2),
            "one_virtual_rss_vs_real": round(one.rss_mib / host.rss_mib, 2),
            # "N virtual clusters cost X of one real cluster"
            "n_virtual_rss_vs_real": round(total_rss / host.rss_mib, 2),
        },
    }


def measure_real(env: Env, port: int) -> dict[str, Any]:
    """The kubernetes driver on one real node; {"skipped": why} where real nodes cannot run."""
    from vnest.host import cgroups
    from vnest.host.nodes import runtime_unavailable

    if why := runtime_unavailable():
        return {"skipped": why}
    with local_host(port, nodes=1, runtime="containerd") as up_seconds, virtual_clusters() as clusters:
        name = "bench-real"
        seconds = clusters.create(name, name, "--driver", "kubernetes")
        pod = json.loads(kubectl_host("get", "pod", f"{name}-0", "-n", name, "-o", "json"))
        created = _time(pod["metadata"]["creationTimestamp"])
        conditions = {c["type"]: _time(c["lastTransitionTime"]) for c in pod["status"]["conditions"]}
        idle(IDLE_SECONDS)
        daemons = {
            n: memory_of(psutil.Process(pid), n)
            for n, pid in recorded_pids(env.home / "host").items()
            if n.startswith("worker1-")
        }
        node_cgroup = f"{cgroups.own_parent().rstrip('/')}/vnest{port}-worker1"
        daemon_pids = cgroups.pids(f"{node_cgroup}/{cgroups.DAEMONS}")
        containers = Footprint(
            [memory_of(psutil.Process(pid)) for pid in sorted(cgroups.pids(node_cgroup) - daemon_pids)]
        )
        shims = Footprint(
            [
                memory_of(psutil.Process(pid))
                for pid in sorted(daemon_pids - {d.pid for d in daemons.values()})
            ]
        )
    daemon_rss = round(sum(m.rss_mib for m in daemons.values()), 1)
    return {
        "host_command": f"vnest host up --nodes 1 --runtime containerd --port {port}",
        "host_up_seconds": round(up_seconds, 2),
        "command": f"vnest create {name} -n {name} --driver kubernetes --no-connect",
        "create_seconds": round(seconds, 2),
        "pod_created_to_scheduled_seconds": conditions["PodScheduled"] - created,
        "pod_scheduled_to_ready_seconds": conditions["Ready"] - conditions["PodScheduled"],
        "node_daemons_rss_mib": {n: m.rss_mib for n, m in daemons.items()},
        "node_daemons_rss_mib_total": daemon_rss,
        "containerd_shims_rss_mib": shims.rss_mib,
        "control_plane_pod": containers.to_json(),
    }


def _time(stamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def print_summary(r: dict[str, Any]) -> None:
    m, base, virt, cmp = r["machine"], r["baseline_real_cluster"], r["virtual_cluster"], r["comparison"]
    n = r["params"]["clusters"]
    print(
        f"vnest create benchmark, {m['date']}: {m['nproc']} CPUs, {m['memory_total_mib']} MiB, "
        f"Python {m['python']}, Kubernetes {m['pins']['kubernetes']}, vnest {m['vnest_version']}"
    )
    load = r["load_average_1_5_15m"]
    print(f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}")

    print("\nseconds to ready")
    print(f"  real cluster (vnest host up)   {base['up_seconds']:7.2f}")
    for name, s in virt["create_seconds"].items():
        print(f"  virtual cluster {name:<14} {s:7.2f}")
    print(
        f"  virtual mean / max             {virt['create_seconds_mean']:7.2f} / "
        f"{virt['create_seconds_max']:.2f}  ({cmp['create_mean_vs_host_up']:.2f}x host up)"
    )

    host = base["memory_idle"]["rss_mib_by_component"]
    one = virt["memory_one_idle"]["rss_mib_by_component"]
    print("\nidle RSS, MiB              real cluster   1 virtual cluster")
    for name in dict.fromkeys([*host, *one]):  # union, in order of appearance
        print(f"  {name:<24} {_cell(host.get(name))} {_cell(one.get(name))}")
    print(
        f"  {'total':<24} {_cell(base['memory_idle']['rss_mib'])} {_cell(virt['memory_one_idle']['rss_mib'])}"
    )
    print(
        f"  {'total PSS':<24} {_cell(base['memory_idle']['pss_mib'])} {_cell(virt['memory_one_idle']['pss_mib'])}"
    )

    print(
        f"\n{n} virtual clusters side by side: {virt['rss_mib_total']:.0f} MiB RSS "
        f"(mean {virt['rss_mib_mean_per_cluster']:.0f} per cluster, PSS total {virt['pss_mib_total']}); "
        f"real cluster {base['memory_idle']['rss_mib']:.0f} MiB"
    )
    print(f"{n} virtual clusters cost {cmp['n_virtual_rss_vs_real']:.2f}x the memory of one real cluster")
    print(
        f"the host itself grew from {base['memory_idle']['rss_mib']:.0f} to "
        f"{base['memory_with_virtual_clusters']['rss_mib']:.0f} MiB RSS while holding them"
    )
    real = r["production_path_real_node"]
    if "skipped" in real:
        print(f"\nproduction path on a real node: skipped ({real['skipped']})")
        return
    print("\nproduction path on a real node (kubernetes driver, pod NAME-0)")
    print(f"  host up with 1 real node       {real['host_up_seconds']:7.2f} s")
    print(f"  vnest create                   {real['create_seconds']:7.2f} s")
    print(
        f"  pod created -> scheduled       {real['pod_created_to_scheduled_seconds']:7d} s (1 s resolution)"
    )
    print(f"  pod scheduled -> API ready     {real['pod_scheduled_to_ready_seconds']:7d} s (1 s resolution)")
    daemons = ", ".join(
        f"{n.removeprefix('worker1-')} {v:.0f}" for n, v in real["node_daemons_rss_mib"].items()
    )
    print(f"  node daemons RSS               {real['node_daemons_rss_mib_total']:7.1f} MiB ({daemons})")
    print(f"  containerd shims RSS           {real['containerd_shims_rss_mib']:7.1f} MiB")
    print(f"  control-plane pod RSS          {real['control_plane_pod']['rss_mib']:7.1f} MiB")


def _cell(mib: float | None) -> str:
    return f"{'-' if mib is None else f'{mib:.1f}':>13}"


if __name__ == "__main__":
    sys.exit(main())
