"""Every write of a copy goes through a Patcher: create, update-if-changed, delete-exact.

One per synced kind and side written (the host for to-host kinds, the virtual
cluster for from-host ones). It holds the rules no kind may get wrong:
- create: a refusal (admission, validation, quota, a missing RuntimeClass) is told
  to the tenant once as a Warning event, in virtual names, and raised so that the
  queue retries with backoff; a name held by an object this cluster does not own
  is reported and left alone;
- update: a PUT at the copy's resourceVersion (a conflict retries from fresh
  caches), only when the wanted object differs from the one there;
- delete: only an object this cluster owns, and only that very object (uid and
  resourceVersion preconditions), so a newer object of the name is never hit.
"""

from __future__ import annotations

from collections.abc import Callable

from vnest import log
from vnest.kube.client import ApiError, KubeClient, Obj, resource_of
from vnest.syncer.engine.context import SyncContext

_log = log.get("syncer")

# Host answers to a create that retrying alone will not fix: the tenant must hear of them.
REFUSALS = frozenset({400, 403, 404, 422})


class Patcher:
    def __init__(
        self,
        ctx: SyncContext,
        kind: str,
        client: KubeClient,
        owns: Callable[[Obj | None], bool],
        namespace: str | None = None,
        log_writes: bool = False,
    ) -> None:
        self.ctx = ctx
        self.kind = kind
        self.client = client
        self.owns = owns
        self.namespace = namespace  # where namespaced copies live; None for cluster-scoped ones
        self.resource = resource_of(kind)
        self.log_writes = log_writes  # rare kinds (cluster-scoped, from-host) log each write at info

    def path(self, name: str, subresource: str = "") -> str:
        return self.resource.path(self.namespace, name, subresource)

    async def tell_refusal(
        self, vobj: Obj, error: ApiError, name: str, what: str, refusals: frozenset[int] = REFUSALS
    ) -> None:
        """A host answer to a write of copy `name` that retrying alone will not fix, told to the
        tenant on `vobj` (once, in its own names): "the host refused the <what>: ..."."""
        if error.status in refusals:
            message = error.detail.replace(name, vobj["metadata"]["name"])
            await self.ctx.warn_once(vobj, "SyncError", f"the host refused the {what}: {message}")

    async def create(self, vobj: Obj, desired: Obj, refusals: frozenset[int] = REFUSALS) -> Obj | None:
        """Creates the copy; None when an object this cluster does not own holds the name.

        `vobj` is the object the tenant hears about, of the host's answers in `refusals` (fewer
        when the caller handles one itself: a Service's ClusterIP taken on the host)."""
        name = desired["metadata"]["name"]
        try:
            created = await self.client.create(desired, namespace=self.namespace)
        except ApiError as e:
            await self.tell_refusal(vobj, e, name, self.kind, refusals)
            if not e.conflict:
                raise
        else:
            if self.log_writes:
                _log.info(f"{self.kind} copy created", name=name, virtual=vobj["metadata"]["name"])
            return created
        existing = await self.client.get_or_none(self.kind, name, self.namespace)
        if existing is not None and not self.owns(existing):
            where = f"{self.namespace}/{name}" if self.namespace else name
            await self.ctx.warn_once(
                vobj,
                "SyncError",
                f"host {self.kind} {where} exists and is not managed by this virtual cluster; vnest leaves it alone",
            )
            return None
        raise ApiError(409, "Conflict", f"{self.kind} {name} is being replaced")

    async def update(self, have: Obj, want: Obj) -> Obj | None:
        """PUTs `want` over `have` (at `have`'s resourceVersion) unless they are equal; the result or None."""
        if want == have:
            return None
        body = dict(want)
        body["metadata"] = {**want["metadata"], "resourceVersion": have["metadata"]["resourceVersion"]}
        updated: Obj = await self.client.request("PUT", self.path(have["metadata"]["name"]), body=body)
        if self.log_writes:
            _log.info(f"{self.kind} copy updated", name=have["metadata"]["name"])
        return updated

    async def delete(self, obj: Obj, grace: int | None = None) -> bool:
        """Deletes a copy this cluster owns, and only that very object; whether it was deleted."""
        if not self.owns(obj):
            return False
        deleted = await self.client.delete_exact(self.kind, obj, grace)
        if deleted and self.log_writes:
            _log.info(f"{self.kind} copy deleted", name=obj["metadata"]["name"])
        return bool(deleted)
