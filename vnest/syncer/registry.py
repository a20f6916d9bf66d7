"""Every synced kind, declared once: the syncer builds from it, `vnest delete` cleans up by it and
`vnest describe` counts by it, so none of them can drift from what really syncs.

A new kind is one module under vnest.syncer.resources plus one entry here.
Dependencies are passed at construction (`Deps`), never patched in later.
Custom resource kinds are configured per cluster: their CRDs must be copied from the
host before their syncers can exist (vnest.syncer.resources.customresources), so
the runner adds them at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from vnest.config.models import VClusterConfig
from vnest.syncer.engine import Controller, SyncContext
from vnest.syncer.podsecurity import PodSecurityChecker
from vnest.syncer.resources import fromhost, replicated
from vnest.syncer.resources.configs import ConfigMapSyncer, SecretSyncer
from vnest.syncer.resources.endpoints import EndpointSliceSyncer
from vnest.syncer.resources.events import EventSyncer
from vnest.syncer.resources.ingresses import IngressSyncer
from vnest.syncer.resources.networkpolicies import NetworkPolicySyncer
from vnest.syncer.resources.nodes import HostNodes
from vnest.syncer.resources.persistentvolumes import PersistentVolumeSyncer
from vnest.syncer.resources.pods import Nodes, PodSyncer
from vnest.syncer.resources.priorityclasses import PriorityClassSyncer
from vnest.syncer.resources.pvcs import PersistentVolumeClaimSyncer
from vnest.syncer.resources.serviceaccounts import ServiceAccountSyncer
from vnest.syncer.resources.services import ServiceSyncer
from vnest.syncer.resources.storageclasses import StorageClassSyncer
from vnest.syncer.resources.tokens import PodTokens


@dataclass(frozen=True)
class Deps:
    """What syncers get besides the context: made by the runner before any syncer."""

    ctx: SyncContext
    pod_security: PodSecurityChecker | None  # None: policies.podSecurityStandard is privileged
    nodes: Nodes  # where pods are bound: fake nodes, or the copies of real host nodes
    host_nodes: HostNodes | None  # real node sync, when on
    node_selector: dict[str, str]  # real node sync: pods stay on the selected host nodes


# to-host: namespaced copies in the host namespace; cluster: cluster-scoped host copies;
# from-host: virtual copies of host objects; replicated: services mirrored either way.
Scope = Literal["to-host", "cluster", "from-host", "replicated"]


@dataclass(frozen=True)
class Kind:
    name: str  # what logs and metrics call its syncer
    scope: Scope
    enabled: Callable[[VClusterConfig], bool]
    make: Callable[[Deps], Controller]
    # Host kinds its copies are, in the host namespace, labelled managed-by the cluster: what
    # `vnest delete` removes and `vnest describe` counts, whatever the config says now.
    host_kinds: tuple[str, ...] = ()


def _always(config: VClusterConfig) -> bool:
    """Kinds that run even when off: they remove what an earlier config made."""
    return True


def _to_host(field: str) -> Callable[[VClusterConfig], bool]:
    def enabled(config: VClusterConfig) -> bool:
        return bool(getattr(config.sync.to_host, field).enabled)

    return enabled


KINDS: tuple[Kind, ...] = (
    Kind(
        "Pod",
        "to-host",
        _to_host("pods"),
        lambda d: PodSyncer(d.ctx, d.pod_security, d.nodes, d.node_selector),
        ("Pod",),
    ),
    Kind("PodToken", "to-host", _to_host("pods"), lambda d: PodTokens(d.ctx), ("Secret",)),
    Kind("Service", "to-host", _to_host("services"), lambda d: ServiceSyncer(d.ctx), ("Service",)),
    Kind(
        "EndpointSlice",
        "to-host",
        # Slices of selector-less Services, which exist on the host only as their Services' copies.
        lambda c: c.sync.to_host.endpoints.enabled and c.sync.to_host.services.enabled,
        lambda d: EndpointSliceSyncer(d.ctx, d.host_nodes.host if d.host_nodes is not None else None),
        ("EndpointSlice", "Endpoints"),  # Endpoints: copies older vnest versions made
    ),
    Kind(
        "ServiceAccount",
        "to-host",
        _to_host("service_accounts"),
        lambda d: ServiceAccountSyncer(d.ctx),
        ("ServiceAccount",),
    ),
    Kind("ConfigMap", "to-host", _to_host("config_maps"), lambda d: ConfigMapSyncer(d.ctx), ("ConfigMap",)),
    Kind("Secret", "to-host", _to_host("secrets"), lambda d: SecretSyncer(d.ctx), ("Secret",)),
    Kind("Ingress", "to-host", _to_host("ingresses"), lambda d: IngressSyncer(d.ctx), ("Ingress",)),
    Kind(
        "NetworkPolicy",
        "to-host",
        _to_host("network_policies"),
        lambda d: NetworkPolicySyncer(d.ctx),
        ("NetworkPolicy",),
    ),
    Kind(
        "PersistentVolumeClaim",
        "to-host",
        _to_host("persistent_volume_claims"),
        lambda d: PersistentVolumeClaimSyncer(d.ctx),
        ("PersistentVolumeClaim",),
    ),
    # Cluster-scoped copies (vnest-<name>-x-<hostns>-x-<vcluster>), owned by the cluster's ClusterRole:
    # the host's garbage collector removes them with it.
    Kind("PriorityClass", "cluster", _to_host("priority_classes"), lambda d: PriorityClassSyncer(d.ctx)),
    Kind("StorageClass", "cluster", _to_host("storage_classes"), lambda d: StorageClassSyncer(d.ctx)),
    Kind(
        "PersistentVolume", "cluster", _to_host("persistent_volumes"), lambda d: PersistentVolumeSyncer(d.ctx)
    ),
    # The host's classes, each behind its sync.fromHost flag; one turned off removes the copies an
    # earlier config made.
    Kind("FromHostStorageClass", "from-host", _always, lambda d: fromhost.StorageClassesFromHost(d.ctx)),
    Kind("FromHostIngressClass", "from-host", _always, lambda d: fromhost.IngressClassesFromHost(d.ctx)),
    Kind("FromHostRuntimeClass", "from-host", _always, lambda d: fromhost.RuntimeClassesFromHost(d.ctx)),
    Kind("FromHostPriorityClass", "from-host", _always, lambda d: fromhost.PriorityClassesFromHost(d.ctx)),
    Kind("Event", "from-host", lambda c: c.sync.from_host.events.enabled, lambda d: EventSyncer(d.ctx)),
    # networking.replicateServices, always: with a mapping removed, they clean up its objects.
    Kind("FromHostService", "replicated", _always, lambda d: replicated.FromHostServices(d.ctx)),
    Kind("ToHostService", "replicated", _always, lambda d: replicated.ToHostServices(d.ctx)),
    Kind("Node", "from-host", lambda c: c.sync.from_host.nodes.enabled, lambda d: _host_nodes(d)),
)


def _host_nodes(deps: Deps) -> HostNodes:
    assert deps.host_nodes is not None  # made by the runner whenever real node sync is on
    return deps.host_nodes


def host_kinds() -> tuple[str, ...]:
    """Every host kind that synced copies in a host namespace may be, once each."""
    return tuple(dict.fromkeys(k for kind in KINDS for k in kind.host_kinds))


def build(config: VClusterConfig, deps: Deps) -> list[Controller]:
    return [kind.make(deps) for kind in KINDS if kind.enabled(config)]
