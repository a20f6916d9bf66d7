"""Where a virtual control plane runs: `kubernetes` (a pod on the host) or `process` (local processes)."""

from __future__ import annotations

from vnest.drivers.base import Driver
from vnest.errors import UsageError

DRIVERS = ("kubernetes", "process")


def get(name: str) -> Driver:
    if name == "process":
        from vnest.drivers.process import ProcessDriver

        return ProcessDriver()
    if name == "kubernetes":
        from vnest.drivers.kubernetes import KubernetesDriver

        return KubernetesDriver()
    raise UsageError(f"unknown driver {name!r}: use one of {', '.join(DRIVERS)}")
