"""Virtual <-> host: every name, label key and annotation key the syncer writes or reads.

The one place that decides what a host object is called, which labels make it
this virtual cluster's, and where it names its virtual object (see SPEC.md
section 4). Cluster-wide names (Secrets, Services of the control plane,
ClusterRoles) and the shortening rule live in `vnest.naming`, which the CLI
shares; everything only the syncer uses lives here. No syncer module spells a
`vnest.io/` key of its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vnest import naming
from vnest.kube.client import Obj

# Ownership: a host object is a copy of this virtual cluster's only with these labels.
LABEL_MANAGED_BY = naming.LABEL_MANAGED_BY
LABEL_VCLUSTER_NAMESPACE = naming.LABEL_VCLUSTER_NAMESPACE  # cluster-scoped copies: whose namespace
LABEL_NAMESPACE = f"{naming.PREFIX}/namespace"  # the virtual namespace of a namespaced copy
LABEL_FROM_HOST = f"{naming.PREFIX}/from-host"  # virtual copies of host classes
LABEL_FAKE_NODE = f"{naming.PREFIX}/fake-node"  # virtual Nodes that stand for host nodes
LABEL_HOST_NODE = f"{naming.PREFIX}/host-node"  # virtual Nodes copied from real host nodes
LABEL_FAKE_VOLUME = f"{naming.PREFIX}/fake-volume"  # virtual PVs that stand for host volumes
LABEL_REPLICATED = naming.LABEL_REPLICATED
LABEL_DNS_SERVICE = naming.LABEL_DNS_SERVICE

# Kubernetes' own EndpointSlice labels, which vnest writes on the slices it makes.
LABEL_SLICE_MANAGER = "endpointslice.kubernetes.io/managed-by"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"

# Where a host copy names its virtual object.
ANNOTATION_NAME = naming.ANNOTATION_NAME
ANNOTATION_NAMESPACE = naming.ANNOTATION_NAMESPACE
ANNOTATION_UID = naming.ANNOTATION_UID
ANNOTATION_KIND = naming.ANNOTATION_KIND
ANNOTATION_HOST_UID = naming.ANNOTATION_HOST_UID  # on a virtual pod: the uid of the host pod it ran as
ANNOTATION_REPLICATED_FROM = naming.ANNOTATION_REPLICATED_FROM

# The object-kind of a pod's service-account token Secret: the pod syncer's, not a Secret's copy.
KIND_POD_TOKEN = "PodToken"  # a pod's own token Secret (vnest.syncer.resources.tokens)
# A ServiceAccount's token Secret shared by its pods, as earlier vnest versions made them: only removed.
KIND_SERVICE_ACCOUNT_TOKEN = "ServiceAccountToken"
ANNOTATION_REFRESH_AFTER = f"{naming.PREFIX}/refresh-after"  # on a token Secret: when to issue it again
# On a virtual pod vnest made to show a host pod it did not copy (KubeVirt's launchers): that pod.
ANNOTATION_REFLECTS = f"{naming.PREFIX}/reflects"
# The flexVolume driver of fake virtual PVs: nothing mounts them.
FAKE_VOLUME_DRIVER = f"{naming.PREFIX}/host-volume"
# Controllers that own EndpointSlices vnest writes, named as Kubernetes names its own: a domain.
ENDPOINTS_CONTROLLER = f"endpoints-syncer.{naming.PREFIX}"
REPLICATED_CONTROLLER = f"replicated-services.{naming.PREFIX}"


def split_key(key: str) -> tuple[str, str]:
    """("ns", "name") of a namespaced key, ("", "name") of a cluster-scoped one."""
    ns, _, name = key.rpartition("/")
    return ns, name


def key_of(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def is_own_key(key: str) -> bool:
    """Whether a label or annotation key is in vnest's prefix (a tenant's such keys are never copied as is)."""
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return prefix == naming.PREFIX or prefix.endswith("." + naming.PREFIX)


def hashed_label_key(key: str) -> str:
    return f"{naming.PREFIX}/label-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def translate_label_key(key: str) -> str:
    """A tenant's label key on the host: vnest's own keys are hashed, so no tenant can forge them."""
    return hashed_label_key(key) if is_own_key(key) else key


def namespace_label_key(key: str) -> str:
    """The pod label that carries a label of the pod's virtual namespace (for namespaceSelectors)."""
    return f"{naming.PREFIX}/ns-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def annotations_of(obj: Obj | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def labels_of(obj: Obj | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def carries(obj: Obj | None, labels: dict[str, str]) -> bool:
    """Whether an object exists and carries all of these labels (how vnest tells its own objects)."""
    have = labels_of(obj)
    return bool(obj) and all(have.get(k) == v for k, v in labels.items())


def virtual_key_of(hobj: Obj) -> str | None:
    """The key of the virtual object a host copy names, or None when it names none."""
    ann = annotations_of(hobj)
    name, ns = ann.get(ANNOTATION_NAME), ann.get(ANNOTATION_NAMESPACE)
    if not name:
        return None
    return f"{ns}/{name}" if ns else name


def uid_matches(vobj: Obj, hobj: Obj) -> bool:
    """Whether a host copy is the copy of this very virtual object, not of an earlier one of its name."""
    return bool(annotations_of(hobj).get(ANNOTATION_UID) == vobj["metadata"]["uid"])


def is_token_secret(hobj: Obj | None) -> bool:
    """A host Secret holding a token of the virtual API server (not a copy of a virtual Secret)."""
    return annotations_of(hobj).get(ANNOTATION_KIND) in (KIND_POD_TOKEN, KIND_SERVICE_ACCOUNT_TOKEN)


def copied_annotations(meta: dict[str, Any], dropped: tuple[str, ...] = ()) -> dict[str, str]:
    """A tenant's annotations as they go to the host: none in vnest's prefix, no kubectl bookkeeping."""
    gone = {*dropped, "kubectl.kubernetes.io/last-applied-configuration"}
    return {k: v for k, v in (meta.get("annotations") or {}).items() if not is_own_key(k) and k not in gone}


def origin_annotations(vobj: Obj, namespace: str = "") -> dict[str, str]:
    meta = vobj["metadata"]
    return {
        ANNOTATION_NAME: meta["name"],
        ANNOTATION_NAMESPACE: namespace,
        ANNOTATION_UID: meta["uid"],
        ANNOTATION_KIND: vobj["kind"],
    }


class NamespacedMapping:
    """Namespaced kinds: copies in the host namespace, named `<name>-x-<namespace>-x-<vcluster>`,
    labelled managed-by this virtual cluster (the host informer selects only those)."""

    def __init__(self, vcluster: str, host_namespace: str) -> None:
        self.vcluster = vcluster
        self.host_namespace = host_namespace

    @property
    def selector(self) -> str:
        return f"{LABEL_MANAGED_BY}={self.vcluster}"

    def host_name(self, name: str, namespace: str) -> str:
        return naming.host_name(name, namespace, self.vcluster)

    def host_key(self, vkey: str) -> str:
        ns, name = split_key(vkey)
        return f"{self.host_namespace}/{self.host_name(name, ns)}"

    def owns(self, hobj: Obj | None) -> bool:
        return bool(hobj) and labels_of(hobj).get(LABEL_MANAGED_BY) == self.vcluster

    def host_labels(self, labels: dict[str, str] | None, namespace: str) -> dict[str, str]:
        out = {translate_label_key(k): v for k, v in (labels or {}).items()}
        out[LABEL_MANAGED_BY] = self.vcluster
        out[LABEL_NAMESPACE] = namespace
        return out

    def host_metadata(self, vobj: Obj) -> Obj:
        meta = vobj["metadata"]
        annotations = copied_annotations(meta)
        annotations.update(origin_annotations(vobj, meta.get("namespace", "")))
        return {
            "name": self.host_name(meta["name"], meta["namespace"]),
            "namespace": self.host_namespace,
            "labels": self.host_labels(meta.get("labels"), meta["namespace"]),
            "annotations": annotations,
        }


class ClusterMapping(NamespacedMapping):
    """Cluster-scoped kinds: copies named `vnest-<name>-x-<host namespace>-x-<vcluster>`, shared by every
    tenant of the host, so ownership needs both managed-by and the virtual cluster's host namespace."""

    @property
    def selector(self) -> str:
        return f"{LABEL_MANAGED_BY}={self.vcluster},{LABEL_VCLUSTER_NAMESPACE}={self.host_namespace}"

    def host_key(self, vkey: str) -> str:
        return self.host_class_name(vkey)

    def host_class_name(self, name: str) -> str:
        return naming.host_cluster_scoped_name(name, self.host_namespace, self.vcluster)

    def owns(self, hobj: Obj | None) -> bool:
        labels = labels_of(hobj)
        return (
            bool(hobj)
            and labels.get(LABEL_MANAGED_BY) == self.vcluster
            and labels.get(LABEL_VCLUSTER_NAMESPACE) == self.host_namespace
        )

    def host_metadata(self, vobj: Obj, dropped: tuple[str, ...] = ()) -> Obj:
        meta = vobj["metadata"]
        annotations = copied_annotations(meta, dropped)
        annotations.update(origin_annotations(vobj))
        labels = {translate_label_key(k): v for k, v in (meta.get("labels") or {}).items()}
        labels[LABEL_MANAGED_BY] = self.vcluster
        labels[LABEL_VCLUSTER_NAMESPACE] = self.host_namespace
        return {"name": self.host_class_name(meta["name"]), "labels": labels, "annotations": annotations}
