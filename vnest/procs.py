"""Starting, finding and stopping the server processes vnest runs on this machine.

Each process runs in a session of its own (so it outlives the CLI command that
started it and its children can be signalled as one group) and is recorded in
a pid file together with its start time: a pid the kernel has reused for
another program is never taken for ours, and never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar

from vnest.errors import VnestError

T = TypeVar("T")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() is pending
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    start_time: int


class ProcessDir:
    """A folder of pid files and log files for one set of processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pids = root / "pids"
        self.logs = root / "logs"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Recorded:
        """Starts a server process; ``preexec_fn`` runs in the child before exec (namespaces, cgroups)."""
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(name), "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        start = _start_time(proc.pid)
        # Popen.__del__ would otherwise warn that a child is still running: it is
        # meant to, and stop() (or the OS, once we exit) reaps it.
        proc.returncode = 0
        if start is None:
            raise VnestError(f"{name} exited at once", hint=f"see {self.log_file(name)}")
        self.pid_file(name).write_text(f"{proc.pid} {start}\n")
        return Recorded(name, proc.pid, start)

    def recorded(self, name: str) -> Recorded | None:
        try:
            pid, start = self.pid_file(name).read_text().split()
        except (OSError, ValueError):
            return None
        return Recorded(name, int(pid), int(start))

    def running(self, name: str) -> Recorded | None:
        rec = self.recorded(name)
        if rec is None or _start_time(rec.pid) != rec.start_time:
            return None
        return rec

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.pids.glob("*.pid")) if self.pids.exists() else []

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """Stops the recorded process and its process group; True if it was running."""
        rec = self.running(name)
        if rec is not None:
            _signal_group(rec.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _start_time(rec.pid) == rec.start_time:
                _reap(rec.pid)
                time.sleep(0.05)
            if _start_time(rec.pid) == rec.start_time:
                _signal_group(rec.pid, signal.SIGKILL)
                while _start_time(rec.pid) == rec.start_time:
                    _reap(rec.pid)
                    time.sleep(0.05)
            # Children that ignored the TERM (kwok's exec'd commands, say) go too.
            _signal_group(rec.pid, signal.SIGKILL)
            _reap(rec.pid)
        self.pid_file(name).unlink(missing_ok=True)
        return rec is not None

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could not listen on the port now.

    SO_REUSEADDR as Go's servers set it: connections in TIME_WAIT after a
    server stopped do not keep its port from being listened on again.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_wait: Callable[[], None] | None = None,
) -> T:
    """Calls ``check`` until it returns something truthy (None and False mean not yet), and returns
    that; raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise VnestError(f"timed out after {timeout:.0f}s waiting for {what}")
        if on_wait is not None:
            on_wait()
        time.sleep(interval)


def run_streaming(
    cmd: Sequence[str],
    on_line: Callable[[str], None],
    on_idle: Callable[[], None],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Runs a long tool to its end: each line it prints (stdout and stderr) goes to ``on_line``,
    and ``on_idle`` runs after each second without one (tools that say nothing while they
    download still show progress). Returns the exit code."""
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            on_idle()
            continue
        if line is None:
            return proc.wait()
        on_line(line)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip())
    lines.put(None)
