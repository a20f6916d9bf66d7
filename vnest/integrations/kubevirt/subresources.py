"""`subresources.kubevirt.io/v1` served in the virtual cluster and forwarded to the host's KubeVirt.

`virtctl start|stop|console|vnc|port-forward ...` pointed at a virtual cluster calls KubeVirt's
aggregated API, which virt-api serves on a real cluster. Here the syncer serves it: an asyncio TLS
server (on 127.0.0.1) registered in the virtual cluster as APIService `v1.subresources.kubevirt.io`,
which checks each call, translates it to the VM's host copy and relays it to the host's virt-api
through the host API server, with the syncer's host credentials (vnest.kube.relay, shared with
the fake nodes' kubelet). WebSocket streams (console, VNC, port-forward, USB redirection, vsock)
are spliced end to end after the upgrade.

Authentication, as an aggregated API server must: only a client certificate issued by the virtual
API server's front-proxy CA (`front-proxy-ca.crt` of the PKI, the `--requestheader-client-ca-file`)
with CN `front-proxy-client` (`--requestheader-allowed-names`) is accepted; the caller is then the
`X-Remote-User`, its groups every `X-Remote-Group` and its extras the `X-Remote-Extra-<key>`
headers (keys lower-cased and %-unescaped), as KubeVirt's authorizer reads them.

Authorization, as virt-api's (pkg/virt-api/rest/authorizer.go, `generateAccessReview`): every call
on a namespaced path is a SubjectAccessReview to the *virtual* API server: group
`subresources.kubevirt.io`, version `v1`, the virtual namespace, resource `virtualmachines` or
`virtualmachineinstances`, the virtual name, subresource the first path segment after the name
(`portforward` for `portforward/22/tcp`, `vnc` for `vnc/screenshot`, `sev` for `sev/...`, as
KubeVirt splits the path), and the verb `mapHttpVerbToRbacVerb` gives: PUT update (start, stop,
restart, migrate, pause, ...), GET get (console, vnc, portforward, guestosinfo, ...; list without
a name), POST create, PATCH patch, DELETE delete. Denied: 403 with a Status as Kubernetes writes
it (virt-api itself answers 401 with the reason as text). Discovery, health and OpenAPI paths,
and `version`/`guestfs`, need no review, as in KubeVirt's `noAuthEndpoints` (the virtual API
server's own RBAC already authorized every call it proxies here).

Ownership, before anything is forwarded: the virtual object must exist (a GET on the virtual API
server; else 404 `virtualmachine.kubevirt.io "NAME" not found`, KubeVirt's answer), and its host
copy `naming.host_name(NAME, NS, vcluster)` in the host namespace must exist, carry
`vnest.io/managed-by=<vcluster>` and the annotations naming NS/NAME (else 404, "not a VM of this
virtual cluster"); a VMI's host copy is found the same way. So no call reaches a host object of
another tenant, or one a host admin put at a translated name.

Forwarding: `.../namespaces/<host ns>/<plural>/<host name>/<subresource...>?<query>` to the host
API server, with only the headers the call needs (Accept, Content-Type, User-Agent and the
WebSocket upgrade's), never the caller's Authorization, Impersonate-* or X-Remote-*. The bodies
of the forwarded calls name no other object (start: `paused`; stop: `gracePeriod`; restart:
`gracePeriodSeconds`; migrate: `addedNodeSelector`, host node labels that can only narrow the
VM's own placement; pause/unpause: `dryRun`; freeze: `unfreezeTimeout`; SEV: session blobs), so
they cross as they are. A JSON answer (KubeVirt's Status errors, guest agent info) comes back
with the host name replaced by the virtual one (`virtualmachine.kubevirt.io "web-x-team-x-vc"
not found`, `Operation cannot be fulfilled on ... "web-x-team-x-vc": VM is already running`); a
401/403 of the host (the syncer lacks host RBAC) becomes a 500 that names no host identity, the
details going to the syncer's log. Response headers are reduced to the ones that describe the
body or the upgrade.

What each path gets:
- forwarded: virtualmachines `start`, `stop`, `restart`, `migrate` (PUT), `portforward/PORT[/tcp|udp]`
  (GET); virtualmachineinstances `console`, `vnc`, `vnc/screenshot`, `usbredir`, `vsock`,
  `portforward/PORT[/tcp|udp]`, `guestosinfo`, `userlist`, `filesystemlist`,
  `sev/fetchcertchain`, `sev/querylaunchmeasurement` (GET), `pause`, `unpause`, `freeze`,
  `unfreeze`, `softreboot`, `reset`, `sev/setupsession`, `sev/injectlaunchsecret` (PUT);
  `version` and `guestfs` (GET; no names: the host's KubeVirt version and guestfs image);
- refused with 501 (see `REFUSED`): `expand-spec` and `objectgraph` answer with host objects
  (host namespace, names of host copies, vnest's labels) that are no view of the virtual ones;
  volume hotplug (`addvolume`, `removevolume`), `memorydump`/`removememorydump` and VMI `backup`
  name claims or DataVolumes in their bodies and edit the host VM behind the VM syncer;
  `evacuate/cancel` acts on a node evacuation, a host admin's operation; `namespaces/NS/expand-vm-spec`
  expands a VM against the host's instancetypes by their names;
- answered here: `/`, `/apis`, `/apis/subresources.kubevirt.io` (APIGroup; virt-api misspells its
  name `subresource.kubevirt.io`, this does not), `/apis/subresources.kubevirt.io/v1`
  (virt-api's APIResourceList, the refused entries included: it is KubeVirt's API), `/healthz`,
  `/readyz`, `/livez`, `.../v1/healthz`, and `/openapi/v2` (an empty Swagger document) and
  `/openapi/v3` (an empty discovery) the aggregator downloads (a 404 there would also be
  skipped, not count against availability, which only needs `/apis/<group>/<version>`);
- anything else, the profilers included: 404.

Registration: Service `kube-system/vnest-kubevirt-subresources` (ExternalName `localhost`, the
server's port) and APIService `v1.subresources.kubevirt.io` (KubeVirt's groupPriorityMinimum
1000 and versionPriority 15, `caBundle`), both labelled managed-by. The virtual API server runs
without `--enable-aggregator-routing`, so its aggregator dials the ExternalName and the APIService
port (k8s.io/apiserver ResolveCluster); the syncer shares the machine (process driver) or the pod
(kubernetes driver) with it, so `localhost` reaches this server and nothing else on the network
does. (Aggregator routing, set through extraArgs, cannot route to an ExternalName Service.) The
aggregator checks the serving certificate against ServerName `<service>.<namespace>.svc`.

Certificate: a fresh CA made in memory at every start, whose PEM goes into `caBundle`, issues the
serving certificate; its key is never stored (the serving key only for the moment `ssl` loads it).
Not the PKI's CAs: the cluster CA also signs the CSRs a tenant approves, so a tenant could obtain
a certificate for this server's name; the front-proxy CA is what the virtual API server trusts
for requestheader identities, a role a serving certificate must not share; a persisted CA of its
own would need the PKI (pki.py, both drivers) to grow. The cost: the APIService is updated at every
start of the syncer, which is also when its port changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from vnest import certs, log, naming
from vnest.errors import VnestError
from vnest.kube.client import ApiError, HostConnection, KubeClient, Obj
from vnest.kube.relay import (
    BodyTooLarge,
    Headers,
    header,
    is_upgrade,
    parse_head,
    read_body,
    read_request,
    relay,
    relay_response,
    respond_body,
)
from vnest.syncer.mappings import ANNOTATION_NAME, ANNOTATION_NAMESPACE, LABEL_MANAGED_BY

_log = log.get("syncer.kubevirt.subresources")

GROUP = "subresources.kubevirt.io"
VERSION = "v1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"
SERVICE = "vnest-kubevirt-subresources"
SERVICE_NAMESPACE = "kube-system"
SERVICE_KEY = f"{SERVICE_NAMESPACE}/{SERVICE}"  # which the Service syncer leaves alone
SERVER_NAME = f"{SERVICE}.{SERVICE_NAMESPACE}.svc"  # what the aggregator checks the certificate against
FRONT_PROXY_CLIENT = "front-proxy-client"  # --requestheader-allowed-names of the virtual API server
AVAILABLE_TIMEOUT = 60.0
MAX_BODY = 1 << 20  # options bodies are a few bytes
MAX_JSON_ANSWER = 16 << 20  # JSON answers read whole to put virtual names in

_BASE = f"/apis/{GROUP_VERSION}"
_APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
_SERVICE_PATH = f"/api/v1/namespaces/{SERVICE_NAMESPACE}/services/{SERVICE}"
_SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
_KINDS = {"virtualmachines": "virtualmachine", "virtualmachineinstances": "virtualmachineinstance"}

# virt-api's APIResourceList of subresources.kubevirt.io/v1 (pkg/virt-api/api.go, the list its tests expect).
API_RESOURCES = (
    "expand-vm-spec",
    "virtualmachineinstances/addvolume",
    "virtualmachineinstances/backup",
    "virtualmachineinstances/console",
    "virtualmachineinstances/evacuate/cancel",
    "virtualmachineinstances/filesystemlist",
    "virtualmachineinstances/freeze",
    "virtualmachineinstances/guestosinfo",
    "virtualmachineinstances/objectgraph",
    "virtualmachineinstances/pause",
    "virtualmachineinstances/portforward",
    "virtualmachineinstances/removevolume",
    "virtualmachineinstances/reset",
    "virtualmachineinstances/sev/fetchcertchain",
    "virtualmachineinstances/sev/injectlaunchsecret",
    "virtualmachineinstances/sev/querylaunchmeasurement",
    "virtualmachineinstances/sev/setupsession",
    "virtualmachineinstances/softreboot",
    "virtualmachineinstances/unfreeze",
    "virtualmachineinstances/unpause",
    "virtualmachineinstances/usbredir",
    "virtualmachineinstances/userlist",
    "virtualmachineinstances/vnc",
    "virtualmachineinstances/vnc/screenshot",
    "virtualmachineinstances/vsock",
    "virtualmachines/addvolume",
    "virtualmachines/evacuate/cancel",
    "virtualmachines/expand-spec",
    "virtualmachines/memorydump",
    "virtualmachines/migrate",
    "virtualmachines/objectgraph",
    "virtualmachines/portforward",
    "virtualmachines/removememorydump",
    "virtualmachines/removevolume",
    "virtualmachines/restart",
    "virtualmachines/start",
    "virtualmachines/stop",
)

# The subresources forwarded to the host, with their HTTP method (virt-api's routes).
FORWARDED: dict[str, dict[str, str]] = {
    "virtualmachines": {
        "start": "PUT",
        "stop": "PUT",
        "restart": "PUT",
        "migrate": "PUT",
        "portforward": "GET",
    },
    "virtualmachineinstances": {
        **dict.fromkeys(
            ("console", "vnc", "vnc/screenshot", "usbredir", "vsock", "portforward", "guestosinfo"), "GET"
        ),
        **dict.fromkeys(
            ("userlist", "filesystemlist", "sev/fetchcertchain", "sev/querylaunchmeasurement"), "GET"
        ),
        **dict.fromkeys(("pause", "unpause", "freeze", "unfreeze", "softreboot", "reset"), "PUT"),
        **dict.fromkeys(("sev/setupsession", "sev/injectlaunchsecret"), "PUT"),
    },
}
_GRAPH = "it answers with the host objects around the VM, by their host names"
_HOTPLUG = (
    "its body names claims or DataVolumes and it edits the host VM's volumes behind vnest's VM syncer; "
    "change the VirtualMachine's volumes in its spec instead"
)
# Subresources KubeVirt serves that vnest refuses (501), and why.
REFUSED: dict[str, dict[str, str]] = {
    "virtualmachines": {
        "expand-spec": (
            "it answers with the host's VirtualMachine (host namespace, names of host copies, vnest's "
            "labels), which is no view of the virtual one"
        ),
        "objectgraph": _GRAPH,
        "addvolume": _HOTPLUG,
        "removevolume": _HOTPLUG,
        "memorydump": "its body names the claim to dump to, and it edits the host VM's volumes",
        "removememorydump": "it edits the host VM's volumes behind vnest's VM syncer",
        "evacuate/cancel": "node evacuations are the host admin's",
    },
    "virtualmachineinstances": {
        "objectgraph": _GRAPH,
        "addvolume": _HOTPLUG,
        "removevolume": _HOTPLUG,
        "backup": "its body names the objects the backup goes to",
        "evacuate/cancel": "node evacuations are the host admin's",
    },
}
_REFUSED_NAMESPACED = {
    "expand-vm-spec": "it expands a VirtualMachine against the host's instancetypes and preferences by their names"
}
# virt-api's endpoints that name no object and need no review (its noAuthEndpoints): forwarded as they are.
_FORWARDED_PLAIN = ("version", "guestfs")

# The request headers a forwarded call needs; never Authorization, Impersonate-*, X-Remote-*, cookies.
# No Accept-Encoding: JSON answers are read to put virtual names in, so they must not come compressed.
RELAYED_HEADERS = frozenset(
    {
        "accept",
        "content-type",
        "user-agent",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)
# The response headers that come back: what describes the body or the upgrade (no host audit ids,
# priority-and-fairness uids or warnings).
_ANSWER_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "cache-control",
        "date",
    }
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_FORWARD = re.compile(r"^portforward/([0-9]{1,5})(/(tcp|udp))?$")
_RBAC_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


# ---- answers ---------------------------------------------------------------------------------


def status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A failure Status, as Kubernetes writes it."""
    out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    out["reason"] = reason
    if details:
        out["details"] = details
    out["code"] = code
    return out


def not_found(plural: str, name: str, why: str = "") -> Obj:
    """KubeVirt's answer for a VM or VMI that is not there (errors.NewNotFound(v1.Resource(kind), name))."""
    kind = _KINDS[plural]
    message = f'{kind}.kubevirt.io "{name}" not found' + (f": {why}" if why else "")
    return status(404, "NotFound", message, {"name": name, "group": "kubevirt.io", "kind": kind})


def api_resource_list() -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {"name": name, "singularName": "", "namespaced": True, "kind": "", "verbs": []}
            for name in API_RESOURCES
        ],
    }


def api_group() -> Obj:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


_LOCAL: dict[str, Callable[[], Obj]] = {
    "/": lambda: {"paths": ["/apis", f"/apis/{GROUP}", _BASE, "/healthz", "/openapi/v2", "/openapi/v3"]},
    "/apis": lambda: {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]},
    f"/apis/{GROUP}": api_group,
    _BASE: api_resource_list,
    # Empty but valid: the aggregator merges these into the virtual cluster's OpenAPI documents.
    "/openapi/v2": lambda: {
        "swagger": "2.0",
        "info": {"title": "KubeVirt subresources (served by vnest)", "version": VERSION},
        "paths": {},
    },
    "/openapi/v3": lambda: {"paths": {}},
}
_HEALTH = ("/healthz", "/readyz", "/livez", f"{_BASE}/healthz")


async def _answer(writer: asyncio.StreamWriter, code: int, obj: Obj) -> None:
    await respond_body(writer, code, orjson.dumps(obj), "application/json")


# ---- the caller -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who the virtual API server says is calling (its requestheader headers)."""

    user: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, headers: Headers) -> Caller | None:
        user = header(headers, "x-remote-user")
        if not user:
            return None
        groups = tuple(v for k, v in headers if k.lower() == "x-remote-group")
        extra: dict[str, list[str]] = {}
        prefix = "x-remote-extra-"
        for k, v in headers:
            if k.lower().startswith(prefix):
                extra.setdefault(unquote(k[len(prefix) :].lower()), []).append(v)
        return cls(user, groups, extra)


def rbac_verb(method: str, name: str) -> str | None:
    """KubeVirt's mapHttpVerbToRbacVerb."""
    if method in ("GET", "HEAD"):
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return _RBAC_VERBS.get(method)


def access_review(
    caller: Caller, verb: str, namespace: str, resource: str, subresource: str, name: str
) -> Obj:
    """The SubjectAccessReview virt-api makes for a call (authorizer.go generateAccessReview)."""
    attributes = {
        "namespace": namespace,
        "verb": verb,
        "group": GROUP,
        "version": VERSION,
        "resource": resource,
    }
    if subresource:
        attributes["subresource"] = subresource
    if name:
        attributes["name"] = name
    spec: Obj = {"user": caller.user, "groups": list(caller.groups), "resourceAttributes": attributes}
    if caller.extra:
        spec["extra"] = caller.extra
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def forbidden(
    caller: Caller, verb: str, namespace: str, resource: str, subresource: str, name: str, why: str
) -> Obj:
    """The 403 the API server writes (responsewriters.Forbidden)."""
    full = f"{resource}/{subresource}" if subresource else resource
    target = f'{resource}.{GROUP} "{name}"' if name else f"{resource}.{GROUP}"
    message = (
        f'{target} is forbidden: User "{caller.user}" cannot {verb} resource "{full}" '
        f'in API group "{GROUP}" in the namespace "{namespace}"' + (f": {why}" if why else "")
    )
    return status(403, "Forbidden", message, {"name": name, "group": GROUP, "kind": resource})


def _filter_head(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        line for line in lines[1:] if ":" in line and line.split(":", 1)[0].strip().lower() in _ANSWER_HEADERS
    ]
    return ("\r\n".join([lines[0], *kept]) + "\r\n\r\n").encode("latin-1")


# ---- the server -------------------------------------------------------------------------------


def serving_certificate() -> tuple[str, certs.CertKey]:
    """(the PEM of a fresh CA, for caBundle; a serving certificate it issued for SERVER_NAME)."""
    ca = certs.new_ca("vnest-kubevirt-subresources-ca")
    serving = certs.issue(
        ca, SERVER_NAME, dns_names=(SERVER_NAME, "localhost"), ips=("127.0.0.1",), server=True
    )
    return ca.cert_pem.decode(), serving


def _tls(serving: certs.CertKey, front_proxy_ca: Path) -> ssl.SSLContext:
    # Only the virtual API server's front-proxy client: its CA issues nothing else.
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(front_proxy_ca))
    tls.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory(prefix="vnest-kubevirt-") as tmp:  # ssl loads keys from files only
        crt, key = serving.write(Path(tmp), "serving")
        tls.load_cert_chain(crt, key)
    return tls


class SubresourceServer:
    """Serves subresources.kubevirt.io/v1 for the virtual API server's aggregator (see the module doc)."""

    def __init__(
        self,
        vcluster: str,
        host_namespace: str,
        virtual: KubeClient,
        host: KubeClient,
        upstream: HostConnection,
        pki_dir: Path,
        serving: certs.CertKey,
        address: str = "127.0.0.1",
        port: int = 0,
        check_ownership: bool = True,
    ) -> None:
        self.vcluster = vcluster
        self.host_namespace = host_namespace
        self.virtual = virtual  # the syncer's client: SubjectAccessReviews, the virtual objects
        self.host = host  # the syncer's host client: the host copies
        self.upstream = upstream  # the host API server, for the relayed calls
        self.address = address
        self.port = port
        self.check_ownership = check_ownership  # off only in tests that show what it stops
        self.tls = _tls(serving, pki_dir / "front-proxy-ca.crt")
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.address, self.port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        _log.info("KubeVirt subresources listening", address=f"{self.address}:{self.port}")
        return self.port

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for task in list(self._connections):  # open consoles end with the server
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.server.wait_closed()

    # ---- one connection, one request ------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            peer = writer.get_extra_info("peercert") or {}
            subject = dict(x[0] for x in peer.get("subject", ()))
            if subject.get("commonName") != FRONT_PROXY_CLIENT:
                message = "only the virtual API server's aggregator may call this server"
                await _answer(writer, 403, status(403, "Forbidden", message))
                return
            request = await read_request(reader, writer)
            if request is None:
                return
            await self._handle(*request, reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            _log.debug("subresource connection ended", error=str(e))
        except ApiError as e:
            _log.warning("a KubeVirt subresource call failed", error=str(e))
            with contextlib.suppress(Exception):
                await _answer(writer, 500, status(500, "InternalError", "vnest could not check this call"))
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _handle(
        self,
        method: str,
        target: str,
        headers: Headers,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path in _HEALTH or path in _LOCAL:
            if method != "GET":
                await _answer(
                    writer, 405, status(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
                )
            elif path in _HEALTH:
                await respond_body(writer, 200, b"ok", "text/plain")
            else:
                await _answer(writer, 200, _LOCAL[path]())
            return
        rest = path[len(_BASE) + 1 :].split("/") if path.startswith(_BASE + "/") else []
        if len(rest) == 1 and rest[0] in _FORWARDED_PLAIN and method == "GET":
            await self._forward(method, path, url.query, headers, reader, writer, None)
            return
        if len(rest) >= 3 and rest[0] == "namespaces" and all(rest):
            await self._namespaced(method, [unquote(p) for p in rest[1:]], url.query, headers, reader, writer)
            return
        await _answer(
            writer, 404, status(404, "NotFound", "the server could not find the requested resource")
        )

    async def _namespaced(
        self,
        method: str,
        parts: list[str],
        query: str,
        headers: Headers,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """`namespaces/NS/<resource>[/NAME/<subresource...>]`: reviewed, checked, then forwarded or refused."""
        namespace, resource = parts[0], parts[1]
        name = parts[2] if len(parts) > 2 else ""
        sub = "/".join(parts[3:])
        missing = status(404, "NotFound", "the server could not find the requested resource")
        if not _DNS_LABEL.match(namespace) or (name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name))):
            await _answer(writer, 404, missing)
            return
        caller = Caller.of(headers)
        verb = rbac_verb(method, name)
        if caller is None:
            await _answer(writer, 401, status(401, "Unauthorized", "a valid user header is required"))
            return
        if verb is None:
            await _answer(writer, 405, status(405, "MethodNotAllowed", f"unknown HTTP verb {method}"))
            return
        subresource = parts[3] if len(parts) > 3 else ""
        review = await self.virtual.request(
            "POST", _SAR_PATH, body=access_review(caller, verb, namespace, resource, subresource, name)
        )
        verdict = review.get("status") or {}
        if verdict.get("allowed") is not True or verdict.get("denied"):
            why = str(verdict.get("reason") or "")
            await _answer(writer, 403, forbidden(caller, verb, namespace, resource, subresource, name, why))
            return
        if len(parts) == 2 and resource in _REFUSED_NAMESPACED:
            await self._refuse(writer, resource, _REFUSED_NAMESPACED[resource])
            return
        if resource not in _KINDS or not sub:
            await _answer(writer, 404, missing)
            return
        if (refusal := REFUSED[resource].get(sub)) is not None:
            await self._refuse(writer, f"{resource}/{sub}", refusal)
            return
        endpoint = "portforward" if _PORT_FORWARD.match(sub) else sub
        expected = FORWARDED[resource].get(endpoint)
        if expected is None or (endpoint == "portforward" and not _port_ok(sub)):
            await _answer(writer, 404, missing)
            return
        if method != expected:
            message = f"{method} is not allowed on {resource}/{endpoint}: use {expected}"
            await _answer(writer, 405, status(405, "MethodNotAllowed", message))
            return
        body = None
        if method == "PUT":
            try:
                body = await read_body(reader, headers, MAX_BODY)
            except BodyTooLarge as e:
                await _answer(writer, 413, status(413, "RequestEntityTooLarge", str(e)))
                return
        problem = await self._ownership_problem(resource, namespace, name)
        if problem is not None:
            await _answer(writer, problem["code"], problem)
            return
        hname = naming.host_name(name, namespace, self.vcluster)
        hpath = f"{_BASE}/namespaces/{self.host_namespace}/{resource}/{quote(hname)}/{sub}"
        _log.info(
            "forwarding a KubeVirt subresource call",
            user=caller.user,
            call=f"{method} {namespace}/{resource}/{name}/{sub}",
            upgrade=is_upgrade(headers),
        )
        await self._forward(method, hpath, query, headers, reader, writer, body, (hname, name))

    async def _refuse(self, writer: asyncio.StreamWriter, what: str, why: str) -> None:
        message = f"{GROUP} {what} is not served in a vnest virtual cluster: {why}"
        await _answer(writer, 501, status(501, "NotImplemented", message))

    async def _ownership_problem(self, resource: str, namespace: str, name: str) -> Obj | None:
        """None when the virtual object exists and its host copy is this cluster's copy of it; else the 404."""
        try:
            await self.virtual.request(
                "GET", f"/apis/kubevirt.io/v1/namespaces/{namespace}/{resource}/{name}"
            )
        except ApiError as e:
            if e.not_found:
                return not_found(resource, name)
            raise
        if not self.check_ownership:
            return None
        hname = naming.host_name(name, namespace, self.vcluster)
        try:
            hobj = await self.host.request(
                "GET", f"/apis/kubevirt.io/v1/namespaces/{self.host_namespace}/{resource}/{hname}"
            )
        except ApiError as e:
            if not e.not_found:
                raise
            hobj = {}
        meta = hobj.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if (
            labels.get(LABEL_MANAGED_BY) != self.vcluster
            or annotations.get(ANNOTATION_NAME) != name
            or annotations.get(ANNOTATION_NAMESPACE) != namespace
        ):
            what = "a VM" if resource == "virtualmachines" else "a VMI"
            return not_found(resource, name, f"not {what} of this virtual cluster on the host")
        return None

    async def _forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        body: bytes | None,
        names: tuple[str, str] | None = None,
    ) -> None:
        await relay(
            self.upstream,
            method,
            f"{path}?{query}" if query else path,
            headers,
            reader,
            writer,
            relayed=RELAYED_HEADERS,
            body=body,
            respond_with=partial(_answer_from_host, names),
            switched_head=_filter_head,
        )


async def _answer_from_host(
    names: tuple[str, str] | None, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
) -> None:
    """The host's answer (no upgrade): JSON with the host name replaced by the virtual one, the rest as it came."""
    _, code_text, headers = parse_head(head)
    code = int(code_text)
    content_type = header(headers, "content-type")
    if code in (401, 403):
        detail = await read_body(upstream, headers, MAX_JSON_ANSWER, to_eof=True)
        _log.error(
            "the host API server refused the syncer a KubeVirt subresource call: the syncer's "
            "ServiceAccount needs RBAC for subresources.kubevirt.io in its host namespace",
            code=code,
            answer=detail.decode(errors="replace")[:2000],
        )
        message = (
            "the host refused vnest this call; the host admin must grant the virtual cluster's syncer it"
        )
        await _answer(writer, 500, status(500, "InternalError", message))
        return
    declared = header(headers, "content-length")
    if "json" not in content_type.lower() or (declared.isdigit() and int(declared) > MAX_JSON_ANSWER):
        await relay_response(upstream, writer, _filter_head(head))
        return
    body = await read_body(upstream, headers, MAX_JSON_ANSWER, to_eof=True)
    if names is not None:
        body = body.replace(names[0].encode(), names[1].encode())
    await respond_body(writer, code, body, content_type)


def _port_ok(sub: str) -> bool:
    match = _PORT_FORWARD.match(sub)
    return match is not None and 0 < int(match.group(1)) < 65536


# ---- registration in the virtual cluster -----------------------------------------------------------


def service(port: int, vcluster: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": SERVICE_NAMESPACE, "labels": {LABEL_MANAGED_BY: vcluster}},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}],
        },
    }


def api_service(port: int, ca_pem: str, vcluster: str) -> Obj:
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": APISERVICE, "labels": {LABEL_MANAGED_BY: vcluster}},
        "spec": {
            "group": GROUP,
            "version": VERSION,
            # KubeVirt's (virt-operator's components/apiservices.go).
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "service": {"namespace": SERVICE_NAMESPACE, "name": SERVICE, "port": port},
            "caBundle": base64.b64encode(ca_pem.encode()).decode(),
        },
    }


def available(apiservice: Obj | None) -> tuple[bool, str]:
    """Whether an APIService is Available, and what its condition says."""
    for condition in ((apiservice or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Available":
            return condition.get("status") == "True", str(
                condition.get("message") or condition.get("reason") or ""
            )
    return False, "no Available condition yet"


async def install(
    virtual: KubeClient, port: int, ca_pem: str, *, vcluster: str, timeout: float = AVAILABLE_TIMEOUT
) -> None:
    """Registers the server (Service and APIService, server-side applied) and waits until the
    virtual API server's aggregator reports the APIService Available."""
    apply = {"fieldManager": KubeClient.FIELD_MANAGER, "force": "true"}
    patch = "application/apply-patch+yaml"
    await virtual.request(
        "PATCH", _SERVICE_PATH, params=apply, body=service(port, vcluster), content_type=patch
    )
    path = f"{_APISERVICES}/{APISERVICE}"
    await virtual.request(
        "PATCH", path, params=apply, body=api_service(port, ca_pem, vcluster), content_type=patch
    )
    last = ""
    try:
        async with asyncio.timeout(timeout):
            while True:
                current = await virtual.request("GET", path)
                ok, last = available(current)
                if ok:
                    _log.info("APIService available", name=APISERVICE, port=port)
                    return
                # Until it changes: a watch of that one object, from the version just read.
                params = {
                    "watch": "true",
                    "fieldSelector": f"metadata.name={APISERVICE}",
                    "resourceVersion": current["metadata"]["resourceVersion"],
                    "timeoutSeconds": int(timeout) + 1,
                }
                try:
                    async for event in virtual.stream_lines(_APISERVICES, params):
                        ok, last = available(event.get("object"))
                        if ok:
                            _log.info("APIService available", name=APISERVICE, port=port)
                            return
                except ApiError as e:
                    if e.status != 410:  # Gone: read it again
                        raise
    except TimeoutError:
        raise VnestError(
            f"APIService {APISERVICE} in the virtual cluster was not Available after {timeout:.0f}s: {last}"
        ) from None


async def uninstall(virtual: KubeClient) -> None:
    """Removes the APIService and Service `install` made (labelled managed-by), if there are any."""
    for path in (f"{_APISERVICES}/{APISERVICE}", _SERVICE_PATH):
        try:
            obj = await virtual.request("GET", path)
        except ApiError as e:
            if e.not_found:
                continue
            raise
        if LABEL_MANAGED_BY not in ((obj.get("metadata") or {}).get("labels") or {}):
            continue  # not vnest's
        with contextlib.suppress(ApiError):
            await virtual.request("DELETE", path)
            _log.info("removed", what=path)


async def start(
    vcluster: str,
    host_namespace: str,
    virtual: KubeClient,
    host: KubeClient,
    upstream: HostConnection,
    pki_dir: Path,
    *,
    address: str = "127.0.0.1",
    port: int = 0,
    timeout: float = AVAILABLE_TIMEOUT,
) -> SubresourceServer:
    """The syncer's entry point: serves the API with a fresh certificate, registers it, waits until Available."""
    ca_pem, serving = serving_certificate()
    server = SubresourceServer(
        vcluster, host_namespace, virtual, host, upstream, pki_dir, serving, address, port
    )
    await server.start()
    try:
        await install(virtual, server.port, ca_pem, vcluster=vcluster, timeout=timeout)
    except BaseException:
        await server.close()
        raise
    return server
