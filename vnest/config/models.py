"""Pydantic models of the part of vcluster.yaml (v0.20+) that vnest supports.

Field names are snake_case in Python and camelCase on the wire, spelled exactly as
vcluster.yaml spells them, so a vCluster user's file loads unchanged where vnest has the
feature. The JSON Schema shipped with vnest and the chart is generated from these models
(`python -m vnest.config.schema`), so every field carries a description.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = ["FieldProblem", "VClusterConfig", "show"]


class FieldProblem(ValueError):
    """A validation failure about `key` below the model that raised it.

    Pydantic reports a model validator's error at the model's own path; the loader appends
    `key` so the message names the exact setting the user has to fix.
    """

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a bad value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# A Kubernetes quantity (apimachinery's resource.Quantity): a number, then a binary or decimal SI
# suffix or an exponent.
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")


def _quantity(value: Any) -> Any:
    # YAML reads `cpu: 1` or `memory: 2.5` as numbers; Kubernetes quantities are strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise FieldProblem(None, f"expected a Kubernetes quantity such as 500m, 2 or 1Gi, got {show(value)}")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}]}),
]
Bool = StrictBool
Labels = dict[str, str]


def _cidr(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError as e:
            raise ValueError(f"not a CIDR (e.g. 203.0.113.0/24): {e}") from None
    return value


Cidr = Annotated[str, BeforeValidator(_cidr), WithJsonSchema({"type": "string", "format": "cidr"})]


def _ip(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError as e:
            raise ValueError(f"not an IP address: {e}") from None
    return value


IpAddress = Annotated[str, BeforeValidator(_ip), WithJsonSchema({"type": "string", "format": "ip"})]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SERVICE_REF = re.compile(rf"^({_DNS_LABEL}/)?{_DNS_LABEL}$")
# sync.toHost.customResources keys: <plural>.<group>, optionally /<version> (as in vCluster).
_PLURAL_GROUP = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})+(/{_DNS_LABEL})?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


def _enabled(default: bool, what: str) -> Any:
    return Field(default, description=f"Whether {what}.")


def _labels(what: str) -> Any:
    return Field(default_factory=dict, description=f"Extra labels for {what}.")


def _annotations(what: str) -> Any:
    return Field(default_factory=dict, description=f"Extra annotations for {what}.")


# --- sync ---------------------------------------------------------------------------------


class SyncToggle(_Model):
    """A resource kind that syncs or not."""

    enabled: Bool = _enabled(False, "this resource kind syncs")


class SyncOn(_Model):
    """A resource kind that syncs unless disabled."""

    enabled: Bool = _enabled(True, "this resource kind syncs")


class SyncReferenced(_Model):
    """ConfigMaps or Secrets: those pods reference, or all of them."""

    enabled: Bool = _enabled(True, "the objects that pods reference sync to the host")
    all: Bool = Field(False, description="Sync every object of this kind, not only those pods reference.")


class CustomResourceSync(_Model):
    """One custom resource kind synced to the host; its CustomResourceDefinition is copied from the host."""

    enabled: Bool = _enabled(True, "this custom resource kind syncs to the host")
    scope: str = Field(
        "Namespaced",
        description="The kind's scope. Only Namespaced is supported, as in vCluster.",
        json_schema_extra={"enum": ["Namespaced"]},
    )
    patches: list[dict[str, Any]] = Field(
        default_factory=list,
        description="vCluster's sync patches. vnest does not support them: the list must stay empty.",
    )

    @field_validator("scope")
    @classmethod
    def _namespaced(cls, value: str) -> str:
        if value != "Namespaced":
            raise FieldProblem(
                None,
                f"unsupported scope {show(value)}: only 'Namespaced' is allowed "
                "(custom resources sync into the host namespace, as in vCluster)",
            )
        return value

    @field_validator("patches")
    @classmethod
    def _no_patches(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if value:
            raise FieldProblem(
                None,
                "vnest does not support sync patches: a custom resource's host copy has the virtual "
                "object's fields as they are (only its name and metadata are translated)",
            )
        return value


# The image of the init container that writes a pod's /etc/hosts with its virtual FQDN: a shell
# and awk are all it needs (the local host serves it, vnest.host.images).
REWRITE_HOSTS_IMAGE = "docker.io/library/busybox:1.37"


class RewriteHostsResources(_Model):
    """Compute resources of the hosts-file init container (it runs for milliseconds)."""

    limits: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "30m", "memory": "64Mi"}, description="Resource limits."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "30m", "memory": "64Mi"}, description="Resource requests."
    )


class RewriteHostsInitContainer(_Model):
    """The init container that writes the pod's hosts file."""

    image: str = Field(REWRITE_HOSTS_IMAGE, description="Its image: any image with `sh` and `awk`.")
    resources: RewriteHostsResources = Field(
        default_factory=lambda: RewriteHostsResources(), description="Its resources."
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise FieldProblem(
                None, f"expected an image reference such as {REWRITE_HOSTS_IMAGE}, got {show(value)}"
            )
        return value


class RewriteHosts(_Model):
    """The FQDN of a pod with a subdomain (a StatefulSet's) in its /etc/hosts: the virtual one.

    The host's kubelet writes the pod's FQDN with the host namespace; an init container writes
    the file again with the virtual namespace and cluster domain, which every container mounts."""

    enabled: Bool = _enabled(True, "pods with a hostname and subdomain get their virtual FQDN in /etc/hosts")
    init_container: RewriteHostsInitContainer = Field(
        default_factory=RewriteHostsInitContainer, description="The init container that writes the file."
    )


class SyncPods(SyncOn):
    """Pods: they run on the host."""

    rewrite_hosts: RewriteHosts = Field(default_factory=RewriteHosts, description="Rewrite /etc/hosts.")


class SyncToHost(_Model):
    """Virtual objects that vnest copies into the host namespace."""

    pods: SyncPods = Field(default_factory=SyncPods, description="Pods run on the host.")
    services: SyncOn = Field(default_factory=SyncOn, description="Services are copied to the host.")
    endpoints: SyncOn = Field(default_factory=SyncOn, description="Endpoints are copied to the host.")
    persistent_volume_claims: SyncOn = Field(
        default_factory=SyncOn, description="PersistentVolumeClaims are copied to the host."
    )
    config_maps: SyncReferenced = Field(
        default_factory=SyncReferenced, description="ConfigMaps are copied to the host."
    )
    secrets: SyncReferenced = Field(
        default_factory=SyncReferenced, description="Secrets are copied to the host."
    )
    ingresses: SyncToggle = Field(default_factory=SyncToggle, description="Ingresses are copied to the host.")
    network_policies: SyncToggle = Field(
        default_factory=SyncToggle, description="NetworkPolicies are copied to the host."
    )
    priority_classes: SyncToggle = Field(
        default_factory=SyncToggle, description="PriorityClasses are copied to the host."
    )
    service_accounts: SyncToggle = Field(
        default_factory=SyncToggle, description="ServiceAccounts are copied to the host."
    )
    storage_classes: SyncToggle = Field(
        default_factory=SyncToggle, description="StorageClasses are copied to the host."
    )
    persistent_volumes: SyncToggle = Field(
        default_factory=SyncToggle, description="PersistentVolumes are copied to the host."
    )
    custom_resources: dict[str, CustomResourceSync] = Field(
        default_factory=dict,
        description="Custom resource kinds copied to the host, keyed by plural.group (e.g. certificates.cert-manager.io)"
        ", optionally /version (else the host's storage version); each CRD is copied from the host.",
    )

    @field_validator("custom_resources")
    @classmethod
    def _plural_group(cls, value: dict[str, CustomResourceSync]) -> dict[str, CustomResourceSync]:
        enabled: dict[str, str] = {}  # plural.group -> the key that syncs it
        for key, sync in value.items():
            if not _PLURAL_GROUP.match(key):
                raise FieldProblem(key, f"expected a key of the form plural.group, got {show(key)}")
            name = key.partition("/")[0]
            if sync.enabled and name in enabled:
                raise FieldProblem(key, f"{name} already syncs as {show(enabled[name])}; one version only")
            if sync.enabled:
                enabled[name] = key
        return value


class NodeSelector(_Model):
    """Which host nodes appear in the virtual cluster."""

    all: Bool = Field(False, description="Sync all host nodes, not only those running virtual pods.")
    labels: Labels = Field(default_factory=dict, description="Sync only host nodes with these labels.")


class NodesFromHost(_Model):
    """Real host nodes instead of fake ones."""

    enabled: Bool = _enabled(False, "real host nodes sync into the virtual cluster (else fake nodes)")
    selector: NodeSelector = Field(default_factory=NodeSelector, description="Which host nodes sync.")
    sync_back_changes: Bool = Field(
        False, description="Copy label and taint changes made in the virtual cluster back."
    )
    clear_image_status: Bool = Field(
        False, description="Hide the host node's image list from the virtual cluster."
    )


def _bool_or_auto(value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    raise FieldProblem(None, f"expected true, false or 'auto', got {show(value)}")


class LabelSelectorRequirement(_Model):
    """One expression of a label selector, as in Kubernetes."""

    key: str = Field(..., description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        ..., description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list, description="The values for In and NotIn; empty for the others."
    )

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldProblem("values", f"required with operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldProblem("values", f"must be empty with operator {self.operator}")
        return self


class LabelSelector(_Model):
    """Which host objects sync, by their labels; empty selects them all."""

    match_labels: Labels = Field(default_factory=dict, description="Labels the object must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Expressions the object's labels must satisfy."
    )


class ClassesFromHost(_Model):
    """Host objects of one class kind, copied read-only into the virtual cluster."""

    enabled: Bool = _enabled(False, "the host's objects of this kind are copied into the virtual cluster")
    selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Only host objects with these labels; empty means all."
    )


class StorageClassesFromHost(_Model):
    """Host StorageClasses visible in the virtual cluster."""

    enabled: Annotated[Bool | Literal["auto"], BeforeValidator(_bool_or_auto)] = Field(
        "auto",
        description="true, false, or 'auto' (as in vCluster: on when the virtual cluster schedules its own "
        "pods and PVCs sync, unless storage classes sync to the host).",
    )
    selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Only host objects with these labels; empty means all."
    )


class SyncFromHost(_Model):
    """Host objects that vnest copies into the virtual cluster."""

    events: SyncOn = Field(default_factory=SyncOn, description="Events about synced objects flow back.")
    nodes: NodesFromHost = Field(default_factory=NodesFromHost, description="Host nodes.")
    storage_classes: StorageClassesFromHost = Field(
        default_factory=StorageClassesFromHost, description="Host StorageClasses."
    )
    ingress_classes: ClassesFromHost = Field(
        default_factory=ClassesFromHost, description="Host IngressClasses."
    )
    runtime_classes: ClassesFromHost = Field(
        default_factory=ClassesFromHost, description="Host RuntimeClasses."
    )
    priority_classes: ClassesFromHost = Field(
        default_factory=ClassesFromHost, description="Host PriorityClasses."
    )


class Sync(_Model):
    """What syncs between the virtual cluster and the host."""

    to_host: SyncToHost = Field(default_factory=SyncToHost, description="Virtual objects copied to the host.")
    from_host: SyncFromHost = Field(default_factory=SyncFromHost, description="Host objects copied in.")

    @model_validator(mode="after")
    def _one_direction_per_class(self) -> Sync:
        # One object name, two owners: as vCluster, refuse rather than let the directions fight.
        for field, to_host, from_host in (
            (
                "priorityClasses",
                self.to_host.priority_classes.enabled,
                self.from_host.priority_classes.enabled,
            ),
            ("storageClasses", self.to_host.storage_classes.enabled, self.from_host.storage_classes.enabled),
        ):
            if to_host and from_host is True:
                raise FieldProblem(
                    f"fromHost.{field}.enabled",
                    f"cannot be true while sync.toHost.{field}.enabled is true; choose one direction",
                )
        return self


# --- control plane ------------------------------------------------------------------------


class Image(_Model):
    """A container image, split as in vcluster.yaml."""

    registry: str = Field("registry.k8s.io", description="Image registry.")
    repository: str = Field("", description="Image repository.")
    tag: str = Field("", description="Image tag; empty means the version vnest pins.")


class ApiServerImage(Image):
    """The kube-apiserver image."""

    repository: str = Field("kube-apiserver", description="Image repository.")


class ControllerManagerImage(Image):
    """The kube-controller-manager image."""

    repository: str = Field("kube-controller-manager", description="Image repository.")


class SchedulerImage(Image):
    """The kube-scheduler image."""

    repository: str = Field("kube-scheduler", description="Image repository.")


_EXTRA_ARGS = "Extra command-line flags, e.g. --v=4."


class ApiServer(_Model):
    """The virtual cluster's kube-apiserver."""

    extra_args: list[str] = Field(default_factory=list, description=_EXTRA_ARGS)
    image: ApiServerImage = Field(default_factory=ApiServerImage, description="kube-apiserver image.")


class ControllerManager(_Model):
    """The virtual cluster's kube-controller-manager."""

    extra_args: list[str] = Field(default_factory=list, description=_EXTRA_ARGS)
    image: ControllerManagerImage = Field(
        default_factory=ControllerManagerImage, description="kube-controller-manager image."
    )


class Scheduler(_Model):
    """A kube-scheduler inside the virtual cluster (off: the host schedules pods)."""

    enabled: Bool = _enabled(False, "a scheduler runs inside the virtual cluster")
    extra_args: list[str] = Field(default_factory=list, description=_EXTRA_ARGS)
    image: SchedulerImage = Field(default_factory=SchedulerImage, description="kube-scheduler image.")


class K8sDistro(_Model):
    """Upstream Kubernetes, the only distro vnest runs."""

    enabled: Bool = _enabled(True, "upstream Kubernetes runs the control plane (vnest requires it)")
    version: str | None = Field(
        None, description="Kubernetes version, e.g. v1.30.2; empty means vnest's pinned one."
    )
    api_server: ApiServer = Field(default_factory=ApiServer, description="kube-apiserver settings.")
    controller_manager: ControllerManager = Field(
        default_factory=ControllerManager, description="kube-controller-manager settings."
    )
    scheduler: Scheduler = Field(default_factory=Scheduler, description="kube-scheduler settings.")

    @field_validator("enabled")
    @classmethod
    def _must_run(cls, value: bool) -> bool:
        if not value:
            raise FieldProblem(None, "vnest runs upstream Kubernetes (k8s) only, so it cannot be disabled")
        return value


class Distro(_Model):
    """The Kubernetes distribution of the control plane."""

    k8s: K8sDistro = Field(default_factory=K8sDistro, alias="k8s", description="Upstream Kubernetes.")


class EmbeddedStore(_Model):
    """A datastore inside the control plane."""

    enabled: Bool = _enabled(False, "this datastore is used")


class ExternalDatabase(_Model):
    """An external SQL database reached through kine."""

    enabled: Bool = _enabled(False, "an external database is used")
    data_source: str = Field("", description="kine data source, e.g. mysql://user:pass@tcp(host:3306)/db.")

    @model_validator(mode="after")
    def _needs_source(self) -> ExternalDatabase:
        if self.enabled and not self.data_source:
            raise FieldProblem("dataSource", "required when database.external.enabled is true")
        return self


class Database(_Model):
    """kine-backed datastores."""

    embedded: EmbeddedStore = Field(
        default_factory=EmbeddedStore, description="kine with SQLite (the default)."
    )
    external: ExternalDatabase = Field(
        default_factory=ExternalDatabase, description="kine with an external database."
    )


class EtcdTls(_Model):
    """Client certificates for an external etcd."""

    ca_file: str = Field("", description="Path of the CA bundle that signed etcd's serving certificate.")
    cert_file: str = Field("", description="Path of the client certificate.")
    key_file: str = Field("", description="Path of the client key.")


class ExternalEtcd(_Model):
    """An etcd cluster outside the control plane."""

    enabled: Bool = _enabled(False, "an external etcd is used")
    endpoint: str = Field("", description="etcd endpoint, e.g. https://etcd:2379.")
    tls: EtcdTls = Field(default_factory=EtcdTls, description="Client TLS for etcd.")

    @model_validator(mode="after")
    def _needs_endpoint(self) -> ExternalEtcd:
        if self.enabled and not self.endpoint:
            raise FieldProblem("endpoint", "required when etcd.external.enabled is true")
        return self


class Etcd(_Model):
    """etcd datastores."""

    embedded: EmbeddedStore = Field(
        default_factory=EmbeddedStore, description="etcd inside the control plane."
    )
    external: ExternalEtcd = Field(default_factory=ExternalEtcd, description="An external etcd.")


class BackingStore(_Model):
    """Where the virtual cluster keeps its state; with nothing enabled, kine with SQLite."""

    database: Database = Field(default_factory=Database, description="kine-backed datastores.")
    etcd: Etcd = Field(default_factory=Etcd, description="etcd datastores.")

    @model_validator(mode="after")
    def _only_one(self) -> BackingStore:
        enabled = [
            self.database.embedded.enabled,
            self.database.external.enabled,
            self.etcd.embedded.enabled,
            self.etcd.external.enabled,
        ]
        if sum(enabled) > 1:
            raise FieldProblem(
                None, "enable only one of database.embedded, database.external, etcd.embedded, etcd.external"
            )
        return self


class Proxy(_Model):
    """Where the virtual cluster's API listens."""

    bind_address: str = Field("0.0.0.0", description="Address the API server binds to.")
    port: StrictInt = Field(8443, ge=1, le=65535, description="Port the API server listens on.")
    extra_sans: list[str] = Field(
        default_factory=list,
        alias="extraSANs",
        description="Extra names and IPs in the API server certificate.",
    )


class StatefulSetImage(Image):
    """The vnest control-plane image."""

    registry: str = Field("", description="Image registry.")
    repository: str = Field("vnest", description="Image repository.")


class VolumeClaim(_Model):
    """The control plane's data volume."""

    enabled: Bool = _enabled(True, "the control plane keeps its data on a PersistentVolumeClaim")
    size: Quantity = Field("5Gi", description="Volume size.")
    storage_class: str = Field("", description="StorageClass of the volume; empty means the host's default.")
    access_modes: list[str] = Field(
        default_factory=lambda: ["ReadWriteOnce"], description="Volume access modes."
    )


class Persistence(_Model):
    """Persistent storage of the control plane."""

    volume_claim: VolumeClaim = Field(default_factory=VolumeClaim, description="The data volume claim.")


class Resources(_Model):
    """Compute resources of the control-plane container."""

    limits: dict[str, Quantity] = Field(
        default_factory=lambda: {"memory": "2Gi"}, description="Resource limits, e.g. memory: 2Gi."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "200m", "memory": "256Mi"}, description="Resource requests."
    )


class PodMeta(_Model):
    """Metadata of the control-plane pod."""

    labels: Labels = _labels("the control-plane pod")
    annotations: Labels = _annotations("the control-plane pod")


class Scheduling(_Model):
    """Where the control-plane pod may run on the host."""

    node_selector: Labels = Field(default_factory=dict, description="Host node labels the pod requires.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations.")
    affinity: dict[str, Any] = Field(default_factory=dict, description="Pod affinity.")
    priority_class_name: str = Field("", description="PriorityClass of the pod.")


class StatefulSet(_Model):
    """The control plane as a StatefulSet (kubernetes driver)."""

    image: StatefulSetImage = Field(default_factory=StatefulSetImage, description="The vnest image.")
    image_pull_policy: str = Field("", description="Image pull policy; empty means Kubernetes' default.")
    persistence: Persistence = Field(default_factory=Persistence, description="Persistent storage.")
    resources: Resources = Field(default_factory=Resources, description="Container resources.")
    labels: Labels = _labels("the StatefulSet")
    annotations: Labels = _annotations("the StatefulSet")
    pods: PodMeta = Field(default_factory=PodMeta, description="Pod metadata.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Pod scheduling.")
    env: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra environment variables (EnvVar objects)."
    )


class ControlPlaneService(_Model):
    """The host Service in front of the control plane."""

    enabled: Bool = _enabled(True, "the control-plane Service is created")
    labels: Labels = _labels("the Service")
    annotations: Labels = _annotations("the Service")
    spec: dict[str, Any] = Field(
        default_factory=lambda: {"type": "ClusterIP"}, description="Fields merged into the Service spec."
    )


class VirtualScheduler(_Model):
    """The scheduler inside the virtual cluster (same as distro.k8s.scheduler)."""

    enabled: Bool = _enabled(False, "a scheduler runs inside the virtual cluster")


class Advanced(_Model):
    """Advanced control-plane settings."""

    virtual_scheduler: VirtualScheduler = Field(
        default_factory=VirtualScheduler, description="The virtual cluster's scheduler."
    )


class ControlPlane(_Model):
    """The virtual cluster's control plane."""

    distro: Distro = Field(default_factory=Distro, description="Kubernetes distribution.")
    backing_store: BackingStore = Field(default_factory=BackingStore, description="Datastore.")
    proxy: Proxy = Field(default_factory=Proxy, description="API endpoint.")
    stateful_set: StatefulSet = Field(
        default_factory=StatefulSet, description="The control-plane StatefulSet."
    )
    service: ControlPlaneService = Field(
        default_factory=ControlPlaneService, description="The control-plane Service."
    )
    advanced: Advanced = Field(default_factory=Advanced, description="Advanced settings.")


# --- networking ---------------------------------------------------------------------------


_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035 label: a Service name
_SERVICE_REF_RULE = (
    "namespace/name or name, a namespace being a DNS-1123 label and a name a DNS-1035 label "
    "(at most 63 lowercase letters, digits or '-'; a name starts with a letter)"
)


class ServiceMapping(_Model):
    """One replicated service: `from` is mirrored as `to`."""

    from_: str = Field(alias="from", description="Source service, namespace/name or name.")
    to: str = Field(description="Target service, namespace/name or name.")

    @field_validator("from_", "to")
    @classmethod
    def _service_ref(cls, value: str) -> str:
        namespace, _, name = value.rpartition("/")
        if (
            not _SERVICE_REF.match(value)
            or not _SERVICE_NAME.match(name)
            or len(name) > 63
            or len(namespace) > 63
        ):
            raise FieldProblem(None, f"expected {_SERVICE_REF_RULE}, got {show(value)}")
        return value


class ReplicateServices(_Model):
    """Services mirrored between host and virtual cluster."""

    # As in vCluster, a bare name on the host side means the virtual cluster's host namespace;
    # the virtual side always names its namespace.
    to_host: list[ServiceMapping] = Field(
        default_factory=list,
        description="Virtual services made available in the host: from a virtual namespace/name, "
        "to a host namespace/name or a name in the virtual cluster's host namespace.",
    )
    from_host: list[ServiceMapping] = Field(
        default_factory=list,
        description="Host services made available in the virtual cluster: from a host namespace/name "
        "or a name in the virtual cluster's host namespace, to a virtual namespace/name.",
    )

    @model_validator(mode="after")
    def _directions(self) -> ReplicateServices:
        for field, mappings, virtual_side in (
            ("fromHost", self.from_host, "to"),
            ("toHost", self.to_host, "from"),
        ):
            targets: dict[str, int] = {}
            for i, mapping in enumerate(mappings):
                ref = mapping.to if virtual_side == "to" else mapping.from_
                if "/" not in ref:
                    raise FieldProblem(
                        f"{field}[{i}].{virtual_side}",
                        "expected namespace/name: the virtual cluster's side always names its namespace, "
                        f"got {show(ref)}",
                    )
                if mapping.to in targets:
                    raise FieldProblem(
                        f"{field}[{i}].to",
                        f"{mapping.to!r} is already the target of {field}[{targets[mapping.to]}]; "
                        "a service can be the target of one mapping only",
                    )
                targets[mapping.to] = i
        return self


class ProxyKubelets(_Model):
    """How the virtual cluster reaches kubelets."""

    by_hostname: Bool = Field(True, description="Proxy kubelets by node hostname.")
    by_ip: Bool = Field(True, alias="byIP", description="Proxy kubelets by node IP.")


class NetworkingAdvanced(_Model):
    """Advanced networking settings."""

    cluster_domain: str = Field("cluster.local", description="DNS domain of the virtual cluster.")
    fallback_host_cluster: Bool = Field(
        False, description="Resolve names the virtual cluster lacks in the host."
    )
    proxy_kubelets: ProxyKubelets = Field(default_factory=ProxyKubelets, description="Kubelet proxying.")


class CoreDns(_Model):
    """The CoreDNS Deployment that `networking.dns.mode: coredns` puts in the virtual cluster."""

    image: str = Field(
        "", description="CoreDNS image; empty for registry.k8s.io/coredns/coredns at vnest's pinned version."
    )
    replicas: StrictInt = Field(1, ge=1, le=10, description="CoreDNS replicas.")


class Dns(_Model):
    """Who answers the virtual cluster's DNS."""

    mode: Literal["embedded", "coredns"] = Field(
        "embedded",
        description="embedded: a DNS server in the control plane, answering from the syncer's caches; "
        "coredns: a CoreDNS Deployment inside the virtual cluster, as vCluster deploys it.",
    )
    coredns: CoreDns = Field(default_factory=CoreDns, description="The CoreDNS Deployment (mode coredns).")


class Networking(_Model):
    """Networking between virtual cluster and host."""

    dns: Dns = Field(default_factory=Dns, description="The virtual cluster's DNS.")
    replicate_services: ReplicateServices = Field(
        default_factory=ReplicateServices, description="Services mirrored across."
    )
    advanced: NetworkingAdvanced = Field(default_factory=NetworkingAdvanced, description="Advanced settings.")


# --- policies -----------------------------------------------------------------------------


# vCluster's defaults for policies.resourceQuota.quota and policies.limitRange.
VCLUSTER_QUOTA: dict[str, str] = {
    "requests.cpu": "10",
    "requests.memory": "20Gi",
    "requests.storage": "100Gi",
    "requests.ephemeral-storage": "60Gi",
    "limits.cpu": "20",
    "limits.memory": "40Gi",
    "limits.ephemeral-storage": "160Gi",
    "services.nodeports": "0",
    "services.loadbalancers": "1",
    "count/endpoints": "40",
    "count/pods": "20",
    "count/services": "20",
    "count/secrets": "100",
    "count/configmaps": "100",
    "count/persistentvolumeclaims": "20",
}
VCLUSTER_LIMIT_DEFAULT = {"ephemeral-storage": "8Gi", "memory": "512Mi", "cpu": "1"}
VCLUSTER_LIMIT_REQUEST = {"ephemeral-storage": "3Gi", "memory": "128Mi", "cpu": "100m"}
# outgoingConnections.ipBlock.except: the private and loopback ranges (the host's nodes and pods).
VCLUSTER_EGRESS_EXCEPT = ["100.64.0.0/10", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


class ScopedResourceSelectorRequirement(_Model):
    """One expression of a ResourceQuota's scope selector."""

    scope_name: str = Field(..., description="The scope: PriorityClass, Terminating, BestEffort, ...")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(..., description="The operator.")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.")


class ScopeSelector(_Model):
    """A ResourceQuota's scope selector."""

    match_expressions: list[ScopedResourceSelectorRequirement] = Field(
        default_factory=list, description="Scope expressions."
    )


class ResourceQuota(_Model):
    """A ResourceQuota on the host namespace."""

    enabled: Bool | Literal["auto"] = Field(
        "auto",
        description="Whether a ResourceQuota limits the virtual cluster: true, false, or auto (vCluster's): "
        "when limitRange.enabled is true.",
    )
    quota: dict[str, Quantity] = Field(
        default_factory=lambda: dict(VCLUSTER_QUOTA), description="The quota's hard limits (vCluster's)."
    )
    scope_selector: ScopeSelector = Field(
        default_factory=lambda: ScopeSelector(), description="The quota's scope selector."
    )
    scopes: list[str] = Field(default_factory=list, description="The quota's scopes.")
    labels: Labels = _labels("the ResourceQuota")
    annotations: Labels = _annotations("the ResourceQuota")

    @field_validator("quota", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        # As Helm merges a values map into the chart's: a file naming one limit keeps the others.
        return {**VCLUSTER_QUOTA, **value} if isinstance(value, dict) else value


class LimitRange(_Model):
    """A LimitRange on the host namespace."""

    enabled: Bool | Literal["auto"] = Field(
        "auto",
        description="Whether a LimitRange sets container defaults: true, false, or auto (vCluster's): "
        "when resourceQuota.enabled is true, so that pods the quota would refuse for want of limits "
        "(the control plane's own included) get these defaults.",
    )
    default: dict[str, Quantity] = Field(
        default_factory=lambda: dict(VCLUSTER_LIMIT_DEFAULT), description="Default limits (vCluster's)."
    )
    default_request: dict[str, Quantity] = Field(
        default_factory=lambda: dict(VCLUSTER_LIMIT_REQUEST), description="Default requests (vCluster's)."
    )
    max: dict[str, Quantity] = Field(default_factory=dict, description="Maximum per container.")
    min: dict[str, Quantity] = Field(default_factory=dict, description="Minimum per container.")
    labels: Labels = _labels("the LimitRange")
    annotations: Labels = _annotations("the LimitRange")

    @field_validator("default", "default_request", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        # As Helm merges a values map into the chart's: a file naming one resource keeps the others.
        base = VCLUSTER_LIMIT_DEFAULT if info.field_name == "default" else VCLUSTER_LIMIT_REQUEST
        return {**base, **value} if isinstance(value, dict) else value


class IpBlock(_Model):
    """Addresses workloads may reach."""

    cidr: Cidr = Field("0.0.0.0/0", description="Allowed CIDR.")
    except_: list[Cidr] = Field(
        default_factory=lambda: list(VCLUSTER_EGRESS_EXCEPT),
        alias="except",
        description="CIDRs excluded from the allowed one (vCluster's: the private and loopback ranges).",
    )


class OutgoingConnections(_Model):
    """Egress allowed to workloads."""

    ip_block: IpBlock = Field(default_factory=IpBlock, description="Allowed addresses.")


class NetworkPolicy(_Model):
    """NetworkPolicies isolating the virtual cluster's pods on the host."""

    enabled: Bool = _enabled(False, "NetworkPolicies isolate the virtual cluster")
    fallback_dns: IpAddress = Field(
        "8.8.8.8", description="A DNS server the workloads may always reach (port 53), as in vCluster."
    )
    outgoing_connections: OutgoingConnections = Field(
        default_factory=OutgoingConnections, description="Allowed egress."
    )
    labels: Labels = _labels("the NetworkPolicies")
    annotations: Labels = _annotations("the NetworkPolicies")


class Policies(_Model):
    """Policies applied to the virtual cluster's host namespace."""

    resource_quota: ResourceQuota = Field(default_factory=ResourceQuota, description="ResourceQuota.")
    limit_range: LimitRange = Field(default_factory=LimitRange, description="LimitRange.")
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy, description="NetworkPolicies.")
    pod_security_standard: Literal["privileged", "baseline", "restricted"] = Field(
        "baseline",
        description=(
            "The Pod Security Standard every pod must meet before it reaches the host: privileged, "
            "baseline (vnest's default; vCluster has none) or restricted. The syncer checks it with "
            "upstream's checks, whatever the tenant's namespace labels say."
        ),
    )
    allowed_external_ips: list[Cidr] = Field(
        default_factory=list,
        alias="allowedExternalIPs",
        description=(
            "CIDRs a Service's spec.externalIPs may name on the host (vnest's; none by default: "
            "an external IP lets a tenant take traffic to that address from the whole host, "
            "CVE-2020-8554)."
        ),
    )
    allowed_endpoint_cidrs: list[Cidr] = Field(
        default_factory=list,
        alias="allowedEndpointCIDRs",
        description=(
            "CIDRs the endpoints of selector-less Services may point at on the host besides the "
            "virtual cluster's own pods (vnest's; none by default: an endpoint is a way to the "
            "host API server or another tenant's pods)."
        ),
    )


# --- integrations -------------------------------------------------------------------------


class MetricsServer(_Model):
    """Proxying the host's metrics-server."""

    enabled: Bool = _enabled(False, "the host's metrics are served in the virtual cluster")
    nodes: Bool = Field(True, description="Serve node metrics.")
    pods: Bool = Field(True, description="Serve pod metrics.")


class ApiServiceRef(_Model):
    """A host Service."""

    name: str = Field("virt-api", description="Service name.")
    namespace: str = Field("kubevirt", description="Service namespace.")
    port: StrictInt = Field(443, ge=1, le=65535, description="Service port.")


class ApiService(_Model):
    """KubeVirt's API service on the host."""

    service: ApiServiceRef = Field(default_factory=ApiServiceRef, description="The virt-api Service.")


class KubeVirtSync(_Model):
    """KubeVirt kinds synced to the host."""

    data_volumes: SyncToggle = Field(default_factory=SyncToggle, description="DataVolumes.")
    virtual_machine_instance_migrations: SyncToggle = Field(
        default_factory=SyncToggle, description="VirtualMachineInstanceMigrations."
    )
    virtual_machine_instances: SyncOn = Field(default_factory=SyncOn, description="VirtualMachineInstances.")
    virtual_machines: SyncOn = Field(default_factory=SyncOn, description="VirtualMachines.")
    virtual_machine_clones: SyncOn = Field(default_factory=SyncOn, description="VirtualMachineClones.")
    virtual_machine_pools: SyncOn = Field(default_factory=SyncOn, description="VirtualMachinePools.")


class KubeVirtWebhook(_Model):
    """KubeVirt's admission webhook."""

    enabled: Bool = _enabled(True, "KubeVirt's webhook is used")


class KubeVirt(_Model):
    """Using the host's KubeVirt."""

    enabled: Bool = _enabled(False, "the host's KubeVirt is usable from the virtual cluster")
    api_service: ApiService = Field(default_factory=ApiService, description="KubeVirt's API service.")
    webhook: KubeVirtWebhook = Field(default_factory=KubeVirtWebhook, description="KubeVirt's webhook.")
    sync: KubeVirtSync = Field(default_factory=KubeVirtSync, description="KubeVirt kinds synced.")


class Integrations(_Model):
    """Integrations with software on the host."""

    metrics_server: MetricsServer = Field(default_factory=MetricsServer, description="metrics-server.")
    kube_virt: KubeVirt = Field(default_factory=KubeVirt, description="KubeVirt.")


# --- exportKubeConfig ---------------------------------------------------------------------


class ExportServiceAccount(_Model):
    """Authenticate the exported kubeconfig as a service account."""

    name: str = Field("", description="ServiceAccount name; empty means admin credentials.")
    namespace: str = Field("", description="ServiceAccount namespace.")
    cluster_role: str = Field("", description="ClusterRole bound to the ServiceAccount.")


class ExportSecret(_Model):
    """A host Secret that receives the kubeconfig."""

    name: str = Field("", description="Secret name; empty means vc-NAME.")
    namespace: str = Field("", description="Secret namespace; empty means the virtual cluster's.")


class ExportKubeConfig(_Model):
    """The kubeconfig vnest writes for the virtual cluster."""

    context: str = Field("", description="Context name in the exported kubeconfig.")
    server: str = Field("", description="Server URL in the exported kubeconfig.")
    insecure: Bool = Field(False, description="Skip TLS verification in the exported kubeconfig.")
    service_account: ExportServiceAccount = Field(
        default_factory=ExportServiceAccount, description="Credentials of a service account."
    )
    secret: ExportSecret = Field(default_factory=ExportSecret, description="Where the kubeconfig is stored.")


# --- root ---------------------------------------------------------------------------------

# Keys in the models that nothing reads yet, and why: set to anything but their default, they
# exit 2 (tests/unit/test_config.py fails when a key is neither read somewhere nor listed here).
NOT_YET: dict[str, str] = {
    "integrations.metricsServer": "the host's metrics are not proxied into the virtual cluster",
    "integrations.kubeVirt.apiService": (
        "vnest reaches virt-api through the host API server (its APIService "
        "v1.subresources.kubevirt.io), which knows virt-api's Service"
    ),
    "integrations.kubeVirt.webhook": (
        "the host's KubeVirt webhooks always check the host copies (a refusal comes back as a "
        "SyncError event on the virtual object); they cannot be turned off from a virtual cluster"
    ),
    "exportKubeConfig": "use `vnest connect --print` or the vc-NAME Secret for the kubeconfig",
    "networking.advanced.proxyKubelets": "vnest serves the nodes' kubelet API from the syncer itself",
    "sync.fromHost.nodes.syncBackChanges": "synced nodes are read-only in the virtual cluster",
}


class VClusterConfig(_Model):
    """A vnest values file: the vcluster.yaml (v0.20+) keys vnest supports."""

    model_config = ConfigDict(title="vnest values (vcluster.yaml shape)")

    sync: Sync = Field(default_factory=Sync, description="What syncs between virtual cluster and host.")
    control_plane: ControlPlane = Field(default_factory=ControlPlane, description="The control plane.")
    networking: Networking = Field(default_factory=Networking, description="Networking.")
    policies: Policies = Field(default_factory=Policies, description="Policies on the host namespace.")
    integrations: Integrations = Field(default_factory=Integrations, description="Integrations.")
    export_kube_config: ExportKubeConfig = Field(
        default_factory=ExportKubeConfig, description="The exported kubeconfig."
    )

    @model_validator(mode="after")
    def _nothing_accepted_and_ignored(self) -> VClusterConfig:
        # A key the models know (vcluster.yaml has it, vnest will build it) but nothing reads yet
        # is refused unless it says what the default says: never accepted and ignored.
        dump = self.model_dump(mode="json", by_alias=True)
        default = _default_dump()
        for dotted, why in NOT_YET.items():
            have, want = dump, default
            for key in dotted.split("."):
                have, want = have[key], want[key]
            if have != want:
                raise FieldProblem(dotted, f"not supported by vnest yet: {why}")
        return self

    @model_validator(mode="after")
    def _virtual_scheduler_sees_nodes(self) -> VClusterConfig:
        # A scheduler places pods on the nodes it sees; fake nodes exist only once a pod runs on
        # them, so it would wait forever. vCluster refuses the same.
        if self.scheduler_enabled and not self.sync.from_host.nodes.enabled:
            raise FieldProblem(
                "sync.fromHost.nodes.enabled",
                "must be true when the virtual cluster runs its own scheduler "
                "(controlPlane.advanced.virtualScheduler or controlPlane.distro.k8s.scheduler): "
                "it can only place pods on the host nodes it sees",
            )
        return self

    @model_validator(mode="after")
    def _kubevirt_runs_in_pods(self) -> VClusterConfig:
        # KubeVirt runs every VM in a launcher pod of the host namespace, which vnest shows as a
        # virtual pod; and a VM's disks and keys are the Secrets and claims pods sync.
        if self.integrations.kube_virt.enabled and not self.sync.to_host.pods.enabled:
            raise FieldProblem(
                "integrations.kubeVirt.enabled",
                "needs sync.toHost.pods.enabled: KubeVirt runs each VM in a pod vnest syncs",
            )
        return self

    @property
    def scheduler_enabled(self) -> bool:
        """True when pods are scheduled inside the virtual cluster rather than by the host."""
        return (
            self.control_plane.distro.k8s.scheduler.enabled
            or self.control_plane.advanced.virtual_scheduler.enabled
        )

    @property
    def datastore(self) -> str:
        """embedded-database, external-database, embedded-etcd or external-etcd."""
        store = self.control_plane.backing_store
        if store.etcd.embedded.enabled:
            return "embedded-etcd"
        if store.etcd.external.enabled:
            return "external-etcd"
        if store.database.external.enabled:
            return "external-database"
        return "embedded-database"

    @property
    def kubernetes_version(self) -> str | None:
        """The requested Kubernetes version, or None for vnest's pinned one."""
        return self.control_plane.distro.k8s.version or None


_DEFAULT: dict[str, Any] = {}


def _default_dump() -> dict[str, Any]:
    # Built without validation (model_construct fills the defaults), so the check that needs it
    # does not run while it is being made.
    if not _DEFAULT:
        _DEFAULT.update(VClusterConfig.model_construct().model_dump(mode="json", by_alias=True))
    return _DEFAULT
