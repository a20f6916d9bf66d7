"""cgroup (v1) folders for the real nodes: one tree per node, so its processes are known.

Each node's kubelet gets a cgroup root of its own (its pods go below it), and its daemons
(containerd, kubelet, kube-proxy) join a ``daemons`` cgroup in it. containerd's shims inherit
that, so every process a node ever started is in the node's tree, and `vnest host down` stops
exactly those, by the pids the tree lists, even after a crash.

The trees sit below the deepest cgroup the machine put vnest in (a sandbox's memory limit, say),
so the nodes stay inside whatever limits the machine set for vnest.
"""

from __future__ import annotations

import os
from pathlib import Path

from vnest.errors import VnestError

DAEMONS = "daemons"


def _cgroup_mounts() -> list[tuple[str, Path, str]]:
    """(fstype, mount point, super options) of every cgroup and cgroup2 mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            out.append((fstype, Path(left.split()[4]), options))
    return out


def _mounts() -> dict[str, Path]:
    """cgroup v1 hierarchies: controller (or name=...) -> mount point."""
    out: dict[str, Path] = {}
    for fstype, mount_point, options in _cgroup_mounts():
        if fstype != "cgroup":
            continue
        for option in options.split(","):
            if option in ("rw", "ro") or option.startswith(("relatime", "nosuid", "nodev", "noexec")):
                continue
            out[option] = mount_point
    return out


def hierarchies() -> list[Path]:
    return sorted(set(_mounts().values()))


def every_hierarchy() -> list[Path]:
    """The v1 hierarchies and, on a hybrid machine, the v2 one, where runc makes folders too."""
    return sorted({mount for _fstype, mount, _options in _cgroup_mounts()})


def available() -> str | None:
    """None when the machine has the cgroup v1 hierarchies a kubelet needs, else why not."""
    controllers = _mounts()
    missing = [c for c in ("cpu", "cpuacct", "cpuset", "memory", "pids") if c not in controllers]
    if missing:
        return f"no cgroup v1 hierarchy for {', '.join(missing)}"
    return None


def own_parent() -> str:
    """The deepest cgroup path this process is in, over all v1 hierarchies."""
    paths = [line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()]
    return max(paths, key=lambda p: p.count("/") if p != "/" else 0)


def create(path: str) -> None:
    """mkdir -p ``path`` in every hierarchy; cpuset levels get their parent's cpus and mems."""
    for mount in hierarchies():
        folder = mount
        for part in Path(path.lstrip("/")).parts:
            parent, folder = folder, folder / part
            if folder.is_dir():
                continue
            folder.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (parent / name).exists():
                    (folder / name).write_text((parent / name).read_text())


def join(path: str) -> None:
    """Moves the calling process into ``path`` in every hierarchy (a preexec_fn, before exec)."""
    for mount in hierarchies():
        (mount / path.lstrip("/") / "cgroup.procs").write_text("0")


def pids(path: str) -> set[int]:
    found: set[int] = set()
    for mount in every_hierarchy():
        root = mount / path.lstrip("/")
        if not root.is_dir():
            continue
        for folder, _dirs, _files in os.walk(root):
            try:
                found.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
            except OSError:
                continue
    found.discard(os.getpid())
    return found


def remove(path: str) -> list[str]:
    """rmdir the tree bottom-up in every hierarchy; what could not be removed (still busy)."""
    busy: list[str] = []
    for mount in every_hierarchy():
        root = mount / path.lstrip("/")
        if not root.is_dir():
            continue
        for folder, _dirs, _files in os.walk(root, topdown=False):
            try:
                os.rmdir(folder)
            except OSError as e:
                busy.append(f"{folder}: {e.strerror}")
        # The levels create() made above it, where nothing else lives (rmdir refuses otherwise).
        for parent in root.relative_to(mount).parents:
            if parent == Path("."):
                break
            try:
                os.rmdir(mount / parent)
            except OSError:
                break
    return busy


def require() -> None:
    if why := available():
        raise VnestError(f"real nodes need cgroup v1: {why}")
