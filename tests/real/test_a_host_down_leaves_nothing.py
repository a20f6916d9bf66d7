"""`vnest host down` leaves nothing of real nodes on the machine.

In a module of its own, named to run first in the real tier: the snapshot it compares must not
see the session's real host (tests/conftest.py `real_host_env`) start pods in between.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import SESSION_HOST_PORT
from tests.real.test_real_nodes import _kubectl, _run_to_completion
from vnest.host import cgroups

CLEAN_PORT = SESSION_HOST_PORT + 4000


def _machine_snapshot() -> dict[str, list[str]]:
    """What real nodes could leave behind on the machine, outside vnest's own folders."""

    def listing(folder: str) -> list[str]:
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    rules = sorted(line for line in iptables.splitlines() if line and not line.startswith("#"))
    parent = Path("/sys/fs/cgroup/pids") / cgroups.own_parent().lstrip("/")
    return {
        "mounts": mounts,
        "netns": listing("/run/netns"),
        "iptables": rules,
        "links": sorted(
            subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.split("\n")
        ),
        "shim sockets": listing("/run/containerd/s"),
        "cni cache": listing("/var/lib/cni/results"),
        "container logs": listing("/var/log/containers"),
        "run": listing("/run/vnest"),
        "cgroups": listing(str(parent)),
    }


def test_host_down_leaves_nothing_on_the_machine(make_env):
    env = make_env()
    before = _machine_snapshot()
    port = CLEAN_PORT
    env.vnest("host", "up", "--nodes", "1", "--runtime", "containerd", "--port", str(port), timeout=900)
    during = _machine_snapshot()
    assert f"vnest{port}-hub" in during["netns"] and f"vnest{port}-worker1" in during["netns"]
    _run_to_completion(env, "hello", "busybox", "echo", "hello")
    _kubectl(env, "create", "deployment", "sleeper", "--image=busybox", "--", "sleep", "3600")
    _kubectl(env, "rollout", "status", "deployment/sleeper", "--timeout=120s")
    assert _machine_snapshot()["mounts"] != before["mounts"]  # containers are really running

    started = time.monotonic()
    env.vnest("host", "down", timeout=300)
    after = _machine_snapshot()
    for key, value in before.items():
        assert after[key] == value, f"{key} differ after down (took {time.monotonic() - started:.0f}s)"
