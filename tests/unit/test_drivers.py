"""The kubernetes driver's reading of its control plane pod (vnest.drivers.kubernetes)."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.kubeapi import FakeApiServer
from vnest.drivers.base import PENDING, RUNNING, Target
from vnest.drivers.kubernetes import KubernetesDriver

pytestmark = pytest.mark.unit

NAME = NS = "tenant1"


def _status(pod_revision: str, sts_generation: int, sts_status: dict) -> str:
    server = FakeApiServer(namespaces=["default", NS])
    server.seed(
        {
            "kind": "Pod",
            "metadata": {
                "name": f"{NAME}-0",
                "namespace": NS,
                "labels": {"controller-revision-hash": pod_revision},
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    server.seed(
        {
            "kind": "StatefulSet",
            "metadata": {"name": NAME, "namespace": NS, "generation": sts_generation},
            "status": sts_status,
        }
    )

    async def read() -> str:
        async with server.client() as host:
            return await KubernetesDriver().status(Target(NAME, NS, host, "host"))

    return asyncio.run(read())


def test_a_ready_pod_of_the_current_revision_is_running():
    assert _status("a", 2, {"observedGeneration": 2, "updateRevision": "a"}) == RUNNING


def test_the_old_pod_of_an_upgrade_is_not_taken_for_the_new_release():
    # helm upgrade changed the spec; the controller has not replaced the pod (or seen the change) yet.
    assert _status("a", 2, {"observedGeneration": 2, "updateRevision": "b"}) == PENDING
    assert _status("a", 3, {"observedGeneration": 2, "updateRevision": "a"}) == PENDING
