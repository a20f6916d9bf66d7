"""Cluster API: seconds from `kubectl apply` of a generated Cluster to the Cluster ready, beside `vnest create`.

The baseline is `vnest create` of the same (default) config on the same host in the same run:
the provider makes its virtual clusters through vnest's lifecycle code, so what Cluster API
adds on top (the core controller's owner reference, the provider's watch and reconcile, the
status that goes back up to the Cluster) is the difference.

Measured on a KWOK local host with Cluster API installed by `clusterctl init --infrastructure
vnest` and its controllers run by `vnest capi local start`:
  1. one `vnest create` (it returns once the virtual API lists its system namespaces);
  2. one Cluster: `clusterctl generate cluster | kubectl apply -f -`, then until the Cluster's
     `status.initialization` says infrastructure provisioned and control plane initialized
     (polled every 0.2 s), and until its `Available` condition is True (Cluster API's remote
     connection probe has reached the virtual API);
  3. N Clusters in one `kubectl apply`, the same two times for each, and N `vnest create`
     started at once.

Run: .venv/bin/python bench/capi.py [--clusters 10] [--port 56443] [--out bench/results/capi.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    isolated_env,
    kubectl_host,
    local_host,
    machine_facts,
    run_vnest,
    virtual_clusters,
    vnest_output,
    write_json,
)

DEFAULT_OUT = Path(__file__).parent / "results" / "capi.json"
POLL = 0.2


def clusterctl(*args: str) -> str:
    from vnest import binaries

    proc = subprocess.run(
        [str(binaries.ensure().clusterctl), *args, "--kubeconfig", os.environ["KUBECONFIG"]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise BenchError(f"clusterctl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


def apply(manifest: str) -> None:
    from vnest import binaries

    subprocess.run(
        [str(binaries.ensure().kubectl), "--context", "vnest-host", "apply", "-f", "-"],
        input=manifest,
        text=True,
        check=True,
        capture_output=True,
    )


def clusters_state() -> dict[str, tuple[bool, bool]]:
    """Per Cluster `ns/name`: (infrastructure provisioned and control plane initialized, Available)."""
    found = json.loads(kubectl_host("get", "clusters.cluster.x-k8s.io", "-A", "-o", "json"))
    state = {}
    for c in found["items"]:
        init = c.get("status", {}).get("initialization", {})
        conditions = {x["type"]: x["status"] for x in c.get("status", {}).get("conditions", [])}
        state[f"{c['metadata']['namespace']}/{c['metadata']['name']}"] = (
            bool(init.get("infrastructureProvisioned") and init.get("controlPlaneInitialized")),
            conditions.get("Available") == "True",
        )
    return state


def apply_and_time(names: list[str], config: str, timeout: float) -> dict[str, dict[str, float]]:
    """Applies one Cluster per name (namespace = name) at once; seconds to initialized and to Available."""
    for name in names:
        kubectl_host("create", "namespace", name)
    manifest = "---\n".join(
        clusterctl(
            "generate", "cluster", n, "--infrastructure", "vnest", "--target-namespace", n, "--config", config
        )
        for n in names
    )
    start = time.monotonic()
    apply(manifest)
    times: dict[str, dict[str, float]] = {n: {} for n in names}
    while any(len(t) < 2 for t in times.values()):
        if time.monotonic() - start > timeout:
            raise BenchError(f"Clusters not ready after {timeout:.0f}s: {times}")
        state = clusters_state()
        now = time.monotonic() - start
        for n in names:
            initialized, available = state.get(f"{n}/{n}", (False, False))
            if initialized:
                times[n].setdefault("initialized_s", round(now, 2))
            if available:
                times[n].setdefault("available_s", round(now, 2))
        time.sleep(POLL)
    return times


def delete_clusters(names: list[str]) -> float:
    start = time.monotonic()
    for n in names:
        kubectl_host("delete", "clusters.cluster.x-k8s.io", n, "-n", n, "--wait=false")
    for n in names:
        kubectl_host("wait", "--for=delete", f"clusters.cluster.x-k8s.io/{n}", "-n", n, "--timeout=300s")
        kubectl_host("delete", "namespace", n, "--wait=false")
    return round(time.monotonic() - start, 2)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10, help="Clusters applied at once (N)")
    parser.add_argument(
        "--port", type=int, default=56443, help="first of the eight ports of the benchmark's host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    facts = machine_facts()
    load_before = os.getloadavg()
    results: dict[str, Any] = {"machine": facts, "clusters": args.clusters}
    with isolated_env() as env, local_host(args.port, nodes=1):
        config = vnest_output("capi", "repository", "--dir", str(env.root / "capi")).strip()
        start = time.monotonic()
        clusterctl("init", "--infrastructure", "vnest", "--config", config)
        results["clusterctl_init_s"] = round(time.monotonic() - start, 2)
        results["capi_local_start_s"] = round(run_vnest("capi", "local", "start", timeout=300), 2)
        try:
            print("1. vnest create, one cluster", file=sys.stderr)
            with virtual_clusters() as vcs:
                results["vnest_create_one_s"] = round(vcs.create("create-1", "create-1"), 2)
            print("2. one Cluster through Cluster API", file=sys.stderr)
            one = apply_and_time(["capi-1"], config, timeout=300)
            results["capi_one"] = one["capi-1"]
            results["capi_one_delete_s"] = delete_clusters(["capi-1"])
            n = args.clusters
            print(f"3. {n} vnest create at once", file=sys.stderr)
            with virtual_clusters() as vcs, concurrent.futures.ThreadPoolExecutor(n) as pool:
                start = time.monotonic()
                created = list(pool.map(lambda i: vcs.create(f"create-n{i}", f"create-n{i}"), range(n)))
                results["vnest_create_n"] = {**summary(created), "all_s": round(time.monotonic() - start, 2)}
            print(f"4. {n} Clusters in one apply", file=sys.stderr)
            names = [f"capi-n{i}" for i in range(n)]
            many = apply_and_time(names, config, timeout=900)
            results["capi_n"] = {
                "initialized": summary([t["initialized_s"] for t in many.values()]),
                "available": summary([t["available_s"] for t in many.values()]),
            }
            results["capi_n_delete_s"] = delete_clusters(names)
        finally:
            run_vnest("capi", "local", "stop")
    results["load_before"] = load_before
    results["load_after"] = os.getloadavg()
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
