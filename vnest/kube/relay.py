"""Relaying one HTTP request to the host API server with the syncer's credentials, upgrades included.

Shared by the servers the virtual API server calls and the host answers: the fake nodes' kubelet
(vnest.syncer.kubelet: logs, exec, attach, port-forward) and KubeVirt's subresources
(vnest.integrations.kubevirt.subresources: start, stop, console, VNC, ...). Each accepts one
request per connection, decides what host path it stands for, and hands it here: a new TLS
connection to the host API, a request head with only the headers the call needs and the
syncer's token, then the response relayed back. A plain response is relayed chunk by chunk; an
upgraded one (`101 Switching Protocols`: SPDY or WebSocket) is spliced both ways until either
side ends, since after the head the relay never needs to understand what flows.

Written on asyncio streams rather than an HTTP framework because a framework would parse, buffer
or terminate the upgraded connection this must splice.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ssl
from collections.abc import Awaitable, Callable, Collection

from vnest.kube.client import HostConnection

MAX_HEAD = 64 * 1024
# The request headers relayed to the host API by default: what logs and the stream upgrades (SPDY
# and WebSocket) need. Nothing else crosses, above all no Authorization, Impersonate-* or X-Remote-*
# header that could make the host act for anyone but the syncer.
RELAYED_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "user-agent",
        "upgrade",
        "x-stream-protocol-version",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)

Headers = list[tuple[str, str]]
# What answers a response that did not switch protocols: (host reader, client writer, its head).
ResponseRelay = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


class BodyTooLarge(ValueError):
    pass


def parse_head(head: bytes) -> tuple[str, str, Headers]:
    """(method, target, headers) of a request head; (version, status, headers) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return method, target, headers


def status_of(head: bytes) -> int:
    return int(parse_head(head)[1])


def header(headers: Headers, name: str) -> str:
    """The first value of a header (case-insensitive), or ""."""
    return next((v for k, v in headers if k.lower() == name), "")


def is_upgrade(headers: Headers) -> bool:
    return any(k.lower() == "upgrade" for k, _ in headers)


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, str, Headers] | None:
    """The request head of a connection; None when there is none (a 431 is sent when it is too large)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    if len(head) > MAX_HEAD:
        await respond(writer, 431, "request head too large")
        return None
    return parse_head(head)


async def read_body(
    reader: asyncio.StreamReader, headers: Headers, limit: int, to_eof: bool = False
) -> bytes:
    """A whole message body (Content-Length or chunked; with `to_eof`, else until the connection
    ends); BodyTooLarge past `limit` bytes."""
    if header(headers, "transfer-encoding").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return body
            if len(body) + size > limit:
                raise BodyTooLarge(f"body larger than {limit} bytes")
            body += (await reader.readexactly(size + 2))[:-2]
    length = header(headers, "content-length")
    if length:
        if int(length) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        return await reader.readexactly(int(length))
    if not to_eof:
        return b""
    body = await reader.read(limit + 1)
    while len(body) <= limit and (more := await reader.read(limit + 1 - len(body))):
        body += more
    if len(body) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    return body


def upstream_head(
    method: str,
    path: str,
    headers: Headers,
    host: str,
    token: str | None,
    relayed: Collection[str] = RELAYED_HEADERS,
    content_length: int | None = None,
) -> bytes:
    """The request head sent to the host API: the translated path, the relayed headers, the syncer's token."""
    upgrade = is_upgrade(headers)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() in relayed]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    # One request per connection: what follows the head is the body, the stream or nothing.
    lines.append("Connection: Upgrade" if upgrade else "Connection: close")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def relay(
    host: HostConnection,
    method: str,
    path: str,
    headers: Headers,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    relayed: Collection[str] = RELAYED_HEADERS,
    body: bytes | None = None,
    respond_with: ResponseRelay | None = None,
    switched_head: Callable[[bytes], bytes] | None = None,
) -> None:
    """Sends one request to the host API as the syncer and relays the answer to `writer`.

    `body`, when given, is sent with its Content-Length. A response that switched protocols has its
    head (through `switched_head`) written back, then both streams are spliced; any other response
    goes to `respond_with` (default: relayed as it came, relay_response).
    """
    upstream_reader, upstream_writer = await asyncio.open_connection(
        host.hostname, host.port, ssl=host.ssl, server_hostname=host.hostname
    )
    token = host.token() if host.token else None
    length = len(body) if body is not None else None
    upstream_writer.write(
        upstream_head(method, path, headers, f"{host.hostname}:{host.port}", token, relayed, length)
        + (body or b"")
    )
    try:
        await upstream_writer.drain()
        head = await upstream_reader.readuntil(b"\r\n\r\n")
        if is_upgrade(headers) and status_of(head) == http.HTTPStatus.SWITCHING_PROTOCOLS:
            writer.write(switched_head(head) if switched_head is not None else head)
            await writer.drain()
            await splice(reader, writer, upstream_reader, upstream_writer)
            return
        await (respond_with or relay_response)(upstream_reader, writer, head)
    except (
        ConnectionError,
        ssl.SSLError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        ValueError,
    ):
        pass
    finally:
        upstream_writer.close()


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copies bytes both ways; whichever side ends first ends the exchange: a closed stream is closed."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    tasks = [
        asyncio.create_task(pipe(reader, upstream_writer)),
        asyncio.create_task(pipe(upstream_reader, writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def relay_response(
    upstream: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes | None = None
) -> None:
    """A plain response (logs), relayed chunk by chunk with the end of the body in a write of its own.

    `head` is the response head when it was read already. The API server serves logs over
    WebSocket (`wsstream`) by copying the body it reads from the kubelet, and drops the bytes of
    any read that also returns EOF. Go's chunked reader returns data and EOF together when the
    last chunk and the terminating zero-size chunk arrive together, as they do when relayed as one
    buffer, so the log came back empty over WebSocket while plain `kubectl logs` showed it. A
    kubelet writes the body, flushes, and only then ends it; so does this relay.
    """
    if head is None:
        head = await upstream.readuntil(b"\r\n\r\n")
    writer.write(head)
    await writer.drain()
    if b"transfer-encoding: chunked" not in head.lower():
        while data := await upstream.read(65536):
            writer.write(data)
            await writer.drain()
        return
    while True:
        size_line = await upstream.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            end = size_line
            while (line := await upstream.readuntil(b"\r\n")) != b"\r\n":
                end += line  # trailers, if any
            writer.write(end + b"\r\n")
            await writer.drain()
            return
        writer.write(size_line + await upstream.readexactly(size + 2))  # the chunk and its CRLF
        await writer.drain()


async def respond(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    """A plain-text answer of the relay's own (a refusal, a health check), then the connection ends."""
    await respond_body(writer, status, reason.encode() + b"\n", "text/plain", reason.split(":")[0][:40])


async def respond_body(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, phrase: str = ""
) -> None:
    if not phrase:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await writer.drain()
