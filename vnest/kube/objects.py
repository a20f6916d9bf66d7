"""The Kubernetes objects vnest itself builds, typed.

Objects vnest copies stay raw JSON dicts (`Obj`): they are the tenant's, of any kind and
version, and a typed model would cost time on the hot path and drop fields it does not know.
What vnest writes of its own (references between objects, events) has a fixed shape: those
are TypedDicts, built in one place each.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from vnest.kube.client import Obj


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str


class ObjectReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    namespace: NotRequired[str | None]
    uid: NotRequired[str]
    fieldPath: NotRequired[str]


class EventSource(TypedDict):
    component: str


class EventMeta(TypedDict):
    generateName: str
    namespace: str


class Event(TypedDict):
    apiVersion: str
    kind: str
    metadata: EventMeta
    involvedObject: ObjectReference
    reason: str
    message: str
    type: str
    source: EventSource
    firstTimestamp: str
    lastTimestamp: str
    count: int


def owner_reference(owner: Obj) -> OwnerReference:
    """A reference that makes the host's garbage collector delete the owned object with `owner`."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }


def claim_reference(claim: Obj) -> ObjectReference:
    """A PersistentVolume's ``claimRef`` to a PersistentVolumeClaim."""
    meta = claim["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
