"""The syncer: a task of the control plane's process, or `vnest syncer run` on its own.

The control plane runs it in its own process and event loop (`serve`, as a
vnest.controlplane.supervisor.TaskChild), which spares a second Python
interpreter (about 40 MiB); its supervisor restarts it when it fails, as it
restarts a process, and it still logs to a file of its own. Start-up is a full resync: both sides are listed before any worker runs, then
every key either side knows is reconciled, so whatever changed while the
syncer was down converges without duplicates or leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vnest import log, naming
from vnest.config.models import VClusterConfig
from vnest.dns import DnsIndex, DnsServer, coredns
from vnest.integrations.kubevirt import kinds as kubevirt
from vnest.integrations.kubevirt import subresources
from vnest.integrations.kubevirt.launchers import LauncherPods
from vnest.kube.client import ApiError, HostConnection, KubeClient, Obj
from vnest.syncer import registry
from vnest.syncer.engine import Controller, Handlers, SyncContext
from vnest.syncer.kubelet import KubeletProxy
from vnest.syncer.mappings import ANNOTATION_REFLECTS, LABEL_DNS_SERVICE, annotations_of, uid_matches
from vnest.syncer.metrics import MetricsServer, syncer_text
from vnest.syncer.podsecurity import PodSecurityChecker
from vnest.syncer.resources import customresources
from vnest.syncer.resources.configs import ConfigSyncer
from vnest.syncer.resources.nodes import FakeNodes, HostNodes
from vnest.syncer.resources.pods import PodSyncer

_log = log.get("syncer")

SYNC_TIMEOUT = 120.0
# The host API server is shared by every tenant: the syncer caps its own rate there, as
# client-go clients do, but far above client-go's 5/10 so that on a 1000-pod burst the
# syncer waits on CPU and API latency, never on its own limiter (bench/sync.py shows
# about 3 host requests a pod). The virtual API server is the tenant's own: no cap.
HOST_QPS = 200.0
HOST_BURST = 400


@dataclass(frozen=True)
class KubeletSettings:
    """Where the syncer serves the kubelet API of its nodes (logs, exec) and how it reaches the host's."""

    host: HostConnection
    pki_dir: Path
    address: str


class Syncer:
    def __init__(
        self,
        name: str,
        host_namespace: str,
        virtual: KubeClient,
        host: KubeClient,
        config: VClusterConfig,
        kubelet: KubeletSettings | None = None,
        dns_address: str | None = None,
        dns_port: int = 0,
        dns_fallback: str | None = None,
        metrics: tuple[str, int] | None = None,
        pod_security: PodSecurityChecker | None = None,
    ) -> None:
        self.ctx = SyncContext(name, host_namespace, virtual, host, config)
        self.config = config
        self.kubelet = (
            KubeletProxy(
                self.host_pod_of, host_namespace, kubelet.host, kubelet.pki_dir, address=kubelet.address
            )
            if kubelet is not None
            else None
        )
        self.kubelet_settings = kubelet  # also how KubeVirt's subresources reach the host
        self.kubevirt: subresources.SubresourceServer | None = None
        self.host_dns = dns_fallback
        self.dns: DnsServer | None = None
        dns = config.networking.dns
        if dns_address is not None and dns.mode == "embedded":
            # The embedded DNS answers from the same caches the syncers use.
            index = DnsIndex(config.networking.advanced.cluster_domain)
            self.ctx.informer("virtual", "Service").add_handlers(Handlers.diff(index.on_service))
            self.ctx.informer("virtual", "EndpointSlice").add_handlers(Handlers.diff(index.on_endpointslice))
            self.ctx.informer("virtual", "Pod").add_handlers(Handlers.diff(index.on_pod))
            fallback = dns_fallback if config.networking.advanced.fallback_host_cluster else None
            self.dns = DnsServer(index, listen=dns_address, port=dns_port, fallback=fallback)
        self.nodes = FakeNodes(self.ctx)
        self.host_nodes = HostNodes(self.ctx, self.nodes) if config.sync.from_host.nodes.enabled else None
        deps = registry.Deps(
            self.ctx,
            pod_security,
            nodes=self.host_nodes or self.nodes,
            host_nodes=self.host_nodes,
            node_selector=self.host_nodes.labels if self.host_nodes is not None else {},
        )
        self.deps = deps
        self.syncers: list[Controller] = registry.build(config, deps)
        self.pods = next((s for s in self.syncers if isinstance(s, PodSyncer)), None)
        self.metrics = MetricsServer(self.metrics_text, *metrics) if metrics is not None else None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, ready_file: Path | None = None) -> None:
        self.nodes.version = (await self.ctx.virtual.request("GET", "/version"))["gitVersion"]
        service = await self.ctx.host.get_or_none(
            "Service", naming.service_name(self.ctx.name), self.ctx.host_namespace
        )
        self.ctx.host_service_ip = (service or {}).get("spec", {}).get("clusterIP") or ""
        if self.kubelet is not None:
            self.nodes.kubelet_address = self.kubelet.address
            self.nodes.kubelet_port = await self.kubelet.start()
        # sync.toHost.customResources: each kind's CRD is copied from the host (and Established in the
        # virtual cluster) before its syncer can exist; a kind that cannot sync stops the syncer here.
        self.syncers.extend(await customresources.syncers(self.ctx))
        # integrations.kubeVirt: the same, for KubeVirt's kinds (and their launcher pods).
        self.syncers.extend(
            await kubevirt.syncers(
                self.ctx,
                self.pods,
                [s for s in self.syncers if isinstance(s, ConfigSyncer)],
                self.deps.nodes,
                privileged=self.deps.pod_security is None,
                node_selector=self.deps.node_selector,
            )
        )
        for syncer in self.syncers:
            syncer.setup()
        dns_port = await self._start_dns()
        metrics_port = await self.metrics.start() if self.metrics is not None else None
        informers = [self._task(inf.run(), inf.name) for inf in self.ctx.informers.values()]
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(inf.synced.wait() for inf in self.ctx.informers.values())), SYNC_TIMEOUT
        )
        for syncer in self.syncers:
            syncer.resync()
        if self.host_nodes is None:
            await self.nodes.refresh()  # a restarted syncer may serve its kubelet on another port
        _log.info(
            "caches synced; reconciling",
            took=f"{time.monotonic() - started:.2f}s",
            objects=sum(len(i.store) for i in self.ctx.informers.values()),
        )
        await coredns.reconcile(self.ctx.virtual, self.config, self.host_dns)
        await self._ensure_kube_dns_service()
        # integrations.kubeVirt: subresources.kubevirt.io served and registered (APIService Available);
        # without it, a cluster whose config dropped the integration loses the APIService.
        kube_virt, settings, ctx = self.config.integrations.kube_virt.enabled, self.kubelet_settings, self.ctx
        if kube_virt and settings is not None:
            self.kubevirt = await subresources.start(
                ctx.name, ctx.host_namespace, ctx.virtual, ctx.host, settings.host, settings.pki_dir
            )
        elif not kube_virt:
            await subresources.uninstall(ctx.virtual)
        self.ready.set()
        if ready_file is not None:
            ready = {"ready": True, "time": time.time(), "dnsPort": dns_port, "metricsPort": metrics_port}
            ready_file.write_text(json.dumps(ready) + "\n")
        workers = [self._task(s.run(), s.kind) for s in self.syncers]
        if self.host_nodes is None:
            workers.append(self._task(self.nodes.run(), "fake-nodes"))
        # Any of them failing fails the syncer; close() then stops the others.
        await asyncio.gather(*informers, *workers)

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        """Stops every task and server the syncer started, so that a syncer restarted in the same
        process (vnest.controlplane.supervisor.TaskChild) finds its ports free and no leftovers."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for server in (self.kubelet, self.dns, self.metrics, self.kubevirt):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.close()

    async def _start_dns(self) -> int | None:
        if self.dns is None:
            return None
        try:
            port = await self.dns.start()
        except OSError as e:
            # Syncing goes on without DNS rather than not at all; the log says why.
            _log.error(
                "the embedded DNS server cannot listen",
                address=f"{self.dns.listen}:{self.dns.port}",
                error=str(e),
            )
            self.dns = None
            return None
        _log.info("embedded DNS listening", address=f"{self.dns.listen}:{port}")
        return port

    async def _ensure_kube_dns_service(self) -> None:
        """The virtual cluster's `kube-system/kube-dns`, which synced pods' ClusterFirst DNS points at."""
        if self.dns is None:
            return
        if await self.ctx.virtual.get_or_none("Service", "kube-dns", "kube-system") is not None:
            return
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {
                    "k8s-app": "kube-dns",
                    "kubernetes.io/name": "CoreDNS",
                    LABEL_DNS_SERVICE: "true",
                },
            },
            "spec": {
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": naming.DNS_POD_PORT},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": naming.DNS_POD_PORT},
                ],
            },
        }
        with contextlib.suppress(ApiError):
            await self.ctx.virtual.create(service, namespace="kube-system")

    def metrics_text(self) -> str:
        text = syncer_text(
            [(s.kind, s.reconciles, s.failures, len(s.queue)) for s in self.syncers],
            [(i.name, len(i.store)) for i in self.ctx.informers.values()],
        )
        return text + (self.dns.metrics.prometheus_text() if self.dns is not None else "")

    def host_pod_of(self, namespace: str, name: str) -> Obj | None:
        """The host copy of a virtual pod, if this virtual cluster has that pod and owns that copy."""
        if self.pods is None:
            return None
        vpod, hpod = self.pods.pair(f"{namespace}/{name}")
        if vpod is not None and (reflected := annotations_of(vpod).get(ANNOTATION_REFLECTS)):
            # A KubeVirt launcher pod's reflection: the host launcher pod of this cluster it shows.
            launchers = next((s for s in self.syncers if isinstance(s, LauncherPods)), None)
            return launchers.host.get(f"{self.ctx.host_namespace}/{reflected}") if launchers else None
        if vpod is None or hpod is None or not uid_matches(vpod, hpod):
            return None
        return hpod


@dataclass(frozen=True)
class Options:
    """What a syncer needs: `vnest syncer run`'s flags, or what the control plane hands its task."""

    name: str
    namespace: str
    virtual_kubeconfig: Path
    host_kubeconfig: Path | None
    config: VClusterConfig
    ready_file: Path | None = None
    pki_dir: Path | None = None
    kubelet_address: str = "127.0.0.1"
    host_qps: float = HOST_QPS
    host_burst: int = HOST_BURST
    dns_address: str | None = None
    dns_port: int = 0
    dns_fallback: str | None = None
    metrics: tuple[str, int] | None = None
    pod_security_check: Path | None = None


async def serve(opts: Options) -> None:
    """Runs a syncer until it fails (raises) or is cancelled; what it opened is closed either way.

    The control plane runs this as a task of its own process (vnest.controlplane.run), restarted
    by its supervisor when it fails; `vnest syncer run` runs it as a process.
    """
    async with (
        KubeClient.from_kubeconfig(opts.virtual_kubeconfig) as virtual,
        KubeClient.from_kubeconfig(opts.host_kubeconfig) as host,
    ):
        kubelet = (
            KubeletSettings(
                HostConnection.from_kubeconfig(opts.host_kubeconfig), opts.pki_dir, opts.kubelet_address
            )
            if opts.pki_dir is not None
            else None
        )
        host.limit(opts.host_qps, opts.host_burst)
        level = opts.config.policies.pod_security_standard
        pod_security = (
            PodSecurityChecker(opts.pod_security_check, level)
            if opts.pod_security_check is not None and level != "privileged"
            else None
        )
        syncer = Syncer(
            opts.name,
            opts.namespace,
            virtual,
            host,
            opts.config,
            kubelet,
            opts.dns_address,
            opts.dns_port,
            opts.dns_fallback,
            opts.metrics,
            pod_security,
        )
        try:
            await syncer.run(opts.ready_file)
        finally:
            await syncer.close()
            if pod_security is not None:
                await pod_security.close()


def main(opts: Options) -> int:
    """`vnest syncer run`: serves until SIGTERM/SIGINT (exit 0) or until the syncer fails (exit 1)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(serve(opts))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task in done:
            error = task.exception()
            if error is not None:
                _log.error(f"the syncer stopped: {error}")
                return 1
            return 0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0

    return asyncio.run(runner())
