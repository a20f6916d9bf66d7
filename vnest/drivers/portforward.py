"""The kubernetes driver's background proxy: a loopback port whose every connection is a
port-forward stream of its own to the control plane's pod.

`kubectl port-forward` carries every connection in one stream session to the kubelet. When that
session breaks ("lost connection to pod", three times in an hour of the conformance run on real
nodes), every connection through it ends at once, and new ones are refused until kubectl is
started again. Here each accepted connection opens its own WebSocket to the pod's `portforward`
subresource, so a broken stream ends only the connection it carried, and the next connection
opens a fresh one.

Hand-written: the kubelet's WebSocket protocol (`v4.channel.k8s.io`) is a channel byte in front
of every message plus a two-byte port header at the start of each channel, a few lines over
aiohttp's WebSocket client; the kubernetes client library's port-forward is synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from vnest import log
from vnest.kube.client import context_of

_log = log.get("driver.portforward")

PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1  # the channels of the one forwarded port
PORT_HEADER = 2  # bytes: each channel's first message names the port, little-endian
CHUNK = 64 * 1024
GIVE_UP_SECONDS = 600.0  # no stream opened for this long: the cluster is gone, stop listening


@dataclass
class PodPort:
    """Where every connection goes: one port of one pod, through the host API server."""

    server: str  # the host API server's URL
    tls: ssl.SSLContext  # its CA, and the client certificate when the kubeconfig has one
    auth: httpx.Auth | None  # the kubeconfig user's token, token file, exec plugin or password
    namespace: str
    pod: str
    port: int
    failing_since: float | None = field(default=None)

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str, namespace: str, pod: str, port: int) -> PodPort:
        from lightkube.config.client_adapter import user_auth, verify_cluster
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.config.models import User

        single = context_of(KubeConfig.from_file(path), context)
        user = single.user or User()
        tls = verify_cluster(single.cluster, user, single.abs_file, trust_env=False)
        return cls(single.cluster.server.rstrip("/"), tls, user_auth(user), namespace, pod, port)

    @property
    def url(self) -> str:
        return (
            f"{self.server}/api/v1/namespaces/{self.namespace}/pods/{self.pod}/portforward?ports={self.port}"
        )

    def headers(self, refresh: bool = False) -> dict[str, str]:
        """The Authorization header, through the user's httpx auth flow; `refresh` answers its
        request with a 401, which makes an exec plugin's credential be fetched again."""
        if self.auth is None:
            return {}
        flow = self.auth.sync_auth_flow(httpx.Request("GET", self.url))
        request = next(flow)
        if refresh:
            with contextlib.suppress(StopIteration):
                request = flow.send(httpx.Response(401))
        value = request.headers.get("Authorization")
        return {"Authorization": value} if value else {}


async def serve(target: PodPort, local_port: int) -> None:
    """Listens on 127.0.0.1:local_port until stopped, or until streams have failed GIVE_UP_SECONDS."""
    connector = aiohttp.TCPConnector(ssl=target.tls, limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await forward(session, target, reader, writer)

        server = await asyncio.start_server(accepted, "127.0.0.1", local_port)
        _log.info("listening", port=local_port, pod=f"{target.namespace}/{target.pod}", target=target.port)
        async with server:
            while target.failing_since is None or time.monotonic() - target.failing_since < GIVE_UP_SECONDS:
                await asyncio.sleep(5)
        sys.exit(f"no port-forward stream to pod {target.pod} opened for {GIVE_UP_SECONDS:.0f}s; giving up")


async def forward(
    session: aiohttp.ClientSession,
    target: PodPort,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One local connection, relayed over one WebSocket stream until either side ends."""
    try:
        for refresh in (False, True):
            # In a thread: an exec plugin's credential is a subprocess.
            headers = await asyncio.to_thread(target.headers, refresh)
            try:
                async with session.ws_connect(
                    target.url, protocols=(PROTOCOL,), headers=headers, max_msg_size=0, autoping=True
                ) as ws:
                    target.failing_since = None
                    await _splice(ws, reader, writer)
                    return
            except aiohttp.WSServerHandshakeError as e:
                if e.status != 401 or refresh:
                    raise
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        # The pod is restarting, or the host is gone: this connection ends; the next one tries again.
        if target.failing_since is None:
            target.failing_since = time.monotonic()
        _log.info("stream not opened", error=str(e) or type(e).__name__)
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _splice(
    ws: aiohttp.ClientWebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async def to_pod() -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK):
                await ws.send_bytes(bytes([DATA]) + data)

    async def from_pod() -> None:
        headed: set[int] = set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel not in headed:
                headed.add(channel)
                payload = payload[PORT_HEADER:]
            if not payload:
                continue
            if channel == DATA:
                writer.write(payload)
                await writer.drain()
            elif channel == ERROR:
                _log.info("stream error", error=payload.decode(errors="replace"))
                return

    tasks = [asyncio.create_task(to_pod()), asyncio.create_task(from_pod())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run(kubeconfig: Path, context: str, namespace: str, pod: str, port: int, local_port: int) -> None:
    target = PodPort.from_kubeconfig(kubeconfig, context, namespace, pod, port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(target, local_port))
