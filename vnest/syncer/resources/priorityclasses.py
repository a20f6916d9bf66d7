"""PriorityClasses (optional, `sync.toHost.priorityClasses.enabled`): the tenant's priorities on the host.

A virtual PriorityClass becomes host PriorityClass `vnest-<name>-x-<hostns>-x-<vcluster>`
(see vnest.syncer.engine.clusterscoped for what all cluster-scoped copies share) with the same
description and preemption policy, its value capped at 1000000000, the highest a
non-system class may have (as vCluster caps it), so no tenant outranks the host's
system-node-critical and system-cluster-critical. It is never the host's global default.
The virtual cluster's built-in `system-*` classes are copied like any other, capped too: a
tenant's "critical" pod is critical among its own, never above the host's system pods.

Synced pods (vnest.syncer.resources.pods) carry the host copy's name as priorityClassName; the host
computes their priority from it. With `sync.fromHost.priorityClasses.enabled` instead, the
host's classes are copied in (vnest.syncer.resources.fromhost) and pods keep the names, except the
`system-*` ones, which are the virtual cluster's own and never the host's. With neither,
pods go to the host without a class: the host's global default, if any, applies.
"""

from __future__ import annotations

from vnest.kube.client import Obj
from vnest.syncer.engine import SyncContext
from vnest.syncer.engine.clusterscoped import ClusterCopySyncer

# HighestUserDefinablePriority in Kubernetes: above it only the system classes.
MAX_VALUE = 1_000_000_000


def is_system(name: str) -> bool:
    return name.startswith("system-")


def pod_priority_class(ctx: SyncContext, name: str | None) -> str | None:
    """The priorityClassName a synced pod gets on the host; None: none (the host's default applies)."""
    if not name:
        return None
    sync = ctx.config.sync
    if sync.to_host.priority_classes.enabled:
        return ctx.cluster.host_class_name(name)  # system ones included: their capped copies
    if sync.from_host.priority_classes.enabled and not is_system(name):
        return name  # the host's own class, which the virtual cluster shows as a copy
    return None


def host_value(value: int) -> int:
    return min(value, MAX_VALUE)


class PriorityClassSyncer(ClusterCopySyncer):
    kind = "PriorityClass"
    fields = ("value", "description", "preemptionPolicy")  # globalDefault left out: false
    immutable = ("value", "preemptionPolicy")

    def payload(self, vobj: Obj) -> Obj:
        out = super().payload(vobj)
        out["value"] = host_value(int(vobj.get("value") or 0))
        return out
