"""An informer: list, then watch, one resource into an in-memory store.

No Python Kubernetes library ships an informer (client-go's reflector +
store + handlers), so this is written by hand after client-go's design:
- list (paginated) and remember the list's resourceVersion;
- watch from there with bookmarks, so a quiet resource still advances its
  resourceVersion and a reconnect does not need a fresh list;
- when the server ends a watch (timeoutSeconds), watch again from the last
  resourceVersion; on a dropped connection, the same after a backoff;
- on 410 Gone (the resourceVersion was compacted away), list again and tell
  handlers what changed in between, deletions included.
Handlers run inline on the event loop and must only enqueue work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vnest import log
from vnest.kube.client import ApiError, KubeClient, Obj, Resource
from vnest.syncer.mappings import key_of

_log = log.get("informer")

PAGE = 500
WATCH_SECONDS = 300
BACKOFF_MAX = 30.0


def _ignore(obj: Obj) -> None:
    pass


def _ignore_update(old: Obj, new: Obj) -> None:
    pass


def event_object(old: Obj | None, new: Obj | None) -> Obj:
    """What a `Handlers.diff` handler's change is about: the new object, or the deleted one."""
    obj = new if new is not None else old
    assert obj is not None  # Handlers.diff never passes neither
    return obj


@dataclass(frozen=True)
class Handlers:
    """What an informer tells of a change, as client-go's ResourceEventHandlerFuncs: an add, an update
    (old and new) or a delete (the object as last seen) each have a handler of their own."""

    on_add: Callable[[Obj], None] = _ignore
    on_update: Callable[[Obj, Obj], None] = _ignore_update
    on_delete: Callable[[Obj], None] = _ignore

    @classmethod
    def each(cls, handler: Callable[[Obj], None]) -> Handlers:
        """One handler for every change, of the object as it now is (as it was, when deleted)."""
        return cls(handler, lambda old, new: handler(new), handler)

    @classmethod
    def diff(cls, handler: Callable[[Obj | None, Obj | None], None]) -> Handlers:
        """One handler of (before, after), None for absent: for indexes kept by what changed."""
        return cls(lambda new: handler(None, new), handler, lambda old: handler(old, None))


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
        name: str = "",
        field_selector: str = "",
        keep: bool = True,
    ) -> None:
        self.client = client
        # keep=False: a stream, not a cache. Every object listed or watched goes to on_add as it comes
        # (also when modified), deletions to on_delete, and the store stays empty: for kinds whose
        # objects are acted on once and never looked up (host Events, an hour of them per namespace).
        self.keep = keep
        self.resource = resource
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.name = name or f"{kind}@{client.server}"
        self.store: dict[str, Obj] = {}
        self.handlers: list[Handlers] = []
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0  # how often a 410 forced a new list (tests and metrics read it)

    def add_handlers(self, handlers: Handlers) -> None:
        self.handlers.append(handlers)

    def get(self, key: str) -> Obj | None:
        return self.store.get(key)

    def _emit(self, old: Obj | None, new: Obj | None) -> None:
        for handlers in self.handlers:
            try:
                if old is None and new is not None:
                    handlers.on_add(new)
                elif old is not None and new is not None:
                    handlers.on_update(old, new)
                elif old is not None:
                    handlers.on_delete(old)
            except Exception:  # one broken handler must not stop the informer
                _log.error("informer handler failed", informer=self.name, exc_info=True)

    def _typed(self, obj: Obj) -> Obj:
        # No syncer reads managedFields, often the largest part of an object: dropped from the cache
        # (client-go's informer transform, as vCluster does). A PUT from the cache without them
        # keeps the server's.
        obj.get("metadata", {}).pop("managedFields", None)
        obj.setdefault("kind", self.kind)
        obj.setdefault("apiVersion", self.resource.group_version)
        return obj

    async def run(self, list_first: bool = True) -> None:
        """Runs until cancelled; `list_first=False` resumes a watch from `resource_version`."""
        need_list = list_first
        backoff = 0.5
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    self.synced.set()
                await self._watch()
                backoff = 0.5
            except Gone:
                self.relists += 1
                _log.debug("watch expired; listing again", informer=self.name)
                need_list = True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.warning(
                    "list/watch failed; retrying", informer=self.name, error=str(e), backoff=f"{backoff:.1f}s"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                if isinstance(e, ApiError) and e.status == 410:
                    need_list = True

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def _list(self) -> None:
        items: dict[str, Obj] = {}
        params = {**self._params(), "limit": PAGE}
        while True:
            page = await self.client.request("GET", self.resource.path(self.namespace), params=params)
            for item in page["items"]:
                if self.keep:
                    items[key_of(item)] = self._typed(item)
                else:
                    self._emit(None, self._typed(item))
            cont = page["metadata"].get("continue")
            if not cont:
                self.resource_version = page["metadata"]["resourceVersion"]
                break
            params["continue"] = cont
        old_store, self.store = self.store, items
        for key, old in old_store.items():
            if key not in items:
                self._emit(old, None)
        for key, new in items.items():
            previous = old_store.get(key)
            if previous is None or previous["metadata"].get("resourceVersion") != new["metadata"].get(
                "resourceVersion"
            ):
                self._emit(previous, new)

    async def _watch(self) -> None:
        params = {
            **self._params(),
            "watch": "1",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        async for event in self.client.stream_lines(self.resource.path(self.namespace), params):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise ApiError(obj.get("code", 500), obj.get("reason", ""), obj.get("message", "watch error"))
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            if kind == "BOOKMARK":
                continue
            obj = self._typed(obj)
            if not self.keep:
                self._emit(obj if kind == "DELETED" else None, None if kind == "DELETED" else obj)
                continue
            key = key_of(obj)
            old = self.store.get(key)
            if kind == "DELETED":
                self.store.pop(key, None)
                self._emit(old or obj, None)
            else:
                self.store[key] = obj
                self._emit(old, obj)
