"""The fake nodes' kubelet: logs, exec, attach and port-forward of virtual pods, served from the host.

The virtual API server reaches a pod's "kubelet" at the address its fake node
advertises, which is this server. It accepts only the virtual API server's
kubelet-client certificate (issued by a CA of its own, vnest.controlplane.pki), finds the host copy of the pod in the syncer's
cache (so only pods of this virtual cluster can be reached), rewrites the
kubelet path into the host API's pod subresource, and relays the bytes both
ways: plain responses (logs, follow or not) and upgraded streams (SPDY or
WebSocket for exec, attach, port-forward) alike, since after the request
head the proxy never needs to understand what flows.

Written on asyncio streams rather than an HTTP framework because a framework
would parse, buffer or terminate the upgraded connection this must splice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from vnest import log
from vnest.kube.client import HostConnection, Obj

_log = log.get("syncer.kubelet")

KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
MAX_HEAD = 64 * 1024
# Kubelet query names -> the API server's pod subresource query names.
_EXEC_QUERY = {"command": "command", "input": "stdin", "output": "stdout", "error": "stderr", "tty": "tty"}
_LOG_QUERY = ("follow", "previous", "sinceSeconds", "sinceTime", "timestamps", "tailLines", "limitBytes")
# The only request headers relayed to the host API: what logs and the stream upgrades (SPDY and
# WebSocket) need. Nothing else crosses, above all no Authorization, Impersonate-* or X-Remote-*
# header that could make the host act for anyone but the syncer.
_RELAYED_HEADERS = {
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


class KubeletProxy:
    def __init__(
        self,
        host_pod_of: Callable[[str, str], Obj | None],
        host_namespace: str,
        host: HostConnection,
        pki_dir: Path,
        address: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host_pod_of = host_pod_of
        self.host_namespace = host_namespace
        self.host = host
        self.address = address
        self.port = port
        # Only the API server's own kubelet-client certificate: its CA issues nothing else, while the
        # cluster CA signs any CSR a tenant (admin inside) has approved.
        self.tls = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(pki_dir / "kubelet-client-ca.crt")
        )
        self.tls.load_cert_chain(pki_dir / "apiserver.crt", pki_dir / "apiserver.key")
        self.tls.verify_mode = ssl.CERT_REQUIRED
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.address, self.port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        _log.info("kubelet endpoint listening", address=f"{self.address}:{self.port}")
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    # ---- one connection, one request ------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peercert") or {}
            subject = dict(x[0] for x in peer.get("subject", ()))
            if subject.get("commonName") != KUBELET_CLIENT_CN:
                await _respond(writer, 403, "only the virtual API server may use this kubelet")
                return
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if len(head) > MAX_HEAD:
                await _respond(writer, 431, "request head too large")
                return
            method, target, headers = _parse_head(head)
            if target in ("/healthz", "/readyz", "/livez"):
                await _respond(writer, 200, "ok")
                return
            translated = self._translate(target)
            if isinstance(translated, tuple):
                await _respond(writer, *translated)
                return
            await self._relay(method, translated, headers, reader, writer)
        except (ConnectionError, ssl.SSLError) as e:
            _log.debug("kubelet connection ended", error=str(e))
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _translate(self, target: str) -> str | tuple[int, str]:
        """The host API path for a kubelet path, or an (HTTP status, reason) refusal."""
        url = urlsplit(target)
        parts = [p for p in url.path.split("/") if p]
        if len(parts) < 3 or parts[0] not in ("containerLogs", "exec", "attach", "portForward"):
            return 404, f"no kubelet endpoint {url.path}"
        verb, ns, pod = parts[0], parts[1], parts[2]
        container = parts[3] if len(parts) > 3 else ""
        hpod = self.host_pod_of(ns, pod)
        if hpod is None:
            return 404, f"pod {ns}/{pod} is not a pod of this virtual cluster"
        base = f"/api/v1/namespaces/{self.host_namespace}/pods/{quote(hpod['metadata']['name'])}"
        query = parse_qsl(url.query, keep_blank_values=True)
        if verb == "containerLogs":
            out = [("container", container)] + [(k, v) for k, v in query if k in _LOG_QUERY]
            return f"{base}/log?{urlencode(out)}"
        if verb == "portForward":
            return f"{base}/portforward?{urlencode([(k, v) for k, v in query if k == 'port'])}"
        out = [("container", container)] + [(_EXEC_QUERY[k], v) for k, v in query if k in _EXEC_QUERY]
        sub = "exec" if verb == "exec" else "attach"
        if sub == "attach":
            out = [(k, v) for k, v in out if k != "command"]
        return f"{base}/{sub}?{urlencode(out)}"

    async def _relay(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.host.hostname, self.host.port, ssl=self.host.ssl, server_hostname=self.host.hostname
        )
        upgrade = any(k.lower() == "upgrade" for k, _ in headers)
        token = self.host.token() if self.host.token else None
        upstream_writer.write(
            upstream_head(method, path, headers, f"{self.host.hostname}:{self.host.port}", token)
        )
        await upstream_writer.drain()
        _log.debug("relaying", method=method, path=path, upgrade=upgrade)

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

        if not upgrade:
            try:
                await _relay_response(upstream_reader, writer)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                upstream_writer.close()
            return
        # Whichever side ends first ends the exchange: a closed stream is closed.
        tasks = [
            asyncio.create_task(pipe(reader, upstream_writer)),
            asyncio.create_task(pipe(upstream_reader, writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            upstream_writer.close()


async def _relay_response(upstream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain response (logs), relayed chunk by chunk with the end of the body in a write of its own.

    The API server serves logs over WebSocket (`wsstream`) by copying the body it reads from
    the kubelet, and drops the bytes of any read that also returns EOF. Go's chunked reader
    returns data and EOF together when the last chunk and the terminating zero-size chunk
    arrive together, as they do when relayed as one buffer, so the log came back empty over
    WebSocket while plain `kubectl logs` showed it. A kubelet writes the body, flushes, and
    only then ends it; so does this relay.
    """
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


def upstream_head(
    method: str, path: str, headers: list[tuple[str, str]], host: str, token: str | None
) -> bytes:
    """The request head sent to the host API: the translated path, the relayed headers, the syncer's token."""
    upgrade = any(k.lower() == "upgrade" for k, _ in headers)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() in _RELAYED_HEADERS]
    # One request per connection: what follows the head is the stream or nothing.
    lines.append("Connection: Upgrade" if upgrade else "Connection: close")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return method, target, headers


async def _respond(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = reason.encode() + b"\n"
    writer.write(
        f"HTTP/1.1 {status} {reason.split(':')[0][:40]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await writer.drain()
