"""A Kubernetes client that records what would be sent, and a SyncContext made of two of them.

Syncers take a SyncContext of KubeClients; the fakes are KubeClients, so a test builds the
syncers as the syncer does and reads `ctx.host.calls` / `ctx.virtual.calls` with their types.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from vnest.kube.client import ApiError, KubeClient, Obj, resource_of
from vnest.syncer.engine import SyncContext


class FakeClient(KubeClient):
    """Records requests; `objects` answers GETs (path -> object); `fail` maps (method, path) to an ApiError.

    Only the transport is fake: methods not overridden here (delete_exact, ...) are the real
    ones, over `request`.
    """

    server = "https://fake"

    def __init__(self) -> None:  # no HTTP client: every request stops at `request`
        self.limiter = None
        self.calls: list[tuple[str, str, Any]] = []
        self.objects: dict[str, Obj] = {}
        self.fail: dict[tuple[str, str], ApiError] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Obj | None = None,
        content_type: str = "",
    ) -> Obj:
        self.calls.append((method, path, copy.deepcopy(body)))
        if (method, path) in self.fail:
            raise self.fail[(method, path)]
        return copy.deepcopy(body) if body is not None else {}

    async def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        return await self.request("POST", resource_of(obj["kind"]).path(namespace), body=obj)

    async def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.calls.append(("GET", resource_of(kind).path(namespace, name), None))
        return copy.deepcopy(self.objects.get(resource_of(kind).path(namespace, name)))

    async def list(self, kind: str, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        self.calls.append(("LIST", resource_of(kind).path(namespace), label_selector))
        return [copy.deepcopy(o) for o in self.objects.values() if o["kind"] == kind]


@dataclass
class FakeSyncContext(SyncContext):
    """A SyncContext whose clients are fakes, typed as such."""

    virtual: FakeClient
    host: FakeClient
