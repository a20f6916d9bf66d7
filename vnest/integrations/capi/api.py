"""The VNestCluster kind: what a Cluster API user writes, and what the provider reports back.

One VNestCluster is both the Cluster's `infrastructureRef` and its `controlPlaneRef` (as
Loft's VCluster kind is): a virtual cluster is its own infrastructure and control plane. It
follows the v1beta2 contract of Cluster API (the CRD's `cluster.x-k8s.io/v1beta2` label says
so, and the core controller then reads `status.initialization`, not v1beta1's `status.ready`):

- `spec.controlPlaneEndpoint` is where the virtual API server answers; the provider fills it
  in when the user leaves it empty, and the core controller copies it to the Cluster;
- `status.initialization.provisioned` (infrastructure contract) and
  `status.initialization.controlPlaneInitialized` (control plane contract) turn true once;
- conditions `Ready` (infrastructure), `Available` (control plane) and `Paused`, as
  metav1.Conditions; the core controller mirrors the first two onto the Cluster;
- the `<cluster>-kubeconfig` Secret (key `value`) that `clusterctl get kubeconfig` reads.
"""

from __future__ import annotations

import datetime
from typing import Any, NotRequired, TypedDict

from vnest.kube.client import Obj, Resource, register

GROUP = "infrastructure.cluster.x-k8s.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VNestCluster"
PLURAL = "vnestclusters"
CLUSTER_API_VERSION = "cluster.x-k8s.io/v1beta2"

# Cluster API's own names (sigs.k8s.io/cluster-api/api/core/v1beta2 and util/secret).
LABEL_CLUSTER_NAME = "cluster.x-k8s.io/cluster-name"
ANNOTATION_PAUSED = "cluster.x-k8s.io/paused"
KUBECONFIG_SECRET_TYPE = "cluster.x-k8s.io/secret"
# clusterctl move waits while an object carries it: a virtual cluster runs inside its management
# cluster, so moving the object alone would leave the cluster behind (README, "Cluster API").
ANNOTATION_BLOCK_MOVE = "clusterctl.cluster.x-k8s.io/block-move"
# The provider's finalizer: the virtual cluster goes before the VNestCluster does.
FINALIZER = f"vnestcluster.{GROUP}"

# Condition types and reasons.
READY, AVAILABLE, PAUSED = "Ready", "Available", "Paused"
REASON_INVALID = "InvalidValues"
REASON_WAITING_FOR_CLUSTER = "WaitingForCluster"
REASON_PROVISIONING = "Provisioning"
REASON_UPGRADING = "Upgrading"
REASON_RUNNING = "Running"
REASON_DOWN = "ControlPlaneDown"
REASON_PAUSED, REASON_NOT_PAUSED = "Paused", "NotPaused"
REASON_DELETING = "Deleting"


class Endpoint(TypedDict):
    host: str
    port: int


class Condition(TypedDict):
    """A metav1.Condition."""

    type: str
    status: str  # "True", "False", "Unknown"
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class Initialization(TypedDict, total=False):
    provisioned: bool
    controlPlaneInitialized: bool


class Status(TypedDict, total=False):
    initialization: Initialization
    conditions: list[Condition]
    version: str  # the Kubernetes version the control plane runs
    appliedConfig: str  # digest of the config last put in effect (an upgrade is due when it differs)
    observedGeneration: int
    replicas: int
    readyReplicas: int
    availableReplicas: int
    upToDateReplicas: int


class Spec(TypedDict):
    replicas: NotRequired[int]
    values: NotRequired[str]
    version: NotRequired[str]
    controlPlaneEndpoint: NotRequired[Endpoint]


def register_kinds() -> None:
    """Teaches vnest's client where the kinds the provider reads live."""
    for kind, resource in (
        (KIND, Resource(API_VERSION, PLURAL)),
        ("Cluster", Resource(CLUSTER_API_VERSION, "clusters")),
    ):
        register(kind, resource)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition], type_: str, ok: bool, reason: str, message: str, generation: int
) -> list[Condition]:
    """The list with condition `type_` set; its transition time changes only when its status does."""
    status = "True" if ok else "False"
    old = next((c for c in conditions if c["type"] == type_), None)
    since = old["lastTransitionTime"] if old is not None and old["status"] == status else now()
    new: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    return [*(c for c in conditions if c["type"] != type_), new]


def condition(obj: Obj, type_: str) -> Condition | None:
    found: list[Condition] = obj.get("status", {}).get("conditions", [])
    return next((c for c in found if c["type"] == type_), None)


# ---- the CRD ----------------------------------------------------------------------------------

_CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status", "reason", "lastTransitionTime"],
    "properties": {
        "type": {"type": "string", "maxLength": 316},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "maxLength": 1024},
        "message": {"type": "string", "maxLength": 32768},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    },
}

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A vnest virtual cluster, as a Cluster API infrastructure and control plane.",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "values": {
                    "type": "string",
                    "description": "The virtual cluster's config (vcluster.yaml keys, as `vnest create -f`), "
                    "as YAML text; empty for the defaults.",
                },
                "version": {
                    "type": "string",
                    "description": "Kubernetes version of the control plane (controlPlane.distro.k8s.version); "
                    "empty for vnest's pinned one.",
                },
                "replicas": {
                    "type": "integer",
                    "format": "int32",
                    "default": 1,
                    "minimum": 1,
                    "maximum": 1,
                    "description": "Control plane replicas: one (a virtual cluster's control plane is one pod).",
                },
                "controlPlaneEndpoint": {
                    "type": "object",
                    "description": "Where the virtual API server answers; filled in by the provider when empty.",
                    "properties": {
                        "host": {"type": "string", "maxLength": 512},
                        "port": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 65535},
                    },
                },
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "initialization": {
                    "type": "object",
                    "properties": {
                        "provisioned": {"type": "boolean"},
                        "controlPlaneInitialized": {"type": "boolean"},
                    },
                },
                "conditions": {
                    "type": "array",
                    "maxItems": 32,
                    "items": _CONDITION_SCHEMA,
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                },
                "version": {"type": "string"},
                "appliedConfig": {"type": "string"},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "replicas": {"type": "integer", "format": "int32"},
                "readyReplicas": {"type": "integer", "format": "int32"},
                "availableReplicas": {"type": "integer", "format": "int32"},
                "upToDateReplicas": {"type": "integer", "format": "int32"},
            },
        },
    },
}


# A label key's dots escaped, as a JSONPath into metadata.labels needs them.
_CLUSTER_NAME_PATH = ".metadata.labels." + LABEL_CLUSTER_NAME.replace(".", "\\.")


def crd() -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            # The contract this kind follows, by Cluster API version: the core controller reads it.
            "labels": {"cluster.x-k8s.io/v1beta2": VERSION},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "categories": ["cluster-api"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": _SCHEMA},
                    "additionalPrinterColumns": [
                        {
                            "name": "Cluster",
                            "type": "string",
                            "jsonPath": _CLUSTER_NAME_PATH,
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {"name": "Version", "type": "string", "jsonPath": ".status.version"},
                        {"name": "Host", "type": "string", "jsonPath": ".spec.controlPlaneEndpoint.host"},
                        {"name": "Port", "type": "integer", "jsonPath": ".spec.controlPlaneEndpoint.port"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }
