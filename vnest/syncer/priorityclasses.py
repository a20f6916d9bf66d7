"""PriorityClasses (optional, `sync.toHost.priorityClasses.enabled`): the tenant's priorities on the host.

A virtual PriorityClass becomes host PriorityClass `vnest-<name>-x-<hostns>-x-<vcluster>`
(see vnest.syncer.storageclasses for what all cluster-scoped copies share) with the same
description and preemption policy, its value capped at 1000000000, the highest a
non-system class may have (as vCluster caps it), so no tenant outranks the host's
system-node-critical and system-cluster-critical. It is never the host's global default.
The built-in `system-*` classes exist on both sides and are not copied.

Synced pods (vnest.syncer.pods) carry the host copy's name as priorityClassName, or the
system class's own name; the host computes their priority from it. With
`sync.fromHost.priorityClasses.enabled` instead, the host's classes are copied in
(vnest.syncer.fromhost) and pods keep the names. With neither, pods go to the host without
a class: the host's global default, if any, applies.
"""

from __future__ import annotations

from typing import Any

from vnest.kube.client import Obj
from vnest.syncer.clusterscoped import ClusterCopySyncer, host_class_name
from vnest.syncer.engine import SyncContext

# HighestUserDefinablePriority in Kubernetes: above it only the system classes.
MAX_VALUE = 1_000_000_000
SYSTEM_CLASSES = ("system-node-critical", "system-cluster-critical")


def is_system(name: str) -> bool:
    return name.startswith("system-")


def pod_priority_class(ctx: SyncContext, name: str | None) -> str | None:
    """The priorityClassName a synced pod gets on the host; None: none (the host's default applies)."""
    if not name:
        return None
    sync: dict[str, Any] = ctx.values["sync"]
    if sync["toHost"]["priorityClasses"]["enabled"]:
        return name if name in SYSTEM_CLASSES else host_class_name(ctx, name)
    if sync["fromHost"]["priorityClasses"]["enabled"]:
        return name  # the host's own class, which the virtual cluster shows as a copy
    return None


def host_value(value: int) -> int:
    return min(value, MAX_VALUE)


class PriorityClassSyncer(ClusterCopySyncer):
    kind = "PriorityClass"
    fields = ("value", "description", "preemptionPolicy")  # globalDefault left out: false
    immutable = ("value", "preemptionPolicy")

    def wanted(self, vkey: str) -> bool:
        return not is_system(vkey)

    def payload(self, vobj: Obj) -> Obj:
        out = super().payload(vobj)
        out["value"] = host_value(int(vobj.get("value") or 0))
        return out
