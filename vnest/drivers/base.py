"""What a driver does: put a virtual control plane somewhere, and report on it.

Both drivers run the same entrypoint (`vnest controlplane run`) from the same
chart's objects; they differ only in where the control plane's processes run.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from vnest.kube.client import KubeClient, Obj

RUNNING, PAUSED, PENDING, FAILED = "Running", "Paused", "Pending", "Failed"


def kubernetes_version(values: dict[str, Any]) -> str:
    """The Kubernetes version a config runs: its own, else the pinned one (the chart's default)."""
    from vnest import binaries

    given = values.get("controlPlane", {}).get("distro", {}).get("k8s", {}).get("version")
    return str(given or binaries.pins()["kubernetes"]["version"])


@dataclass
class Target:
    """One virtual cluster on one host."""

    name: str
    namespace: str
    host: KubeClient
    host_context: str


class Driver(abc.ABC):
    name: str

    def check(self, values: dict[str, Any]) -> None:  # noqa: B027 (a hook: most drivers refuse nothing)
        """Refuses, before anything is made, config this driver cannot put in effect (UsageError)."""

    @abc.abstractmethod
    async def install(self, target: Target, manifests: list[Obj], values: dict[str, Any]) -> None:
        """Creates (or upgrades) the control plane from the chart's rendered objects."""

    @abc.abstractmethod
    async def wait_ready(self, target: Target, timeout: float) -> None:
        """Returns once the virtual API answers and the control plane reports ready."""

    @abc.abstractmethod
    async def stop(self, target: Target) -> None:
        """Stops the control plane's processes, keeping every bit of state (pause)."""

    @abc.abstractmethod
    async def start(self, target: Target) -> None:
        """Starts a stopped control plane again (resume)."""

    @abc.abstractmethod
    async def uninstall(self, target: Target, keep_data: bool) -> None:
        """Stops the control plane and removes what the driver itself keeps (local state, release)."""

    @abc.abstractmethod
    async def status(self, target: Target) -> str:
        """Running, Pending or Failed (Paused is decided from the config Secret)."""

    async def endpoint(self, target: Target, published: str) -> str:
        """Where this machine reaches the virtual API server that published ``published``."""
        return published
