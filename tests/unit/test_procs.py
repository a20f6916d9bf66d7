import re
import socket
import subprocess
import sys

import pytest

from vnest import procs
from vnest.errors import VnestError


def test_start_records_pid_and_stop_ends_the_whole_group(tmp_path):
    pd = procs.ProcessDir(tmp_path)
    # A parent that starts a child which ignores SIGTERM: stop() must end both.
    script = (
        "import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\"child\", flush=True); time.sleep(600)']);"
        "print(c.pid, flush=True); time.sleep(600)"
    )
    rec = pd.start("sleeper", [sys.executable, "-c", script])
    assert pd.running("sleeper") == rec
    procs.wait_until(lambda: "child" in pd.log_file("sleeper").read_text(), 10, "child start")
    child_line = re.search(r"^(\d+)$", pd.log_file("sleeper").read_text(), re.M)
    assert child_line is not None
    child = int(child_line.group(1))
    assert pd.stop("sleeper", timeout=1) is True
    assert pd.running("sleeper") is None
    assert not pd.pid_file("sleeper").exists()
    assert subprocess.run(["kill", "-0", str(rec.pid)], capture_output=True).returncode != 0  # reaped too
    procs.wait_until(lambda: procs._start_time(child) is None, 5, "the child to exit")
    assert pd.stop("sleeper") is False


def test_a_reused_pid_is_not_taken_for_ours(tmp_path):
    pd = procs.ProcessDir(tmp_path)
    rec = pd.start("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        # Same pid, other start time: as if the kernel gave our pid to another program.
        pd.pid_file("sleeper").write_text(f"{rec.pid} {rec.start_time + 1}\n")
        assert pd.running("sleeper") is None
        assert pd.stop("sleeper") is False
        assert procs._start_time(rec.pid) == rec.start_time  # still alive: never signalled
    finally:
        pd.pid_file("sleeper").write_text(f"{rec.pid} {rec.start_time}\n")
        pd.stop("sleeper")


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert procs.port_in_use(port)
    assert not procs.port_in_use(port)


def test_wait_until_times_out_with_what_it_waited_for():
    with pytest.raises(VnestError, match="waiting for the moon"):
        procs.wait_until(lambda: None, 0.2, "the moon", interval=0.05)
