"""The fake nodes' kubelet: logs, exec, attach and port-forward of virtual pods, served from the host.

The virtual API server reaches a pod's "kubelet" at the address its fake node
advertises, which is this server. It accepts only the virtual API server's
kubelet-client certificate (issued by a CA of its own, vnest.controlplane.pki), finds the host copy of the pod in the syncer's
cache (so only pods of this virtual cluster can be reached), rewrites the
kubelet path into the host API's pod subresource, and relays the bytes both
ways: plain responses (logs, follow or not) and upgraded streams (SPDY or
WebSocket for exec, attach, port-forward) alike, since after the request
head the proxy never needs to understand what flows.

The relaying itself (request head, response, splicing) is vnest.kube.relay,
shared with KubeVirt's subresources (vnest.integrations.kubevirt.subresources).
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
from vnest.kube.relay import read_request, relay, relay_response, respond
from vnest.kube.relay import upstream_head as upstream_head  # re-exported: tests/unit/test_kubelet_proxy.py

_log = log.get("syncer.kubelet")

KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
_relay_response = relay_response  # what tests/unit/test_kubelet_proxy.py checks, by its earlier name
# Kubelet query names -> the API server's pod subresource query names.
_EXEC_QUERY = {"command": "command", "input": "stdin", "output": "stdout", "error": "stderr", "tty": "tty"}
_LOG_QUERY = ("follow", "previous", "sinceSeconds", "sinceTime", "timestamps", "tailLines", "limitBytes")


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
                await respond(writer, 403, "only the virtual API server may use this kubelet")
                return
            request = await read_request(reader, writer)
            if request is None:
                return
            method, target, headers = request
            if target in ("/healthz", "/readyz", "/livez"):
                await respond(writer, 200, "ok")
                return
            translated = self._translate(target)
            if isinstance(translated, tuple):
                await respond(writer, *translated)
                return
            _log.debug("relaying", method=method, path=translated)
            await relay(self.host, method, translated, headers, reader, writer)
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
