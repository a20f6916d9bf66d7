"""What a `vnest` command costs before it does anything: wall and CPU time of commands that only parse.

Users run `vnest connect NAME -- kubectl ...`, `vnest list`, `--help` and mistyped
commands many times a day, so the fixed cost of starting the CLI (the interpreter,
then every module `vnest.cli.main` imports) is paid on each of them. The baselines,
measured in the same run on the same machine, are the floor and the tool it sits
next to: `python -c pass` with the same interpreter (what any Python CLI costs) and
`kubectl version --client` (the pinned kubectl, which answers without a cluster).

Measured, each command as a subprocess with its output captured:
  1. wall time (from spawn to exit, as seen by this process) and CPU time (user +
     system of the child, from its rusage), the median of --runs runs; the commands
     take turns (one run of each, then the next round), so load that comes and goes
     falls on all of them alike; one unrecorded warm-up round first;
  2. whether each vnest command imported lightkube and pydantic (one extra run under
     `python -X importtime`);
  3. the import time of `vnest.cli.main` (its cumulative line of `-X importtime` in
     a fresh interpreter), the median of --runs runs.
The vnest commands run in an isolated VNEST_HOME/KUBECONFIG; none of them reaches a
cluster: `vnest create BAD_NAME!` fails on the name (exit 2) before reading any
kubeconfig, `vnest binaries path` only computes a folder.

Run: .venv/bin/python bench/cli.py [--runs 10] [--out bench/results/cli.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import VNEST, BenchError, isolated_env, machine_facts, write_json

from vnest import binaries

DEFAULT_OUT = Path(__file__).parent / "results" / "cli.json"
# Modules whose presence says the command paid for the Kubernetes client or the config models.
HEAVY_MODULES = ("lightkube", "pydantic")


@dataclass(frozen=True)
class Command:
    label: str
    argv: list[str]
    exit_code: int = 0
    baseline: bool = False


def commands(kubectl: Path) -> list[Command]:
    return [
        Command("python -c pass", [sys.executable, "-c", "pass"], baseline=True),
        Command("kubectl version --client", [str(kubectl), "version", "--client"], baseline=True),
        Command("vnest --help", [*VNEST, "--help"]),
        Command("vnest create --help", [*VNEST, "create", "--help"]),
        Command("vnest create BAD_NAME!", [*VNEST, "create", "BAD_NAME!"], exit_code=2),
        Command("vnest binaries path", [*VNEST, "binaries", "path"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command (the median is kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    facts = machine_facts()
    kubectl = binaries.ensure().kubectl  # already built by `vnest binaries ensure`: nothing to build
    # Other work on the machine skews the timings: the load says how busy it was.
    load_before = os.getloadavg()
    with isolated_env():
        result = measure(commands(kubectl), args.runs)
    load_after = os.getloadavg()
    result = {
        "benchmark": "cli",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {"runs": args.runs, "warmup_rounds": 1, "statistic": "median"},
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": load_after},
        **result,
    }
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def run_once(cmd: Command) -> tuple[float, float]:
    """One run of ``cmd``: (wall ms, CPU ms of the child); raises if it exits unexpectedly."""
    # One child at a time, so the difference in RUSAGE_CHILDREN is this child's alone.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd.argv, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != cmd.exit_code:
        raise BenchError(
            f"{cmd.label} exited {proc.returncode}, expected {cmd.exit_code}:\n{proc.stderr.strip()}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def imported_modules(argv: list[str]) -> set[str]:
    """The modules a run of ``python ARGV`` imports, from `-X importtime` (printed on stderr)."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def import_ms(module: str) -> float:
    """The cumulative import time of ``module`` in a fresh interpreter, in ms."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True
    )
    for line in proc.stderr.splitlines():
        fields = [f.strip() for f in line.removeprefix("import time:").split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1]) / 1000
    raise BenchError(f"`import {module}` printed no import time for it:\n{proc.stderr[-2000:]}")


def measure(cmds: list[Command], runs: int) -> dict[str, Any]:
    for cmd in cmds:  # warm-up round: page cache, bytecode caches
        run_once(cmd)
    samples: dict[str, list[tuple[float, float]]] = {cmd.label: [] for cmd in cmds}
    for _ in range(runs):
        for cmd in cmds:
            samples[cmd.label].append(run_once(cmd))

    rows = {}
    for cmd in cmds:
        walls = [w for w, _ in samples[cmd.label]]
        cpus = [c for _, c in samples[cmd.label]]
        row: dict[str, Any] = {
            "argv": cmd.argv,
            "exit_code": cmd.exit_code,
            "wall_ms_median": round(statistics.median(walls), 1),
            "cpu_ms_median": round(statistics.median(cpus), 1),
            "wall_ms": [round(w, 1) for w in walls],
            "cpu_ms": [round(c, 1) for c in cpus],
        }
        if not cmd.baseline:
            modules = imported_modules(cmd.argv)
            row["imports"] = {
                name: any(m == name or m.startswith(name + ".") for m in modules) for name in HEAVY_MODULES
            }
            row["modules_imported"] = len(modules)
        rows[cmd.label] = row

    imports = [import_ms("vnest.cli.main") for _ in range(runs)]
    python = rows["python -c pass"]
    kubectl = rows["kubectl version --client"]
    return {
        "baselines": {c.label: rows[c.label] for c in cmds if c.baseline},
        "vnest": {c.label: rows[c.label] for c in cmds if not c.baseline},
        "import_vnest_cli_main_ms": {
            "median": round(statistics.median(imports), 1),
            "runs": [round(i, 1) for i in imports],
        },
        "comparison": {
            c.label: {
                "cpu_ms_over_python": round(rows[c.label]["cpu_ms_median"] - python["cpu_ms_median"], 1),
                "wall_vs_kubectl": round(rows[c.label]["wall_ms_median"] / kubectl["wall_ms_median"], 2),
                "cpu_vs_kubectl": round(rows[c.label]["cpu_ms_median"] / kubectl["cpu_ms_median"], 2),
            }
            for c in cmds
            if not c.baseline
        },
    }


def print_summary(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"vnest CLI start-up benchmark, {m['date']}: {m['nproc']} CPUs, Python {m['python']}, "
        f"vnest {m['vnest_version']}, median of {r['params']['runs']} runs"
    )
    load = r["load_average_1_5_15m"]
    print(f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}")

    print(f"\n{'command':<28} {'wall ms':>8} {'CPU ms':>8}  {'vs kubectl (wall)':>17}  imports")
    for label, row in r["baselines"].items():
        print(f"{label:<28} {row['wall_ms_median']:>8.1f} {row['cpu_ms_median']:>8.1f}")
    for label, row in r["vnest"].items():
        heavy = ", ".join(name for name, yes in row["imports"].items() if yes) or "-"
        ratio = r["comparison"][label]["wall_vs_kubectl"]
        wall, cpu = row["wall_ms_median"], row["cpu_ms_median"]
        print(f"{label:<28} {wall:>8.1f} {cpu:>8.1f}  {ratio:>16.2f}x  {heavy}")
    print(f"\nimport vnest.cli.main: {r['import_vnest_cli_main_ms']['median']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
