"""Unit-test fixtures: two independent in-memory API servers, as a syncer sees a virtual and a host cluster."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.unit.kubeapi import FakeApiServer
from vnest import binaries
from vnest.host import images


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


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A copy of vnest's sources and a folder of stand-in binaries."""
    src = tmp_path / "src"
    (src / "vnest").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(images.SOURCE_ROOT / name, src / name)
    (src / "vnest" / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(images, "SOURCE_ROOT", src)
    bins = tmp_path / "bin"
    bins.mkdir()
    for name in (
        "kube",
        "kube-previous",
        "coredns",
        "kine",
        "etcd",
        "pod-security-check",
        "helm",
        *images.CAPI_MANAGERS,
    ):
        (bins / name).write_text(name)
    return src, binaries.Binaries(bins)
