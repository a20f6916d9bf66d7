"""Unit-test fixtures: two independent in-memory API servers, as a syncer sees a virtual and a host cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.kubeapi import FakeApiServer


@pytest.fixture
def virtual_api() -> Iterator[FakeApiServer]:
    server = FakeApiServer("virtual")
    yield server
    server.close()


@pytest.fixture
def host_api() -> Iterator[FakeApiServer]:
    server = FakeApiServer("host")
    yield server
    server.close()
