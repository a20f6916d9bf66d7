"""The embedded local host cluster: real Kubernetes on loopback, with real or KWOK nodes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and CoreDNS run as
processes this module starts and records (see vnest.procs), on the machine's loopback.
The nodes are one of two runtimes:

- ``containerd``: real nodes (vnest.host.nodes), each a containerd, kubelet and kube-proxy
  in a network namespace of its own, pulling images from a local registry
  (vnest.host.images); a forwarder (vnest.host.forward) joins the loopback servers to the
  nodes' network. Pods really run, ClusterIPs and DNS work from them.
- ``kwok``: KWOK plays the kubelets, so pods are scheduled, get IPs and reach Running with
  no container runtime; CoreDNS answers on a loopback port that the host's
  kube-system/kube-dns Service names in an annotation (no kube-proxy routes its ClusterIP).

The context ``vnest-host`` is merged into the user's kubeconfig.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx
import yaml

from vnest import binaries, certs, kubeconfig, log, naming
from vnest.controlplane import commands
from vnest.errors import VnestError
from vnest.host import kwok, netns
from vnest.host import nodes as real_nodes
from vnest.procs import ProcessDir, port_in_use, wait_until

_log = log.get("host")

CONTEXT = "vnest-host"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
# kubeadm's choice for kube-dns: the tenth address of the service range, in its static band.
DNS_SERVICE_IP = "10.96.0.10"
# Started in this order, stopped in the reverse one.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "coredns")
# Real nodes: the registry and the forwarder come first, and KWOK is not needed.
REAL_COMPONENTS = (
    "registry",
    "forwarder",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "coredns",
    "provisioner",
)
RUNTIMES = ("containerd", "kwok")
REGISTRY_HUB_PORT = 5000  # where the nodes' containerd finds the registry, on the hub address


def components(runtime: str) -> tuple[str, ...]:
    return REAL_COMPONENTS if runtime == "containerd" else COMPONENTS


def default_runtime() -> tuple[str, str]:
    """The runtime `vnest host up` picks when none is asked for, and why."""
    why = real_nodes.runtime_unavailable()
    if why is None:
        return "containerd", "this machine can run containers"
    return "kwok", why


DEFAULT_PORT = 16443


@dataclass
class Ports:
    """Eight consecutive loopback ports, the API server's first."""

    apiserver: int
    etcd: int
    etcd_peer: int
    controller_manager: int
    scheduler: int
    kwok: int  # KWOK's kubelet server: logs, exec, attach, port-forward
    dns: int  # CoreDNS, UDP and TCP
    registry: int  # the image registry of real nodes

    @classmethod
    def starting_at(cls, port: int = DEFAULT_PORT) -> Ports:
        return cls(*range(port, port + 8))

    def named(self) -> dict[str, int]:
        return {
            "kube-apiserver": self.apiserver,
            "etcd": self.etcd,
            "etcd (peer)": self.etcd_peer,
            "kube-controller-manager": self.controller_manager,
            "kube-scheduler": self.scheduler,
            "kwok": self.kwok,
            "coredns": self.dns,
            "registry": self.registry,
        }


@dataclass
class HostState:
    """What `up` recorded, so that `status` and `down` work from any later command."""

    nodes: int
    ports: Ports
    kubeconfig: str  # the user's kubeconfig that holds the vnest-host context
    binaries: str
    runtime: str = "kwok"
    created: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> HostState | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        # A host.json from before CoreDNS joined: its port follows the others.
        data["ports"].setdefault("dns", data["ports"]["apiserver"] + 6)
        data["ports"].setdefault("registry", data["ports"]["apiserver"] + 7)
        data["ports"] = Ports(**data["ports"])
        return cls(**data)


def vnest_home() -> Path:
    return Path(os.environ.get("VNEST_HOME") or Path.home() / ".vnest")


def node_names(count: int) -> list[str]:
    return [f"worker{i}" for i in range(1, count + 1)]


def udp_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def corefile(port: int, kubeconfig_path: Path) -> str:
    """The host's Corefile: the kubeadm one, on loopback, without cache, health or ready ports.

    No cache and a 1s TTL: a Service created on the host resolves at once, here and through
    the virtual clusters' DNS that falls back to this one. Readiness is checked with a query.
    """
    zones = f"{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa"
    return f"""\
.:{port} {{
    bind 127.0.0.1
    errors
    kubernetes {zones} {{
        kubeconfig {kubeconfig_path} {CONTEXT}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 1
    }}
    forward . /etc/resolv.conf
}}
"""


def dns_service_manifest(dns_port: int) -> dict[str, Any]:
    """kube-system/kube-dns as a real cluster has it, plus where it is served on this machine."""
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": labels,
            "annotations": {naming.ANNOTATION_LOCAL_ADDRESS: f"127.0.0.1:{dns_port}"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": DNS_SERVICE_IP,
            "selector": {"k8s-app": "kube-dns"},
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    }


def hub_dns_endpoints() -> dict[str, Any]:
    """kube-dns's endpoint for real nodes: CoreDNS, reached at the hub through the forwarder."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-hub",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "local-host.vnest.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [netns.HUB_IP], "conditions": {"ready": True}}],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    }


def _port_free(port: int) -> bool:
    return not port_in_use(port)


def _pause_image() -> str:
    from vnest.host import images

    return images.PAUSE_IMAGE


def resolve(name: str, port: int, server: str = "127.0.0.1", timeout: float = 1.0) -> list[str]:
    """The A records of ``name`` from the DNS server at server:port (UDP); [] on any failure."""
    try:
        response = dns.query.udp(dns.message.make_query(name, "A"), server, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return []
    return [rd.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


class LocalHost:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or vnest_home() / "host"
        self.procs = ProcessDir(self.root)
        self.pki_dir = self.root / "pki"
        self.state_file = self.root / "host.json"
        self.admin_kubeconfig = self.root / "admin.kubeconfig"

    # ---- queries -------------------------------------------------------

    def state(self) -> HostState | None:
        return HostState.load(self.state_file)

    def component_names(self, state: HostState | None) -> list[str]:
        """Every process of the host: its servers, and each real node's daemons."""
        if state is None:
            return list(COMPONENTS)
        names = list(components(state.runtime))
        for node in self._real_nodes(state):
            names += [node.spec.process_name(d) for d in real_nodes.DAEMONS]
        return names

    def running_components(self) -> dict[str, int]:
        names = self.component_names(self.state())
        return {n: rec.pid for n in names if (rec := self.procs.running(n))}

    def _all_running(self, state: HostState | None) -> bool:
        if state is None:
            return False
        running = self.running_components()
        return len(running) == len(self.component_names(state)) and self._apiserver_ready(state.ports)

    def status(self) -> dict[str, Any]:
        state = self.state()
        running = self.running_components()
        result: dict[str, Any] = {
            "context": CONTEXT,
            "stateDir": str(self.root),
            "runtime": state.runtime if state else None,
            "components": {
                n: {"running": n in running, "pid": running.get(n)} for n in self.component_names(state)
            },
            "apiServer": None,
            "dns": None,
            "ready": False,
            "nodes": [],
        }
        if state is None:
            return result
        result["apiServer"] = f"https://127.0.0.1:{state.ports.apiserver}"
        result["dns"] = f"127.0.0.1:{state.ports.dns}"
        if self._all_running(state):
            nodes = self.nodes()
            result["nodes"] = nodes
            ready = sum(1 for n in nodes if n["ready"])
            result["ready"] = ready >= state.nodes
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        bins = binaries.ensure()
        proc = subprocess.run(
            [str(bins.kubectl), "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise VnestError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def nodes(self) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
        out = []
        for item in items:
            conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            out.append({"name": item["metadata"]["name"], "ready": conditions.get("Ready") == "True"})
        return out

    # ---- up --------------------------------------------------------------

    def up(
        self, nodes: int, ports: Ports | None = None, wait: float = 180.0, runtime: str | None = None
    ) -> None:
        ports = ports or Ports.starting_at()
        state = self.state()
        runtime = self._choose_runtime(runtime, state)
        if state is not None and self._all_running(state):
            _log.info("the local host is already running", context=CONTEXT, runtime=state.runtime)
            state.nodes = nodes
            state.save(self.state_file)
            if state.runtime == "containerd":
                from vnest.host import images

                # A rebuilt image (vnest's, after a code change) reaches the registry.
                images.push_all(images.ensure_built(), f"127.0.0.1:{state.ports.registry}")
            self._ensure_dns_service(state)
            self._ensure_nodes(state, wait)
            self._merge_kubeconfig(state)
            return
        if running := self.running_components():
            # A half-up host (a crash, a reboot's leftovers): start it over, keeping its data.
            _log.info("restarting the partly running local host", running=",".join(running))
            self._stop_everything(state)
        if state is not None:
            ports = state.ports
        for name, port in ports.named().items():
            if port_in_use(port) or (port == ports.dns and udp_port_in_use(port)):
                raise VnestError(
                    f"port {port} on 127.0.0.1, needed by {name}, is already in use",
                    hint="stop whatever listens there (`ss -ltnp`) and run `vnest host up` again",
                )
        bins = binaries.ensure()
        built = None
        if runtime == "containerd":
            from vnest.host import images

            built = images.ensure_built()  # before anything starts: a failed build leaves nothing
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._ensure_pki()
        state = HostState(
            nodes=nodes,
            ports=ports,
            kubeconfig=str(kubeconfig.user_path()),
            binaries=str(bins.dir),
            runtime=runtime,
        )
        state.save(self.state_file)
        try:
            with log.step(_log, f"starting the local host cluster ({runtime} nodes)") as progress:
                if built is not None:
                    self._start_node_network(state, bins, built, progress, wait)
                self._start_all(bins, state, progress, wait)
            self._ensure_dns_service(state)
            self._ensure_nodes(state, wait)
        except BaseException:
            self._stop_everything(state)
            raise
        self._merge_kubeconfig(state)
        _log.done(f"the local host is up; kube context {CONTEXT!r}", nodes=nodes, runtime=runtime)

    def _choose_runtime(self, asked: str | None, state: HostState | None) -> str:
        if asked is None:
            if state is not None:
                return state.runtime
            runtime, why = default_runtime()
            _log.info(f"nodes: {runtime} ({why}); --runtime chooses")
            return runtime
        if asked not in RUNTIMES:
            raise VnestError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {asked!r}")
        if asked == "containerd" and (unavailable := real_nodes.runtime_unavailable()):
            raise VnestError(
                f"--runtime containerd is not possible on this machine: {unavailable}",
                hint="use --runtime kwok",
            )
        if state is not None and state.runtime != asked:
            raise VnestError(
                f"the local host in {self.root} was made with --runtime {state.runtime}, not {asked}",
                hint="`vnest host down` removes it; then `vnest host up` makes it anew",
            )
        return asked

    # ---- real nodes ----------------------------------------------------------

    def _real_nodes(self, state: HostState) -> list[real_nodes.RealNode]:
        """The nodes this host has: the wanted ones and any left on disk from a larger `up`."""
        if state.runtime != "containerd":
            return []
        names = set(node_names(state.nodes))
        folder = self.root / "nodes"
        if folder.is_dir():
            names |= {f.name for f in folder.iterdir() if f.is_dir()}
        return [
            self._real_node(state, name)
            for name in sorted(names, key=lambda n: int(n.removeprefix("worker")))
        ]

    def _real_node(self, state: HostState, name: str) -> real_nodes.RealNode:
        spec = real_nodes.NodeSpec(
            name=name,
            index=int(name.removeprefix("worker")),
            prefix=netns.prefix_for(state.ports.apiserver),
            folder=self.root / "nodes" / name,
            apiserver_port=state.ports.apiserver,
            registry_port=REGISTRY_HUB_PORT,
            pause_image=_pause_image(),
            cluster_dns=DNS_SERVICE_IP,
            cluster_domain=CLUSTER_DOMAIN,
            pod_cidr_all=POD_CIDR,
        )
        return real_nodes.RealNode(spec, self.procs)

    def _start_node_network(
        self, state: HostState, bins: binaries.Binaries, built: Any, progress: log.Progress, wait: float
    ) -> None:
        """The hub namespace, the registry with the images pushed, and the forwarder."""
        from vnest.host import forward, images

        ports = state.ports
        prefix = netns.prefix_for(ports.apiserver)
        netns.ensure_hub(prefix)
        env = self._env()
        progress.update("starting the image registry")
        registry = f"127.0.0.1:{ports.registry}"
        (self.root / "registry").mkdir(exist_ok=True)
        self.procs.start(
            "registry", images.registry_command(bins.crane, registry, self.root / "registry"), env=env
        )
        self._wait_http("registry", f"http://{registry}/v2/", wait, progress)
        progress.update("pushing the images into the registry")
        images.push_all(built, registry)
        config: forward.ForwardConfig = {
            "netns": netns.hub_name(prefix),
            "address": netns.HUB_IP,
            "listen": [
                {"protocol": "tcp", "port": ports.apiserver, "target": f"127.0.0.1:{ports.apiserver}"},
                # Only the nodes' containerd pulls: a pod (a tenant's) may not push over an image.
                {
                    "protocol": "tcp",
                    "port": REGISTRY_HUB_PORT,
                    "target": registry,
                    "clients": [str(netns.NODE_NETWORK)],
                },
                {"protocol": "udp", "port": 53, "target": f"127.0.0.1:{ports.dns}"},
                {"protocol": "tcp", "port": 53, "target": f"127.0.0.1:{ports.dns}"},
            ],
            "egress": {"socket": str(self.egress_socket), "allow": [str(netns.NODE_NETWORK), POD_CIDR]},
        }
        config_file = self.root / "forward.json"
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        self.egress_socket.unlink(missing_ok=True)
        self.procs.start(
            "forwarder", [sys.executable, "-m", "vnest", "host", "forward", config_file], env=env
        )
        wait_until(
            self.egress_socket.exists,
            wait,
            "the forwarder",
            interval=0.1,
            on_wait=lambda: self._check_alive(progress, "the forwarder"),
        )

    @property
    def egress_socket(self) -> Path:
        return self.root / "egress.sock"

    def _env(self) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/bin:/bin")
        for sbin in ("/usr/sbin", "/sbin"):  # runc, iptables, ip
            if sbin not in path.split(":"):
                path += f":{sbin}"
        return {"PATH": path, "HOME": str(self.root)}

    def _ensure_pki(self) -> None:
        d = self.pki_dir
        if not (d / "front-proxy-ca.crt").exists():
            # The aggregation layer's own CA (hosts made before it get it at their next start).
            front_proxy_ca = certs.new_ca("vnest-host-front-proxy-ca")
            front_proxy_ca.write(d, "front-proxy-ca")
            certs.issue(front_proxy_ca, "front-proxy-client", client=True).write(d, "front-proxy-client")
        if (d / "ca.crt").exists():
            return
        ca = certs.new_ca("vnest-host-ca")
        ca.write(d, "ca")
        certs.issue(
            ca,
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            # The hub address: real nodes' kubelets and kube-proxies dial it.
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP, netns.HUB_IP),
            server=True,
        ).write(d, "apiserver")
        certs.issue(
            ca, "kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
        ).write(d, "apiserver-kubelet-client")
        certs.issue(ca, "kwok", dns_names=("localhost",), ips=("127.0.0.1",), server=True).write(
            d, "kwok-serving"
        )
        sa = certs.new_key()
        certs.write_private(d / "sa.key", certs.key_pem(sa))
        certs.write_private(d / "sa.pub", certs.public_key_pem(sa))
        # One client identity per component, as kubeadm gives them.
        clients = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("kwok-controller", ("system:masters",)),
        }
        for stem, (cn, orgs) in clients.items():
            certs.issue(ca, cn, organizations=orgs, client=True).write(d, stem)

    def _component_kubeconfig(self, stem: str, port: int) -> Path:
        ca = (self.pki_dir / "ca.crt").read_bytes()
        client = certs.CertKey.read(self.pki_dir, stem)
        config = kubeconfig.build(CONTEXT, f"https://127.0.0.1:{port}", ca, client.cert_pem, client.key_pem)
        path = self.admin_kubeconfig if stem == "admin" else self.root / f"{stem}.kubeconfig"
        kubeconfig.save(path, config)
        return path

    def _start_all(
        self, bins: binaries.Binaries, state: HostState, progress: log.Progress, wait: float
    ) -> None:
        p = self.pki_dir
        ports = state.ports
        real = state.runtime == "containerd"
        env = self._env()
        self.procs.start(
            "etcd",
            [
                bins.etcd,
                "--name=host",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports.etcd}",
                f"--advertise-client-urls=http://127.0.0.1:{ports.etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                f"--initial-cluster=host=http://127.0.0.1:{ports.etcd_peer}",
                # A throwaway dev host: fsync costs more than the data is worth here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            env=env,
        )
        self._wait_http("etcd", f"http://127.0.0.1:{ports.etcd}/health", wait, progress)

        self.procs.start(
            "kube-apiserver",
            [
                *commands.kube_apiserver(
                    bins.kube_apiserver,
                    p,
                    bind_address="127.0.0.1",
                    # Real nodes' pods reach the API server at the hub (default/kubernetes).
                    advertise_address=netns.HUB_IP if real else "127.0.0.1",
                    secure_port=ports.apiserver,
                    etcd_servers=f"http://127.0.0.1:{ports.etcd}",
                    service_cidr=SERVICE_CIDR,
                    cluster_domain=CLUSTER_DOMAIN,
                    authorization_mode="Node,RBAC" if real else "RBAC",
                    # KWOK: loopback may not be an Endpoints address, so nothing would
                    # reconcile default/kubernetes; no KWOK pod dials it anyway.
                    reconcile_kubernetes_endpoints=real,
                ),
                *(self._real_apiserver_flags() if real else []),
            ],
            env=env,
        )
        self._wait_http(
            "kube-apiserver", f"https://127.0.0.1:{ports.apiserver}/readyz", wait, progress, client=True
        )
        self._component_kubeconfig("admin", ports.apiserver)
        self.procs.start(
            "kube-controller-manager",
            [
                *commands.kube_controller_manager(
                    bins.kube_controller_manager,
                    p,
                    kubeconfig=self._component_kubeconfig("controller-manager", ports.apiserver),
                    secure_port=ports.controller_manager,
                    service_cidr=SERVICE_CIDR,
                ),
                f"--cert-dir={self.root / 'controller-manager-certs'}",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={POD_CIDR}",
                "--node-cidr-mask-size=24",
                f"--cluster-name={CONTEXT}",
            ],
            env=env,
        )
        self.procs.start(
            "kube-scheduler",
            [
                *commands.kube_scheduler(
                    bins.kube_scheduler,
                    kubeconfig=self._component_kubeconfig("scheduler", ports.apiserver),
                    secure_port=ports.scheduler,
                ),
                f"--cert-dir={self.root / 'scheduler-certs'}",
            ],
            env=env,
        )
        if not real:
            self._start_kwok(bins, ports, env)
        self._wait_http(
            "kube-controller-manager", f"https://127.0.0.1:{ports.controller_manager}/healthz", wait, progress
        )
        self._wait_http("kube-scheduler", f"https://127.0.0.1:{ports.scheduler}/healthz", wait, progress)
        if not real:
            self._wait_http("kwok", f"https://127.0.0.1:{ports.kwok}/healthz", wait, progress)
        (self.root / "Corefile").write_text(corefile(ports.dns, self.admin_kubeconfig))
        self.procs.start("coredns", [bins.coredns, "-conf", self.root / "Corefile"], env=env, cwd=self.root)
        self._wait_dns(ports.dns, wait, progress)
        # Pods can be created once the default ServiceAccount exists in `default`.
        wait_until(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False),
            wait,
            "the default ServiceAccount",
            interval=0.5,
            on_wait=lambda: self._check_alive(progress, "the default ServiceAccount"),
        )
        if real:
            from vnest.host import storage

            self.kubectl("apply", "-f", "-", input=json.dumps(storage.storage_class()))
            self.procs.start(
                "provisioner",
                [
                    sys.executable,
                    "-m",
                    "vnest",
                    "host",
                    "provision",
                    self.admin_kubeconfig,
                    self.root / "nodes",
                ],
                env=env,
            )

    def _real_apiserver_flags(self) -> list[str]:
        """The API server reaches the nodes and pods through the forwarder's egress proxy."""
        egress = self.root / "egress-selector.yaml"
        egress.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.k8s.io/v1beta1",
                    "kind": "EgressSelectorConfiguration",
                    "egressSelections": [
                        {
                            "name": "cluster",
                            "connection": {
                                "proxyProtocol": "HTTPConnect",
                                "transport": {"uds": {"udsName": str(self.egress_socket)}},
                            },
                        }
                    ],
                }
            )
        )
        return [
            "--enable-admission-plugins=NodeRestriction",
            f"--egress-selector-config-file={egress}",
            # Webhooks and aggregated APIs by their endpoints, which the egress proxy reaches;
            # the hub has no kube-proxy to route a ClusterIP.
            "--enable-aggregator-routing=true",
        ]

    def _start_kwok(self, bins: binaries.Binaries, ports: Ports, env: dict[str, str]) -> None:
        p = self.pki_dir
        kwok_dir = self.root / "kwok"
        config = kwok.render_config(
            exec_dir=self._kwok_exec_dir(),
            stages=bins.kwok_stages,
            folder=kwok_dir,
            node_port=ports.kwok,
            tls_cert=p / "kwok-serving.crt",
            tls_key=p / "kwok-serving.key",
            pod_cidr=POD_CIDR,
        )
        (kwok_dir / "kwok.yaml").write_text(config)
        self.procs.start(
            "kwok",
            [
                bins.kwok,
                f"--kubeconfig={self._component_kubeconfig('kwok', ports.apiserver)}",
                f"--config={kwok_dir / 'kwok.yaml'}",
            ],
            env=env,
        )

    def _kwok_exec_dir(self) -> Path:
        """A fresh scratch folder for KWOK's exec, owned by the user it runs commands as. It is
        under /tmp because nobody cannot reach into the host's folder (0700, often under /root);
        its path is kept in the host's folder so that `down` removes it."""
        self._remove_kwok_exec_dir()
        folder = Path(tempfile.mkdtemp(prefix="vnest-kwok-exec-"))
        if kwok.exec_uid() is not None:
            os.chown(folder, kwok.EXEC_UID, kwok.EXEC_UID)
        (self.root / "kwok").mkdir(parents=True, exist_ok=True)
        (self.root / "kwok" / "exec-dir").write_text(f"{folder}\n")
        return folder

    def _remove_kwok_exec_dir(self) -> None:
        try:
            recorded = Path((self.root / "kwok" / "exec-dir").read_text().strip())
        except OSError:
            return
        if recorded.name.startswith("vnest-kwok-exec-"):
            shutil.rmtree(recorded, ignore_errors=True)

    def _check_alive(self, progress: log.Progress, waiting_for: str) -> None:
        for name in self.procs.names():
            if self.procs.running(name) is None:
                raise VnestError(
                    f"{name} exited while starting the local host:\n{self.procs.tail(name)}",
                    hint=f"full log: {self.procs.log_file(name)}",
                )
        progress.update(f"waiting for {waiting_for}")

    def _ssl_context(self, client: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        if client:
            ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        else:
            # Controller manager and scheduler serve self-signed certificates of their own.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _get_ok(self, url: str, client: bool = False) -> bool:
        verify: ssl.SSLContext | bool = self._ssl_context(client) if url.startswith("https") else True
        try:
            return httpx.get(url, verify=verify, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _apiserver_ready(self, ports: Ports) -> bool:
        return self._get_ok(f"https://127.0.0.1:{ports.apiserver}/readyz", client=True)

    def _wait_http(
        self, name: str, url: str, wait: float, progress: log.Progress, client: bool = False
    ) -> None:
        _log.debug("waiting for health", component=name, url=url)
        wait_until(
            lambda: self._get_ok(url, client),
            wait,
            f"{name} to report healthy at {url}",
            on_wait=lambda: self._check_alive(progress, name),
        )
        _log.info(f"{name} is ready")

    def _wait_dns(self, port: int, wait: float, progress: log.Progress) -> None:
        name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        _log.debug("waiting for an answer", component="coredns", name=name, port=port)
        wait_until(
            lambda: KUBERNETES_SERVICE_IP in resolve(name, port),
            wait,
            f"coredns to resolve {name} to {KUBERNETES_SERVICE_IP} at 127.0.0.1:{port}",
            on_wait=lambda: self._check_alive(progress, "coredns"),
        )
        _log.info("coredns is ready")

    def _ensure_dns_service(self, state: HostState) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(dns_service_manifest(state.ports.dns)))
        if state.runtime == "containerd":
            # Pods reach CoreDNS at the hub, through the forwarder.
            self.kubectl("apply", "-f", "-", input=json.dumps(hub_dns_endpoints()))

    def _ensure_nodes(self, state: HostState, wait: float) -> None:
        if state.runtime == "containerd":
            self._ensure_real_nodes(state, wait)
            return
        count = state.nodes
        wanted = node_names(count)
        existing = {n["name"] for n in self.nodes()}
        for name in wanted:
            if name not in existing:
                self.kubectl("apply", "-f", "-", input=json.dumps(kwok.node_manifest(name)))
        extra = sorted(existing - set(wanted))
        if extra:
            self.kubectl("delete", "node", *extra)
        self._wait_ready_nodes(wanted, wait, interval=0.3)

    def _ensure_real_nodes(self, state: HostState, wait: float) -> None:
        wanted = node_names(state.nodes)
        existing = {n["name"] for n in self.nodes()}
        ca = certs.CertKey.read(self.pki_dir, "ca")
        kube = binaries.ensure().kube
        for node in self._real_nodes(state):
            spec = node.spec
            if spec.name not in wanted:
                _log.info(f"removing node {spec.name}")
                self._remove_real_node(node)
                if spec.name in existing:
                    self.kubectl("delete", "node", spec.name, "--wait=false")
                continue
            netns.ensure_node(spec.prefix, spec.name, spec.index, spec.pod_cidr)
            if spec.name not in existing:
                self.kubectl("apply", "-f", "-", input=json.dumps(spec.node_manifest()))
            node.write_files(self.pki_dir, ca)
            node.start(kube, self._env())
        self._wait_ready_nodes(wanted, wait, interval=0.5)

    def _wait_ready_nodes(self, wanted: list[str], wait: float, interval: float) -> None:
        count = len(wanted)
        with log.step(_log, f"waiting for {count} Ready node(s)") as progress:
            wait_until(
                lambda: sum(1 for n in self.nodes() if n["ready"] and n["name"] in wanted) == count,
                wait,
                f"{count} Ready nodes",
                interval=interval,
                on_wait=lambda: self._check_alive(progress, "nodes to be Ready"),
            )

    def _remove_real_node(self, node: real_nodes.RealNode) -> list[str]:
        left = node.stop()
        netns.delete(node.spec.netns)
        shutil.rmtree(node.spec.folder, ignore_errors=True)
        return left

    def _merge_kubeconfig(self, state: HostState) -> None:
        path = Path(state.kubeconfig)
        user = kubeconfig.load(path)
        kubeconfig.merge_into(user, kubeconfig.load(self.admin_kubeconfig))
        user["current-context"] = CONTEXT
        kubeconfig.save(path, user)
        _log.info(f"switched the current kube context to {CONTEXT!r}", kubeconfig=str(path))

    # ---- down ------------------------------------------------------------

    def _stop_components(self, state: HostState | None) -> list[str]:
        stopped = []
        for name in reversed(components(state.runtime) if state else COMPONENTS):
            if self.procs.stop(name):
                stopped.append(name)
        return stopped

    def _stop_everything(self, state: HostState | None) -> tuple[list[str], list[str]]:
        """Stops nodes and servers; returns what stopped and what could not be cleaned up."""
        left: list[str] = []
        stopped: list[str] = []
        if state is not None and state.runtime == "containerd":
            for node in self._real_nodes(state):
                if node.running():
                    stopped.append(node.spec.name)
                left += node.stop()
        stopped += self._stop_components(state)
        if state is not None and state.runtime == "containerd":
            prefix = netns.prefix_for(state.ports.apiserver)
            for name in netns.existing(prefix):
                netns.delete(name)
            shutil.rmtree(real_nodes.RUN_ROOT / prefix, ignore_errors=True)
            with contextlib.suppress(OSError):
                real_nodes.RUN_ROOT.rmdir()  # only when no other local host uses it
        return stopped, left

    def _stop_virtual_clusters(self) -> list[str]:
        """Process-driver control planes and port-forwards of this VNEST_HOME: their host is about to go."""
        from vnest.drivers.kubernetes import PROXY

        stopped = []
        for folder in sorted((self.root.parent / "clusters").glob("*/*")):
            ProcessDir(folder).stop(PROXY)
            if ProcessDir(folder).stop("controlplane", timeout=30):
                stopped.append(f"{folder.parent.name}/{folder.name}")
        return stopped

    def down(self, keep_data: bool = False) -> None:
        state = self.state()
        # Cluster API's local controllers first: the provider would start control planes again.
        from vnest.integrations.capi import local as capi_local

        capi_local.stop(self.root.parent / "capi" / "local", state.ports.apiserver if state else None)
        for name in self._stop_virtual_clusters():
            _log.info(f"stopped virtual cluster {name} (its host is going down)")
        stopped, left = self._stop_everything(state)
        if state is not None:
            for name, port in state.ports.named().items():
                wait_until(functools.partial(_port_free, port), 10, f"{name} to free port {port}")
            dns_port = state.ports.dns
            wait_until(lambda: not udp_port_in_use(dns_port), 10, f"coredns to free UDP port {dns_port}")
            path = Path(state.kubeconfig)
            if path.exists():
                user = kubeconfig.load(path)
                kubeconfig.remove_context(user, CONTEXT)
                kubeconfig.save(path, user)
        self._remove_kwok_exec_dir()
        if not keep_data and self.root.exists():
            shutil.rmtree(self.root)
        if left:
            raise VnestError(
                "the local host is down, but some of what its nodes made is still there:\n  "
                + "\n  ".join(left)
            )
        if stopped or state is not None:
            _log.done("the local host is down", stopped=",".join(stopped) or "nothing")
        else:
            _log.info("no local host was running")
