"""The work queue: de-duplication, one worker per key, and new keys ahead of updates."""

from __future__ import annotations

import asyncio

import pytest

from vnest.syncer.engine import WorkQueue

pytestmark = pytest.mark.unit


async def _drain(queue: WorkQueue) -> list[str]:
    """The keys in the order workers would get them, each done at once."""
    out = []
    while len(queue):
        key = await queue.get()
        out.append(key)
        queue.done(key)
    return out


def test_a_key_added_twice_is_queued_once_and_new_keys_take_turns_with_the_rest():
    async def run() -> list[str]:
        queue = WorkQueue()
        for key in ("a", "b", "a", "c"):
            queue.add(key)
        queue.add("new", first=True)
        queue.add("c", first=True)  # queued already: moved to the lane of new keys
        return await _drain(queue)

    assert asyncio.run(run()) == ["new", "a", "c", "b"]


def test_a_key_added_while_processed_comes_back_once_after():
    async def run() -> list[str]:
        queue = WorkQueue()
        queue.add("a")
        held = await queue.get()
        queue.add("a", first=True)
        queue.add("b")
        assert len(queue) == 1  # "a" waits for its worker to finish
        queue.done(held)
        return await _drain(queue)

    assert asyncio.run(run()) == ["b", "a"]
