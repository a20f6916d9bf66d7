"""Keeps the control plane's processes running.

Each child writes to a log file of its own. A child that dies is started again
after a backoff that doubles up to a ceiling; one that keeps dying (too many
restarts within a window) makes the supervisor give up, so that whoever runs
the control plane (a pod's restart policy, `vnest resume`) sees a failure
instead of a loop. Children stay in the supervisor's process group, so that
stopping the group (vnest.procs) stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from vnest import log

_log = log.get("supervisor")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
RESTART_WINDOW = 300.0
MAX_RESTARTS_IN_WINDOW = 8


class Unrecoverable(Exception):
    pass


class Child:
    def __init__(self, name: str, argv: Sequence[str | os.PathLike[str]], log_file: Path) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts: deque[float] = deque()

    async def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        _log.info(f"started {self.name}", pid=self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        _log.info(f"stopped {self.name}")


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._stopping = False

    async def start(self, child: Child) -> Child:
        self.children.append(child)
        await child.start()
        return child

    def check_alive(self) -> None:
        """During start-up: a child that died is an error worth reporting at once."""
        for child in self.children:
            if not child.alive:
                raise Unrecoverable(f"{child.name} exited while starting:\n{child.tail()}")

    async def watch(self) -> None:
        """Restarts children as they die; returns only by raising Unrecoverable."""
        waiters = {asyncio.ensure_future(c.proc.wait()): c for c in self.children if c.proc}
        while waiters:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                child = waiters.pop(fut)
                if self._stopping:
                    continue
                await self._restart(child)
                assert child.proc is not None
                waiters[asyncio.ensure_future(child.proc.wait())] = child

    async def _restart(self, child: Child) -> None:
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > RESTART_WINDOW:
            child.restarts.popleft()
        if len(child.restarts) >= MAX_RESTARTS_IN_WINDOW:
            raise Unrecoverable(
                f"{child.name} died {len(child.restarts) + 1} times within {RESTART_WINDOW:.0f}s; "
                f"giving up:\n{child.tail()}"
            )
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** len(child.restarts))
        code = child.proc.returncode if child.proc else None
        _log.warning(f"{child.name} exited; restarting", code=code, backoff=f"{delay:.0f}s")
        child.restarts.append(now)
        await asyncio.sleep(delay)
        await child.start()

    async def stop_all(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                await child.stop()
