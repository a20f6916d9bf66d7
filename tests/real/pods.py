"""What the real tier does with pods and port-forwards, on the host and inside virtual clusters."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from vnest.procs import free_port, wait_until


def run_to_completion(kubectl: Callable[..., str], name: str, image: str, *command: str) -> str:
    """Runs pod ``name`` to its end with ``kubectl`` (a function of kubectl's arguments, bound to a
    cluster and namespace) and returns its log; a pod that failed fails the test with its log."""
    kubectl("delete", "pod", name, "--ignore-not-found", "--wait=true")
    kubectl("run", name, f"--image={image}", "--restart=Never", "--command", "--", *command)

    def finished() -> str | None:
        phase = kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, 120, f"pod {name} to finish", interval=0.5)
    logs = kubectl("logs", name)
    assert phase == "Succeeded", f"{name} {phase}:\n{logs}"
    return logs


def page_through_port_forward(argv: list[str], env: dict[str, str], target: str, what: str) -> str:
    """Runs ``argv`` (a kubectl command line up to `port-forward`) forwarding a free local port to
    ``target``'s port 80, and returns the HTTP response to `GET /` through it."""
    port = free_port()
    forward = subprocess.Popen(
        [*argv, "port-forward", target, f"{port}:80"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def page() -> str | None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    return data.decode(errors="replace") or None
            except OSError:
                return None

        return wait_until(page, 30, what)
    finally:
        forward.terminate()
        forward.wait(10)
