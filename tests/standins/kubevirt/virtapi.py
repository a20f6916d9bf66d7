"""The host's stand-in for KubeVirt, for tests (not KubeVirt): virt-api's aggregated ``subresources.kubevirt.io/v1`` API.

An HTTPS server on 127.0.0.1 (aiohttp) that the host's API server reaches through the APIService
``v1.subresources.kubevirt.io`` and Service ``kubevirt/virt-api`` (registered by ``StandIn.start``).
What it imitates, and from where in KubeVirt:

- Authentication and authorization (pkg/virt-api/api.go ``readRequestHeader``, rest/authorizer.go):
  the request-header settings come from ``kube-system/extension-apiserver-authentication``; a call
  is authenticated by the aggregator's client certificate (verified against
  ``requestheader-client-ca-file``, its name in ``requestheader-allowed-names`` when that is set),
  the user, groups and extras are read from the ``X-Remote-*`` headers, and each call (but
  discovery, version and health) is authorized with a SubjectAccessReview on the host: verb from
  the HTTP method (PUT: update, GET: get), group ``subresources.kubevirt.io``, version, resource
  and subresource from the path (``virtualmachines``/``stop``), namespace and name. A refusal is
  HTTP 401 with the review's reason as text, as virt-api answers (not 403).
- Discovery (api.go ``composeSubresources``): ``/apis``, ``/apis/subresources.kubevirt.io``, and
  ``/apis/subresources.kubevirt.io/v1``: the APIResourceList of every subresource KubeVirt lists
  (only those below are served; the others answer 404).
- ``PUT virtualmachines/NAME/start|stop|restart|migrate`` (rest/lifecycle.go): start and stop patch
  ``spec.runStrategy`` to Always / Halted (or legacy ``spec.running``) with a JSON patch that tests
  the old value, or send ``status.stateChangeRequests`` for Manual / RerunOnFailure and for a
  paused start; restart sends a Stop (of the running VMI's uid) and a Start request, the stand-in
  virt-controller then deletes and recreates the VMI; migrate creates a
  VirtualMachineInstanceMigration (``generateName: kubevirt-migrate-vm-``). 202 on success, 404 for
  a missing VM, 409 where KubeVirt refuses (starting a running VM, Always or Once and start,
  stopping a stopped VM, restarting a Halted or Once VM, migrating a VM that does not run). A JSON
  patch whose test fails is 409.
- ``PUT virtualmachineinstances/NAME/pause|unpause`` (lifecycle.go validations, then what
  virt-handler does): the VMI's Paused condition added or removed; 409 when not running, already
  paused or not paused.
- ``GET virtualmachineinstances/NAME/console|vnc`` and ``.../portforward/PORT[/PROTOCOL]`` (also on
  virtualmachines) as WebSocket upgrades with KubeVirt's subprotocol ``plain.kubevirt.io`` (rest/
  console.go, vnc.go, portforward.go validations: VMI missing 404, Failed 409, not running 400, no
  serial console or graphics device 400). Where KubeVirt proxies to virt-handler and the guest,
  the stand-in echoes every message; the console first sends ``stand-in console of NS/NAME\\r\\n``,
  VNC the RFB greeting ``RFB 003.008\\n``.

Not imitated: the other subresources (guest agent, volumes hotplug, memory dump, SEV, freeze,
soft reboot, expand-spec, usbredir, VSOCK, screenshots), the v1alpha3 group version, the dry-run
of pause/unpause, virt-api's webhooks and its OpenAPI document (a stub is served).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from vnest import log
from vnest.kube.client import ApiError, KubeClient, Obj, resource_of

from . import api

_log = log.get("kubevirt-standin-virt-api")

GROUP = "subresources.kubevirt.io"
VERSION = "v1"
SUBPROTOCOL = "plain.kubevirt.io"
JSON_PATCH = "application/json-patch+json"
TEST_FAILED = "jsonpatch test operation does not apply"
VM_NOT_RUNNING = "VM is not running"
VMI_NOT_RUNNING = "VMI is not running"
# Every subresource virt-api lists for discovery (api.go), in its order.
DISCOVERY = [
    "expand-vm-spec",
    "virtualmachineinstances/vnc",
    "virtualmachineinstances/console",
    "virtualmachineinstances/portforward",
    "virtualmachineinstances/pause",
    "virtualmachineinstances/unpause",
    "virtualmachineinstances/freeze",
    "virtualmachineinstances/unfreeze",
    "virtualmachineinstances/softreboot",
    "virtualmachines/start",
    "virtualmachines/stop",
    "virtualmachines/restart",
    "virtualmachines/migrate",
    "virtualmachines/expand-spec",
    "virtualmachineinstances/guestosinfo",
    "virtualmachineinstances/userlist",
    "virtualmachineinstances/filesystemlist",
    "virtualmachineinstances/addvolume",
    "virtualmachineinstances/removevolume",
    "virtualmachineinstances/sev/fetchcertchain",
    "virtualmachineinstances/sev/querylaunchmeasurement",
    "virtualmachineinstances/sev/setupsession",
    "virtualmachineinstances/sev/injectlaunchsecret",
]
BASE = f"/apis/{GROUP}/{VERSION}"
# Paths served to anyone (authorizer.go noAuthEndpoints, and the group's own discovery document).
NO_AUTH = {
    "/",
    "/apis",
    "/healthz",
    "/openapi/v2",
    "/openapi/v3",
    f"/apis/{GROUP}",
    BASE,
    f"{BASE}/version",
    f"{BASE}/healthz",
}
VERBS = {"GET": "get", "HEAD": "get", "PUT": "update", "POST": "create", "PATCH": "patch", "DELETE": "delete"}


class StatusError(Exception):
    """An apimachinery StatusError: written back as a metav1.Status with its code."""

    def __init__(self, code: int, reason: str, message: str, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.body = api.status_error(code, reason, message, kind, name)
        self.code = code


def not_found(kind: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{kind}.kubevirt.io "{name}" not found', kind, name)


def conflict(kind: str, name: str, why: str) -> StatusError:
    return StatusError(
        409, "Conflict", f'Operation cannot be fulfilled on {kind}.kubevirt.io "{name}": {why}', kind, name
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def internal(error: object) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {error}")


@dataclass
class RequestHeader:
    """The API server's front-proxy settings, from the extension-apiserver-authentication ConfigMap."""

    client_ca: str = ""  # PEM; empty when the API server has no --requestheader-client-ca-file
    allowed_names: list[str] = field(default_factory=list)
    username_headers: list[str] = field(default_factory=lambda: ["X-Remote-User"])
    group_headers: list[str] = field(default_factory=lambda: ["X-Remote-Group"])
    extra_prefixes: list[str] = field(default_factory=lambda: ["X-Remote-Extra-"])

    @classmethod
    def from_configmap(cls, cm: Obj) -> RequestHeader:
        data = cm.get("data") or {}

        def strings(key: str, default: list[str]) -> list[str]:
            raw = data.get(key)
            return list(json.loads(raw)) if raw else default

        return cls(
            client_ca=data.get("requestheader-client-ca-file", ""),
            allowed_names=strings("requestheader-allowed-names", []),
            username_headers=strings("requestheader-username-headers", ["X-Remote-User"]),
            group_headers=strings("requestheader-group-headers", ["X-Remote-Group"]),
            extra_prefixes=strings("requestheader-extra-headers-prefix", ["X-Remote-Extra-"]),
        )

    @property
    def front_proxy(self) -> bool:
        return bool(self.client_ca)


def _peer_common_name(request: web.Request) -> str | None:
    """The common name of the client certificate TLS verified; None when there was none."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return ""


class VirtApi:
    def __init__(self, client: KubeClient, headers: RequestHeader, vm_status_subresource: bool) -> None:
        self.client = client
        self.headers = headers
        self.vm_status_subresource = vm_status_subresource

    # ---- authentication and authorization ---------------------------------------------------------

    def authenticate(self, request: web.Request) -> tuple[str, list[str], dict[str, list[str]]]:
        if self.headers.front_proxy:
            name = _peer_common_name(request)
            if name is None:
                raise web.HTTPUnauthorized(text="request is not authenticated")
            if self.headers.allowed_names and name not in self.headers.allowed_names:
                raise web.HTTPUnauthorized(text=f"client certificate {name!r} is not an allowed front proxy")
        user = next((request.headers[h] for h in self.headers.username_headers if h in request.headers), None)
        if not user:
            raise web.HTTPUnauthorized(text="a valid user header is required for authorization")
        groups: list[str] = []
        for h in self.headers.group_headers:
            if h in request.headers:
                groups = list(request.headers.getall(h))
                break
        extras: dict[str, list[str]] = {}
        for prefix in self.headers.extra_prefixes:
            for k in set(request.headers.keys()):
                if k.lower().startswith(prefix.lower()):
                    extras[unquote(k[len(prefix) :].lower())] = list(request.headers.getall(k))
        return user, groups, extras

    async def authorize(self, request: web.Request) -> None:
        """authorizer.go Authorize: a SubjectAccessReview for the user the front proxy names."""
        user, groups, extras = self.authenticate(request)
        parts = request.path.split("/")
        if len(parts) < 9 or parts[6] not in ("virtualmachines", "virtualmachineinstances"):
            raise web.HTTPUnauthorized(text=f"unknown api endpoint: {request.path}")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "extra": extras,
                "resourceAttributes": {
                    "namespace": parts[5],
                    "verb": VERBS.get(request.method, request.method.lower()),
                    "group": parts[2],
                    "version": parts[3],
                    "resource": parts[6],
                    "subresource": parts[8],
                    "name": parts[7],
                },
            },
        }
        result = await self.client.request("POST", api.SAR.path(), body=review)
        status = result.get("status") or {}
        if not status.get("allowed"):
            _log.info("refused", user=user, path=request.path, reason=status.get("reason", ""))
            raise web.HTTPUnauthorized(text=status.get("reason", ""))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if request.path not in NO_AUTH:
                await self.authorize(request)
            response: web.StreamResponse = await handler(request)
            return response
        except StatusError as e:
            return web.json_response(e.body, status=e.code)
        except ApiError as e:
            _log.warning("host API error", path=request.path, error=e.detail[:300])
            error = internal(e.detail)
            return web.json_response(error.body, status=error.code)

    # ---- discovery ---------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({"paths": ["/apis", "/openapi/v2", f"/apis/{GROUP}", BASE]})

    def group(self) -> Obj:
        version = {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": GROUP,
            "versions": [version],
            "preferredVersion": version,
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }

    async def apis(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [self.group()]})

    async def api_group(self, request: web.Request) -> web.Response:
        return web.json_response(self.group())

    async def resources(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": VERSION,
                "groupVersion": f"{GROUP}/{VERSION}",
                "resources": [
                    {"name": n, "singularName": "", "namespaced": True, "kind": "", "verbs": []}
                    for n in DISCOVERY
                ],
            }
        )

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"gitVersion": api.VERSION, "gitCommit": "", "gitTreeState": "clean", "platform": "linux/amd64"}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def openapi_v2(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "swagger": "2.0",
                "info": {"title": "KubeVirt API (stand-in)", "version": api.VERSION},
                "paths": {},
            }
        )

    # ---- objects -----------------------------------------------------------------------------------

    async def fetch_vm(self, namespace: str, name: str) -> Obj:
        vm = await self.client.get_or_none("VirtualMachine", name, namespace)
        if vm is None:
            raise not_found("virtualmachine", name)
        return vm

    async def fetch_vmi(self, namespace: str, name: str) -> Obj:
        vmi = await self.client.get_or_none("VirtualMachineInstance", name, namespace)
        if vmi is None:
            raise not_found("virtualmachineinstance", name)
        return vmi

    async def patch(self, obj: Obj, ops: list[Obj], subresource: str = "", dry_run: bool = False) -> None:
        meta = obj["metadata"]
        path = resource_of(obj["kind"]).path(meta["namespace"], meta["name"], subresource)
        try:
            await self.client.request(
                "PATCH",
                path + ("?dryRun=All" if dry_run else ""),
                body=ops,
                content_type=JSON_PATCH,
            )
        except ApiError as e:
            if TEST_FAILED in e.detail:
                raise conflict(obj["kind"].lower(), meta["name"], e.detail) from e
            raise internal(e.detail) from e

    async def patch_vm_status(self, vm: Obj, ops: list[Obj], dry_run: bool = False) -> None:
        await self.patch(vm, ops, "status" if self.vm_status_subresource else "", dry_run)

    @staticmethod
    async def body(request: web.Request) -> Obj:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            decoded = json.loads(raw)
        except ValueError as e:
            raise bad_request(f"Can not unmarshal Request body to struct, error: {e}") from e
        return decoded if isinstance(decoded, dict) else {}

    # ---- VirtualMachine subresources (lifecycle.go) -------------------------------------------------

    async def vm_action(self, request: web.Request) -> web.StreamResponse:
        namespace, name, action = (
            request.match_info["namespace"],
            request.match_info["name"],
            request.match_info["action"],
        )
        options = await self.body(request)
        dry_run = bool(options.get("dryRun"))
        handlers = {"start": self.start, "stop": self.stop, "restart": self.restart, "migrate": self.migrate}
        await handlers[action](namespace, name, options, dry_run)
        _log.info(action, vm=f"{namespace}/{name}")
        return web.Response(status=202)

    async def start(self, namespace: str, name: str, options: Obj, dry_run: bool) -> None:
        vm = await self.fetch_vm(namespace, name)
        vmi = await self.client.get_or_none("VirtualMachineInstance", name, namespace)
        if vmi is not None and not api.is_final(vmi) and api.phase(vmi) not in ("Unknown", ""):
            raise conflict("virtualmachine", name, "VM is already running")
        paused = bool(options.get("paused"))
        strategy = api.run_strategy(vm)
        if strategy == "Halted":
            if paused:
                change = {"action": "Start", "data": {"paused": "true"}}
                await self.patch_vm_status(vm, change_request_ops(vm, [change], name), dry_run)
            else:
                await self.patch(vm, running_ops(vm, True), dry_run=dry_run)
        elif strategy in ("RerunOnFailure", "Manual"):
            data = {"paused": "true"} if paused else {}
            restart = vmi is not None and (
                (strategy == "RerunOnFailure" and api.phase(vmi) == "Succeeded")
                or (strategy == "Manual" and api.is_final(vmi))
            )
            if strategy == "RerunOnFailure" and vmi is not None and api.phase(vmi) == "Failed":
                raise conflict(
                    "virtualmachine", name, "RerunOnFailure does not support starting VM from failed state"
                )
            start: Obj = {"action": "Start", **({"data": data} if data else {})}
            changes = (
                [{"action": "Stop", "uid": vmi["metadata"]["uid"]}, start] if restart and vmi else [start]
            )
            await self.patch_vm_status(vm, change_request_ops(vm, changes, name), dry_run)
        else:
            raise conflict("virtualmachine", name, f"{strategy} does not support manual start requests")

    async def stop(self, namespace: str, name: str, options: Obj, dry_run: bool) -> None:
        vm = await self.fetch_vm(namespace, name)
        strategy = api.run_strategy(vm)
        vmi = await self.client.get_or_none("VirtualMachineInstance", name, namespace)
        grace = options.get("gracePeriod")
        old_grace = None
        if vmi is not None and not api.is_final(vmi) and grace is not None:
            old_grace = (vmi.get("spec") or {}).get("terminationGracePeriodSeconds")
            ops = [
                {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": old_grace},
                {"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": grace},
            ]
            await self.patch(vmi, ops, dry_run=dry_run)
        if strategy == "Halted":
            if vmi is None or api.is_final(vmi):
                raise conflict("virtualmachine", name, VM_NOT_RUNNING)
            if grace is None or (old_grace is not None and grace >= old_grace):
                raise conflict(
                    "virtualmachine",
                    name,
                    "Halted only supports manual stop requests with a shorter graceperiod",
                )
            await self.patch_vm_status(vm, change_request_ops(vm, [_stop_request(vmi)], name), dry_run)
        elif strategy in ("RerunOnFailure", "Manual"):
            if vmi is None or api.is_final(vmi):
                raise conflict("virtualmachine", name, VM_NOT_RUNNING)
            await self.patch_vm_status(vm, change_request_ops(vm, [_stop_request(vmi)], name), dry_run)
        else:
            await self.patch(vm, running_ops(vm, False), dry_run=dry_run)

    async def restart(self, namespace: str, name: str, options: Obj, dry_run: bool) -> None:
        grace = options.get("gracePeriodSeconds")
        if grace is not None and grace > 0:
            raise bad_request("For force restart, only gracePeriod=0 is supported for now")
        if grace is not None and grace < 0:
            raise bad_request("gracePeriod has to be greater or equal to 0")
        vm = await self.fetch_vm(namespace, name)
        strategy = api.run_strategy(vm)
        if strategy in ("Halted", "Once"):
            raise conflict(
                "virtualmachine", name, f"RunStategy {strategy} does not support manual restart requests"
            )
        vmi = await self.client.get_or_none("VirtualMachineInstance", name, namespace)
        if vmi is None:
            raise conflict("virtualmachine", name, "VM is not running: Halted")
        changes = [_stop_request(vmi), {"action": "Start"}]
        await self.patch_vm_status(vm, change_request_ops(vm, changes, name), dry_run)
        if grace == 0 and not dry_run:
            selector = f"{api.APP_LABEL}=virt-launcher,{api.CREATED_BY_LABEL}={vmi['metadata']['uid']}"
            for pod in await self.client.list("Pod", namespace, label_selector=selector):
                if api.phase(pod) == "Running":
                    await self.client.request(
                        "DELETE",
                        resource_of("Pod").path(namespace, pod["metadata"]["name"]),
                        body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                    )

    async def migrate(self, namespace: str, name: str, options: Obj, dry_run: bool) -> None:
        vm = await self.fetch_vm(namespace, name)
        vmi = await self.fetch_vmi(namespace, name)
        if api.phase(vmi) != "Running":
            raise conflict("virtualmachine", name, VM_NOT_RUNNING)
        if api.condition_true(vm, "Paused"):
            raise conflict("virtualmachine", name, "VM is paused")
        migration: Obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": namespace},
            "spec": {"vmiName": name},
        }
        if options.get("addedNodeSelector"):
            migration["spec"]["addedNodeSelector"] = options["addedNodeSelector"]
        path = resource_of("VirtualMachineInstanceMigration").path(namespace)
        try:
            await self.client.request("POST", path + ("?dryRun=All" if dry_run else ""), body=migration)
        except ApiError as e:
            raise internal(e.detail) from e

    # ---- VirtualMachineInstance subresources --------------------------------------------------------

    async def vmi_action(self, request: web.Request) -> web.StreamResponse:
        namespace, name, action = (
            request.match_info["namespace"],
            request.match_info["name"],
            request.match_info["action"],
        )
        options = await self.body(request)
        dry_run = options.get("dryRun") == ["All"]
        if action == "unpause":
            vm = await self.client.get_or_none("VirtualMachine", name, namespace)
            if vm is not None and api.status(vm).get("snapshotInProgress"):
                raise conflict("virtualmachine", name, "VM snapshot is in progress")
        for _attempt in range(5):
            vmi = await self.fetch_vmi(namespace, name)
            paused = api.condition(vmi, "Paused") is not None
            if action == "pause":
                if api.phase(vmi) != "Running":
                    raise conflict("virtualmachineinstance", name, VM_NOT_RUNNING)
                if (vmi.get("spec") or {}).get("livenessProbe"):
                    raise StatusError(
                        403,
                        "Forbidden",
                        f'virtualmachineinstance.kubevirt.io "{name}" is forbidden: '
                        "Pausing VMIs with LivenessProbe is currently not supported",
                    )
                if paused:
                    raise conflict("virtualmachineinstance", name, "VMI is already paused")
                migration = api.status(vmi).get("migrationState")
                if migration and not migration.get("completed"):
                    raise conflict(
                        "virtualmachineinstance",
                        name,
                        f"Cannot pause VM '{name}' because it is currently being migrated",
                    )
            else:
                if api.phase(vmi) != "Running":
                    raise conflict("virtualmachineinstance", name, VMI_NOT_RUNNING)
                if not paused:
                    raise conflict("virtualmachineinstance", name, "VMI is not paused")
            if dry_run:
                break
            # What virt-handler reports once libvirt paused (or resumed) the domain.
            conditions = [c for c in api.status(vmi).get("conditions") or [] if c.get("type") != "Paused"]
            if action == "pause":
                conditions.append(
                    {
                        "type": "Paused",
                        "status": "True",
                        "reason": "PausedByUser",
                        "message": "VMI was paused by user",
                        "lastProbeTime": None,
                        "lastTransitionTime": api.now(),
                    }
                )
            vmi.setdefault("status", {})["conditions"] = conditions
            try:
                await self.client.replace(vmi)
                break
            except ApiError as e:
                if not e.conflict:
                    raise
        else:
            raise internal(f"the VMI kept changing while it was being {action}d")
        _log.info(action, vmi=f"{namespace}/{name}")
        return web.Response(status=200)

    # ---- streams -------------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        kind = request.match_info["kind"]
        what = request.match_info.get("stream") or "portforward"
        if kind == "virtualmachines":
            # FetchVirtualMachineInstanceForVM: the VM must exist, and its VMI.
            await self.fetch_vm(namespace, name)
        vmi = await self.fetch_vmi(namespace, name)
        devices = ((vmi.get("spec") or {}).get("domain") or {}).get("devices") or {}
        if what == "console" and devices.get("autoattachSerialConsole") is False:
            raise bad_request("No serial consoles are present.")
        if what == "vnc" and devices.get("autoattachGraphicsDevice") is False:
            raise bad_request("No graphics devices are present.")
        if api.phase(vmi) == "Failed":
            raise conflict("virtualmachineinstance", name, "VMI is in failed status")
        if api.phase(vmi) != "Running":
            raise bad_request(VMI_NOT_RUNNING)
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        _log.info("stream opened", stream=what, vmi=f"{namespace}/{name}")
        if what == "console":
            await ws.send_bytes(f"stand-in console of {namespace}/{name}\r\n".encode())
        elif what == "vnc":
            await ws.send_bytes(b"RFB 003.008\n")
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            else:
                break
        return ws

    # ---- the server ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        ns = f"{BASE}/namespaces/{{namespace}}"
        routes = [
            web.get("/", self.root),
            web.get("/apis", self.apis),
            web.get(f"/apis/{GROUP}", self.api_group),
            web.get(BASE, self.resources),
            web.get(f"{BASE}/version", self.version),
            web.get(f"{BASE}/healthz", self.healthz),
            web.get("/healthz", self.healthz),
            web.get("/openapi/v2", self.openapi_v2),
            web.put(ns + "/virtualmachines/{name}/{action:start|stop|restart|migrate}", self.vm_action),
            web.put(ns + "/virtualmachineinstances/{name}/{action:pause|unpause}", self.vmi_action),
            web.get(ns + "/{kind:virtualmachineinstances}/{name}/{stream:console|vnc}", self.stream),
            web.get(
                ns + "/{kind:virtualmachineinstances|virtualmachines}/{name}/portforward/{port:[0-9]+}",
                self.stream,
            ),
            web.get(
                ns
                + "/{kind:virtualmachineinstances|virtualmachines}/{name}/portforward/{port:[0-9]+}/{protocol:tcp|udp}",
                self.stream,
            ),
        ]
        app.add_routes(routes)
        return app


def change_request_ops(vm: Obj, changes: list[Obj], name: str) -> list[Obj]:
    """lifecycle.go getChangeRequestJson: the JSON patch that queues state change requests."""
    status = api.status(vm)
    if not status:
        return [{"op": "add", "path": "/status", "value": {"stateChangeRequests": changes}}]
    current = status.get("stateChangeRequests") or []
    if current and not (len(changes) == 1 and changes[0].get("action") == "Stop"):
        raise conflict("virtualmachine", name, "unable to complete request: stop/start already underway")
    ops: list[Obj] = []
    if current:
        ops += [
            {"op": "test", "path": "/status/stateChangeRequests", "value": current},
            {"op": "replace", "path": "/status/stateChangeRequests", "value": changes},
        ]
    else:
        ops.append({"op": "add", "path": "/status/stateChangeRequests", "value": changes})
    if status.get("startFailure"):
        ops.append({"op": "remove", "path": "/status/startFailure"})
    return ops


def running_ops(vm: Obj, running: bool) -> list[Obj]:
    """lifecycle.go getRunningPatch: runStrategy Always/Halted (or legacy running), tested first."""
    spec = vm.get("spec") or {}
    if "runStrategy" in spec:
        return [
            {"op": "test", "path": "/spec/runStrategy", "value": spec["runStrategy"]},
            {"op": "replace", "path": "/spec/runStrategy", "value": "Always" if running else "Halted"},
        ]
    if "running" in spec:
        return [
            {"op": "test", "path": "/spec/running", "value": spec["running"]},
            {"op": "replace", "path": "/spec/running", "value": running},
        ]
    return [{"op": "add", "path": "/spec/running", "value": running}]


def _stop_request(vmi: Obj) -> Obj:
    return {"action": "Stop", "uid": vmi["metadata"]["uid"]}


async def serve(kubeconfig: Path, cert: Path, key: Path, ready_file: Path) -> None:
    api.register_kinds()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        cm = await client.get("ConfigMap", "extension-apiserver-authentication", "kube-system")
        headers = RequestHeader.from_configmap(cm)
        try:
            crd = await client.request("GET", api.CRD.path(name=api.CRD_NAMES["VirtualMachine"]))
            vm_status = any(
                v["name"] == "v1" and (v.get("subresources") or {}).get("status") is not None
                for v in crd["spec"]["versions"]
            )
        except ApiError as e:
            if not e.not_found:
                raise
            vm_status = True  # no CRD (yet): KubeVirt's VirtualMachine CRD has the status subresource
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if headers.front_proxy:
            # Verify a client certificate when one is given (virt-api's VerifyClientCertIfGiven); a
            # request without one is refused by the middleware.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=headers.client_ca)
        else:
            _log.warning(
                "the API server has no front-proxy client CA (no requestheader-client-ca-file in "
                "kube-system/extension-apiserver-authentication): its aggregator sends no client "
                "certificate, so the X-Remote-* headers are trusted from any client of this loopback port"
            )
        runner = web.AppRunner(VirtApi(client, headers, vm_status).app(), access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # a random free port, known before anyone connects
        port = int(sock.getsockname()[1])
        await web.SockSite(runner, sock, ssl_context=context).start()
        # Written whole, then renamed: the parent never reads half a file.
        with tempfile.NamedTemporaryFile("w", dir=ready_file.parent, delete=False) as f:
            json.dump({"port": port, "frontProxy": headers.front_proxy, "vmStatusSubresource": vm_status}, f)
        Path(f.name).replace(ready_file)
        _log.info("serving", address=f"https://127.0.0.1:{port}", frontProxy=headers.front_proxy)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        await runner.cleanup()
