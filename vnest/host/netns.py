"""The real nodes' network: namespaces, a bridge and veth pairs, all of them vnest's own.

A kind-like network in miniature, and nothing of it in the machine's own namespace:

- the hub namespace ``<prefix>-hub`` holds the bridge ``vnest0`` with ``HUB_IP``. It is the
  nodes' gateway, routes each node's pod range to that node, and is where the forwarder
  (vnest.host.forward) listens for the host's API server, registry and DNS, which run on the
  machine's loopback;
- one namespace per node, ``<prefix>-<node>``, joined to the bridge by a veth pair: ``eth0``
  inside holds the node's address, and its default route is the hub.

The hub has no way out: traffic to an address outside these namespaces has nowhere to go.
Deleting the namespaces deletes every interface, route and netfilter rule in them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vnest.errors import VnestError

NODE_NETWORK = ipaddress.ip_network("10.89.0.0/24")
HUB_IP = "10.89.0.1"  # the nodes' gateway; where they reach the API server, registry and DNS
BRIDGE = "vnest0"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def prefix_for(apiserver_port: int) -> str:
    """Namespace names are machine-wide: the API server's port tells two local hosts apart."""
    return f"vnest{apiserver_port}"


def hub_name(prefix: str) -> str:
    return f"{prefix}-hub"


def node_netns(prefix: str, node: str) -> str:
    return f"{prefix}-{node}"


def node_ip(index: int) -> str:
    """The address of the index-th node (1-based): 10.89.0.11, .12, ..."""
    return str(NODE_NETWORK.network_address + 10 + index)


def path(name: str) -> Path:
    return NETNS_DIR / name


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VnestError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _sysctl(netns: str, key: str, value: str) -> None:
    # Through the namespace's own /proc/sys, reached by a process that entered only its network.
    proc = subprocess.run(
        ["nsenter", f"--net={path(netns)}", "sysctl", "-q", "-w", f"{key}={value}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise VnestError(f"sysctl {key}={value} in network namespace {netns} failed: {proc.stderr.strip()}")


def existing(prefix: str) -> list[str]:
    """vnest's namespaces of one local host, the hub last."""
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    ours = [n for n in names if n.startswith(f"{prefix}-")]
    return sorted(ours, key=lambda n: n == hub_name(prefix))


def add(name: str) -> None:
    """A network namespace of that name with its loopback up (kept if it exists)."""
    if not path(name).exists():
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def ensure_hub(prefix: str) -> None:
    hub = hub_name(prefix)
    add(hub)
    if BRIDGE not in _ip("-n", hub, "-o", "link", "show"):
        _ip("-n", hub, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{HUB_IP}/{NODE_NETWORK.prefixlen}", "dev", BRIDGE)
    _ip("-n", hub, "link", "set", BRIDGE, "up")
    _sysctl(hub, "net.ipv4.ip_forward", "1")
    # Every node is one hop away on the bridge; redirects would only teach them a shortcut.
    _sysctl(hub, "net.ipv4.conf.all.send_redirects", "0")


def ensure_node(prefix: str, node: str, index: int, pod_cidr: str) -> None:
    """The node's namespace, wired to the hub, with its pod range routed to it."""
    hub, ns = hub_name(prefix), node_netns(prefix, node)
    add(ns)
    hub_side = f"vh{index}"
    if hub_side not in _ip("-n", hub, "-o", "link", "show"):
        _ip("-n", hub, "link", "add", hub_side, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", ns, "addr", "add", f"{node_ip(index)}/{NODE_NETWORK.prefixlen}", "dev", "eth0")
    _ip("-n", hub, "link", "set", hub_side, "master", BRIDGE, "up")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "route", "replace", "default", "via", HUB_IP)
    _ip("-n", hub, "route", "replace", pod_cidr, "via", node_ip(index))
    _sysctl(ns, "net.ipv4.ip_forward", "1")
    # Pod -> Service -> pod on the same bridge needs the bridge's frames to pass netfilter,
    # where kube-proxy's NAT is undone.
    _sysctl(ns, "net.bridge.bridge-nf-call-iptables", "1")


def delete(name: str) -> None:
    if path(name).exists():
        _ip("netns", "delete", name)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Runs the body with the calling thread in a network namespace, and back.

    A socket belongs to the namespace it was created in for its whole life, so a process can
    listen or connect in several namespaces at once: create the socket in here, use it outside.
    Only the calling thread moves (the network namespace is per thread).
    """
    with open("/proc/thread-self/ns/net") as own, open(path(name)) as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(own.fileno())


def join(name: str) -> None:
    """Moves the calling process into a network namespace for good (a preexec_fn, before exec)."""
    with open(path(name)) as target:
        _setns(target.fileno())
