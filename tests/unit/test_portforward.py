"""The kubernetes driver's proxy: each local connection its own port-forward stream.

The server here speaks the kubelet's side of `v4.channel.k8s.io` as the API server relays it (a
port header on each channel, then a channel byte before every message); the real path through a
kubelet and containerd is proven by tests/real/test_production_path.py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from lightkube.config.client_adapter import BearerAuth

from vnest import certs
from vnest.drivers import portforward
from vnest.procs import free_port

pytestmark = pytest.mark.unit

PORT = 8443
Handler = Callable[[web.WebSocketResponse], Awaitable[None]]


async def _echo(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00":
            await ws.send_bytes(b"\x00" + msg.data[1:].upper())


@asynccontextmanager
async def _api(
    tmp_path: Path, handler: Handler, auth: httpx.Auth | None = None, token: str | None = None
) -> AsyncIterator[tuple[portforward.PodPort, list[str]]]:
    """A TLS server answering the pod's portforward subresource; yields the target and the
    requests it saw (path and Authorization)."""
    ca = certs.new_ca("test-ca")
    leaf = certs.issue(ca, "127.0.0.1", ips=("127.0.0.1",), server=True)
    crt, key = leaf.write(tmp_path, "serving")
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(crt, key)
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    seen: list[str] = []

    async def portforward_handler(request: web.Request) -> web.WebSocketResponse:
        seen.append(f"{request.path_qs} {request.headers.get('Authorization')}")
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse(protocols=(portforward.PROTOCOL,))
        await ws.prepare(request)
        port = int(request.query["ports"]).to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + port)
        await ws.send_bytes(b"\x01" + port)
        await handler(ws)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/portforward", portforward_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    api_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port, ssl_context=serving).start()
    try:
        yield (
            portforward.PodPort(
                f"https://127.0.0.1:{api_port}", client, auth or BearerAuth("tok"), "ns", "cp-0", PORT
            ),
            seen,
        )
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _proxy(target: portforward.PodPort) -> AsyncIterator[int]:
    local = free_port()
    task = asyncio.create_task(portforward.serve(target, local))
    deadline = time.monotonic() + 10
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", local)
            w.close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the proxy did not listen"
            await asyncio.sleep(0.05)
    try:
        yield local
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _exchange(local: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(data)), 10)
    writer.close()
    return got


def test_each_connection_gets_its_own_stream_to_the_pods_port_with_the_port_headers_stripped(tmp_path):
    async def run() -> None:
        async with _api(tmp_path, _echo) as (target, seen), _proxy(target) as local:
            results = await asyncio.gather(*(_exchange(local, f"conn {i}".encode()) for i in range(3)))
            assert results == [b"CONN 0", b"CONN 1", b"CONN 2"]
            streams = [s for s in seen if "ports=" in s]
            # Three streams at least: the readiness probe's connection may have opened a fourth.
            assert streams.count(f"/api/v1/namespaces/ns/pods/cp-0/portforward?ports={PORT} Bearer tok") >= 3

    asyncio.run(run())


def test_a_stream_that_breaks_ends_its_own_connection_only(tmp_path):
    async def break_on_kill(ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.data[1:] == b"kill":
                await ws.send_bytes(b"\x01lost connection to pod")
                return
            await ws.send_bytes(b"\x00" + msg.data[1:].upper())

    async def run() -> None:
        async with _api(tmp_path, break_on_kill) as (target, _), _proxy(target) as local:
            survivor_r, survivor_w = await asyncio.open_connection("127.0.0.1", local)
            survivor_w.write(b"one")
            assert await asyncio.wait_for(survivor_r.readexactly(3), 10) == b"ONE"
            victim_r, victim_w = await asyncio.open_connection("127.0.0.1", local)
            victim_w.write(b"kill")
            assert await asyncio.wait_for(victim_r.read(), 10) == b""  # the error ended it
            survivor_w.write(b"two")
            assert await asyncio.wait_for(survivor_r.readexactly(3), 10) == b"TWO"
            assert await _exchange(local, b"three") == b"THREE"  # and a new one opens a new stream
            survivor_w.close()
            victim_w.close()

    asyncio.run(run())


def test_a_refused_stream_closes_the_connection_and_marks_the_target_failing(tmp_path):
    async def run() -> None:
        async with _api(tmp_path, _echo) as (target, _):
            target.pod = "missing"
            target.server = f"https://127.0.0.1:{free_port()}"  # nobody listens
            async with _proxy(target) as local:
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.read(), 10) == b""
                assert target.failing_since is not None
                writer.close()

    asyncio.run(run())


class _Plugin(httpx.Auth):
    """An exec plugin's flow (lightkube's ExecAuth): the last credential until a 401, then the
    plugin runs again and gives the current one."""

    def __init__(self) -> None:
        self.runs = 0
        self.last = "t0"  # expired

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.last}"
        response = yield request
        if response.status_code == 401:
            self.runs += 1
            self.last = "t1"
            request.headers["Authorization"] = f"Bearer {self.last}"
            yield request


def test_an_expired_credential_is_fetched_again_and_the_connection_still_goes_through(tmp_path):
    async def run() -> None:
        plugin = _Plugin()
        async with _api(tmp_path, _echo, auth=plugin, token="t1") as (target, seen), _proxy(target) as local:
            assert await _exchange(local, b"after refresh") == b"AFTER REFRESH"
            assert plugin.runs >= 1
            assert any(s.endswith("Bearer t0") for s in seen) and seen[-1].endswith("Bearer t1")

    asyncio.run(run())
