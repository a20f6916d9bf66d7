"""Shared fixtures. e2e tests share one embedded local host for the whole session.

Every test environment is isolated from the developer's own: VNEST_HOME and
KUBECONFIG point into a temp folder, and the host listens on its own ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VNEST = [sys.executable, "-m", "vnest"]
# Ports for the session's host (seven from here), away from the default 16443 so a
# developer's own `vnest host up` and the tests do not collide. Tests that start
# hosts of their own use +1000 and +2000. VNEST_E2E_PORT moves them all, so two
# test sessions can run side by side.
SESSION_HOST_PORT = int(os.environ.get("VNEST_E2E_PORT", "26443"))


@dataclass
class Env:
    """An isolated vnest environment: its own VNEST_HOME and KUBECONFIG."""

    root: Path

    @property
    def vars(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VNEST_HOME"] = str(self.root / "vnest")
        env["KUBECONFIG"] = str(self.root / "kubeconfig")
        return env

    def vnest(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*VNEST, *args], env=self.vars, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"vnest {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    @property
    def kubectl_path(self) -> str:
        from vnest import binaries

        return str(binaries.ensure().kubectl)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        from vnest import binaries

        proc = subprocess.run(
            [str(binaries.ensure().kubectl), *args],
            env=self.vars,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
        return proc


@pytest.fixture
def make_env() -> Iterator[Callable[[], Env]]:
    """Makes isolated environments; each is removed after the test."""
    roots: list[Path] = []

    def make() -> Env:
        root = Path(tempfile.mkdtemp(prefix="vnest-test-"))
        roots.append(root)
        return Env(root)

    yield make
    for root in roots:
        env = Env(root)
        if (root / "vnest" / "host").exists():  # a test that failed half-way leaves nothing running
            env.vnest("host", "down", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def host_env() -> Iterator[Env]:
    """One local host for the whole e2e session, stopped at the end even when tests fail."""
    env = Env(Path(tempfile.mkdtemp(prefix="vnest-e2e-")))
    try:
        env.vnest("host", "up", "--nodes", "2", "--runtime", "kwok", "--port", str(SESSION_HOST_PORT))
        yield env
    finally:
        env.vnest("host", "down", check=False)
        shutil.rmtree(env.root, ignore_errors=True)


REAL_HOST_PORT = SESSION_HOST_PORT + 3000


def _real_nodes_here() -> None:
    """Skips when this machine cannot run real nodes, unless VNEST_REQUIRE_REAL=1 (CI) says it must."""
    from vnest.host.nodes import runtime_unavailable

    why = runtime_unavailable()
    if why is None:
        return
    if os.environ.get("VNEST_REQUIRE_REAL") == "1":
        pytest.fail(f"VNEST_REQUIRE_REAL=1, but this machine cannot run real nodes: {why}")
    pytest.skip(f"real nodes are not possible here: {why}")


@pytest.fixture(scope="session")
def real_host_env() -> Iterator[Env]:
    """A local host with two real nodes (containerd) for the real tier, stopped at the end."""
    _real_nodes_here()
    env = Env(Path(tempfile.mkdtemp(prefix="vnest-real-")))
    try:
        env.vnest(
            "host",
            "up",
            "--nodes",
            "2",
            "--runtime",
            "containerd",
            "--port",
            str(REAL_HOST_PORT),
            timeout=1800,
        )
        yield env
    finally:
        env.vnest("host", "down", check=False)
        shutil.rmtree(env.root, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The folder decides the marker, so `-m unit`, `-m e2e` and `-m real` select exactly those folders.
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in ("unit", "e2e", "real"):
            item.add_marker(getattr(pytest.mark, kind))
        if kind == "real":
            item.add_marker(pytest.mark.usefixtures("_real_nodes_possible"))


@pytest.fixture
def _real_nodes_possible() -> None:
    _real_nodes_here()
