"""Real nodes of the local host: containerd, runc, kubelet and kube-proxy in a namespace each.

A node is what a kind node container holds, without the container: its daemons run in the
node's network namespace (vnest.host.netns) and cgroup tree (vnest.host.cgroups), with every
file under the node's folder and every runtime file under ``/run/vnest/<prefix>/<node>``.

- containerd is the distribution's (1.6 on Debian 12): no build, security fixes from the
  distribution. The kubelet talks CRI v1 to it; 1.6 lacks the RuntimeConfig call, so the
  kubelet takes its cgroup driver (cgroupfs) from its own config, saying so once in its log.
- Pod networking is the standard CNI plugins (bridge, host-local, portmap, loopback): each node
  owns a /24 of the pod range, fixed by its index, and the hub routes it there.
- Images come from the local registry (vnest.host.images), which containerd uses in place of
  docker.io and registry.k8s.io.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vnest import certs, kubeconfig, log
from vnest.host import cgroups, netns
from vnest.procs import ProcessDir, wait_until

_log = log.get("host")

POD_CIDR_TEMPLATE = "10.244.{index}.0/24"
RUN_ROOT = Path("/run/vnest")
CNI_CACHE = Path("/var/lib/cni/results")
KUBELET_CONTAINER_LOGS = Path("/var/log/containers")  # the kubelet's symlinks, a fixed path
CONTAINERD_SHIM_SOCKETS = Path("/run/containerd/s")  # a fixed path in containerd 1.6
DAEMONS = ("containerd", "kubelet", "kube-proxy")  # started in this order
MIRRORED_REGISTRIES = ("docker.io", "registry.k8s.io")
_MNT_DETACH = 2


def cni_bin_dir() -> Path | None:
    for folder in (Path("/opt/cni/bin"), Path("/usr/lib/cni")):
        if (folder / "bridge").exists() and (folder / "host-local").exists():
            return folder
    return None


def runtime_unavailable() -> str | None:
    """None when this machine can run real nodes, else why not (for the fallback to KWOK)."""
    if os.geteuid() != 0:
        return "real nodes need root"
    if why := cgroups.available():
        return why
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    missing = [b for b in ("containerd", "runc", "iptables", "ip", "nsenter") if shutil.which(b) is None]
    if cni_bin_dir() is None:
        missing.append("CNI plugins (bridge, host-local)")
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install containerd runc containernetworking-plugins iptables)"
    return None


@dataclass(frozen=True)
class NodeSpec:
    name: str
    index: int  # 1-based; decides the node's address and pod range
    prefix: str  # the local host's namespace prefix
    folder: Path  # the node's files
    apiserver_port: int
    registry_port: int  # the registry's port on the hub address
    pause_image: str
    cluster_dns: str
    cluster_domain: str
    pod_cidr_all: str

    @property
    def ip(self) -> str:
        return netns.node_ip(self.index)

    @property
    def pod_cidr(self) -> str:
        return POD_CIDR_TEMPLATE.format(index=self.index)

    @property
    def netns(self) -> str:
        return netns.node_netns(self.prefix, self.name)

    @property
    def run_dir(self) -> Path:
        # Short and on tmpfs: unix socket paths are limited to 107 bytes.
        return RUN_ROOT / self.prefix / self.name

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cgroup(self) -> str:
        return f"{cgroups.own_parent().rstrip('/')}/{self.netns}"

    @property
    def network_name(self) -> str:
        # libcni names its cache files after the network: one name per local host finds them.
        return self.prefix

    def process_name(self, daemon: str) -> str:
        return f"{self.name}-{daemon}"

    # ---- configuration files ------------------------------------------------

    def containerd_config(self) -> str:
        run = self.run_dir
        cni = cni_bin_dir()
        return f"""\
version = 2
root = "{self.folder / "containerd"}"
state = "{run / "containerd"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.folder / "containerd-opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  # This machine's root may not lower oom_score_adj (no CAP_SYS_RESOURCE); without this
  # every sandbox fails in runc with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's state, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{run / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{self.folder / "cni" / "net.d"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.folder / "certs.d"}"
"""

    def registry_hosts(self) -> str:
        # `server` is the mirror too: containerd never falls back to the public registry.
        mirror = f"http://{netns.HUB_IP}:{self.registry_port}"
        return f'server = "{mirror}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'

    def cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": self.network_name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    # No NAT: the hub routes every node's pod range, and nothing lies beyond it.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.folder / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def kubelet_config(self, ca_file: Path) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(self.folder / "pki" / "kubelet.crt"),
            "tlsPrivateKeyFile": str(self.folder / "pki" / "kubelet.key"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            # Kubernetes 1.36 refuses cgroup v1 unless told otherwise; this machine has only v1.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "clusterDNS": [self.cluster_dns],
            "clusterDomain": self.cluster_domain,
            "resolvConf": str(self.folder / "resolv.conf"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.folder / "pod-logs"),
            "serializeImagePulls": False,
            "maxPods": 110,
            # A shared development machine: evict only when the disk or memory is nearly gone.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
        }

    def kube_proxy_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.folder / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": self.pod_cidr_all,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # The conntrack table size is machine-wide, not the node's to set.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }

    def node_manifest(self) -> dict[str, Any]:
        """Registered ahead of the kubelet, to fix the pod range the hub routes to this node."""
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}},
            "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]},
        }


class RealNode:
    def __init__(self, spec: NodeSpec, procs: ProcessDir) -> None:
        self.spec = spec
        self.procs = procs

    # ---- start -----------------------------------------------------------------

    def write_files(self, host_pki: Path, ca: certs.CertKey) -> None:
        s = self.spec
        f = s.folder
        for sub in ("pki", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "containerd", "containerd-opt"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        s.run_dir.mkdir(parents=True, exist_ok=True)
        (f / "containerd.toml").write_text(s.containerd_config())
        for registry in MIRRORED_REGISTRIES:
            (f / "certs.d" / registry).mkdir(parents=True, exist_ok=True)
            (f / "certs.d" / registry / "hosts.toml").write_text(s.registry_hosts())
        (f / "cni" / "net.d" / "10-vnest.conflist").write_text(json.dumps(s.cni_config(), indent=2) + "\n")
        (f / "resolv.conf").write_text(f"nameserver {netns.HUB_IP}\n")
        if not (f / "pki" / "kubelet.crt").exists():
            certs.issue(ca, s.name, dns_names=(s.name,), ips=(s.ip,), server=True).write(f / "pki", "kubelet")
        server = f"https://{netns.HUB_IP}:{s.apiserver_port}"
        for stem, cn, orgs in (
            ("kubelet", f"system:node:{s.name}", ("system:nodes",)),
            ("kube-proxy", "system:kube-proxy", ()),
        ):
            if not (f / "pki" / f"{stem}-client.crt").exists():
                certs.issue(ca, cn, organizations=orgs, client=True).write(f / "pki", f"{stem}-client")
            client = certs.CertKey.read(f / "pki", f"{stem}-client")
            config = kubeconfig.build("vnest-host", server, ca.cert_pem, client.cert_pem, client.key_pem)
            kubeconfig.save(f / f"{stem}.kubeconfig", config)
        (f / "kubelet.yaml").write_text(
            yaml.safe_dump(s.kubelet_config(host_pki / "ca.crt"), sort_keys=False)
        )
        (f / "kube-proxy.yaml").write_text(yaml.safe_dump(s.kube_proxy_config(), sort_keys=False))

    def start(self, kube: Path, env: dict[str, str]) -> None:
        s = self.spec
        cgroups.create(s.cgroup)
        cgroups.create(f"{s.cgroup}/{cgroups.DAEMONS}")
        daemons = f"{s.cgroup}/{cgroups.DAEMONS}"

        def enter() -> None:
            cgroups.join(daemons)
            netns.join(s.netns)

        f = s.folder
        argv: dict[str, list[str | os.PathLike[str]]] = {
            "containerd": ["containerd", "--config", f / "containerd.toml"],
            "kubelet": [
                kube,
                "kubelet",
                f"--config={f / 'kubelet.yaml'}",
                f"--kubeconfig={f / 'kubelet.kubeconfig'}",
                f"--root-dir={f / 'kubelet'}",
                f"--hostname-override={s.name}",
                f"--node-ip={s.ip}",
            ],
            "kube-proxy": [kube, "kube-proxy", f"--config={f / 'kube-proxy.yaml'}"],
        }
        for daemon in DAEMONS:
            if self.procs.running(s.process_name(daemon)):
                continue
            self.procs.start(s.process_name(daemon), argv[daemon], env=env, cwd=f, preexec_fn=enter)
            if daemon == "containerd":
                _wait_for_socket(s.containerd_socket, 30)

    def running(self) -> dict[str, int]:
        return {d: rec.pid for d in DAEMONS if (rec := self.procs.running(self.spec.process_name(d)))}

    # ---- stop and clean up --------------------------------------------------------

    def stop(self) -> list[str]:
        """Stops every process of the node and removes everything it made outside its folder."""
        s = self.spec
        left: list[str] = []
        for daemon in ("kubelet", "kube-proxy"):
            self.procs.stop(s.process_name(daemon), timeout=10)
        # containerd, its shims and every container: all of them are in the node's cgroup tree.
        self.procs.stop(s.process_name("containerd"), timeout=10)
        deadline = time.monotonic() + 20
        while pids := cgroups.pids(s.cgroup):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                left.append(f"processes {sorted(pids)} of node {s.name} would not die")
                break
            time.sleep(0.05)
        self._forget_sandboxes()
        left += unmount_below(s.folder, s.run_dir)
        left += cgroups.remove(s.cgroup)
        pod_logs = str(s.folder / "pod-logs")
        if KUBELET_CONTAINER_LOGS.is_dir():
            for link in KUBELET_CONTAINER_LOGS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(pod_logs):
                    link.unlink()
            with contextlib.suppress(OSError):
                KUBELET_CONTAINER_LOGS.rmdir()
        shutil.rmtree(s.run_dir, ignore_errors=True)
        return left

    def _forget_sandboxes(self) -> None:
        """What killed shims and sandboxes leave in machine-wide folders, found by their ids.

        A shim's socket is named by a hash of containerd's address, the namespace and the
        shim's id (containerd 1.6, runtime/v2/shim.SocketAddress); libcni caches each
        attachment as <network>-<id>-<interface>.
        """
        tasks = self.spec.run_dir / "containerd" / "io.containerd.runtime.v2.task"
        if tasks.is_dir():
            for namespace in tasks.iterdir():
                for task in namespace.iterdir():
                    key = os.path.join(str(self.spec.containerd_socket), namespace.name, task.name)
                    socket_name = hashlib.sha256(key.encode()).hexdigest()
                    (CONTAINERD_SHIM_SOCKETS / socket_name).unlink(missing_ok=True)
                    (CNI_CACHE / f"cni-loopback-{task.name}-lo").unlink(missing_ok=True)
        for cached in CNI_CACHE.glob(f"{self.spec.network_name}-*"):
            cached.unlink(missing_ok=True)
        # The folders themselves, once empty: nothing else on this machine used them.
        for folder in (CONTAINERD_SHIM_SOCKETS, CONTAINERD_SHIM_SOCKETS.parent, CNI_CACHE, CNI_CACHE.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _wait_for_socket(socket_path: Path, timeout: float) -> None:
    wait_until(socket_path.exists, timeout, f"containerd's socket {socket_path}", interval=0.1)


def mounts_below(*roots: Path) -> list[str]:
    """Mount points under any of the folders, deepest first."""
    prefixes = [str(r.resolve()).rstrip("/") + "/" for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point.startswith(p) or point + "/" == p for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


_libc = ctypes.CDLL(None, use_errno=True)


def unmount_below(*roots: Path) -> list[str]:
    failed = []
    for _ in range(3):  # a mount may sit on another: go until nothing is left
        points = mounts_below(*roots)
        if not points:
            return []
        for point in points:
            if _libc.umount2(point.encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                failed.append(f"umount {point}: {os.strerror(err)}")
    return failed + [f"still mounted: {p}" for p in mounts_below(*roots)]
