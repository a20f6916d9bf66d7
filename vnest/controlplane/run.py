"""`vnest controlplane run`: the one entrypoint of a virtual control plane.

The same code runs as the syncer container of the StatefulSet pod (kubernetes
driver) and as a local process (process driver). It starts the datastore,
kube-apiserver, kube-controller-manager and optionally kube-scheduler, keeps
them running (vnest.controlplane.supervisor), publishes the admin kubeconfig
to the host, and then runs the syncer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import importlib
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

from vnest import __version__, binaries, kubeconfig, log, naming
from vnest.config import load_config
from vnest.config.models import K8sDistro
from vnest.controlplane import commands, pki
from vnest.controlplane.supervisor import Child, Supervisor, TaskChild, Unrecoverable
from vnest.errors import VnestError
from vnest.kube.client import ApiError, KubeClient
from vnest.procs import free_port

_log = log.get("controlplane")

# Controllers a virtual cluster must not run, as in vCluster: its nodes,
# volumes and load balancers belong to the host, which runs these itself.
DISABLED_CONTROLLERS = (
    "node-ipam-controller",  # pod CIDRs come from the host's nodes
    "node-lifecycle-controller",  # the syncer keeps node status; evicting would fight the host
    "persistentvolume-binder-controller",  # claims bind on the host and sync back
    "persistentvolume-attach-detach-controller",  # volumes attach on the host
    "persistentvolume-expander-controller",
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",  # load balancers are the host's
    "ttl-controller",  # annotates nodes for kubelets that do not exist here
)
# Go garbage collection per server (GOGC, GOMEMLIMIT in MiB); see commands.go_env.
GO_MEMORY: dict[str, tuple[int, int | None]] = {
    "kube-apiserver": (50, None),
    "kube-controller-manager": (50, None),
    "kube-scheduler": (50, None),
    "kine": (50, None),
    "etcd": (50, None),
}
# The embedded datastore's SQLite: WAL lets the API server's many readers go on while kine writes;
# synchronous=NORMAL syncs the WAL to disk at checkpoints instead of at every commit. With FULL (the
# default) every write of the virtual API server waited on an fsync, one at a time: 100 pods POSTed
# by 32 clients took 3.46 s instead of 0.34 s, and a 500-pod burst 15.1 s instead of 8.9 s
# (bench/sync.py). What NORMAL gives up, as SQLite documents: after a power loss or an operating
# system crash the last transactions may be rolled back (never a corrupt database); a crash of kine
# or of the control plane's process loses nothing. Who wants every write on disk first uses
# `controlPlane.backingStore.etcd.embedded.enabled: true`.
SQLITE_OPTIONS = "_journal=WAL&cache=shared&_busy_timeout=30000&_synchronous=NORMAL"
READY_TIMEOUT = 120.0


@dataclass
class Options:
    name: str
    namespace: str
    config: Path
    data_dir: Path
    bin_dir: Path | None
    listen_address: str
    api_port: int
    host_kubeconfig: Path | None
    advertise_address: str
    # The server address written into the published admin kubeconfig.
    public_server: str
    # The host cluster's DNS (ip[:port]) for networking.advanced.fallbackHostCluster; in a pod,
    # None means the pod's own nameserver, which is the host cluster's DNS.
    host_dns: str | None = None


def resolv_conf_nameserver(path: Path = Path("/etc/resolv.conf")) -> str | None:
    """The first nameserver of a resolv.conf, or None."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            return fields[1]
    return None


async def detect_service_cidr(host: KubeClient, namespace: str) -> str:
    """The host's Service CIDR, read from the error a dry-run Service with an impossible IP gets.

    The virtual API server must hand out ClusterIPs from the host's range, so
    that a virtual Service can carry the IP of its host copy. No API tells the
    range; the validation error does, as vCluster found too.
    """
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"generateName": "vnest-cidr-probe-"},
        "spec": {"clusterIP": "4.4.4.4", "ports": [{"port": 80}]},
    }
    try:
        await host.request(
            "POST", f"/api/v1/namespaces/{namespace}/services", params={"dryRun": "All"}, body=probe
        )
    except ApiError as e:
        match = re.search(r"valid IPs is ([0-9a-fA-F.:/]+)", str(e))
        if match:
            return match.group(1).split(",")[0]
    raise VnestError("could not learn the host's service CIDR from the API server")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def load_or_create_pki(host: KubeClient, opts: Options, names: pki.ServingNames) -> dict[str, bytes]:
    secret_name = naming.certs_secret(opts.name)
    secret = await host.get_or_none("Secret", secret_name, opts.namespace)
    if (problem := naming.foreign_control_plane_object(secret, opts.name, "certs")) is not None:
        raise VnestError(problem)  # never a CA someone else planted
    if secret is not None:
        files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        completed = pki.complete(files)
        if pki.covers(files, names) and not completed:
            return files
        if not pki.covers(files, names):
            _log.info("serving names changed; issuing a new API server certificate")
            files.update(pki.issue_apiserver(files, names))
    else:
        _log.info("generating the virtual cluster's PKI")
        files = pki.generate(names)
    await host.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": opts.namespace,
                "labels": naming.control_plane_labels(opts.name, "certs"),
            },
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in files.items()},
        }
    )
    return files


class ControlPlane:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.cfg = load_config([opts.config], [])
        self.bins = binaries.Binaries(opts.bin_dir) if opts.bin_dir else binaries.ensure()
        self.pki_dir = opts.data_dir / "pki"
        self.logs = opts.data_dir / "logs"
        self.status_file = opts.data_dir / "status.json"
        self.supervisor = Supervisor()
        self.api_port = opts.api_port or free_port()
        self.local_server = f"https://127.0.0.1:{self.api_port}"
        self.dns_port: int | None = None
        self.metrics_port: int | None = None
        self._syncer_modules: asyncio.Future[ModuleType] | None = None  # loading (run)

    @property
    def cluster_domain(self) -> str:
        return self.cfg.networking.advanced.cluster_domain

    @property
    def _k8s(self) -> K8sDistro:
        return self.cfg.control_plane.distro.k8s

    # ---- status file: how the process driver learns progress -------------

    def write_status(self, phase: str, **extra: Any) -> None:
        status = {"phase": phase, "pid": os.getpid(), "apiServer": self.local_server, "time": time.time()}
        status.update(extra)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status) + "\n")
        tmp.replace(self.status_file)

    # ---- start-up -----------------------------------------------------------

    async def run(self) -> None:
        self.opts.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_status("Starting")
        # The syncer's modules (0.17 s) load in a thread while the datastore and API server start,
        # not on the way from a ready API server to a ready cluster (bench/create.py).
        self._syncer_modules = asyncio.ensure_future(
            asyncio.to_thread(importlib.import_module, "vnest.syncer.run")
        )
        host = KubeClient.from_kubeconfig(self.opts.host_kubeconfig)
        try:
            service_cidr = await detect_service_cidr(host, self.opts.namespace)
            kubernetes_ip = str(next(ipaddress.ip_network(service_cidr, strict=False).hosts()))
            host_service = await host.get_or_none(
                "Service", naming.service_name(self.opts.name), self.opts.namespace
            )
            host_ip = (host_service or {}).get("spec", {}).get("clusterIP")
            names = pki.serving_names(
                self.opts.name,
                self.opts.namespace,
                self.cluster_domain,
                host_ip,
                kubernetes_ip,
                self.cfg.control_plane.proxy.extra_sans,
            )
            files = await load_or_create_pki(host, self.opts, names)
            pki.write(files, self.pki_dir)
            await self._start_components(service_cidr)
            await self._publish_kubeconfig(host)
            self.write_status(
                "Running", serviceCIDR=service_cidr, dnsPort=self.dns_port, metricsPort=self.metrics_port
            )
            _log.done("control plane ready", api=self.local_server)
            await asyncio.gather(self.supervisor.watch(), self._keep_host_objects(host))
        finally:
            await host.close()

    def _go_child(self, name: str, argv: list[Any]) -> Child:
        """A Go server, logging to logs/NAME.log, its garbage collector tuned (GO_MEMORY)."""
        gogc, limit = GO_MEMORY[name]
        return Child(name, argv, self.logs / f"{name}.log", env=commands.go_env(gogc, limit, os.environ))

    async def _start_components(self, service_cidr: str) -> None:
        sup = self.supervisor
        etcd_servers = await self._start_datastore()
        await sup.start(self._go_child("kube-apiserver", self._apiserver_argv(etcd_servers, service_cidr)))
        await self._wait(self._apiserver_ready, "kube-apiserver to be ready")
        for component in ("controller-manager", "scheduler", "admin"):
            self._write_kubeconfig(component)
        await sup.start(
            self._go_child("kube-controller-manager", self._controller_manager_argv(service_cidr))
        )
        if self.cfg.scheduler_enabled:
            await sup.start(self._go_child("kube-scheduler", self._scheduler_argv()))
        # The syncer needs only the API server: it starts (and syncs its caches) while the controller
        # manager starts its controllers, which is working once it made the default ServiceAccount.
        ready = await self._start_syncer()
        async with self.virtual_client() as virtual:
            await self._wait(
                lambda: self._exists(virtual, "ServiceAccount", "default", "default"),
                "the controller manager to create the default ServiceAccount",
            )
        await self._wait(ready.exists, "the syncer to sync its caches")
        status = json.loads(ready.read_text())
        self.dns_port, self.metrics_port = status.get("dnsPort"), status.get("metricsPort")

    async def _start_syncer(self) -> Path:
        """Starts the syncer, a task of this process; the file it writes once its caches synced."""
        if self._syncer_modules is not None:
            await self._syncer_modules
        from vnest.syncer import run as syncer

        self._write_kubeconfig("syncer")
        ready = self.opts.data_dir / "syncer-ready.json"
        ready.unlink(missing_ok=True)
        opts = syncer.Options(**self._syncer_options(ready))
        await self.supervisor.start(TaskChild("syncer", lambda: syncer.serve(opts), self.logs / "syncer.log"))
        return ready

    def _syncer_options(self, ready: Path) -> dict[str, Any]:
        """The syncer's settings (vnest.syncer.run.Options), fixed for the life of this process.

        VNEST_HOST_QPS, VNEST_HOST_BURST and VNEST_DNS_FALLBACK are read as `vnest syncer run` reads them.
        """
        from vnest.syncer.run import HOST_BURST, HOST_QPS

        env = os.environ
        # In a pod, the chart's `dns` and `metrics` ports; on this machine, free ones picked here
        # (many clusters share it), so that a restarted syncer serves on the same ports.
        in_pod = self.opts.advertise_address != "127.0.0.1"
        level = self.cfg.policies.pod_security_standard
        return {
            "name": self.opts.name,
            "namespace": self.opts.namespace,
            "virtual_kubeconfig": self._kubeconfig_path("syncer"),
            "host_kubeconfig": self.opts.host_kubeconfig,
            "config": self.cfg,
            "ready_file": ready,
            "pki_dir": self.pki_dir,
            "kubelet_address": self.opts.advertise_address,
            "host_qps": float(env.get("VNEST_HOST_QPS", HOST_QPS)),
            "host_burst": int(env.get("VNEST_HOST_BURST", HOST_BURST)),
            "dns_address": self.opts.advertise_address,
            "dns_port": naming.DNS_POD_PORT if in_pod else free_port(),
            "dns_fallback": self.opts.host_dns
            or (resolv_conf_nameserver() if self.opts.host_kubeconfig is None else None)
            or env.get("VNEST_DNS_FALLBACK"),
            "metrics": (self.opts.advertise_address, naming.METRICS_POD_PORT if in_pod else free_port()),
            "pod_security_check": None if level == "privileged" else self.bins.pod_security_check,
        }

    async def _start_datastore(self) -> str:
        store = self.cfg.datastore
        backing = self.cfg.control_plane.backing_store
        data = self.opts.data_dir / "datastore"
        data.mkdir(parents=True, exist_ok=True)
        if store in ("embedded-database", "external-database"):
            sock = self.opts.data_dir / "kine.sock"
            sock.unlink(missing_ok=True)
            endpoint = (
                backing.database.external.data_source
                if store == "external-database"
                else f"sqlite://{data / 'state.db'}?{SQLITE_OPTIONS}"
            )
            await self.supervisor.start(
                self._go_child(
                    "kine",
                    [
                        self.bins.kine,
                        f"--endpoint={endpoint}",
                        f"--listen-address=unix://{sock}",
                        "--metrics-bind-address=0",  # its default is :8080 on every interface
                    ],
                )
            )
            await self._wait(lambda: _unix_socket_accepts(sock), "kine to listen")
            return f"unix://{sock}"
        if store == "embedded-etcd":
            # TLS with client certificates on both of its ports: anything else on this machine (or
            # in the pod's network) could otherwise read and write the whole datastore.
            client, peer = free_port(), free_port()
            p = self.pki_dir
            tls = [f"--cert-file={p / 'etcd-server.crt'}", f"--key-file={p / 'etcd-server.key'}"]
            tls += [f"--trusted-ca-file={p / 'etcd-ca.crt'}", "--client-cert-auth"]
            tls += [f"--peer-cert-file={p / 'etcd-server.crt'}", f"--peer-key-file={p / 'etcd-server.key'}"]
            tls += [f"--peer-trusted-ca-file={p / 'etcd-ca.crt'}", "--peer-client-cert-auth"]
            await self.supervisor.start(
                self._go_child(
                    "etcd",
                    [
                        self.bins.etcd,
                        f"--name={self.opts.name}",
                        f"--data-dir={data / 'etcd'}",
                        f"--listen-client-urls=https://127.0.0.1:{client}",
                        f"--advertise-client-urls=https://127.0.0.1:{client}",
                        f"--listen-peer-urls=https://127.0.0.1:{peer}",
                        f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
                        f"--initial-cluster={self.opts.name}=https://127.0.0.1:{peer}",
                        *tls,
                        "--log-level=warn",
                    ],
                )
            )
            url = f"https://127.0.0.1:{client}"
            verify = ssl.create_default_context(cafile=str(p / "etcd-ca.crt"))
            verify.load_cert_chain(p / "apiserver-etcd-client.crt", p / "apiserver-etcd-client.key")
            await self._wait(lambda: _http_ok(f"{url}/health", verify), "etcd to be healthy")
            return url
        return backing.etcd.external.endpoint

    def _apiserver_argv(self, etcd_servers: str, service_cidr: str) -> list[str]:
        p = self.pki_dir
        argv = commands.kube_apiserver(
            self.bins.kube_apiserver,
            p,
            bind_address=self.opts.listen_address,
            advertise_address=self.opts.advertise_address,
            secure_port=self.api_port,
            etcd_servers=etcd_servers,
            service_cidr=service_cidr,
            cluster_domain=self.cluster_domain,
            authorization_mode="RBAC",
            # The syncer points default/kubernetes at the host Service instead.
            reconcile_kubernetes_endpoints=False,
        )
        # The service-account keys where in-pod clients find the issuer (a name in the serving
        # certificate, reached through default/kubernetes), not upstream's default, the advertise
        # address: a pod IP the certificate does not name (OIDC discovery failed to verify).
        argv.append(
            f"--service-account-jwks-uri=https://kubernetes.default.svc.{self.cluster_domain}/openid/v1/jwks"
        )
        # Every API group upstream serves by default, Dynamic Resource Allocation's included: it cost
        # 3.5 MiB of live heap to leave off, and upstream's conformance specs use its API.
        level = self.cfg.policies.pod_security_standard
        if level != "privileged":
            argv.append(f"--admission-control-config-file={self._admission_config(level)}")
        if self.cfg.datastore == "embedded-etcd":
            argv += [
                f"--etcd-cafile={p / 'etcd-ca.crt'}",
                f"--etcd-certfile={p / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={p / 'apiserver-etcd-client.key'}",
            ]
        if self.cfg.datastore == "external-etcd":
            tls = self.cfg.control_plane.backing_store.etcd.external.tls
            argv += [f"--etcd-cafile={tls.ca_file}"] if tls.ca_file else []
            argv += [f"--etcd-certfile={tls.cert_file}"] if tls.cert_file else []
            argv += [f"--etcd-keyfile={tls.key_file}"] if tls.key_file else []
            argv.append(f"--etcd-prefix=/vnest/{self.opts.namespace}/{self.opts.name}")
        return argv + self._k8s.api_server.extra_args

    def _admission_config(self, level: str) -> Path:
        """PodSecurity admission at the cluster's level for every namespace without labels of its own.

        It refuses a violating pod at create, which is how an honest tenant learns early; a
        tenant relabelling its namespace gets past it, not past the syncer's own check
        (vnest.syncer.podsecurity), which is what keeps such pods off the host.
        """
        path = self.opts.data_dir / "admission.yaml"
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {
                    "name": "PodSecurity",
                    "configuration": {
                        "apiVersion": "pod-security.admission.config.k8s.io/v1",
                        "kind": "PodSecurityConfiguration",
                        "defaults": {
                            mode: value
                            for m in ("enforce", "audit", "warn")
                            for mode, value in ((m, level), (f"{m}-version", "latest"))
                        },
                        "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": []},
                    },
                }
            ],
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def _kubeconfig_path(self, component: str) -> Path:
        return self.opts.data_dir / f"{component}.kubeconfig"

    def _write_kubeconfig(self, component: str) -> None:
        config = kubeconfig.build(
            "vnest",
            self.local_server,
            (self.pki_dir / "ca.crt").read_bytes(),
            (self.pki_dir / f"{component}.crt").read_bytes(),
            (self.pki_dir / f"{component}.key").read_bytes(),
        )
        kubeconfig.save(self._kubeconfig_path(component), config)

    def _controller_manager_argv(self, service_cidr: str) -> list[str]:
        p = self.pki_dir
        return [
            *commands.kube_controller_manager(
                self.bins.kube_controller_manager,
                p,
                kubeconfig=self._kubeconfig_path("controller-manager"),
                secure_port=0,  # no serving: readiness is judged from what it does
                service_cidr=service_cidr,
            ),
            f"--controllers=*,{','.join('-' + c for c in DISABLED_CONTROLLERS)}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            *self._k8s.controller_manager.extra_args,
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            *commands.kube_scheduler(
                self.bins.kube_scheduler, kubeconfig=self._kubeconfig_path("scheduler"), secure_port=0
            ),
            *self._k8s.scheduler.extra_args,
        ]

    def virtual_client(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self._kubeconfig_path("admin"))

    async def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        try:
            async with httpx.AsyncClient(verify=ctx, timeout=2.0) as http:
                return (await http.get(f"{self.local_server}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    async def _exists(client: KubeClient, kind: str, name: str, namespace: str) -> bool:
        try:
            return await client.get_or_none(kind, name, namespace) is not None
        except ApiError:
            return False

    async def _wait(self, check: Any, what: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.supervisor.check_alive()
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise Unrecoverable(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.2)

    # ---- host objects ------------------------------------------------------

    def _admin_kubeconfig(self) -> dict[str, Any]:
        return kubeconfig.build(
            "vnest",
            self.opts.public_server or self.local_server,
            (self.pki_dir / "ca.crt").read_bytes(),
            (self.pki_dir / "admin.crt").read_bytes(),
            (self.pki_dir / "admin.key").read_bytes(),
        )

    async def _publish_kubeconfig(self, host: KubeClient) -> None:
        config = yaml.safe_dump(self._admin_kubeconfig(), sort_keys=False).encode()
        await host.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": naming.kubeconfig_secret(self.opts.name),
                    "namespace": self.opts.namespace,
                    "labels": naming.control_plane_labels(self.opts.name, "kubeconfig"),
                    "annotations": {naming.ANNOTATION_VNEST_VERSION: __version__},
                },
                "type": "Opaque",
                "data": {
                    "config": _b64(config),
                    "certificate-authority": _b64((self.pki_dir / "ca.crt").read_bytes()),
                    "client-certificate": _b64((self.pki_dir / "admin.crt").read_bytes()),
                    "client-key": _b64((self.pki_dir / "admin.key").read_bytes()),
                },
            }
        )

    async def _keep_host_objects(self, host: KubeClient, every: float = 30.0) -> None:
        """The syncer's first duty: the control plane's own host objects stay in place."""
        while True:
            await asyncio.sleep(every)
            try:
                secret = naming.kubeconfig_secret(self.opts.name)
                if await host.get_or_none("Secret", secret, self.opts.namespace) is None:
                    _log.warning("the kubeconfig Secret was deleted; publishing it again", secret=secret)
                    await self._publish_kubeconfig(host)
            except ApiError as e:
                _log.warning("cannot check the control plane's host objects", error=str(e))


def _unix_socket_accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _http_ok(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(url, timeout=2.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _memory_report(path: Path, top: int = 40) -> Callable[[], None]:
    """With PYTHONTRACEMALLOC=N in its environment, SIGUSR2 makes the process write where its Python
    memory grew since the first SIGUSR2 (by line, N frames deep) to `path`: for soaks (bench/soak.py)."""
    first: list[tracemalloc.Snapshot] = []

    def report() -> None:
        snapshot = tracemalloc.take_snapshot()
        if not first:
            first.append(snapshot)
        traced, peak = tracemalloc.get_traced_memory()
        with path.open("a") as out:
            out.write(
                f"--- {time.strftime('%H:%M:%S')} traced {traced / 2**20:.1f} MiB (peak {peak / 2**20:.1f})\n"
            )
            for stat in snapshot.compare_to(first[0], "traceback")[:top]:
                out.write(f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks\n")
                out.writelines(f"    {line}\n" for line in stat.traceback.format()[-6:])

    return report


TRIM_SECONDS = 60.0


async def _trim_heap(every: float = TRIM_SECONDS) -> None:
    """Hands the C heap's free pages back to the system every `every` seconds.

    Under steady churn the syncer's RSS grew ~29 MiB an hour in glibc's `[heap]` while Python's
    own arenas stayed flat (README, Performance): free C-heap pages between live blocks, which
    glibc keeps mapped unless asked. `malloc_trim` returns every free page (madvise), not only
    the heap's top; the soak (bench/soak.py) shows what it changes. A no-op off glibc."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    while True:
        await asyncio.sleep(every)
        trim(0)


def main(opts: Options) -> int:
    """Runs until SIGTERM/SIGINT (exit 0) or until the control plane cannot recover (exit 1)."""
    plane = ControlPlane(opts)

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if tracemalloc.is_tracing():
            loop.add_signal_handler(signal.SIGUSR2, _memory_report(plane.logs / "tracemalloc.log"))
        task = asyncio.create_task(plane.run())
        stopper = asyncio.create_task(stop.wait())
        trimmer = asyncio.create_task(_trim_heap())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        trimmer.cancel()
        code = 0
        if task in done:
            exc = task.exception()
            if exc is not None:
                _log.error(f"the control plane cannot go on: {exc}")
                with contextlib.suppress(Exception):
                    plane.write_status("Failed", error=str(exc))
                code = 1
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        stopper.cancel()
        await plane.supervisor.stop_all()
        if code == 0:
            plane.write_status("Stopped")
        return code

    return asyncio.run(runner())
