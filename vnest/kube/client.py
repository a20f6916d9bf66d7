"""A small async Kubernetes client that speaks raw JSON.

Kubeconfig files and in-cluster service accounts are read by lightkube's config
layer; requests go through vnest.kube.transport (aiohttp, or httpx for the
credentials only lightkube's httpx adapter implements). Objects stay plain dicts,
(de)serialized by orjson: vnest copies objects between clusters and never needs
typed models, which would only cost time on the hot path.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from vnest.errors import VnestError
from vnest.kube.transport import Transport, TransportError, str_params, transport_for

if TYPE_CHECKING:
    from lightkube.config.kubeconfig import KubeConfig, SingleConfig

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group_version: str  # "v1", "apps/v1"
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


# The kinds vnest itself creates or reads; the syncer registers more.
RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("v1", "namespaces", namespaced=False),
    "Node": Resource("v1", "nodes", namespaced=False),
    "Pod": Resource("v1", "pods"),
    "Service": Resource("v1", "services"),
    "Endpoints": Resource("v1", "endpoints"),
    "Secret": Resource("v1", "secrets"),
    "ConfigMap": Resource("v1", "configmaps"),
    "ServiceAccount": Resource("v1", "serviceaccounts"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "PersistentVolume": Resource("v1", "persistentvolumes", namespaced=False),
    "Event": Resource("v1", "events"),
    "StatefulSet": Resource("apps/v1", "statefulsets"),
    "Deployment": Resource("apps/v1", "deployments"),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": Resource("rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource("rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False),
    "EndpointSlice": Resource("discovery.k8s.io/v1", "endpointslices"),
    "Ingress": Resource("networking.k8s.io/v1", "ingresses"),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies"),
    "ResourceQuota": Resource("v1", "resourcequotas"),
    "LimitRange": Resource("v1", "limitranges"),
    "PriorityClass": Resource("scheduling.k8s.io/v1", "priorityclasses", namespaced=False),
    "StorageClass": Resource("storage.k8s.io/v1", "storageclasses", namespaced=False),
    "IngressClass": Resource("networking.k8s.io/v1", "ingressclasses", namespaced=False),
    "RuntimeClass": Resource("node.k8s.io/v1", "runtimeclasses", namespaced=False),
}


def register(kind: str, resource: Resource) -> None:
    """Teaches every client and syncer where a kind learned at runtime lives (a custom resource's CRD).

    Kinds are keys across vnest (informers, the engine, `create`/`apply` by an object's kind), so a
    kind already known elsewhere in the API (a custom `Service`, say) cannot be registered again.
    """
    known = RESOURCES.get(kind)
    if known is not None and known != resource:
        where = f"{resource.plural}.{resource.group_version}"
        raise VnestError(
            f"kind {kind} ({where}) has the name of a kind vnest already knows "
            f"({known.plural} of {known.group_version}); vnest tells kinds apart by name only"
        )
    RESOURCES[kind] = resource


def resource_of(kind: str) -> Resource:
    try:
        return RESOURCES[kind]
    except KeyError:
        raise VnestError(f"vnest does not know where kind {kind} lives in the API") from None


@dataclass(frozen=True)
class HostConnection:
    """What a raw TLS connection to an API server needs: for relaying upgraded streams."""

    hostname: str
    port: int
    ssl: ssl.SSLContext
    token: Callable[[], str] | None  # read per connection: projected tokens rotate

    @classmethod
    def from_kubeconfig(cls, path: Path | None = None, context: str | None = None) -> HostConnection:
        # lightkube is imported where a client is made, not with this module: importing it costs
        # about 0.3 s (all its models), which the CLI would pay on `--help` and usage errors too.
        from lightkube.config.client_adapter import verify_cluster
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.config.models import User

        single = context_of(KubeConfig.from_file(path) if path else KubeConfig.from_env(), context)
        url = urlsplit(single.cluster.server)
        user = single.user
        # A context without a user: the cluster's CA only, no client certificate.
        ctx = verify_cluster(single.cluster, user or User(), single.abs_file)
        token: Callable[[], str] | None = None
        if user is not None and user.token_file:
            token_file = Path(single.abs_file(user.token_file))
            token = lambda: token_file.read_text().strip()  # noqa: E731
        elif user is not None and user.token:
            fixed = user.token
            token = lambda: fixed  # noqa: E731
        return cls(url.hostname or "127.0.0.1", url.port or 443, ctx, token)


def context_of(config: KubeConfig, context: str | None) -> SingleConfig:
    """The named (or current) context; lightkube's get() raises rather than return None here."""
    single = config.get(context)
    if single is None:
        raise VnestError(f"kubeconfig context {context or '(current)'} not found")
    return single


class ApiError(VnestError):
    def __init__(self, status: int, reason: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.detail = detail or message  # the server's own words, without the request line

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class RateLimiter:
    """A token bucket, as client-go's: `qps` requests a second on average, `burst` at once."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.qps)
            self._updated = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                self._tokens = 0.0
                self._updated = time.monotonic()
            else:
                self._tokens -= 1


def _json(content: bytes) -> Any:
    return orjson.loads(content)


def _api_error(status: int, body: bytes, what: str) -> ApiError:
    """The server's Status as an ApiError; a body that is no Status is the message as it came."""
    text = body.decode(errors="replace")
    try:
        decoded = _json(body)
        message, reason = decoded.get("message", text), decoded.get("reason", "")
    except (ValueError, AttributeError):  # not JSON, or JSON but not a Status
        message, reason = text, ""
    return ApiError(status, reason, f"{what}: {message}", message)


class KubeClient:
    FIELD_MANAGER = "vnest"

    def __init__(self, transport: Transport, context: str | None = None) -> None:
        self.transport = transport
        self.context = context
        self.limiter: RateLimiter | None = None

    def limit(self, qps: float, burst: int) -> KubeClient:
        """Caps this client's request rate (watches excluded); qps <= 0 means no cap."""
        self.limiter = RateLimiter(qps, burst) if qps > 0 else None
        return self

    @classmethod
    def from_kubeconfig(
        cls, path: Path | None = None, context: str | None = None, timeout: float = 30.0
    ) -> KubeClient:
        """From a kubeconfig file (default: $KUBECONFIG / ~/.kube/config, else in-cluster)."""
        from lightkube.config.kubeconfig import KubeConfig

        try:
            single = context_of(KubeConfig.from_file(path) if path else KubeConfig.from_env(), context)
        except Exception as e:  # lightkube raises several kinds for bad files
            raise VnestError(
                f"cannot use kubeconfig {path or ''} context {context or '(current)'}: {e}"
            ) from e
        return cls(transport_for(single, timeout), context=single.context_name)

    @classmethod
    def from_dict(cls, kubeconfig: Obj, context: str | None = None, timeout: float = 30.0) -> KubeClient:
        from lightkube.config.kubeconfig import KubeConfig

        single = context_of(KubeConfig.from_dict(kubeconfig), context)
        return cls(transport_for(single, timeout), context=single.context_name)

    @property
    def server(self) -> str:
        return self.transport.server

    async def close(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Obj | list[Obj] | None = None,  # a list: a JSON patch
        content_type: str = "application/json",
    ) -> Obj:
        if self.limiter is not None:
            await self.limiter.acquire()
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        status, data = await self._send(method, path, params, content, headers)
        if status >= 400:
            raise _api_error(status, data, f"{method} {path}")
        return _json(data) if data else {}

    async def text(self, path: str) -> str:
        """A GET of a plain-text endpoint (/readyz, /version?...): its body, whatever its status."""
        return (await self._send("GET", path, None, None, {"Accept": "*/*"}))[1].decode(errors="replace")

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        try:
            return await self.transport.request(method, path, str_params(params), content, headers)
        except TransportError as e:
            raise ApiError(0, "Unreachable", f"{method} {self.server}{path}: {e}") from e

    # ---- conveniences over request() --------------------------------------

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        return await self.request("GET", resource_of(kind).path(namespace, name))

    async def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(kind, name, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def list(self, kind: str, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        found = await self.request("GET", resource_of(kind).path(namespace), params=params)
        items: list[Obj] = found["items"]
        for item in items:  # list items carry no kind of their own
            item.setdefault("kind", kind)
        return items

    async def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return await self.request("POST", resource_of(obj["kind"]).path(ns), body=obj)

    async def apply(self, obj: Obj, namespace: str | None = None, force: bool = True) -> Obj:
        """Server-side apply: creates or updates the fields vnest owns."""
        meta = obj["metadata"]
        ns = namespace or meta.get("namespace")
        return await self.request(
            "PATCH",
            resource_of(obj["kind"]).path(ns, meta["name"]),
            params={"fieldManager": self.FIELD_MANAGER, "force": str(force).lower()},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def replace(self, obj: Obj, subresource: str = "") -> Obj:
        """PUT the whole object (or a subresource of it: `status`) at the resourceVersion it carries:
        a conflict when it changed meanwhile, and the work queue retries from fresh caches."""
        meta = obj["metadata"]
        path = resource_of(obj["kind"]).path(meta.get("namespace"), meta["name"], subresource)
        return await self.request("PUT", path, body=obj)

    async def patch(
        self, kind: str, name: str, patch: Obj, namespace: str | None = None, subresource: str = ""
    ) -> Obj:
        """A merge patch of the object (or of a subresource of it: `status`)."""
        return await self.request(
            "PATCH",
            resource_of(kind).path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete_exact(self, kind: str, obj: Obj, grace: int | None = None) -> bool:
        """Deletes that very object, never a newer one of the same name (a uid precondition);
        False when it was gone already or replaced. Any other error is raised."""
        meta = obj["metadata"]
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": meta["uid"]}}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            await self.request(
                "DELETE", resource_of(kind).path(meta.get("namespace"), meta["name"]), body=body
            )
        except ApiError as e:
            if e.not_found or e.conflict:
                return False
            raise
        return True

    async def delete(
        self, kind: str, name: str, namespace: str | None = None, wait_gone: bool = False
    ) -> bool:
        """Deletes in the background (the garbage collector removes dependents); True if it existed."""
        try:
            await self.request(
                "DELETE",
                resource_of(kind).path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiError as e:
            if e.not_found:
                return False
            raise
        return True

    async def stream_lines(self, path: str, params: dict[str, Any]) -> AsyncIterator[Obj]:
        """One JSON object per line, as watches send them.

        Split by hand on bytes: orjson takes bytes, and one object (a large ConfigMap, a CRD) may
        be longer than a line reader's limit."""
        pending = b""
        try:
            async for status, chunk in self.transport.stream(path, str_params(params) or {}):
                if status >= 400:
                    raise _api_error(status, chunk, f"GET {path}")
                if b"\n" not in chunk:
                    pending += chunk
                    continue
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        yield _json(line)
        except TransportError as e:
            raise ApiError(0, "Unreachable", f"GET {self.server}{path}: {e}") from e
        if pending.strip():
            yield _json(pending)
