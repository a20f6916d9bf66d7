"""up / up / down / up on a host of its own, and `up` refusing a taken port."""

import json
import os
import socket
from pathlib import Path

from tests.conftest import SESSION_HOST_PORT
from vnest import naming
from vnest.host.local import COMPONENTS, Ports, resolve, udp_port_in_use
from vnest.procs import port_in_use

LIFECYCLE_PORT = SESSION_HOST_PORT + 1000
BUSY_PORT = SESSION_HOST_PORT + 2000


def _processes_under(folder: Path) -> list[int]:
    """Pids of processes whose command line mentions the folder (every host process does)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Whether the process runs: a zombie has exited, only its reaping (by init) is pending."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _pids(env) -> dict[str, int]:
    status = env.vnest("host", "status", "-o", "json").stdout
    return {n: c["pid"] for n, c in json.loads(status)["components"].items() if c["running"]}


def test_up_twice_down_and_up_again(make_env):
    env = make_env()
    home = Path(env.vars["VNEST_HOME"])
    env.vnest("host", "up", "--nodes", "1", "--runtime", "kwok", "--port", str(LIFECYCLE_PORT))
    first = _pids(env)
    assert set(first) == set(COMPONENTS)
    assert "coredns" in first
    ports = Ports.starting_at(LIFECYCLE_PORT)
    assert resolve("kubernetes.default.svc.cluster.local", ports.dns) == ["10.96.0.1"]

    again = env.vnest("host", "up", "--nodes", "1", "--runtime", "kwok", "--port", str(LIFECYCLE_PORT))
    assert "already running" in again.stderr
    assert _pids(env) == first  # nothing restarted
    services = env.kubectl("--context", "vnest-host", "get", "services", "-n", "kube-system", "-o", "json")
    (kube_dns,) = [s for s in json.loads(services.stdout)["items"] if s["metadata"]["name"] == "kube-dns"]
    assert kube_dns["metadata"]["annotations"][naming.ANNOTATION_LOCAL_ADDRESS] == f"127.0.0.1:{ports.dns}"

    env.vnest("host", "down")
    assert _processes_under(home) == []
    assert not _alive(first["coredns"])
    assert len(vars(ports)) == 8
    for port in vars(ports).values():
        assert not port_in_use(port), port
    assert not udp_port_in_use(ports.dns)
    assert "vnest-host" not in Path(env.vars["KUBECONFIG"]).read_text()

    env.vnest("host", "up", "--nodes", "1", "--runtime", "kwok", "--port", str(LIFECYCLE_PORT))
    assert set(_pids(env)) == set(COMPONENTS)
    nodes = env.kubectl("--context", "vnest-host", "get", "nodes", "-o", "name").stdout.split()
    assert nodes == ["node/worker1"]
    env.vnest("host", "down")
    assert _processes_under(home) == []


def test_up_names_a_taken_port_and_leaves_nothing_running(make_env):
    env = make_env()
    home = Path(env.vars["VNEST_HOME"])
    taken = Ports.starting_at(BUSY_PORT).controller_manager
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        proc = env.vnest("host", "up", "--runtime", "kwok", "--port", str(BUSY_PORT), check=False)
    assert proc.returncode == 1
    assert f"port {taken} on 127.0.0.1, needed by kube-controller-manager, is already in use" in proc.stderr
    assert _processes_under(home) == []


def test_up_names_a_taken_udp_dns_port(make_env):
    env = make_env()
    home = Path(env.vars["VNEST_HOME"])
    taken = Ports.starting_at(BUSY_PORT).dns
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", taken))
        proc = env.vnest("host", "up", "--runtime", "kwok", "--port", str(BUSY_PORT), check=False)
    assert proc.returncode == 1
    assert f"port {taken} on 127.0.0.1, needed by coredns, is already in use" in proc.stderr
    assert _processes_under(home) == []
