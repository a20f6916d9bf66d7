"""The forwarder: the one bridge between the machine's loopback and the real nodes' network.

The local host's servers (API server, registry, CoreDNS) listen on the machine's loopback only;
the nodes live in network namespaces (vnest.host.netns). One process, started by
`vnest host up` and run as `vnest host forward CONFIG`, joins them, the way docker-proxy joins
a published port to a container:

- ``listen``: TCP (and UDP, for DNS) sockets created in the hub namespace on the hub's address,
  relayed to a loopback port of the machine: the nodes' kubelets, kube-proxies, pods and
  containerd reach the API server, the registry and DNS at the hub address;
- ``egress``: an HTTP CONNECT proxy on a unix socket that the API server's egress selector
  uses for everything it dials in the cluster (kubelets for logs, exec and port-forward; pods
  and Services for the proxy subresources); it dials only inside the hub namespace, and only
  the node, pod and Service ranges.

Hand-written: a few hundred lines of asyncio relay, where the alternatives (socat per
connection, a SOCKS library) cannot create a socket in one namespace and dial from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import signal
import socket
from pathlib import Path
from typing import NotRequired, TypedDict, cast

from vnest import log
from vnest.host import netns

_log = log.get("forward")

UDP_IDLE = 30.0  # seconds a client's upstream UDP socket lives without traffic
CHUNK = 256 * 1024


class Listen(TypedDict):
    protocol: str  # "tcp" or "udp"
    port: int  # on the hub address
    target: str  # "127.0.0.1:PORT" on the machine's loopback
    clients: NotRequired[list[str]]  # CIDRs allowed to connect (TCP); absent: anyone who can route here


class Egress(TypedDict):
    socket: str  # the unix socket the API server's egress selector dials
    allow: list[str]  # CIDRs it may reach inside the hub namespace


class ForwardConfig(TypedDict):
    netns: str  # the hub namespace's name
    address: str  # the hub address the listeners bind
    listen: list[Listen]
    egress: Egress


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


class Forwarder:
    def __init__(self, config: ForwardConfig) -> None:
        self.config = config
        self.allowed = [ipaddress.ip_network(c) for c in config["egress"]["allow"]]
        self.servers: list[asyncio.AbstractServer] = []
        self.transports: list[asyncio.BaseTransport] = []

    def _socket_in_hub(self, kind: socket.SocketKind) -> socket.socket:
        with netns.entered(self.config["netns"]):
            sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.config["address"]
        for item in self.config["listen"]:
            target = _split(item["target"])
            if item["protocol"] == "tcp":
                sock = self._socket_in_hub(socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, item["port"]))
                clients = [ipaddress.ip_network(c) for c in item.get("clients", [])]
                server = await asyncio.start_server(
                    functools.partial(self._tcp, target=target, clients=clients), sock=sock, limit=CHUNK
                )
                self.servers.append(server)
            else:
                sock = self._socket_in_hub(socket.SOCK_DGRAM)
                sock.bind((address, item["port"]))
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_UdpListener, target), sock=sock
                )
                self.transports.append(transport)
            _log.debug(
                "forwarding",
                protocol=item["protocol"],
                listen=f"{address}:{item['port']}",
                target=item["target"],
            )
        egress = Path(self.config["egress"]["socket"])
        egress.unlink(missing_ok=True)
        self.servers.append(await asyncio.start_unix_server(self._connect, path=str(egress), limit=CHUNK))
        egress.chmod(0o600)

    async def _tcp(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: tuple[str, int],
        clients: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> None:
        peer = ipaddress.ip_address(writer.get_extra_info("peername")[0])
        if clients and not any(peer in net for net in clients):
            _log.debug("client refused", client=str(peer), target=f"{target[0]}:{target[1]}")
            writer.close()
            return
        try:
            upstream = await asyncio.open_connection(*target, limit=CHUNK)
        except OSError as e:
            _log.debug("upstream refused", target=f"{target[0]}:{target[1]}", error=str(e))
            writer.close()
            return
        await relay((reader, writer), upstream)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP CONNECT from the API server: dial inside the hub namespace, then relay."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, authority, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            host, port = _split(authority)
            if method != "CONNECT" or not any(ipaddress.ip_address(host) in net for net in self.allowed):
                raise ValueError(f"refused {method} {authority}")
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as e:
            _log.debug("egress request refused", error=str(e))
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        sock = self._socket_in_hub(socket.SOCK_STREAM)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 10)
        except (OSError, TimeoutError) as e:
            sock.close()
            _log.debug("egress dial failed", target=authority, error=str(e))
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        upstream = await asyncio.open_connection(sock=sock, limit=CHUNK)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await relay((reader, writer), upstream)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for transport in self.transports:
            transport.close()


class _UdpListener(asyncio.DatagramProtocol):
    """Relays each client's datagrams through an upstream socket of its own, for the replies."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple[str, int], _UdpUpstream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.upstreams.get(addr)
        if upstream is None or upstream.transport is None or upstream.transport.is_closing():
            upstream = _UdpUpstream(self, addr)
            self.upstreams[addr] = upstream
            asyncio.get_running_loop().create_task(upstream.open(self.target, data))
            return
        upstream.send(data)


class _UdpUpstream(asyncio.DatagramProtocol):
    def __init__(self, listener: _UdpListener, client: tuple[str, int]) -> None:
        self.listener = listener
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.idle: asyncio.TimerHandle | None = None

    async def open(self, target: tuple[str, int], first: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, remote_addr=target)
        self.transport = transport
        self.send(first)

    def send(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.transport.sendto(data)
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(UDP_IDLE, self._expire)

    def _expire(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.listener.upstreams.pop(self.client, None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.listener.transport is not None:
            self.listener.transport.sendto(data, self.client)
        self._touch()


async def serve(config: ForwardConfig) -> None:
    forwarder = Forwarder(config)
    await forwarder.start()
    _log.info("forwarding", listeners=len(config["listen"]), egress=config["egress"]["socket"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    forwarder.close()


def load(path: Path) -> ForwardConfig:
    config: ForwardConfig = json.loads(path.read_text())
    return config
