"""StorageClasses (optional, `sync.toHost.storageClasses.enabled`).

A virtual StorageClass becomes host StorageClass `vnest-<name>-x-<hostns>-x-<vcluster>`
(naming.host_cluster_scoped_name) with the same provisioner, parameters and policies, and
PVCs (vnest.syncer.resources.pvcs) and PVs (vnest.syncer.resources.persistentvolumes) naming it are pointed at
that copy. The default-class annotation stays behind: a tenant's default must not become
the host's. Provisioner, parameters, reclaim policy and binding mode cannot change in
place; the virtual API server refuses such edits as the host's would.
"""

from __future__ import annotations

from vnest.config.models import VClusterConfig
from vnest.syncer.engine import SyncContext
from vnest.syncer.engine.clusterscoped import ClusterCopySyncer

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


def storage_classes_to_host(config: VClusterConfig) -> bool:
    return config.sync.to_host.storage_classes.enabled


def host_storage_class(ctx: SyncContext, name: str | None) -> str | None:
    """What a virtual storageClassName (of a PVC or PV) names on the host.

    The host copy's name while StorageClasses sync to the host; else the same name (the host's
    own class, or its copy from sync.fromHost.storageClasses). "" (no class) and None (the
    default class) stay as they are."""
    if not name or not storage_classes_to_host(ctx.config):
        return name
    return ctx.cluster.host_class_name(name)


# What a StorageClass copy carries, either way, and what the API server will not change in place.
FIELDS = (
    "provisioner",
    "parameters",
    "reclaimPolicy",
    "mountOptions",
    "allowVolumeExpansion",
    "volumeBindingMode",
    "allowedTopologies",
)
IMMUTABLE = ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode")


class StorageClassSyncer(ClusterCopySyncer):
    kind = "StorageClass"
    fields = FIELDS
    immutable = IMMUTABLE
    dropped_annotations = DEFAULT_CLASS_ANNOTATIONS
