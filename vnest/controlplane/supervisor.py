"""Keeps the control plane's processes (and in-process components) running.

Each child writes to a log file of its own. A child that dies is started again
after a backoff that doubles up to a ceiling; one that keeps dying (too many
restarts within a window) makes the supervisor give up, so that whoever runs
the control plane (a pod's restart policy, `vnest resume`) sees a failure
instead of a loop. Children stay in the supervisor's process group, so that
stopping the group (vnest.procs) stops everything.

A child is either a process (`Child`) or a coroutine run as a task of the
supervisor's own event loop (`TaskChild`: the syncer, which spares a Python
interpreter that way); both are restarted, given up on and stopped alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from vnest import log

_log = log.get("supervisor")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
RESTART_WINDOW = 300.0
MAX_RESTARTS_IN_WINDOW = 8


class Unrecoverable(Exception):
    pass


def _mark_start(log_file: Path, name: str) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())


class _Base:
    def __init__(self, name: str, log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        self.restarts: deque[float] = deque()

    def tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Child(_Base):
    """A process; ``env``, if given, is added to the supervisor's environment."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_file: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, log_file)
        self.argv = [str(a) for a in argv]
        self.env = dict(env or {})
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        _mark_start(self.log_file, self.name)
        with open(self.log_file, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
        _log.info(f"started {self.name}", pid=self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc else None

    async def wait(self) -> None:
        assert self.proc is not None
        await self.proc.wait()

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


class TaskChild(_Base):
    """A coroutine run as a task of the supervisor's loop, logging (vnest.log) to its own file.

    ``run`` is called anew on every (re)start; the task ending, by returning or by raising,
    counts as the child exiting, and what it raised goes to its log file.
    """

    def __init__(self, name: str, run: Callable[[], Awaitable[None]], log_file: Path) -> None:
        super().__init__(name, log_file)
        self.run = run
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        _mark_start(self.log_file, self.name)
        self.task = asyncio.create_task(self._main(), name=self.name)
        _log.info(f"started {self.name}", task=self.name)

    async def _main(self) -> None:
        with log.to_file(self.log_file):
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.error(f"{self.name} failed: {e}")
                with open(self.log_file, "a", encoding="utf-8") as out:
                    out.write("".join(traceback.format_exception(e)))
                raise

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def exit_code(self) -> int | None:
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        return 1 if self.task.exception() is not None else 0

    async def wait(self) -> None:
        assert self.task is not None
        with contextlib.suppress(BaseException):
            await asyncio.shield(self.task)

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, timeout)
        _log.info(f"stopped {self.name}")


AnyChild = Child | TaskChild


class Supervisor:
    def __init__(self) -> None:
        self.children: list[AnyChild] = []
        self._stopping = False

    async def start(self, child: AnyChild) -> AnyChild:
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
        waiters = {asyncio.ensure_future(c.wait()): c for c in self.children}
        while waiters:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                child = waiters.pop(fut)
                if self._stopping:
                    continue
                await self._restart(child)
                waiters[asyncio.ensure_future(child.wait())] = child

    async def _restart(self, child: AnyChild) -> None:
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > RESTART_WINDOW:
            child.restarts.popleft()
        if len(child.restarts) >= MAX_RESTARTS_IN_WINDOW:
            raise Unrecoverable(
                f"{child.name} died {len(child.restarts) + 1} times within {RESTART_WINDOW:.0f}s; "
                f"giving up:\n{child.tail()}"
            )
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** len(child.restarts))
        code = child.exit_code
        _log.warning(f"{child.name} exited; restarting", code=code, backoff=f"{delay:.0f}s")
        child.restarts.append(now)
        await asyncio.sleep(delay)
        await child.start()

    async def stop_all(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                await child.stop()
