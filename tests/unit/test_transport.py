"""The aiohttp transport's connection pool (vnest.kube.transport), against a real server on loopback."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from vnest.kube.transport import newest_first_connector

pytestmark = pytest.mark.unit

KEEPALIVE = 0.4


async def _ports_in_use_after_a_burst(connector_class: type[aiohttp.TCPConnector]) -> set[int]:
    """Eight requests at once, then one at a time for a while: the client ports of the last second."""
    seen: list[tuple[float, int]] = []

    async def handler(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append((time.monotonic(), peer[1] if peer else 0))
        await asyncio.sleep(float(request.query.get("hold", "0")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    try:
        connector = connector_class(keepalive_timeout=KEEPALIVE)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def get(hold: float) -> None:
                async with session.get(url, params={"hold": str(hold)}) as resp:
                    await resp.read()

            await asyncio.gather(*(get(0.2) for _ in range(8)))  # a burst: eight connections
            start = time.monotonic()
            while time.monotonic() - start < 3 * KEEPALIVE + 1.0:  # steady load, one at a time
                await get(0)
                await asyncio.sleep(0.02)
            since = time.monotonic() - 1.0
            return {p for t, p in seen if t >= since}
    finally:
        await runner.cleanup()


def test_a_pool_shrinks_back_after_a_burst():
    ports = asyncio.run(_ports_in_use_after_a_burst(newest_first_connector()))
    assert len(ports) == 1


def test_aiohttps_own_pool_keeps_every_connection_of_a_burst_warm():
    """The guard off: what the pool did before (aiohttp takes the oldest first), so the test above can fail."""
    ports = asyncio.run(_ports_in_use_after_a_burst(aiohttp.TCPConnector))
    assert len(ports) == 8
