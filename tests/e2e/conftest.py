"""Fixtures the e2e modules share beyond the session's local host (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.standins.kubevirt import StandIn


@pytest.fixture(scope="session")
def kubevirt_host(host_env) -> Iterator[StandIn]:
    """The session's local host with KubeVirt's API and the stand-in serving it (stopped at the end):
    one per host, since two stand-ins would both act on every VM."""
    standin = StandIn.start(host_env)
    try:
        yield standin
    finally:
        standin.stop()
