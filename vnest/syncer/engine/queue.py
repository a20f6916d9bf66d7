"""A work queue of keys, as client-go's: de-duplicating, one worker per key, retries with backoff.

A key added while queued is queued once; a key added while a worker holds it
is queued again when the worker is done, never handed to two workers at once.
Failed keys come back after a per-key exponential backoff; success forgets it.
"""

from __future__ import annotations

import asyncio
from collections import deque

BASE_DELAY = 0.01
MAX_DELAY = 30.0


class WorkQueue:
    def __init__(self) -> None:
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._wakeup = asyncio.Condition()
        self._timers: set[asyncio.TimerHandle] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str, first: bool = False) -> None:
        """Queues a key, at the back or, `first`, at the front (a new object ahead of updates)."""
        if key in self._dirty:
            if first and key in self._queue and self._queue[0] != key:
                self._queue.remove(key)  # O(n), and only for the rare new key queued already
                self._queue.appendleft(key)
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        if first:
            self._queue.appendleft(key)
        else:
            self._queue.append(key)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._wakeup:
            self._wakeup.notify()

    def add_after(self, key: str, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self.add(key)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def retry(self, key: str) -> float:
        """Queues a failed key again after its backoff; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(MAX_DELAY, BASE_DELAY * 2**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    async def get(self) -> str:
        async with self._wakeup:
            await self._wakeup.wait_for(lambda: bool(self._queue))
            key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._notify())
