"""Host events about synced objects, told again on the virtual objects (vnest.syncer.resources.events)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import NS, Row, hn, obj, pod, table
from tests.unit.test_reconcile_pods import hpod

pytestmark = pytest.mark.unit

WEB = pod()
ON_NODE = hpod(WEB, node="node-1", status={"phase": "Running"})


def host_event(about: str, suffix: str = "17a2b", count: int = 1, **fields: Any) -> dict:
    """An event the host wrote about host pod `about` of the host namespace."""
    return obj(
        "Event",
        f"{about}.{suffix}",
        NS,
        involvedObject={"kind": "Pod", "apiVersion": "v1", "name": about, "namespace": NS, "uid": "host-uid"},
        reason="Scheduled",
        message=f"Successfully assigned {NS}/{about} to node-1",
        type="Normal",
        count=count,
        lastTimestamp=f"2026-01-01T00:00:0{count}Z",
        source={"component": "default-scheduler"},
        **fields,
    )


ROWS = [
    pytest.param(
        Row(
            virtual=[WEB],
            host=[ON_NODE, host_event(hn("web"))],
            virtual_has={
                ("Event", "default/web.17a2b"): {
                    "reason": "Scheduled",
                    "message": f"Successfully assigned {NS}/web to node-1",
                    "involvedObject": {
                        "kind": "Pod",
                        "name": "web",
                        "namespace": "default",
                        "uid": "web-uid",
                    },
                    "count": 1,
                }
            },
        ),
        id="host-event-told-on-the-virtual-pod-in-its-names",
    ),
    pytest.param(
        Row(
            virtual=[WEB, obj("Event", "web.17a2b", reason="Scheduled", count=1, lastTimestamp="x")],
            host=[ON_NODE, host_event(hn("web"), count=3)],
            virtual_has={("Event", "default/web.17a2b"): {"count": 3}},
        ),
        id="repeated-host-event-updates-the-count",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[ON_NODE, host_event("someone-elses-pod")],
            virtual_lacks=[("Event", "default/someone-elses-pod.17a2b")],
        ),
        id="event-about-a-host-object-not-ours-stays-on-the-host",
    ),
]

test_events = table(["Pod", "Event"], ROWS)
