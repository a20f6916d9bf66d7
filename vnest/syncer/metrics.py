"""The control plane's metrics endpoint: `GET /metrics` in Prometheus' text format.

Served by the syncer process, which holds everything worth counting: the embedded DNS
server's queries, outcomes and latency (vnest.dns.metrics), and per syncer the reconciles,
failures and queue depth, and per informer the objects cached.

Written on asyncio streams: the endpoint answers one GET with a short body, and a web
framework or prometheus_client's threaded server would be a larger dependency than the
thirty lines it replaces. Anything but `GET /metrics` and `GET /healthz` is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from vnest import log
from vnest.dns.metrics import label_value

_log = log.get("syncer.metrics")

MAX_HEAD = 8 * 1024
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    def __init__(self, render: Callable[[], str], address: str = "127.0.0.1", port: int = 0) -> None:
        self.render = render
        self.address = address
        self.port = port
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.address, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head[:MAX_HEAD].split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, body, ctype = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif path == "/metrics":
                status, body, ctype = "200 OK", self.render(), CONTENT_TYPE
            elif path == "/healthz":
                status, body, ctype = "200 OK", "ok\n", "text/plain"
            else:
                status, body, ctype = "404 Not Found", "not found\n", "text/plain"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass  # a client that sent no proper request head gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def syncer_text(reconcilers: list[tuple[str, int, int, int]], informers: list[tuple[str, int]]) -> str:
    """Syncer metrics: (kind, reconciles, failures, queue depth) per syncer, (name, objects) per informer."""
    lines = [
        "# HELP vnest_syncer_reconciles_total Reconciles that completed, by kind.",
        "# TYPE vnest_syncer_reconciles_total counter",
        *(f'vnest_syncer_reconciles_total{{kind="{k}"}} {n}' for k, n, _, _ in reconcilers),
        "# HELP vnest_syncer_reconcile_failures_total Reconciles that failed and were queued again, by kind.",
        "# TYPE vnest_syncer_reconcile_failures_total counter",
        *(f'vnest_syncer_reconcile_failures_total{{kind="{k}"}} {n}' for k, _, n, _ in reconcilers),
        "# HELP vnest_syncer_queue_depth Keys waiting to be reconciled, by kind.",
        "# TYPE vnest_syncer_queue_depth gauge",
        *(f'vnest_syncer_queue_depth{{kind="{k}"}} {n}' for k, _, _, n in reconcilers),
        "# HELP vnest_syncer_cached_objects Objects in each informer's cache.",
        "# TYPE vnest_syncer_cached_objects gauge",
        *(f'vnest_syncer_cached_objects{{informer="{label_value(name)}"}} {n}' for name, n in informers),
    ]
    return "\n".join(lines) + "\n"
