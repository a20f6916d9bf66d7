"""Names, labels and annotations of the host objects vnest creates (SPEC.md section 4).

Everything that decides what a host object is called or how vnest recognises
its own objects lives here, so that the CLI, the drivers, the chart values and
the syncer cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

PREFIX = "vnest.io"

# On every host object that belongs to a virtual cluster's control plane
# (chart objects, process-driver objects, the Secrets the control plane writes).
LABEL_CLUSTER = f"{PREFIX}/cluster"
# What a control-plane object is: config, kubeconfig, certs, control-plane, rbac, service.
LABEL_COMPONENT = f"{PREFIX}/component"
# On every host object the syncer creates: the virtual cluster that owns it.
LABEL_MANAGED_BY = f"{PREFIX}/managed-by"

# On synced host objects: which virtual object they are the copy of.
ANNOTATION_NAME = f"{PREFIX}/object-name"
ANNOTATION_NAMESPACE = f"{PREFIX}/object-namespace"
ANNOTATION_UID = f"{PREFIX}/object-uid"
ANNOTATION_KIND = f"{PREFIX}/object-kind"
# On a virtual pod: the uid of its host copy, once that was seen on a node. A pod carrying it
# whose host copy is gone ran and stopped (its virtual pod goes); one without it never ran.
ANNOTATION_HOST_UID = f"{PREFIX}/host-uid"
# On a host pod whose virtual pod a Job controls: `Job` (vCluster's vcluster.loft.sh/owner-set-kind).
# The host copy has no owner of that kind, and hosts that finish pods by their owner's kind (KWOK's
# pod-complete stage; vnest/host/kwok.py) read this instead.
ANNOTATION_OWNER_SET_KIND = f"{PREFIX}/owner-set-kind"

# On the config Secret: facts `vnest list` reports without asking anything else.
ANNOTATION_DRIVER = f"{PREFIX}/driver"
ANNOTATION_KUBERNETES_VERSION = f"{PREFIX}/kubernetes-version"
ANNOTATION_VNEST_VERSION = f"{PREFIX}/vnest-version"
ANNOTATION_PAUSED = f"{PREFIX}/paused"

# On a Service of the embedded local host (`vnest host up`): the ip:port where it is really
# served on this machine, since the local host has no kube-proxy to route its ClusterIP.
ANNOTATION_LOCAL_ADDRESS = f"{PREFIX}/local-address"

# The control-plane pod's DNS port (the chart's `dns` container port), and the label that marks
# the virtual kube-system/kube-dns Service vnest made, whose host copy selects that pod.
DNS_POD_PORT = 1053
# The control plane's metrics endpoint in the pod (the chart's `metrics` port): GET /metrics.
METRICS_POD_PORT = 9180
LABEL_DNS_SERVICE = f"{PREFIX}/dns"
# Replicated services (networking.replicateServices): the direction (from-host | to-host), the
# host namespace of the virtual cluster that made the replica, and its source "namespace/name".
LABEL_REPLICATED = f"{PREFIX}/replicated"
LABEL_VCLUSTER_NAMESPACE = f"{PREFIX}/vcluster-namespace"
ANNOTATION_REPLICATED_FROM = f"{PREFIX}/replicated-from"


# What the control plane's Services select (the chart's vnest.controlPlaneSelector): vnest.io keys
# included, which a tenant's pod can never carry on the host, so none can pose as the control plane.
def control_plane_pod_selector(vcluster: str) -> dict[str, str]:
    return {"app": "vnest", "release": vcluster, LABEL_CLUSTER: vcluster, LABEL_COMPONENT: "control-plane"}


MAX_NAME = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(_DNS_LABEL.match(name))


def _shorten(joined: str) -> str:
    if len(joined) <= MAX_NAME:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:10]
    return f"{joined[:52]}-{digest}"


def host_name(name: str, namespace: str, vcluster: str) -> str:
    """The host name of a namespaced virtual object: ``<name>-x-<namespace>-x-<vcluster>``."""
    return _shorten(f"{name}-x-{namespace}-x-{vcluster}")


def host_cluster_scoped_name(name: str, host_namespace: str, vcluster: str) -> str:
    """The host name of a cluster-scoped object the syncer creates."""
    return _shorten(f"vnest-{name}-x-{host_namespace}-x-{vcluster}")


# The control plane's own host objects (SPEC.md section 4).
def service_name(vcluster: str) -> str:
    return vcluster


def headless_service_name(vcluster: str) -> str:
    return f"{vcluster}-headless"


def kubeconfig_secret(vcluster: str) -> str:
    return f"vc-{vcluster}"


def config_secret(vcluster: str) -> str:
    return f"vc-config-{vcluster}"


def certs_secret(vcluster: str) -> str:
    return f"{vcluster}-certs"


def service_account(vcluster: str) -> str:
    return f"vc-{vcluster}"


def cluster_role(vcluster: str, namespace: str) -> str:
    """The ClusterRole (and its binding) of a cluster that syncs real nodes (chart/templates/clusterrole.yaml)."""
    return f"vnest-vc-x-{namespace}-x-{vcluster}"[:63].rstrip("-")


def to_host_cluster_role(vcluster: str, namespace: str) -> str:
    """The ClusterRole (and binding) of networking.replicateServices.toHost (chart/templates/clusterrole.yaml):
    what toHost may do outside the host namespace, and the owner of the host replicas (see
    vnest/syncer/replicated.py)."""
    return f"vnest-vc-x-{namespace}-x-{vcluster}"[:55].removesuffix("-") + "-to-host"


def statefulset(vcluster: str) -> str:
    return vcluster


def kube_context(vcluster: str, namespace: str, parent_context: str) -> str:
    return f"vnest_{vcluster}_{namespace}_{parent_context}"


def control_plane_labels(vcluster: str, component: str) -> dict[str, str]:
    return {LABEL_CLUSTER: vcluster, LABEL_COMPONENT: component}


def foreign_control_plane_object(obj: dict[str, Any] | None, vcluster: str, component: str) -> str | None:
    """Why `obj`, found under a control-plane name of `vcluster`, is not vnest's; None when it is (or is absent).

    Readers of the control plane's Secrets (kubeconfig, config, certs) refuse an object without
    vnest's labels: a Secret planted under that name must never become a cluster's CA or config.
    """
    if obj is None:
        return None
    want = control_plane_labels(vcluster, component)
    labels = obj.get("metadata", {}).get("labels") or {}
    if all(labels.get(k) == v for k, v in want.items()):
        return None
    meta = obj.get("metadata", {})
    return (
        f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '')} is not vnest's: "
        f"it lacks the labels {', '.join(f'{k}={v}' for k, v in want.items())}; vnest leaves it alone"
    )
