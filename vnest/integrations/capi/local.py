"""Cluster API on the KWOK host: its controllers as local processes, where no pod really runs.

After `clusterctl init --infrastructure vnest`, the providers' Deployments exist, but KWOK only
plays their pods. `vnest capi local start` runs what those pods would:

- vnest's certificate issuer and the VNestCluster provider (process driver), as processes;
- Cluster API's core manager, from the pinned binary, with the webhooks the API server calls
  on every Cluster. That manager has no flag for the address its webhook server binds (it
  takes all interfaces), so it runs in a network namespace of its own, `<prefix>-capi`, with
  only a loopback. A bridge process (`vnest capi bridge`) joins it to the machine's loopback:
  the manager's webhook port is offered on a loopback port of the machine, and inside the
  namespace the host's API server and every virtual cluster's API (for Cluster API's remote
  connection probe) answer at the loopback addresses they have outside.
- the core's webhook configurations and conversion webhooks name its Service, which nothing
  routes to here: they are pointed at the loopback port instead, and its serving certificate
  gets 127.0.0.1 as a name. The kubeadm providers are not run: nothing here uses their kinds.

`vnest capi local stop` (and `vnest host down`) stops all of it and removes the namespace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vnest import binaries, log
from vnest.errors import VnestError
from vnest.host import netns
from vnest.host.forward import relay
from vnest.integrations.capi import api, certissuer
from vnest.kube.client import ApiError, KubeClient, Obj
from vnest.procs import ProcessDir, free_port, port_in_use

_log = log.get("capi.local")

CAPI_NAMESPACE = "capi-system"
CORE_DEPLOYMENT = "capi-controller-manager"
WEBHOOK_SERVICE = "capi-webhook-service"
SERVING_CERTIFICATE = "capi-serving-cert"
# Inside the manager's namespace, where nothing else listens: its defaults.
MANAGER_WEBHOOK_PORT, MANAGER_HEALTH_PORT, MANAGER_DIAGNOSTICS_PORT = 9443, 9440, 8443
LOOPBACK = "127.0.0.1"
PROCESSES = ("core", "bridge", "provider", "cert-issuer")  # stopped in this order


def netns_name(apiserver_port: int) -> str:
    return f"{netns.prefix_for(apiserver_port)}-capi"


def _api_port(host: KubeClient) -> int:
    server = urlsplit(host.server)
    if server.hostname != LOOPBACK or server.port is None:
        raise VnestError(
            f"`vnest capi local` runs Cluster API beside the KWOK local host; {host.server} is not it",
            hint="on a host with real nodes, Cluster API's controllers run as pods after `clusterctl init`",
        )
    return server.port


async def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """What `check` (a function or a coroutine function) returns once it is true."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise VnestError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def start(folder: Path, kubeconfig_path: Path, context: str | None) -> None:
    certissuer.register_kinds()
    host = KubeClient.from_kubeconfig(kubeconfig_path, context)
    procs = ProcessDir(folder)
    async with host:
        api_port = _api_port(host)
        deployment = await host.get_or_none("Deployment", CORE_DEPLOYMENT, CAPI_NAMESPACE)
        if deployment is None:
            raise VnestError(
                "Cluster API is not installed on this host",
                hint="clusterctl init --infrastructure vnest --config <the clusterctl.yaml of `vnest capi repository`>",
            )
        vnest = [sys.executable, "-m", "vnest", "capi"]
        common = [f"--kubeconfig={kubeconfig_path}", *([f"--context={context}"] if context else [])]
        with log.step(_log, "starting Cluster API's controllers as local processes"):
            if not procs.running("cert-issuer"):
                procs.start("cert-issuer", [*vnest, "cert-issuer", *common])
            if not procs.running("provider"):
                procs.start("provider", [*vnest, "provider", "--driver=process", *common])
            cert_dir = folder / "core-certs"
            await _serving_cert_for_loopback(host, cert_dir)
            procs.stop("bridge")  # a start again: the webhook port they held may be taken again
            procs.stop("core")
            webhook_port = _webhook_port(folder)
            await _point_webhooks_at(host, f"https://{LOOPBACK}:{webhook_port}")
            name = netns_name(api_port)
            netns.delete(name)
            netns.add(name)
            procs.start(
                "bridge",
                [*vnest, "bridge", f"--netns={name}", f"--webhook-port={webhook_port}", *common],
            )
            await _wait("the bridge to Cluster API's namespace", lambda: port_in_use(webhook_port))
            procs.start(
                "core",
                [
                    binaries.ensure().cluster_api_controller,
                    *_core_args(deployment),
                    f"--kubeconfig={_kubeconfig_file(kubeconfig_path, context, folder)}",
                    f"--webhook-port={MANAGER_WEBHOOK_PORT}",
                    f"--webhook-cert-dir={cert_dir}",
                    f"--health-addr={LOOPBACK}:{MANAGER_HEALTH_PORT}",
                    f"--diagnostics-address={LOOPBACK}:{MANAGER_DIAGNOSTICS_PORT}",
                    "--insecure-diagnostics=true",
                    "--leader-elect=false",
                ],
                preexec_fn=lambda: netns.join(name),
            )
            await _wait(
                "Cluster API's webhooks to answer", lambda: _webhook_answers(webhook_port), timeout=120
            )
    _log.done(
        "Cluster API runs on the local host", webhooks=f"{LOOPBACK}:{webhook_port}", logs=str(procs.logs)
    )


def _webhook_port(folder: Path) -> int:
    record = folder / "webhook-port"
    with contextlib.suppress(OSError, ValueError):
        port = int(record.read_text())
        if not port_in_use(port):
            return port
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{port}\n")
    return port


async def _webhook_answers(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(
            b"\x16\x03\x01\x00\x00"
        )  # the start of a TLS hello: the manager answers, the bridge alone does not
        await writer.drain()
        return bool(await asyncio.wait_for(reader.read(1), 2))
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def _kubeconfig_file(path: Path, context: str | None, folder: Path) -> Path:
    """The kubeconfig the manager reads: `path` at `context` as its current one."""
    from vnest import kubeconfig

    config = kubeconfig.load(path)
    if context:
        config["current-context"] = context
    out = folder / "core.kubeconfig"
    kubeconfig.save(out, config)
    return out


def _core_args(deployment: Obj) -> list[str]:
    """The manager's arguments as clusterctl installed them, less what runs differently here."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    replaced = (
        "--leader-elect",
        "--diagnostics-address",
        "--insecure-diagnostics",
        "--health-addr",
        "--webhook-port",
    )
    return [a for a in container.get("args", []) if not a.startswith(replaced)]


async def _serving_cert_for_loopback(host: KubeClient, cert_dir: Path) -> None:
    """Adds 127.0.0.1 to the webhooks' certificate and writes it where the manager reads it."""
    cert = await host.get("Certificate", SERVING_CERTIFICATE, CAPI_NAMESPACE)
    addresses = cert["spec"].get("ipAddresses") or []
    if LOOPBACK not in addresses:
        await host.patch(
            "Certificate",
            SERVING_CERTIFICATE,
            {"spec": {"ipAddresses": [*addresses, LOOPBACK]}},
            CAPI_NAMESPACE,
        )

    async def issued() -> Obj | None:
        secret = await host.get_or_none("Secret", cert["spec"]["secretName"], CAPI_NAMESPACE)
        annotations = (secret or {}).get("metadata", {}).get("annotations", {})
        return secret if LOOPBACK in annotations.get(f"{certissuer.GROUP}/ip-sans", "").split(",") else None

    secret = await _wait("the certificate issuer to issue Cluster API's serving certificate", issued)
    cert_dir.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key"):
        (cert_dir / key).write_bytes(base64.b64decode(secret["data"][key]))
        (cert_dir / key).chmod(0o600)


async def _point_webhooks_at(host: KubeClient, base: str) -> None:
    """Every webhook of the core's Service goes to `base` + its path instead (CA bundles stay)."""

    def point(config: Obj, default_path: str) -> bool:
        service = config.get("service") or {}
        if service.get("name") == WEBHOOK_SERVICE and service.get("namespace") == CAPI_NAMESPACE:
            path = service.get("path") or default_path
        elif str(config.get("url", "")).startswith(f"https://{LOOPBACK}:"):  # pointed by an earlier start
            path = urlsplit(config["url"]).path or default_path
        else:
            return False
        config.pop("service", None)
        url = base + path
        changed = config.get("url") != url
        config["url"] = url
        return changed

    def pointed(kind: str, obj: Obj) -> bool:
        if kind == "CustomResourceDefinition":
            webhook = (obj["spec"].get("conversion") or {}).get("webhook") or {}
            return bool(webhook.get("clientConfig")) and point(webhook["clientConfig"], "/convert")
        return any([point(w["clientConfig"], "/") for w in obj.get("webhooks", [])])

    selector = "cluster.x-k8s.io/provider=cluster-api"
    for kind in (
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "CustomResourceDefinition",
    ):
        for obj in await host.list(kind, label_selector=selector):
            for _ in range(10):  # the certificate issuer may be injecting a CA bundle meanwhile
                if not pointed(kind, obj):
                    break
                try:
                    await host.replace(obj)
                    break
                except ApiError as e:
                    if not e.conflict:
                        raise
                obj = await host.get(kind, obj["metadata"]["name"])


def stop(folder: Path, apiserver_port: int | None) -> list[str]:
    procs = ProcessDir(folder)
    stopped = [name for name in PROCESSES if procs.stop(name, timeout=30)]
    if apiserver_port is not None:
        with contextlib.suppress(VnestError):
            netns.delete(netns_name(apiserver_port))
    return stopped


# ---- the bridge ------------------------------------------------------------------------------


class Bridge:
    """Joins the manager's namespace to the machine's loopback (see the module docstring)."""

    def __init__(self, host: KubeClient, namespace: str, webhook_port: int) -> None:
        self.host = host
        self.namespace = namespace
        self.webhook_port = webhook_port
        self.inside: dict[int, asyncio.AbstractServer] = {}

    async def _to_inside(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with netns.entered(self.namespace):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, MANAGER_WEBHOOK_PORT))
            upstream = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            writer.close()
            return
        await relay((reader, writer), upstream)

    def _to_outside(self, port: int) -> Any:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                writer.close()
                return
            await relay((reader, writer), upstream)

        return accept

    async def offer_inside(self, port: int) -> None:
        """Makes LOOPBACK:port of the machine answer at LOOPBACK:port inside the namespace too."""
        if port in self.inside:
            return
        with netns.entered(self.namespace):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(128)
        sock.setblocking(False)
        self.inside[port] = await asyncio.start_server(self._to_outside(port), sock=sock)
        _log.debug("offered inside", port=port)

    async def serve(self) -> None:
        outside = await asyncio.start_server(self._to_inside, LOOPBACK, self.webhook_port)
        await self.offer_inside(_api_port(self.host))
        api.register_kinds()
        try:
            while True:
                # Every virtual cluster's API, where Cluster API's remote connection probe dials it.
                with contextlib.suppress(ApiError):
                    for obj in await self.host.list(api.KIND):
                        endpoint = obj.get("spec", {}).get("controlPlaneEndpoint") or {}
                        if endpoint.get("host") == LOOPBACK and endpoint.get("port"):
                            await self.offer_inside(int(endpoint["port"]))
                await asyncio.sleep(1)
        finally:
            outside.close()
            for server in self.inside.values():
                server.close()


async def bridge(kubeconfig_path: Path, context: str | None, namespace: str, webhook_port: int) -> None:
    host = KubeClient.from_kubeconfig(kubeconfig_path, context)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    async with host:
        with contextlib.suppress(asyncio.CancelledError):
            await Bridge(host, namespace, webhook_port).serve()
