"""Which KubeVirt kinds sync, behind which `integrations.kubeVirt.sync` key, and the syncer's start-up.

As for `sync.toHost.customResources` (vnest.syncer.resources.customresources), each kind's CRD is
read from the host and served in the virtual cluster (its storage version, Established) before its
syncer exists: KubeVirt's API in a virtual cluster is exactly the host's KubeVirt's. VirtualMachines
and their instances must be on the host when their keys are on (KubeVirt is installed, or the
integration is a mistake: the syncer stops with an error naming the key, and a Warning event on
the host's config Secret); the others are optional parts (CDI's DataVolumes, pools and clones of
newer KubeVirt releases) and sync when the host has them. Instancetypes and preferences (namespaced;
the cluster-wide ones are the host's catalogue) come with VirtualMachines, which name them.

Without the integration, nothing here runs: no KubeVirt CRD is served in the virtual cluster and
no KubeVirt object reaches the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vnest import log, naming
from vnest.config.models import KubeVirtSync, VClusterConfig
from vnest.integrations.kubevirt import syncers as kv
from vnest.integrations.kubevirt import translate
from vnest.integrations.kubevirt.launchers import LauncherPods
from vnest.integrations.kubevirt.translate import Rules
from vnest.kube.client import Obj
from vnest.kube.objects import owner_reference
from vnest.syncer.engine import Controller, SyncContext
from vnest.syncer.resources import customresources
from vnest.syncer.resources.configs import ConfigSyncer, ReferenceIndex
from vnest.syncer.resources.customresources import CopiedKind, CustomResourceError, Key
from vnest.syncer.resources.pods import Nodes, PodSyncer
from vnest.syncer.resources.priorityclasses import pod_priority_class
from vnest.syncer.resources.storageclasses import host_storage_class

_log = log.get("syncer.kubevirt")

CONFIG_KEY = "integrations.kubeVirt"


@dataclass(frozen=True)
class KubeVirtKind:
    crd: str  # <plural>.<group>
    sync_key: str  # the integrations.kubeVirt.sync key that turns it on
    enabled: Callable[[KubeVirtSync], bool]
    required: bool  # the host must serve it when enabled (else: synced when the host has it)


KINDS: tuple[KubeVirtKind, ...] = (
    KubeVirtKind(
        "virtualmachines.kubevirt.io", "virtualMachines", lambda s: s.virtual_machines.enabled, True
    ),
    KubeVirtKind(
        "virtualmachineinstances.kubevirt.io",
        "virtualMachineInstances",
        lambda s: s.virtual_machine_instances.enabled,
        True,
    ),
    KubeVirtKind(
        "virtualmachineinstancemigrations.kubevirt.io",
        "virtualMachineInstanceMigrations",
        lambda s: s.virtual_machine_instance_migrations.enabled,
        True,
    ),
    KubeVirtKind(
        "virtualmachinepools.pool.kubevirt.io",
        "virtualMachinePools",
        lambda s: s.virtual_machine_pools.enabled,
        False,
    ),
    KubeVirtKind(
        "virtualmachineclones.clone.kubevirt.io",
        "virtualMachineClones",
        lambda s: s.virtual_machine_clones.enabled,
        False,
    ),
    KubeVirtKind("datavolumes.cdi.kubevirt.io", "dataVolumes", lambda s: s.data_volumes.enabled, False),
    KubeVirtKind(
        "virtualmachineinstancetypes.instancetype.kubevirt.io",
        "virtualMachines",
        lambda s: s.virtual_machines.enabled,
        False,
    ),
    KubeVirtKind(
        "virtualmachinepreferences.instancetype.kubevirt.io",
        "virtualMachines",
        lambda s: s.virtual_machines.enabled,
        False,
    ),
)


def enabled(config: VClusterConfig) -> list[KubeVirtKind]:
    kubevirt = config.integrations.kube_virt
    return [k for k in KINDS if kubevirt.enabled and k.enabled(kubevirt.sync)]


def _rules(
    ctx: SyncContext, pods: PodSyncer, privileged: bool, node_selector: dict[str, str]
) -> Callable[[str], Rules]:
    def rules(ns: str) -> Rules:
        return Rules(
            namespace=ns,
            host_namespace=ctx.host_namespace,
            host_name_in=ctx.host_name,
            storage_class=lambda name: host_storage_class(ctx, name),
            privileged=privileged,
            node_selector=node_selector,
            priority_class=lambda name: pod_priority_class(ctx, name),
            confine=lambda spec: pods.confine_selectors(spec, ns),
            point_dns=lambda spec: pods.point_dns_at_the_virtual_cluster(spec, ns),
            remap_field=PodSyncer.remap_field,
        )

    return rules


async def syncers(
    ctx: SyncContext,
    pods: PodSyncer | None,
    configs: list[ConfigSyncer],
    nodes: Nodes,
    privileged: bool,
    node_selector: dict[str, str],
) -> list[Controller]:
    """The KubeVirt syncers of this cluster's config, each kind's CRD served first (module docstring)."""
    wanted = enabled(ctx.config)
    if not wanted:
        return []
    assert pods is not None  # the config refuses the integration without pod sync
    secret = await ctx.host.get_or_none("Secret", naming.config_secret(ctx.name), ctx.host_namespace)
    if (problem := naming.foreign_control_plane_object(secret, ctx.name, "config")) is not None:
        raise CustomResourceError(problem)
    owner = owner_reference(secret) if secret is not None else None
    copied: dict[str, CopiedKind] = {}
    for kind in wanted:
        key = Key.parse(kind.crd)
        where = f"{CONFIG_KEY}.sync.{kind.sync_key}"
        try:
            host_crd = await customresources.read_host_crd(ctx, key, where)
            if host_crd is None:
                if not kind.required:
                    _log.info("the host does not serve this KubeVirt kind; it does not sync", crd=kind.crd)
                    continue
                raise CustomResourceError(
                    f"{where}: the host has no CustomResourceDefinition {kind.crd}: is KubeVirt installed "
                    f"on the host? (turn {CONFIG_KEY}.enabled off, or this key, until it is)"
                )
            copied[kind.crd] = await customresources.copy_crd(ctx, key, where, host_crd)
        except CustomResourceError as e:
            _log.error(str(e))
            await customresources.report(ctx, secret, str(e))
            raise
    shared = kv.Shared(
        ctx,
        owner,
        _rules(ctx, pods, privileged, node_selector),
        kv.namespace_labels(ctx.informer("virtual", "Namespace")),
    )
    out: list[Controller] = []
    vms: kv.VirtualMachineSyncer | None = None
    vmis: kv.VirtualMachineInstanceSyncer | None = None
    for crd, copy in copied.items():
        if crd == "virtualmachines.kubevirt.io":
            vms = kv.VirtualMachineSyncer(shared, copy)
            out.append(vms)
        elif crd == "virtualmachineinstances.kubevirt.io":
            continue  # below, once the VMs' syncer exists
        elif crd == "virtualmachineinstancemigrations.kubevirt.io":
            out.append(kv.MigrationSyncer(shared, copy))
        elif crd == "virtualmachinepools.pool.kubevirt.io":
            out.append(kv.PoolSyncer(shared, copy))
        elif crd == "virtualmachineclones.clone.kubevirt.io":
            out.append(kv.CloneSyncer(shared, copy))
        elif crd == "datavolumes.cdi.kubevirt.io":
            out.append(kv.DataVolumeSyncer(shared, copy))
        else:
            out.append(kv.KubeVirtSyncer(shared, copy))
    if (vmi_kind := copied.get("virtualmachineinstances.kubevirt.io")) is not None:
        vmis = kv.VirtualMachineInstanceSyncer(shared, vmi_kind, vms.virtual if vms is not None else None)
        out.append(vmis)
        out.append(LauncherPods(ctx, vmis, nodes))
    # The Secrets, ConfigMaps and claims VMs use are copied to the host as those pods use are.
    for syncer in (vms, vmis):
        if syncer is None:
            continue
        names: Callable[[Obj], translate.References] = (
            translate.vm_references if syncer is vms else _vmi_references
        )
        for config in configs:
            config.indexes.append((syncer.virtual, ReferenceIndex(_names_of(names, config.kind))))
    return out


def _vmi_references(vmi: Obj) -> translate.References:
    return translate.references(vmi.get("spec"))


def _names_of(references: Callable[[Obj], translate.References], kind: str) -> Callable[[Obj], set[str]]:
    def names(obj: Obj) -> set[str]:
        return references(obj).by_kind.get(kind, set())

    return names
