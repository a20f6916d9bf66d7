"""Pieces every vnest benchmark shares.

A benchmark runs the real `vnest` CLI against a local host of its own, in an
environment isolated from the developer's (its own VNEST_HOME, KUBECONFIG and
ports), and leaves nothing behind: the helpers here are context managers whose
exit undoes what their entry did, even when the benchmark fails half-way.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from vnest import __version__, binaries
from vnest.procs import ProcessDir

# The CLI of the interpreter running the benchmark: the repo's .venv, not whatever is on PATH.
VNEST = [sys.executable, "-m", "vnest"]
MIB = 1024 * 1024


class BenchError(Exception):
    pass


# ---- the isolated environment --------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    """Where one benchmark run keeps its state; everything lives under ``root``."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "vnest"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"


@contextlib.contextmanager
def isolated_env(prefix: str = "vnest-bench-") -> Iterator[Env]:
    """A temp folder as VNEST_HOME and KUBECONFIG, set in os.environ for every subprocess.

    On exit the variables are restored and the folder removed; a process whose command
    line still mentions the folder is one the benchmark failed to stop: it is killed (it
    can only be ours, the folder is new) and reported as an error.
    """
    # Short prefix under /tmp: kine's unix socket lives in this tree and socket paths
    # are limited to 108 bytes.
    env = Env(Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")))
    saved = {k: os.environ.get(k) for k in ("VNEST_HOME", "KUBECONFIG")}
    os.environ["VNEST_HOME"] = str(env.home)
    os.environ["KUBECONFIG"] = str(env.kubeconfig)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        leftover = processes_mentioning(str(env.root))
        for proc in leftover:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        shutil.rmtree(env.root, ignore_errors=True)
        if leftover:
            listing = "\n".join(f"  {p.pid} {' '.join(_cmdline(p))[:160]}" for p in leftover)
            raise BenchError(f"processes left running under {env.root} (now killed):\n{listing}")


def processes_mentioning(text: str) -> list[psutil.Process]:
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and text in " ".join(_cmdline(p))]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


# ---- running vnest ---------------------------------------------------------------------------


def run_vnest(*args: str, timeout: float = 600) -> float:
    """Runs `vnest ARGS...` to completion; returns its wall-clock seconds, raises if it failed."""
    start = time.monotonic()
    proc = subprocess.run([*VNEST, *args], capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise BenchError(f"vnest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return seconds


def kubectl_host(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
    """The pinned kubectl against the local host (context vnest-host); returns its stdout."""
    from vnest import binaries

    proc = subprocess.run(
        [str(binaries.ensure().kubectl), "--context", "vnest-host", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BenchError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


def vnest_output(*args: str, timeout: float = 120) -> str:
    """Runs `vnest ARGS...` to completion; returns its stdout, raises if it failed."""
    proc = subprocess.run([*VNEST, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"vnest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


@contextlib.contextmanager
def local_host(port: int, nodes: int = 1, runtime: str = "kwok") -> Iterator[float]:
    """`vnest host up` on eight ports from ``port``; yields its seconds; `vnest host down` on exit.

    Down runs even when up failed, since up may have started some components before.
    """
    try:
        yield run_vnest(
            "host", "up", "--nodes", str(nodes), "--runtime", runtime, "--port", str(port), timeout=1800
        )
    finally:
        run_vnest("host", "down")


class VirtualClusters:
    """Virtual clusters created through the CLI, remembered so that all of them can be deleted."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []

    def create(self, name: str, namespace: str, *extra: str) -> float:
        """Seconds from `vnest create` to its return, i.e. until the virtual API is ready."""
        self.created.append((name, namespace))  # before: a failed create may leave a half cluster
        return run_vnest("create", name, "-n", namespace, "--no-connect", *extra)

    def delete_all(self) -> None:
        errors = []
        for name, namespace in reversed(self.created):
            try:
                run_vnest("delete", name, "-n", namespace)
            except BenchError as e:
                errors.append(str(e))
        self.created.clear()
        if errors:
            raise BenchError("\n".join(errors))


@contextlib.contextmanager
def virtual_clusters() -> Iterator[VirtualClusters]:
    clusters = VirtualClusters()
    try:
        yield clusters
    finally:
        clusters.delete_all()


# ---- memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcMem:
    name: str
    pid: int
    rss_mib: float
    # Proportional set size: shared pages (the multi-call `kube` binary's text, say) split
    # among the processes sharing them, so PSS adds up where RSS double-counts.
    pss_mib: float | None
    # Unique set size: the pages only this process maps, what ending it would give back.
    uss_mib: float | None = None


@dataclass
class Footprint:
    """The memory of a set of processes: each one, by component name, and in total."""

    processes: list[ProcMem] = field(default_factory=list)

    @property
    def rss_mib(self) -> float:
        return round(sum(p.rss_mib for p in self.processes), 1)

    @property
    def pss_mib(self) -> float | None:
        if any(p.pss_mib is None for p in self.processes):
            return None
        return round(sum(p.pss_mib for p in self.processes), 1)

    @property
    def uss_mib(self) -> float | None:
        if any(p.uss_mib is None for p in self.processes):
            return None
        return round(sum(p.uss_mib for p in self.processes), 1)

    def rss_by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.processes:
            out[p.name] = round(out.get(p.name, 0.0) + p.rss_mib, 1)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "rss_mib": self.rss_mib,
            "pss_mib": self.pss_mib,
            "uss_mib": self.uss_mib,
            "rss_mib_by_component": self.rss_by_name(),
            "processes": [asdict(p) for p in self.processes],
        }


def process_name(proc: psutil.Process) -> str:
    """argv[0]'s basename: the Kubernetes components are links to one multi-call binary,
    so the executable's own name (`kube`) would not tell them apart."""
    argv = _cmdline(proc)
    return os.path.basename(argv[0]) if argv else proc.name()


def memory_of(proc: psutil.Process, name: str | None = None) -> ProcMem:
    try:
        info = proc.memory_full_info()  # reads smaps: needs to be the process's owner or root
        rss, pss, uss = info.rss, getattr(info, "pss", None), getattr(info, "uss", None)
    except psutil.AccessDenied:
        rss, pss, uss = proc.memory_info().rss, None, None
    return ProcMem(
        name or process_name(proc),
        proc.pid,
        round(rss / MIB, 1),
        None if pss is None else round(pss / MIB, 1),
        None if uss is None else round(uss / MIB, 1),
    )


def tree_footprint(pid: int, root_name: str | None = None) -> Footprint:
    """The process ``pid`` (named ``root_name`` if given) and all its descendants."""
    root = psutil.Process(pid)
    procs = [memory_of(root, root_name)]
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(memory_of(child))
    return Footprint(procs)


def recorded_pids(folder: Path) -> dict[str, int]:
    """The live processes recorded by pid files ("<pid> <starttime>") under ``folder``/pids.

    vnest.procs checks the start time too, so a pid reused by another program is skipped.
    """
    procs = ProcessDir(folder)
    return {name: rec.pid for name in procs.names() if (rec := procs.running(name)) is not None}


def host_footprint(env: Env) -> Footprint:
    """Each process of the local host (etcd, kube-apiserver, ..., kwok), by its pid file."""
    pids = recorded_pids(env.home / "host")
    if not pids:
        raise BenchError(f"no running host processes recorded under {env.home / 'host'}")
    return Footprint([memory_of(psutil.Process(pid), name) for name, pid in pids.items()])


def controlplane_footprint(env: Env, name: str, namespace: str) -> Footprint:
    """A process-driver virtual cluster: its supervisor and every process under it."""
    pids = recorded_pids(env.home / "clusters" / namespace / name)
    if "controlplane" not in pids:
        raise BenchError(f"the control plane of {namespace}/{name} is not running")
    return tree_footprint(pids["controlplane"], root_name="supervisor")


def host_processes(env: Env) -> dict[str, psutil.Process]:
    """The local host's processes (etcd, kube-apiserver, ..., kwok), by the names of their pid files."""
    return {name: psutil.Process(pid) for name, pid in recorded_pids(env.home / "host").items()}


def controlplane_processes(env: Env, name: str, namespace: str) -> dict[str, psutil.Process]:
    """A process-driver virtual cluster's processes under its supervisor, by component name.

    The supervisor itself is "supervisor". The syncer is a task of the supervisor's process, so
    "syncer" is that same process (its CPU and memory include the supervisor's, which idles once
    the control plane is up); with a control plane from before that change, the syncer was
    `python -m vnest syncer run ...`, named by its command line.
    """
    pids = recorded_pids(env.home / "clusters" / namespace / name)
    if "controlplane" not in pids:
        raise BenchError(f"the control plane of {namespace}/{name} is not running")
    supervisor = psutil.Process(pids["controlplane"])
    out = {"supervisor": supervisor, "syncer": supervisor}
    for child in supervisor.children(recursive=True):
        argv = " ".join(_cmdline(child))
        out["syncer" if "syncer run" in argv else process_name(child)] = child
    return out


@dataclass
class ProcUsage:
    pid: int
    cpu_seconds: float = 0.0  # user + system over the span
    peak_rss_mib: float = 0.0
    exited: bool = False  # died during the span: cpu_seconds counts up to its last sample


class UsageSampler:
    """CPU seconds (user+system, delta over the span) and peak RSS of named processes.

    A context manager: entering reads each process's CPU times, a thread then samples
    CPU times and RSS every ``interval`` seconds, exiting reads them a last time. Sampling
    in a thread keeps it on time while the benchmark's own event loop is busy.
    """

    def __init__(self, procs: dict[str, psutil.Process], interval: float = 0.2) -> None:
        self.procs = procs
        self.interval = interval
        self.usage = {name: ProcUsage(p.pid) for name, p in procs.items()}
        self._start: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="usage-sampler", daemon=True)
        self.samples = 0

    def __enter__(self) -> UsageSampler:
        for name, proc in self.procs.items():
            try:
                t = proc.cpu_times()
                self._start[name] = t.user + t.system
            except psutil.NoSuchProcess:
                self.usage[name].exited = True
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        self.samples += 1
        for name, proc in self.procs.items():
            usage = self.usage[name]
            if usage.exited:
                continue
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss = proc.memory_info().rss / MIB
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                usage.exited = True
                continue
            usage.cpu_seconds = round(t.user + t.system - self._start.get(name, 0.0), 2)
            usage.peak_rss_mib = round(max(usage.peak_rss_mib, rss), 1)

    def to_json(self) -> dict[str, Any]:
        return {name: asdict(u) for name, u in self.usage.items()}


# ---- reporting -----------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare this run with another one."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_total_mib": round(psutil.virtual_memory().total / MIB),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vnest_version": __version__,
        "pins": {name: pin["version"] for name, pin in binaries.pins().items()},
    }


def idle(seconds: float) -> None:
    """Lets freshly started processes settle (caches, first syncs) before reading their memory."""
    time.sleep(seconds)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
