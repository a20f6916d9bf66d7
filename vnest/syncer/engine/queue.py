"""A work queue of keys, as client-go's: de-duplicating, one worker per key, retries with backoff.

A key added while queued is queued once; a key added while a worker holds it
is queued again when the worker is done, never handed to two workers at once.
Failed keys come back after a per-key exponential backoff; success forgets it.

Keys added `first` (a new object) wait in a lane of their own, and workers take
from the two lanes in turn: a burst of new pods neither waits behind the status
updates of the pods before it nor starves them (bench/sync.py drew virtual pods
all reaching Running only after the last of a 1000-pod burst was copied, when new
keys simply went to the front).
"""

from __future__ import annotations

import asyncio
from collections import deque

BASE_DELAY = 0.01
MAX_DELAY = 30.0


class WorkQueue:
    def __init__(self) -> None:
        self._queue: deque[str] = deque()
        self._new: deque[str] = deque()  # keys added `first`
        self._new_turn = True
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._wakeup = asyncio.Condition()
        self._timers: set[asyncio.TimerHandle] = set()

    def __len__(self) -> int:
        return len(self._queue) + len(self._new)

    def add(self, key: str, first: bool = False) -> None:
        """Queues a key; `first`: in the lane of new objects, which goes in turn with the rest."""
        if key in self._dirty:
            if first and key in self._queue:
                self._queue.remove(key)  # O(n), and only for the rare new key queued already
                self._new.append(key)
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        (self._new if first else self._queue).append(key)
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
            await self._wakeup.wait_for(lambda: bool(self._queue or self._new))
            take_new = bool(self._new) and (self._new_turn or not self._queue)
            key = (self._new if take_new else self._queue).popleft()
            self._new_turn = not take_new
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._notify())
