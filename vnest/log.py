"""Logging and progress for the CLI and the long-running processes.

Quiet by default: one line per user-visible step, in the style vCluster's CLI
prints (``21:04:05 info Starting kube-apiserver``). ``--debug`` adds every
detail. Extra context goes in ``key=value`` pairs so logs stay greppable.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER_NAME = "vnest"

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
# Level between INFO and WARNING for "this step finished", as vCluster's "done".
DONE = 25
_LEVEL_NAMES[DONE] = "done"
logging.addLevelName(DONE, "DONE")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.lower())
        line = f"{stamp} {level} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and logging.getLogger(LOGGER_NAME).isEnabledFor(logging.DEBUG):
            line += "\n" + self.formatException(record.exc_info)
        return line


# The file that records logged in this context go to instead of stderr (see `to_file`).
_context_file: contextvars.ContextVar[logging.Handler | None] = contextvars.ContextVar(
    "vnest_log_file", default=None
)


class _ContextRouter(logging.Handler):
    """Writes each record to its context's file (`to_file`) if it has one, else to stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.stderr = logging.StreamHandler(sys.stderr)
        self.stderr.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        (_context_file.get() or self.stderr).handle(record)


def setup(debug: bool = False) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.addHandler(_ContextRouter())
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


@contextmanager
def to_file(path: Path) -> Iterator[None]:
    """Within this block, and in every task and thread it starts, vnest logs to ``path`` (appended).

    A component that runs as a task of a bigger process (the syncer inside the control plane's
    supervisor) keeps a log file of its own this way, as it would as a process of its own: asyncio
    tasks and `asyncio.to_thread` inherit the context they were started from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_Formatter())
    token = _context_file.set(handler)
    try:
        yield
    finally:
        _context_file.reset(token)
        handler.close()


def get(name: str) -> KVLogger:
    return KVLogger(logging.getLogger(f"{LOGGER_NAME}.{name}"))


class KVLogger:
    """A logger whose calls take key=value context: ``log.info("started", pid=42)``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, msg: str, fields: dict[str, object], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"fields": fields}, exc_info=exc_info)

    def debug(self, msg: str, **fields: object) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._log(logging.INFO, msg, fields)

    def done(self, msg: str, **fields: object) -> None:
        self._log(DONE, msg, fields)

    def warning(self, msg: str, **fields: object) -> None:
        self._log(logging.WARNING, msg, fields)

    def error(self, msg: str, exc_info: bool = False, **fields: object) -> None:
        self._log(logging.ERROR, msg, fields, exc_info=exc_info)

    @property
    def debugging(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)


class Progress:
    """Reports a long step now and then, never more often than ``every`` seconds."""

    def __init__(self, log: KVLogger, what: str, every: float = 10.0) -> None:
        self._log = log
        self._what = what
        self._every = every
        self.started = time.monotonic()
        self._last = self.started

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, status: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self._every:
            self._last = now
            self._log.info(f"{self._what}: {status}", elapsed=f"{self.elapsed:.0f}s")


@contextmanager
def step(log: KVLogger, what: str, every: float = 10.0) -> Iterator[Progress]:
    """Logs the start and the end (with its duration) of a long step."""
    log.info(f"{what}...")
    progress = Progress(log, what, every)
    yield progress
    log.done(f"{what}", took=f"{progress.elapsed:.1f}s")
