"""The kubelet API's relay: what of the API server's request reaches the host."""

from __future__ import annotations

import asyncio

import pytest

from vnest.syncer.kubelet import _relay_response, upstream_head

pytestmark = pytest.mark.unit


def test_only_the_headers_streams_need_cross_and_the_syncers_token_replaces_any_other():
    head = upstream_head(
        "POST",
        "/api/v1/namespaces/h/pods/p/exec?command=sh",
        [
            ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
            ("Upgrade", "SPDY/3.1"),
            ("Connection", "Upgrade"),
            ("Authorization", "Bearer stolen"),
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("X-Remote-User", "admin"),
            ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
            ("Cookie", "session=x"),
        ],
        "127.0.0.1:6443",
        "syncer-token",
    ).decode()
    lines = head.split("\r\n")
    assert lines[0] == "POST /api/v1/namespaces/h/pods/p/exec?command=sh HTTP/1.1"
    assert "Host: 127.0.0.1:6443" in lines
    assert "X-Stream-Protocol-Version: v5.channel.k8s.io" in lines
    assert "Sec-WebSocket-Protocol: v5.channel.k8s.io" in lines
    assert "Connection: Upgrade" in lines
    assert [line for line in lines if line.lower().startswith("authorization")] == [
        "Authorization: Bearer syncer-token"
    ]
    for dropped in ("Impersonate", "X-Remote", "Cookie", "stolen"):
        assert dropped not in head
    assert head.endswith("\r\n\r\n")
    plain = upstream_head("GET", "/log", [("Accept", "*/*")], "h:1", None).decode()
    assert "Connection: close" in plain and "Authorization" not in plain


class _RecordingTransport(asyncio.WriteTransport):
    """Keeps what a StreamWriter over it writes, one entry per write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _recording_writer() -> tuple[asyncio.StreamWriter, _RecordingTransport]:
    transport, reader = _RecordingTransport(), asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    return asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop()), transport


def test_a_chunked_body_is_relayed_with_its_end_in_a_write_of_its_own():
    # The API server's WebSocket log reader drops data that arrives with the end (issue 16).
    async def run() -> list[bytes]:
        upstream = asyncio.StreamReader()
        upstream.feed_data(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        upstream.feed_eof()
        writer, sink = _recording_writer()
        await _relay_response(upstream, writer)
        writer.close()
        return sink.writes

    writes = asyncio.run(run())
    assert writes == [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
        b"6\r\n world\r\n",
        b"0\r\n\r\n",
    ]
