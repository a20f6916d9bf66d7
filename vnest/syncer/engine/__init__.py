"""The engine every synced kind runs on: informers, a work queue, one reconcile, one patcher.

- informer.py: list + watch into a cache (written by hand after client-go's reflector);
- queue.py: client-go's work queue (de-duplication, one worker per key, backoff);
- context.py: what the syncers of one virtual cluster share (clients, config, informers);
- controller.py: the worker loop, and `Syncer`, the interface of every copied kind with
  the one reconcile that calls it;
- patcher.py: every write of a copy (create, update-if-changed, delete-exact);
- clusterscoped.py: what cluster-scoped copies add (ClusterRole ownership, field copies).
"""

from vnest.syncer.engine.context import SyncContext, now
from vnest.syncer.engine.controller import ClusterSyncer, Controller, FromHostSyncer, Syncer, ToHostSyncer
from vnest.syncer.engine.diff import is_subset, same
from vnest.syncer.engine.informer import Handlers, Informer
from vnest.syncer.engine.patcher import Patcher
from vnest.syncer.engine.queue import WorkQueue

__all__ = [
    "ClusterSyncer",
    "Controller",
    "FromHostSyncer",
    "Handlers",
    "Informer",
    "Patcher",
    "SyncContext",
    "Syncer",
    "ToHostSyncer",
    "WorkQueue",
    "is_subset",
    "now",
    "same",
]
