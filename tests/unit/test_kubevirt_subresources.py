"""subresources.kubevirt.io served by the syncer, against real loopback servers.

The server under test is the real one (TLS, requestheader identity, SubjectAccessReviews, ownership,
relaying); around it: the virtual and host API servers in memory (tests/unit/kubeapi.py, the virtual
one answering SubjectAccessReviews as the test says), and a fake host API server on a loopback TLS
port that records what is forwarded and answers, WebSocket echo included. The calls come as the
virtual API server's aggregator makes them: a front-proxy client certificate, X-Remote-* headers,
the serving certificate checked against `<service>.<namespace>.svc` and the caBundle.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.kubeapi import FakeApiServer, namespace_object
from vnest import certs, naming
from vnest.integrations.kubevirt import subresources as sr
from vnest.kube.client import HostConnection, KubeClient, Obj, Resource
from vnest.kube.relay import parse_head, read_body
from vnest.kube.transport import HttpxTransport
from vnest.syncer.mappings import ANNOTATION_NAME, ANNOTATION_NAMESPACE, ANNOTATION_UID, LABEL_MANAGED_BY

pytestmark = pytest.mark.unit

VC, HOST_NS, NS = "vc", "vc-host", "team"
BASE = "/apis/subresources.kubevirt.io/v1"
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
HOST_WEB = naming.host_name("web", NS, VC)
VM = Resource("kubevirt.io/v1", "virtualmachines")
VMI = Resource("kubevirt.io/v1", "virtualmachineinstances")
APISERVICE = Resource("apiregistration.k8s.io/v1", "apiservices", namespaced=False)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
AGGREGATOR = [
    ("X-Remote-User", "alice"),
    ("X-Remote-Group", "devs"),
    ("X-Remote-Group", "system:authenticated"),
    ("X-Remote-Extra-Authentication.kubernetes.io%2fcredential-Id", "X509SHA256=abc"),
]


# ---- WebSocket frames (RFC 6455), as much as the echo needs ---------------------------------------


def ws_frame(payload: bytes, opcode: int = 0x2, mask: bool = True) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    head += bytes([bit | n]) if n < 126 else bytes([bit | 126]) + n.to_bytes(2, "big")
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    key = await reader.readexactly(4) if b1 & 0x80 else b""
    data = await reader.readexactly(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


# ---- the fake host API server ----------------------------------------------------------------------


@dataclass
class Forwarded:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


Answer = Callable[[Forwarded], tuple[int, str, bytes]]


@dataclass
class FakeHost:
    """A TLS API server on loopback that records each request and answers as told (WebSocket: an echo)."""

    tls: ssl.SSLContext
    client_tls: ssl.SSLContext
    answer: Answer = lambda _: (202, "", b"")
    requests: list[Forwarded] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
            body = await read_body(reader, headers, 1 << 20)
            request = Forwarded(method, target, headers, body)
            self.requests.append(request)
            if request.header("upgrade"):
                await self._echo(request, reader, writer)
                return
            code, content_type, payload = self.answer(request)
            ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
            writer.write(
                f"HTTP/1.1 {code} X\r\n{ctype}Content-Length: {len(payload)}\r\n"
                "Audit-Id: host-audit-id\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()

    async def _echo(
        self, request: Forwarded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        accept = base64.b64encode(
            hashlib.sha1(request.header("sec-websocket-key")[0].encode() + WS_GUID).digest()
        )
        protocol = request.header("sec-websocket-protocol")[0].split(",")[0].strip()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + protocol.encode() + b"\r\n"
            b"Audit-Id: host-audit-id\r\n\r\n"
        )
        await writer.drain()
        while True:
            opcode, data = await read_frame(reader)
            if opcode == 0x8:
                writer.write(ws_frame(data, 0x8, mask=False))
                await writer.drain()
                return
            writer.write(ws_frame(b"echo:" + data, opcode, mask=False))
            await writer.drain()

    def connection(self) -> HostConnection:
        return HostConnection("127.0.0.1", self.port, self.client_tls, lambda: "syncer-token")


def make_fake_host(folder: Path) -> FakeHost:
    ca = certs.new_ca("host-ca")
    serving = certs.issue(ca, "host", ips=("127.0.0.1",), server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*serving.write(folder, "host"))
    return FakeHost(tls, ssl.create_default_context(cadata=ca.cert_pem.decode()))


# ---- the virtual API server's side --------------------------------------------------------------------


def _vm(
    resource: Resource, name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str]
) -> Obj:
    kind = "VirtualMachine" if resource is VM else "VirtualMachineInstance"
    meta = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    return {"apiVersion": "kubevirt.io/v1", "kind": kind, "metadata": meta, "spec": {}}


def host_copy(
    resource: Resource = VM,
    name: str = "web",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    """The host copy of virtual `team/<name>` as vnest's VM syncer makes it; labels or annotations forge it."""
    if labels is None:
        labels = {LABEL_MANAGED_BY: VC, "vnest.io/namespace": NS}
    if annotations is None:
        annotations = {ANNOTATION_NAME: name, ANNOTATION_NAMESPACE: NS, ANNOTATION_UID: "virtual-uid"}
    return _vm(resource, naming.host_name(name, NS, VC), HOST_NS, labels, annotations)


@dataclass
class Harness:
    server: sr.SubresourceServer
    host: FakeHost
    virtual_api: FakeApiServer
    host_api: FakeApiServer
    ca_pem: str
    client: certs.CertKey  # the front-proxy client's certificate
    front_proxy_ca: certs.CertKey
    reviews: list[Obj]
    allow: list[Callable[[Obj], tuple[bool, str]]]

    async def call(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cert: certs.CertKey | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request as the aggregator sends it; (status, headers, body) of the answer."""
        reader, writer = await self.connect(cert)
        try:
            lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
            lines += [f"{k}: {v}" for k, v in (AGGREGATOR if headers is None else headers)]
            if body or method == "PUT":
                lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode() + body)
            await writer.drain()
            _, code, answer_headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
            payload = await read_body(reader, answer_headers, 1 << 24, to_eof=True)
            return int(code), {k.lower(): v for k, v in answer_headers}, payload
        finally:
            writer.close()

    async def connect(
        self, cert: certs.CertKey | None = None, present: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection as the aggregator opens one (`present=False`: without a client certificate)."""
        tls = ssl.create_default_context(cadata=self.ca_pem)  # the APIService's caBundle
        if present:
            with tempfile.TemporaryDirectory() as tmp:
                tls.load_cert_chain(*(cert or self.client).write(Path(tmp), "client"))
        return await asyncio.open_connection(
            "127.0.0.1", self.server.port, ssl=tls, server_hostname=sr.SERVER_NAME
        )


def _virtual_client(
    api: FakeApiServer, reviews: list[Obj], allow: list[Callable[[Obj], tuple[bool, str]]]
) -> KubeClient:
    """The syncer's virtual client: SubjectAccessReviews answered by `allow[0]`, the rest by the fake API."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == SAR_PATH:
            review = json.loads(request.content)
            reviews.append(review)
            allowed, reason = allow[0](review["spec"])
            review["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
            return httpx.Response(201, json=review)
        return await api._handle(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url=api.url)
    return KubeClient(HttpxTransport(http))


@contextlib.asynccontextmanager
async def harness(tmp_path: Path, check_ownership: bool = True) -> AsyncIterator[Harness]:
    virtual_api, host_api = FakeApiServer("virtual"), FakeApiServer("host")
    for api, ns in ((virtual_api, NS), (host_api, HOST_NS)):
        api.serve("VirtualMachine", VM)
        api.serve("VirtualMachineInstance", VMI)
        api.seed(namespace_object(ns))
    virtual_api.seed(_vm(VM, "web", NS, {}, {}))
    virtual_api.seed(_vm(VMI, "web", NS, {}, {}))
    host_api.seed(host_copy(VM))
    host_api.seed(host_copy(VMI))
    front_proxy_ca = certs.new_ca("vnest-front-proxy-ca")
    pki = tmp_path / "pki"
    pki.mkdir()
    certs.write_private(pki / "front-proxy-ca.crt", front_proxy_ca.cert_pem)
    client = certs.issue(front_proxy_ca, "front-proxy-client", client=True)
    host = make_fake_host(tmp_path)
    fake = await asyncio.start_server(host.serve, "127.0.0.1", 0, ssl=host.tls)
    host.port = fake.sockets[0].getsockname()[1]
    reviews: list[Obj] = []
    allow: list[Callable[[Obj], tuple[bool, str]]] = [lambda spec: (True, "")]
    ca_pem, serving = sr.serving_certificate()
    async with _virtual_client(virtual_api, reviews, allow) as virtual, host_api.client() as host_client:
        server = sr.SubresourceServer(
            VC,
            HOST_NS,
            virtual,
            host_client,
            host.connection(),
            pki,
            serving,
            check_ownership=check_ownership,
        )
        await server.start()
        try:
            yield Harness(server, host, virtual_api, host_api, ca_pem, client, front_proxy_ca, reviews, allow)
        finally:
            await server.close()
            fake.close()
            await fake.wait_closed()
            virtual_api.close()
            host_api.close()


def run(tmp_path: Path, test: Callable[[Harness], Any], check_ownership: bool = True) -> None:
    async def main() -> None:
        async with harness(tmp_path, check_ownership) as h:
            await asyncio.wait_for(test(h), 20)

    asyncio.run(main())


def _status(body: bytes) -> Obj:
    obj: Obj = json.loads(body)
    assert obj["kind"] == "Status", obj
    return obj


# ---- authentication ----------------------------------------------------------------------------------


def test_only_the_virtual_api_servers_front_proxy_client_gets_in(tmp_path):
    async def test(h: Harness) -> None:
        # Signed by the front-proxy CA, but not its client: refused in the open.
        tenant = certs.issue(h.front_proxy_ca, "tenant", client=True)
        code, _, body = await h.call("PUT", f"{BASE}/namespaces/{NS}/virtualmachines/web/start", cert=tenant)
        assert code == 403 and "aggregator" in _status(body)["message"]
        # The right name from another CA (the cluster CA signs what tenants ask), or no certificate:
        # the handshake fails.
        stranger = certs.issue(certs.new_ca("vnest-ca"), "front-proxy-client", client=True)
        for cert, present in ((stranger, True), (None, False)):
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                reader, writer = await h.connect(cert, present)
                writer.write(
                    f"PUT {BASE}/namespaces/{NS}/virtualmachines/web/start HTTP/1.1\r\n\r\n".encode()
                )
                await writer.drain()
                if not await reader.read():
                    raise ConnectionError("closed without an answer")
        assert h.host.requests == [] and h.reviews == []

    run(tmp_path, test)


# ---- discovery -------------------------------------------------------------------------------------------


def test_discovery_openapi_and_health_are_served_without_reviews(tmp_path):
    async def test(h: Harness) -> None:
        code, headers, body = await h.call("GET", BASE, headers=[])
        resources = json.loads(body)
        assert code == 200 and headers["content-type"] == "application/json"
        assert resources["kind"] == "APIResourceList" and resources["groupVersion"] == sr.GROUP_VERSION
        names = [r["name"] for r in resources["resources"]]
        for name in (
            "virtualmachineinstances/console",
            "virtualmachineinstances/vnc",
            "virtualmachines/start",
        ):
            assert name in names
        assert all(r["namespaced"] for r in resources["resources"])
        group = json.loads((await h.call("GET", "/apis/subresources.kubevirt.io", headers=[]))[2])
        assert group["kind"] == "APIGroup" and group["preferredVersion"]["groupVersion"] == sr.GROUP_VERSION
        swagger = json.loads((await h.call("GET", "/openapi/v2", headers=[]))[2])
        assert swagger["swagger"] == "2.0" and swagger["paths"] == {}
        assert json.loads((await h.call("GET", "/openapi/v3", headers=[]))[2]) == {"paths": {}}
        assert (await h.call("GET", "/healthz", headers=[]))[:1] == (200,)
        assert (await h.call("GET", f"{BASE}/start-cluster-profiler", headers=[]))[0] == 404
        assert h.reviews == [] and h.host.requests == []

    run(tmp_path, test)


# ---- authorization ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "verb", "resource", "subresource"),
    [
        ("PUT", "virtualmachines/web/start", "update", "virtualmachines", "start"),
        ("PUT", "virtualmachines/web/migrate", "update", "virtualmachines", "migrate"),
        ("GET", "virtualmachineinstances/web/console", "get", "virtualmachineinstances", "console"),
        ("GET", "virtualmachineinstances/web/vnc/screenshot", "get", "virtualmachineinstances", "vnc"),
        ("GET", "virtualmachines/web/portforward/22/tcp", "get", "virtualmachines", "portforward"),
        ("PUT", "virtualmachineinstances/web/pause", "update", "virtualmachineinstances", "pause"),
    ],
)
def test_a_denied_review_is_a_403_and_nothing_is_forwarded(
    tmp_path, method, path, verb, resource, subresource
):
    async def test(h: Harness) -> None:
        h.allow[0] = lambda spec: (False, "no RBAC for that")
        code, _, body = await h.call(method, f"{BASE}/namespaces/{NS}/{path}")
        denial = _status(body)
        assert code == 403 and denial["reason"] == "Forbidden" and denial["code"] == 403
        assert denial["message"] == (
            f'{resource}.subresources.kubevirt.io "web" is forbidden: User "alice" cannot {verb} resource '
            f'"{resource}/{subresource}" in API group "subresources.kubevirt.io" in the namespace "{NS}": '
            "no RBAC for that"
        )
        assert denial["details"] == {"name": "web", "group": "subresources.kubevirt.io", "kind": resource}
        # The review virt-api makes, on the virtual API server, for the caller the aggregator named.
        [review] = h.reviews
        assert review["spec"] == {
            "user": "alice",
            "groups": ["devs", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=abc"]},
            "resourceAttributes": {
                "namespace": NS,
                "verb": verb,
                "group": "subresources.kubevirt.io",
                "version": "v1",
                "resource": resource,
                "subresource": subresource,
                "name": "web",
            },
        }
        assert h.host.requests == []

    run(tmp_path, test)


def test_a_call_without_a_user_is_refused(tmp_path):
    async def test(h: Harness) -> None:
        code, _, _ = await h.call("PUT", f"{BASE}/namespaces/{NS}/virtualmachines/web/start", headers=[])
        assert code == 401 and h.host.requests == []

    run(tmp_path, test)


# ---- forwarding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "sub", "resource", "body", "query"),
    [
        ("PUT", "start", "virtualmachines", b'{"paused":true}', ""),
        ("PUT", "stop", "virtualmachines", b'{"gracePeriod":0}', ""),
        ("PUT", "migrate", "virtualmachines", b'{"addedNodeSelector":{"zone":"a"}}', ""),
        ("GET", "console", "virtualmachineinstances", b"", ""),
        ("GET", "portforward/22/tcp", "virtualmachines", b"", ""),
        ("GET", "portforward/8080", "virtualmachineinstances", b"", ""),
        ("GET", "vsock", "virtualmachineinstances", b"", "port=1234&tls=true"),
    ],
)
def test_calls_go_to_the_host_copy_under_its_host_name(tmp_path, method, sub, resource, body, query):
    async def test(h: Harness) -> None:
        target = f"{BASE}/namespaces/{NS}/{resource}/web/{sub}" + (f"?{query}" if query else "")
        code, _, _ = await h.call(method, target, [*AGGREGATOR, ("Content-Type", "application/json")], body)
        assert code == 202
        [forwarded] = h.host.requests
        expected = f"{BASE}/namespaces/{HOST_NS}/{resource}/{HOST_WEB}/{sub}" + (f"?{query}" if query else "")
        assert (forwarded.method, forwarded.target, forwarded.body) == (method, expected, body)
        assert forwarded.header("authorization") == ["Bearer syncer-token"]
        if method == "PUT":
            assert forwarded.header("content-type") == ["application/json"]
            assert forwarded.header("content-length") == [str(len(body))]

    run(tmp_path, test)


def test_the_tenants_credentials_and_identity_never_reach_the_host(tmp_path):
    async def test(h: Harness) -> None:
        headers = [
            *AGGREGATOR,
            ("Authorization", "Bearer stolen"),
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("Cookie", "session=x"),
            ("Accept-Encoding", "gzip"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Accept", "application/json"),
            ("User-Agent", "virtctl/v1.6.0"),
        ]
        code, _, _ = await h.call(
            "PUT", f"{BASE}/namespaces/{NS}/virtualmachines/web/restart", headers, b"{}"
        )
        assert code == 202
        [forwarded] = h.host.requests
        names = {k.lower() for k, _ in forwarded.headers}
        assert forwarded.header("authorization") == ["Bearer syncer-token"]
        assert forwarded.header("accept") == ["application/json"]
        assert forwarded.header("user-agent") == ["virtctl/v1.6.0"]
        for dropped in (
            "impersonate-user",
            "impersonate-group",
            "cookie",
            "accept-encoding",
            "x-forwarded-for",
        ):
            assert dropped not in names
        assert not [n for n in names if n.startswith("x-remote")]
        assert "stolen" not in repr(forwarded.headers)

    run(tmp_path, test)


def test_console_websocket_bytes_are_relayed_both_ways(tmp_path):
    async def test(h: Harness) -> None:
        reader, writer = await h.connect()
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {BASE}/namespaces/{NS}/virtualmachineinstances/web/console HTTP/1.1",
            "Host: localhost",
            *[f"{k}: {v}" for k, v in AGGREGATOR],
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Protocol: plain.kubevirt.io",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        _, code, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        answer = {k.lower(): v for k, v in headers}
        assert code == "101"
        assert (
            answer["sec-websocket-accept"]
            == base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        )
        assert answer["sec-websocket-protocol"] == "plain.kubevirt.io"
        assert "audit-id" not in answer  # the host's headers that say nothing of the stream stay there
        for line in (b"login: ", b"root\r\n", bytes(range(256)) * 4):
            writer.write(ws_frame(line))
            await writer.drain()
            assert await read_frame(reader) == (0x2, b"echo:" + line)
        writer.write(ws_frame(b"\x03\xe8", 0x8))
        await writer.drain()
        assert await read_frame(reader) == (0x8, b"\x03\xe8")
        writer.close()
        [forwarded] = h.host.requests
        assert forwarded.target == f"{BASE}/namespaces/{HOST_NS}/virtualmachineinstances/{HOST_WEB}/console"
        assert forwarded.header("connection") == ["Upgrade"] and forwarded.header("upgrade") == ["websocket"]

    run(tmp_path, test)


# ---- ownership ----------------------------------------------------------------------------------------


def test_a_vm_missing_in_the_virtual_cluster_is_not_found_as_kubevirt_says(tmp_path):
    async def test(h: Harness) -> None:
        # Even when the host has a copy of that name that is ours: the virtual object is what counts.
        h.host_api.seed(host_copy(VM, "ghost"))
        code, _, body = await h.call("PUT", f"{BASE}/namespaces/{NS}/virtualmachines/ghost/start")
        answer = _status(body)
        assert code == 404 and answer["message"] == 'virtualmachine.kubevirt.io "ghost" not found'
        assert answer["details"] == {"name": "ghost", "group": "kubevirt.io", "kind": "virtualmachine"}
        code, _, body = await h.call("GET", f"{BASE}/namespaces/{NS}/virtualmachineinstances/ghost/console")
        assert (
            code == 404 and _status(body)["message"] == 'virtualmachineinstance.kubevirt.io "ghost" not found'
        )
        assert h.host.requests == []

    run(tmp_path, test)


FORGED: dict[str, dict[str, dict[str, str]] | None] = {
    "no copy": None,
    "not labelled": {"labels": {}},
    "another cluster's": {"labels": {LABEL_MANAGED_BY: "other-vc"}},
    "a copy of another VM": {"annotations": {ANNOTATION_NAME: "db", ANNOTATION_NAMESPACE: NS}},
    "a copy from another namespace": {"annotations": {ANNOTATION_NAME: "web", ANNOTATION_NAMESPACE: "other"}},
}


@pytest.mark.parametrize("forged", FORGED)
@pytest.mark.parametrize("check_ownership", [False, True], ids=["check off", "check on"])
def test_a_host_object_at_the_translated_name_that_is_not_our_copy_is_never_reached(
    tmp_path, forged, check_ownership
):
    # The attack: a VM the tenant owns in the virtual cluster, while the host object its copy would
    # be named after is someone else's (a host admin's, another cluster's, a copy of another VM).
    # With the check off the call reaches that object (the test sees the attack work); with it on,
    # 404 and nothing is forwarded.
    async def test(h: Harness) -> None:
        for resource, kind in ((VM, "VirtualMachine"), (VMI, "VirtualMachineInstance")):
            h.host_api.remove(kind, HOST_WEB, HOST_NS)
            if FORGED[forged] is not None:
                h.host_api.seed(host_copy(resource, "web", **(FORGED[forged] or {})))
        for path in ("virtualmachines/web/stop", "virtualmachineinstances/web/console"):
            method = "PUT" if path.endswith("stop") else "GET"
            code, _, body = await h.call(method, f"{BASE}/namespaces/{NS}/{path}")
            if check_ownership:
                assert code == 404, body
                assert "of this virtual cluster" in _status(body)["message"]
            else:
                assert code == 202
        assert len(h.host.requests) == (0 if check_ownership else 2)

    run(tmp_path, test, check_ownership)


# ---- answers ----------------------------------------------------------------------------------------


def test_host_names_in_kubevirts_answers_become_virtual_names(tmp_path):
    conflict = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'Operation cannot be fulfilled on virtualmachine.kubevirt.io "{HOST_WEB}": VM is already running',
        "reason": "Conflict",
        "details": {"name": HOST_WEB, "group": "kubevirt.io", "kind": "virtualmachine"},
        "code": 409,
    }

    async def test(h: Harness) -> None:
        h.host.answer = lambda _: (409, "application/json", json.dumps(conflict).encode())
        code, headers, body = await h.call("PUT", f"{BASE}/namespaces/{NS}/virtualmachines/web/start")
        answer = _status(body)
        assert code == 409 and HOST_WEB not in body.decode() and "audit-id" not in headers
        assert (
            answer["message"]
            == 'Operation cannot be fulfilled on virtualmachine.kubevirt.io "web": VM is already running'
        )
        assert answer["details"]["name"] == "web"
        # The host refusing the syncer (its RBAC) says nothing of the host's identities.
        forbidden = f'User "system:serviceaccount:{HOST_NS}:vc-{VC}" cannot update {HOST_WEB}'
        h.host.answer = lambda _: (403, "application/json", json.dumps({"message": forbidden}).encode())
        code, _, body = await h.call("PUT", f"{BASE}/namespaces/{NS}/virtualmachines/web/start")
        assert code == 500 and HOST_NS not in body.decode() and HOST_WEB not in body.decode()
        # Anything but JSON (a VNC screenshot) comes as it is.
        h.host.answer = lambda _: (200, "image/png", b"\x89PNG" + HOST_WEB.encode())
        code, _, body = await h.call(
            "GET", f"{BASE}/namespaces/{NS}/virtualmachineinstances/web/vnc/screenshot"
        )
        assert (code, body) == (200, b"\x89PNG" + HOST_WEB.encode())

    run(tmp_path, test)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "virtualmachines/web/expand-spec"),
        ("PUT", "virtualmachines/web/addvolume"),
        ("PUT", "virtualmachineinstances/web/removevolume"),
        ("PUT", "virtualmachines/web/memorydump"),
        ("GET", "virtualmachines/web/objectgraph"),
        ("PUT", "expand-vm-spec"),
    ],
)
def test_endpoints_that_would_show_or_edit_host_objects_are_refused(tmp_path, method, path):
    async def test(h: Harness) -> None:
        code, _, body = await h.call(method, f"{BASE}/namespaces/{NS}/{path}", body=b'{"name":"x"}')
        answer = _status(body)
        assert code == 501 and "not served in a vnest virtual cluster" in answer["message"]
        assert h.host.requests == []

    run(tmp_path, test)


def test_unknown_paths_and_wrong_methods(tmp_path):
    async def test(h: Harness) -> None:
        ns = f"{BASE}/namespaces/{NS}"
        assert (await h.call("GET", f"{ns}/virtualmachines/web/nonsense"))[0] == 404
        assert (await h.call("GET", f"{ns}/virtualmachines/web/portforward/0"))[0] == 404
        assert (await h.call("GET", f"{ns}/virtualmachines/web/portforward/22/sctp"))[0] == 404
        assert (await h.call("GET", f"{ns}/virtualmachines/web/start"))[0] == 405
        assert (await h.call("GET", f"{ns}/virtualmachines/..%2Fsecret/start"))[0] == 404
        assert (await h.call("GET", f"{BASE}/namespaces/Bad_NS/virtualmachines/web/start"))[0] == 404
        assert h.host.requests == []

    run(tmp_path, test)


# ---- registration ---------------------------------------------------------------------------------------


def test_install_registers_the_server_and_waits_until_available_and_uninstall_removes_it():
    async def main() -> None:
        api = FakeApiServer("virtual")
        api.serve("APIService", APISERVICE, status=True)
        async with api.client() as virtual:

            async def aggregator() -> None:
                # The virtual API server's availability controller: the APIService is Available once made.
                async for event in virtual.stream_lines(APISERVICE.path(), {"watch": "true"}):
                    if event["object"]["metadata"]["name"] == sr.APISERVICE:
                        available = {"conditions": [{"type": "Available", "status": "True"}]}
                        api.seed({**event["object"], "status": available})
                        return

            marker = asyncio.create_task(aggregator())
            await asyncio.wait_for(sr.install(virtual, 34567, "PEM", vcluster=VC, timeout=10), 15)
            await asyncio.wait_for(marker, 5)
            svc = api.get("Service", sr.SERVICE, "kube-system")
            apiservice = api.get("APIService", sr.APISERVICE)
            assert svc is not None and apiservice is not None
            assert svc["spec"]["type"] == "ExternalName" and svc["spec"]["externalName"] == "localhost"
            assert svc["spec"]["ports"][0]["port"] == 34567
            assert svc["metadata"]["labels"] == {LABEL_MANAGED_BY: VC}
            spec = apiservice["spec"]
            assert spec["service"] == {"namespace": "kube-system", "name": sr.SERVICE, "port": 34567}
            assert (spec["group"], spec["version"]) == ("subresources.kubevirt.io", "v1")
            assert (spec["groupPriorityMinimum"], spec["versionPriority"]) == (1000, 15)
            assert base64.b64decode(spec["caBundle"]) == b"PEM"
            assert apiservice["metadata"]["labels"] == {LABEL_MANAGED_BY: VC}

            await sr.uninstall(virtual)
            assert api.get("APIService", sr.APISERVICE) is None
            assert api.get("Service", sr.SERVICE, "kube-system") is None
            # An APIService of that name vnest did not make is left alone.
            api.seed({"kind": "APIService", "metadata": {"name": sr.APISERVICE}, "spec": {"group": "x"}})
            await sr.uninstall(virtual)
            assert api.get("APIService", sr.APISERVICE) is not None
        api.close()

    asyncio.run(main())


def test_the_serving_certificate_is_for_the_name_the_aggregator_checks():
    ca_pem, serving = sr.serving_certificate()
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert serving.cert.issuer == ca.subject
    sans = serving.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vnest-kubevirt-subresources.kube-system.svc" in sans.get_values_for_type(x509.DNSName)
