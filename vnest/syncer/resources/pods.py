"""Pods: the virtual pod runs as a host pod under a translated name; its status comes back.

What the host pod gets, compared with the virtual one:
- names of ConfigMaps, Secrets and PVCs it references (volumes, projected
  volumes, the Secrets of csi, cephfs, rbd, iscsi, flexVolume, scaleIO,
  storageos, cinder and azureFile volumes, env, envFrom, imagePullSecrets)
  rewritten to their host copies';
- the service-account token projections replaced by a host Secret holding tokens
  the *virtual* API server issued, bound to the pod (vnest.syncer.resources.tokens),
  so in-pod clients talk to the virtual API; the host's own token is never mounted;
- KUBERNETES_SERVICE_HOST/PORT and a hostAlias for kubernetes.default that
  point at the virtual cluster's host Service; service links off, since the
  host namespace's services are not the tenant's;
- downward-API fields that would tell the host's names (metadata.name, ...)
  read the vnest.io/object-* annotations instead;
- pod (anti-)affinity and topology spread selectors confined to the pods of
  the same virtual namespace of this virtual cluster;
- the labels of its virtual namespace, as hashed `vnest.io/ns-*` labels, so
  that NetworkPolicy namespaceSelectors can be enforced on the host;
- no scheduler or priority of the virtual cluster's: the host schedules, with
  the priority of the host copy of its PriorityClass when those sync
  (vnest.syncer.resources.priorityclasses). A pod that comes with its node already named
  (by the tenant, a DaemonSet-style controller or the virtual scheduler) is
  pinned there by a required node affinity on the node's name, as the DaemonSet
  controller pins its pods, rather than by nodeName: the host scheduler still
  checks the node's taints, the node selector vnest adds and the node's room,
  and says why in events (copied back) when the pod cannot go there;
- only when it meets `policies.podSecurityStandard` (vnest.syncer.podsecurity),
  ephemeral containers (`kubectl debug`) included, which join the host pod;
- ClusterFirst DNS pointed at the virtual cluster's kube-dns Service (whose
  ClusterIP is its host copy's) with the virtual namespace's search path.
Status flows back; the virtual pod is bound to the node the host chose, which
appears in the virtual cluster as a fake node (vnest.syncer.resources.nodes).
Deletion goes both ways: the virtual pod deleted, its host pod goes; the host
pod gone while the virtual pod was running, the virtual pod goes too (its
controller makes a new one), as in vCluster. "Was running" is recorded on the
virtual pod, not guessed from its nodeName: the first time its host copy is
seen on a node, the virtual pod gets the host pod's uid in annotation
`vnest.io/host-uid` (within the binding, which copies its annotations onto the
pod, so at no extra request for the pods the host schedules). A pod without it
has never run on the host, and gets its host copy however it was created.
"""

from __future__ import annotations

import copy
import re
from typing import Protocol

from vnest import log, naming
from vnest.dns.podconfig import pod_dns_config
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Handlers, SyncContext, ToHostSyncer
from vnest.syncer.mappings import (
    ANNOTATION_HOST_UID,
    LABEL_NAMESPACE,
    key_of,
    namespace_label_key,
    split_key,
    translate_label_key,
)
from vnest.syncer.podsecurity import PodSecurityChecker
from vnest.syncer.resources.priorityclasses import pod_priority_class
from vnest.syncer.resources.runtimeclasses import RuntimeClasses
from vnest.syncer.resources.serviceaccounts import host_service_account, pod_service_account
from vnest.syncer.resources.tokens import projection_of, token_key, token_secret_name

_log = log.get("syncer.pods")

KUBE_DNS = ("kube-system", "kube-dns")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def pod_hostname(name: str) -> str | None:
    """The hostname kubelet gives a pod of this name (its first 63 characters), if a valid label."""
    hostname = name[:63].rstrip("-.")
    return hostname if _DNS_LABEL.match(hostname) else None


# A pod with a subdomain (a StatefulSet's) has its FQDN in /etc/hosts. The host's kubelet writes it
# as "<ip>\t<hostname>.<subdomain>.<host namespace>.svc.<host domain>\t<hostname>", and writes the
# file again before each container starts (so a container cannot just edit it). An init container
# reads the kubelet's file and writes it, with the virtual FQDN, into a volume every container
# mounts at /etc/hosts, which the kubelet then leaves alone.
REWRITE_HOSTS_CONTAINER = "vnest-rewrite-hosts"
HOSTS_VOLUME = "vnest-hosts"
_HOSTS_DIR = "/vnest-hosts"
_REWRITE_HOSTS_SCRIPT = (
    'awk -v h="$1" -v p="$1.$2." -v f="$3" \'BEGIN { OFS = "\\t" } '
    "!/^#/ && NF == 3 && $3 == h && index($2, p) == 1 { $2 = f } { print }' "
    f"/etc/hosts > {_HOSTS_DIR}/hosts"
)


def rewrite_hosts(spec: Obj, fqdn: str, image: str, resources: Obj) -> None:
    """Gives a host pod spec the init container and mounts that put `fqdn` into its /etc/hosts
    (its hostname and subdomain set). The names are passed as arguments, never into the script."""
    hostname, subdomain = spec["hostname"], spec["subdomain"]
    containers = [c for group in _CONTAINER_LISTS for c in spec.get(group) or []]
    if any(c["name"] == REWRITE_HOSTS_CONTAINER for c in containers) or any(
        v["name"] == HOSTS_VOLUME for v in spec.get("volumes") or []
    ):
        return  # the tenant's own names: the kubelet's file, unchanged
    mount = {"name": HOSTS_VOLUME, "mountPath": "/etc/hosts", "subPath": "hosts", "readOnly": False}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not any(m.get("mountPath") == "/etc/hosts" for m in c.get("volumeMounts") or []):
            c["volumeMounts"] = [*(c.get("volumeMounts") or []), dict(mount)]
    spec["volumes"] = [*(spec.get("volumes") or []), {"name": HOSTS_VOLUME, "emptyDir": {}}]
    writer = {
        "name": REWRITE_HOSTS_CONTAINER,
        "image": image,
        "command": ["sh", "-c", _REWRITE_HOSTS_SCRIPT, REWRITE_HOSTS_CONTAINER, hostname, subdomain, fqdn],
        "resources": resources,
        "volumeMounts": [{"name": HOSTS_VOLUME, "mountPath": _HOSTS_DIR}],
        # Reads a world-readable file and writes an emptyDir: nothing a restricted pod may not.
        "securityContext": {
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    spec["initContainers"] = [writer, *(spec.get("initContainers") or [])]


_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_FIELD_ANNOTATIONS = {
    "metadata.name": mappings.ANNOTATION_NAME,
    "metadata.namespace": mappings.ANNOTATION_NAMESPACE,
    "metadata.uid": mappings.ANNOTATION_UID,
}


# Volume types that name a Secret of the pod's namespace, and where: every one is translated to
# the Secret's host copy (and copied), so a pod never mounts a host Secret of that raw name.
SECRET_REFERENCES: dict[str, tuple[str, ...]] = {
    "csi": ("nodePublishSecretRef", "name"),
    "cephfs": ("secretRef", "name"),
    "rbd": ("secretRef", "name"),
    "iscsi": ("secretRef", "name"),
    "flexVolume": ("secretRef", "name"),
    "scaleIO": ("secretRef", "name"),
    "storageos": ("secretRef", "name"),
    "cinder": ("secretRef", "name"),
    "azureFile": ("secretName",),
}


def _secret_reference(volume: Obj) -> tuple[Obj, str] | None:
    """(the dict holding the name, its key) for a volume whose type names a Secret; None otherwise."""
    for kind, path in SECRET_REFERENCES.items():
        holder = volume.get(kind)
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and holder.get(path[-1]):
            return holder, path[-1]
    return None


def references(pod: Obj) -> dict[str, set[str]]:
    """Names of the ConfigMaps, Secrets and PVCs a pod uses, by kind."""
    refs: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set(), "PersistentVolumeClaim": set()}
    spec = pod.get("spec", {})
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            refs["ConfigMap"].add(vol["configMap"]["name"])
        if "secret" in vol:
            refs["Secret"].add(vol["secret"]["secretName"])
        if "persistentVolumeClaim" in vol:
            refs["PersistentVolumeClaim"].add(vol["persistentVolumeClaim"]["claimName"])
        if (ref := _secret_reference(vol)) is not None:
            refs["Secret"].add(ref[0][ref[1]])
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                refs["ConfigMap"].add(src["configMap"]["name"])
            if "secret" in src:
                refs["Secret"].add(src["secret"]["name"])
    for group in _CONTAINER_LISTS:
        for c in spec.get(group) or []:
            for env in c.get("env") or []:
                src = env.get("valueFrom") or {}
                if "configMapKeyRef" in src:
                    refs["ConfigMap"].add(src["configMapKeyRef"]["name"])
                if "secretKeyRef" in src:
                    refs["Secret"].add(src["secretKeyRef"]["name"])
            for env_from in c.get("envFrom") or []:
                if "configMapRef" in env_from:
                    refs["ConfigMap"].add(env_from["configMapRef"]["name"])
                if "secretRef" in env_from:
                    refs["Secret"].add(env_from["secretRef"]["name"])
    for pull in spec.get("imagePullSecrets") or []:
        refs["Secret"].add(pull["name"])
    return refs


def pin_to_node(spec: Obj, node: str) -> None:
    """Requires the node named `node`, as the DaemonSet controller pins its pods (within every term)."""
    field = {"key": "metadata.name", "operator": "In", "values": [node]}
    node_affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or [{}]
    for term in terms:
        fields = [f for f in term.get("matchFields") or [] if f.get("key") != "metadata.name"]
        term["matchFields"] = [*fields, field]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}


def owner_set_kind(vpod: Obj) -> str | None:
    """The kind of the batch controller of a pod (Job), as vCluster's owner-set-kind names it."""
    for ref in vpod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1":
            return "Job"
    return None


# PodStatus's fields (Kubernetes 1.36); a newer one the host sets is copied, one only the virtual
# side has (unknown here, and not in the cache yet) would stay until the next status change.
POD_STATUS_FIELDS = (
    "phase",
    "conditions",
    "message",
    "reason",
    "nominatedNodeName",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
    "resize",
    "resourceClaimStatuses",
    "observedGeneration",
    "extendedResourceClaimStatus",
)


def service_link_env(svc: Obj) -> list[Obj]:
    """A Service's environment variables, as the kubelet's `envvars.FromServices` makes them."""
    spec = svc.get("spec") or {}
    ip, ports = spec.get("clusterIP"), spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return []
    prefix = svc["metadata"]["name"].upper().replace("-", "_")
    env = [
        {"name": f"{prefix}_SERVICE_HOST", "value": ip},
        {"name": f"{prefix}_SERVICE_PORT", "value": str(ports[0]["port"])},
    ]
    env += [
        {"name": f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}", "value": str(p["port"])}
        for p in ports
        if p.get("name")
    ]
    host = f"[{ip}]" if ":" in ip else ip
    for i, p in enumerate(ports):
        proto = (p.get("protocol") or "TCP").upper()
        url = f"{proto.lower()}://{host}:{p['port']}"
        if i == 0:
            env.append({"name": f"{prefix}_PORT", "value": url})
        at = f"{prefix}_PORT_{p['port']}_{proto}"
        env += [
            {"name": at, "value": url},
            {"name": f"{at}_PROTO", "value": proto.lower()},
            {"name": f"{at}_PORT", "value": str(p["port"])},
            {"name": f"{at}_ADDR", "value": ip},
        ]
    return env


RESIZABLE = ("cpu", "memory")  # what an in-place resize may change


def _resized(host: Obj, virtual: Obj) -> Obj:
    """A host container's resources with the virtual container's CPU and memory. The rest stays as
    the host has it: a resize may change nothing else, and a host LimitRange's defaults (its
    ephemeral storage, a limit the tenant did not set) are the host's."""
    out = copy.deepcopy(host)
    for kind in ("requests", "limits"):
        mine = {k: v for k, v in (virtual.get(kind) or {}).items() if k in RESIZABLE}
        if mine:
            out[kind] = {**(out.get(kind) or {}), **mine}
    return out


def resize_patch(vpod: Obj, hpod: Obj) -> list[Obj]:
    """The JSON patch of the host pod's `resize` subresource that gives its containers (and the pod)
    the virtual pod's resources; empty when they match. Each replaced container is tested by name
    first, so a host pod whose containers are not where the patch expects refuses it."""
    ops: list[Obj] = []
    for field in ("initContainers", "containers"):
        wanted = {c["name"]: c.get("resources") or {} for c in vpod["spec"].get(field) or []}
        for i, container in enumerate(hpod["spec"].get(field) or []):
            name = container["name"]
            if name not in wanted:
                continue
            have = container.get("resources") or {}
            resized = _resized(have, wanted[name])
            if resized != have:
                ops.append({"op": "test", "path": f"/spec/{field}/{i}/name", "value": name})
                ops.append({"op": "add", "path": f"/spec/{field}/{i}/resources", "value": resized})
    pod_level = vpod["spec"].get("resources")
    if pod_level != hpod["spec"].get("resources"):
        if pod_level is None:
            ops.append({"op": "remove", "path": "/spec/resources"})
        else:
            ops.append({"op": "add", "path": "/spec/resources", "value": pod_level})
    return ops


TERMINAL = frozenset({"Succeeded", "Failed"})

# What a kubelet refuses a pod bound to its node for, as the host scheduler words it when it
# cannot place the pod on the node it named (vnest pins such a pod with node affinity): the
# kubelet's reason and message for each (pkg/kubelet/lifecycle/predicate.go).
_KUBELET_REJECTIONS = (
    (
        "didn't have free ports for the requested pod ports",
        "NodePorts",
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
    ),
    ("Insufficient cpu", "OutOfcpu", "Node didn't have enough resource: cpu"),
    ("Insufficient memory", "OutOfmemory", "Node didn't have enough resource: memory"),
    (
        "Insufficient ephemeral-storage",
        "OutOfephemeral-storage",
        "Node didn't have enough resource: ephemeral-storage",
    ),
    ("Too many pods", "OutOfpods", "Node didn't have enough resource: pods"),
)


def kubelet_rejection(vpod: Obj, hpod: Obj) -> tuple[str, str] | None:
    """The reason and message a kubelet would fail a pod with that names its node (no scheduler
    places it) when the host scheduler says the node cannot take it; None while it may run.

    A pod that names its node is admitted or refused by that node's kubelet at once, and a
    refused one ends Failed (a StatefulSet then makes it again). On the host it is pending
    instead, until the port or the resources come free; only what a kubelet refuses is turned
    into that end, not what it would wait for (a volume, an image)."""
    if not vpod["spec"].get("nodeName") or hpod["spec"].get("nodeName"):
        return None
    for condition in (hpod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            said = condition.get("message") or ""
            for words, reason, message in _KUBELET_REJECTIONS:
                if words in said:
                    return reason, message
    return None


# Pod conditions the virtual control plane sets and the host never sees: an eviction through the
# virtual API (or the virtual scheduler's preemption) marks the pod before it is deleted, and a
# Job's podFailurePolicy reads the mark once the host copy's status says it failed.
VIRTUAL_CONDITIONS = frozenset({"DisruptionTarget"})


def virtual_status(status: Obj, vpod: Obj, hpod: Obj) -> Obj:
    """The host pod's status as the virtual pod's: its observed generations counted in the virtual
    pod's generation, and the conditions only the virtual cluster sets kept.

    The two pods' generations differ (the host copy's spec changes when vnest's, not the
    tenant's, do), while clients compare `observedGeneration` with their own pod's `generation`
    (a resize is done when the kubelet observed it). The host's lag behind its own generation is
    the virtual pod's lag behind its own; `hpod` must count every write just made to the host.
    """
    if not status:
        return status
    qos = (vpod.get("status") or {}).get("qosClass")
    if qos and status.get("qosClass", qos) != qos:
        # Set at create and immutable: the host copy's may differ (vnest's init container has
        # resources, a host LimitRange adds some), and a status that changed it would be refused.
        status = {**status, "qosClass": qos}
    init = status.get("initContainerStatuses") or []
    if any(s.get("name") == REWRITE_HOSTS_CONTAINER for s in init) and not any(
        c["name"] == REWRITE_HOSTS_CONTAINER for c in vpod["spec"].get("initContainers") or []
    ):
        # vnest's own init container (rewrite_hosts) is not the tenant's.
        status = {k: v for k, v in status.items() if k != "initContainerStatuses"}
        if tenants := [s for s in init if s.get("name") != REWRITE_HOSTS_CONTAINER]:
            status["initContainerStatuses"] = tenants
    host_types = {c.get("type") for c in status.get("conditions") or []}
    kept = [
        c
        for c in (vpod.get("status") or {}).get("conditions") or []
        if c.get("type") in VIRTUAL_CONDITIONS and c.get("type") not in host_types
    ]
    vgen = int(vpod["metadata"].get("generation") or 0)
    offset = vgen - int(hpod["metadata"].get("generation") or 0)
    if not offset and not kept:
        return status

    def shifted(observed: int) -> int:
        return max(0, min(observed + offset, vgen))

    status = dict(status)
    if offset and "observedGeneration" in status:
        status["observedGeneration"] = shifted(int(status["observedGeneration"]))
    conditions = [
        {**c, "observedGeneration": shifted(int(c["observedGeneration"]))}
        if offset and "observedGeneration" in c
        else c
        for c in status.get("conditions") or []
    ]
    if conditions or kept:
        status["conditions"] = [*conditions, *kept]
    return status


def _revision(obj: Obj) -> int:
    """An object's resourceVersion as a number: an etcd (or kine) revision, which only grows. The
    API calls it opaque; one that is not a number compares as 0 (never newer), so nothing is skipped."""
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class Nodes(Protocol):
    """The virtual cluster's nodes (fake or copied from the host): the node a pod runs on must exist."""

    async def ensure(self, name: str, host_ip: str = "") -> None: ...


class PodSyncer(ToHostSyncer):
    kind = "Pod"
    workers = 32  # a pod waits on round trips, not CPU: 8 workers left bursts queued (bench/sync.py)

    def __init__(
        self,
        ctx: SyncContext,
        security: PodSecurityChecker | None,
        nodes: Nodes,
        node_selector: dict[str, str],
    ) -> None:
        super().__init__(ctx)
        # This syncer's own writes the virtual cache may not show yet (client-go's MutationCache):
        # pods it bound (key -> uid), and statuses it wrote (key -> uid, revision, status).
        self._bound: dict[str, str] = {}
        self._status_written: dict[str, tuple[str, int, Obj]] = {}
        self.security = security  # None: policies.podSecurityStandard is privileged
        self.nodes = nodes
        self.node_selector = node_selector  # with real node sync: pods stay on the selected nodes
        self.namespaces = ctx.informer("virtual", "Namespace")
        self.services = ctx.informer("virtual", "Service")  # for the virtual kube-dns Service's IP
        self.runtime_classes = RuntimeClasses(ctx)
        self.sync_service_accounts = ctx.config.sync.to_host.service_accounts.enabled
        self.host_service_accounts = (
            ctx.informer("host", "ServiceAccount") if self.sync_service_accounts else None
        )

    def setup(self) -> None:
        # A new virtual pod takes turns with the status updates of the pods before it (WorkQueue's
        # lane of new keys): neither waits for the other to drain in a burst (bench/sync.py).
        self.virtual.add_handlers(Handlers(on_add=lambda vpod: self.queue.add(key_of(vpod), first=True)))
        super().setup()
        if self.host_service_accounts is not None:
            self.host_service_accounts.add_handlers(Handlers(on_add=self._on_host_service_account))
        self.namespaces.add_handlers(Handlers(on_update=self._on_namespace_update))
        for classes in (self.runtime_classes.offered, self.runtime_classes.virtual):
            if classes is not None:
                classes.add_handlers(Handlers(on_add=self._on_runtime_class))

    def _on_namespace_update(self, old: Obj, new: Obj) -> None:
        # Its labels ride on every pod of it: relabel them all.
        if old["metadata"].get("labels") != new["metadata"].get("labels"):
            ns = new["metadata"]["name"]
            for key in [k for k in self.virtual.store if k.startswith(ns + "/")]:
                self.queue.add(key)

    def _on_runtime_class(self, _: Obj) -> None:
        # A class the host offers now, or one the tenant made: pods kept off the host try again.
        for key, vpod in list(self.virtual.store.items()):
            if vpod["spec"].get("runtimeClassName") and self.pair(key)[1] is None:
                self.queue.add(key)

    # ---- translation -------------------------------------------------------------

    def _service_links(self, namespace: str) -> list[Obj]:
        """The variables a kubelet makes for the Services of the pod's namespace (`enableServiceLinks`)."""
        prefix = namespace + "/"
        # default/kubernetes: the KUBERNETES_* variables, set in translate. Only the namespace's
        # Services are sorted (for a stable host spec), not every Service of the cluster.
        ours = sorted(
            (key, svc)
            for key, svc in self.services.store.items()
            if key.startswith(prefix) and key != "default/kubernetes"
        )
        return [env for _, svc in ours for env in service_link_env(svc)]

    def translate(self, vpod: Obj) -> Obj:
        ctx = self.ctx
        meta = vpod["metadata"]
        ns = meta["namespace"]
        spec = copy.deepcopy(vpod["spec"])
        for drop in (
            "serviceAccountName",
            "serviceAccount",
            "priorityClassName",
            "priority",
            "preemptionPolicy",
        ):
            spec.pop(drop, None)
        priority_class = pod_priority_class(ctx, vpod["spec"].get("priorityClassName"))
        if priority_class:
            # The host copy of the class (a system one's too, capped) or the host's own
            # (vnest.syncer.resources.priorityclasses); the host computes priority and preemption from it.
            spec["priorityClassName"] = priority_class
        spec.pop("schedulerName", None)
        # The host's RuntimeClass admission sets the overhead from the host's class (runtimeclasses).
        spec.pop("overhead", None)
        if spec.get("runtimeClassName"):
            runtime_class = self.runtime_classes.host_class(spec["runtimeClassName"]).name
            if runtime_class:
                spec["runtimeClassName"] = runtime_class
        node = spec.pop("nodeName", None)
        if node:
            pin_to_node(spec, node)
        if self.sync_service_accounts:
            # The host copy of its virtual ServiceAccount (vnest.syncer.resources.serviceaccounts); without
            # that sync, the host namespace's default. Either way no host token is mounted.
            spec["serviceAccountName"] = host_service_account(ctx, vpod)
        spec["automountServiceAccountToken"] = False
        spec["enableServiceLinks"] = False

        def cm(name: str) -> str:
            return ctx.host_name(name, ns)

        for vol in spec.get("volumes") or []:
            if "configMap" in vol:
                vol["configMap"]["name"] = cm(vol["configMap"]["name"])
            if "secret" in vol:
                vol["secret"]["secretName"] = cm(vol["secret"]["secretName"])
            if "persistentVolumeClaim" in vol:
                vol["persistentVolumeClaim"]["claimName"] = cm(vol["persistentVolumeClaim"]["claimName"])
            if (ref := _secret_reference(vol)) is not None:
                ref[0][ref[1]] = cm(ref[0][ref[1]])
            if "projected" in vol:
                vol["projected"]["sources"] = self._projected_sources(
                    vpod, vol["projected"].get("sources") or []
                )
            if "downwardAPI" in vol:
                for item in vol["downwardAPI"].get("items") or []:
                    self.remap_field(item)
        ip = ctx.host_service_ip
        # The host copy runs with service links off (the host namespace's Services are other
        # names); the virtual namespace's Services give the variables a kubelet would.
        links = self._service_links(ns) if vpod["spec"].get("enableServiceLinks", True) else []
        for group in _CONTAINER_LISTS:
            for c in spec.get(group) or []:
                env = [e for e in c.get("env") or [] if not e["name"].startswith("KUBERNETES_")]
                own = {e["name"] for e in env}
                env = [e for e in links if e["name"] not in own] + env  # the container's own win
                for e in env:
                    src = e.get("valueFrom") or {}
                    if "configMapKeyRef" in src:
                        src["configMapKeyRef"]["name"] = cm(src["configMapKeyRef"]["name"])
                    if "secretKeyRef" in src:
                        src["secretKeyRef"]["name"] = cm(src["secretKeyRef"]["name"])
                    if "fieldRef" in src:
                        self.remap_field(src)
                if ip:
                    env += [
                        {"name": "KUBERNETES_SERVICE_HOST", "value": ip},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": "443"},
                        {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": "443"},
                        {"name": "KUBERNETES_PORT", "value": f"tcp://{ip}:443"},
                        {"name": "KUBERNETES_PORT_443_TCP", "value": f"tcp://{ip}:443"},
                        {"name": "KUBERNETES_PORT_443_TCP_ADDR", "value": ip},
                        {"name": "KUBERNETES_PORT_443_TCP_PORT", "value": "443"},
                        {"name": "KUBERNETES_PORT_443_TCP_PROTO", "value": "tcp"},
                    ]
                c["env"] = env
                for env_from in c.get("envFrom") or []:
                    if "configMapRef" in env_from:
                        env_from["configMapRef"]["name"] = cm(env_from["configMapRef"]["name"])
                    if "secretRef" in env_from:
                        env_from["secretRef"]["name"] = cm(env_from["secretRef"]["name"])
        for pull in spec.get("imagePullSecrets") or []:
            pull["name"] = cm(pull["name"])
        if ip:
            domain = ctx.config.networking.advanced.cluster_domain
            aliases = [a for a in spec.get("hostAliases") or [] if a.get("ip") != ip]
            aliases.append(
                {
                    "ip": ip,
                    "hostnames": [
                        "kubernetes",
                        "kubernetes.default",
                        "kubernetes.default.svc",
                        f"kubernetes.default.svc.{domain}",
                    ],
                }
            )
            spec["hostAliases"] = aliases
        self.confine_selectors(spec, ns)
        if self.node_selector:
            spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **self.node_selector}
        self.point_dns_at_the_virtual_cluster(spec, ns)
        if not spec.get("hostname") and (hostname := pod_hostname(vpod["metadata"]["name"])):
            # Inside its containers the pod is called by its virtual name, not the host copy's.
            spec["hostname"] = hostname
        rewrite = ctx.config.sync.to_host.pods.rewrite_hosts
        if rewrite.enabled and spec.get("subdomain") and spec.get("hostname") and not spec.get("hostNetwork"):
            domain = ctx.config.networking.advanced.cluster_domain
            fqdn = f"{spec['hostname']}.{spec['subdomain']}.{ns}.svc.{domain}"
            writer = rewrite.init_container
            rewrite_hosts(spec, fqdn, writer.image, writer.resources.model_dump(by_alias=True))
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self._host_metadata(vpod), "spec": spec}

    def _host_metadata(self, vpod: Obj) -> Obj:
        """The host pod's metadata: the copy's, with the labels of its virtual namespace."""
        metadata = self.ctx.host_metadata(vpod)
        if owner_set_kind(vpod) == "Job":
            metadata["annotations"][naming.ANNOTATION_OWNER_SET_KIND] = "Job"
        namespace = self.namespaces.get(vpod["metadata"]["namespace"])
        for key, value in ((namespace or {}).get("metadata", {}).get("labels") or {}).items():
            metadata["labels"][namespace_label_key(key)] = value
        return metadata

    def point_dns_at_the_virtual_cluster(self, spec: Obj, ns: str) -> None:
        """ClusterFirst means the *virtual* cluster's DNS, searching the *virtual* namespace."""
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        host_network = bool(spec.get("hostNetwork"))
        if not (policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)):
            return  # Default and None are the pod's own choice, and host-network ClusterFirst means Default
        dns = self.services.get(f"{KUBE_DNS[0]}/{KUBE_DNS[1]}")
        ip = (dns or {}).get("spec", {}).get("clusterIP")
        if not ip or ip == "None":
            return
        domain = self.ctx.config.networking.advanced.cluster_domain
        wanted = pod_dns_config(ns, ip, domain)
        # The pod's own dnsConfig adds to ClusterFirst's, as kubelet merges it.
        own = spec.get("dnsConfig") or {}
        config = wanted["dnsConfig"]
        config["nameservers"] += [n for n in own.get("nameservers") or [] if n not in config["nameservers"]]
        config["searches"] += [s for s in own.get("searches") or [] if s not in config["searches"]]
        names = {o["name"] for o in own.get("options") or []}
        config["options"] = [o for o in config["options"] if o["name"] not in names] + list(
            own.get("options") or []
        )
        spec["dnsPolicy"] = wanted["dnsPolicy"]
        spec["dnsConfig"] = config

    @staticmethod
    def remap_field(holder: Obj) -> None:
        ref = holder.get("fieldRef")
        if ref and ref.get("fieldPath") in _FIELD_ANNOTATIONS:
            ref["fieldPath"] = f"metadata.annotations['{_FIELD_ANNOTATIONS[ref['fieldPath']]}']"

    def _projected_sources(self, vpod: Obj, sources: list[Obj]) -> list[Obj]:
        ns = vpod["metadata"]["namespace"]
        out = []
        for src in sources:
            if "serviceAccountToken" in src:
                # The token comes from the virtual API server, via a host Secret (tokens.py).
                token = src["serviceAccountToken"]
                out.append(
                    {
                        "secret": {
                            "name": token_secret_name(self.ctx, key_of(vpod)),
                            "items": [{"key": token_key(projection_of(token)), "path": token["path"]}],
                        }
                    }
                )
                continue
            if "configMap" in src:
                src["configMap"]["name"] = self.ctx.host_name(src["configMap"]["name"], ns)
            if "secret" in src:
                src["secret"]["name"] = self.ctx.host_name(src["secret"]["name"], ns)
            if "downwardAPI" in src:
                for item in src["downwardAPI"].get("items") or []:
                    self.remap_field(item)
            out.append(src)
        return out

    def _confine_selector(self, selector: Obj | None, namespaces: list[str]) -> Obj | None:
        if selector is None:
            return None
        out: Obj = {
            "matchLabels": {
                translate_label_key(k): v for k, v in (selector.get("matchLabels") or {}).items()
            },
            "matchExpressions": [
                {**e, "key": translate_label_key(e["key"])} for e in selector.get("matchExpressions") or []
            ],
        }
        out["matchLabels"][mappings.LABEL_MANAGED_BY] = self.ctx.name
        out["matchExpressions"].append(
            {"key": LABEL_NAMESPACE, "operator": "In", "values": sorted(set(namespaces))}
        )
        return out

    def confine_selectors(self, spec: Obj, ns: str) -> None:
        affinity = spec.get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            rules = affinity.get(kind) or {}
            terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            terms += [
                w["podAffinityTerm"]
                for w in rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []
            ]
            for term in terms:
                term["labelSelector"] = self._confine_selector(
                    term.get("labelSelector") or {}, term.get("namespaces") or [ns]
                )
                term.pop("namespaces", None)
                term.pop("namespaceSelector", None)
        for constraint in spec.get("topologySpreadConstraints") or []:
            constraint["labelSelector"] = self._confine_selector(constraint.get("labelSelector") or {}, [ns])

    def _on_host_service_account(self, hsa: Obj) -> None:
        """A pod created before its ServiceAccount's host copy is refused by the host (the account must
        exist): it is retried as soon as the copy appears rather than after its backoff."""
        if not (vkey := mappings.virtual_key_of(hsa)):
            return
        ns, name = split_key(vkey)
        for pod in list(self.virtual.store.values()):
            if pod["metadata"]["namespace"] == ns and pod_service_account(pod) == name:
                key = key_of(pod)
                if self.host.get(self.mapping.host_key(key)) is None:
                    self.queue.add(key)

    # ---- reconcile ----------------------------------------------------------------

    async def handled_elsewhere(self, key: str) -> bool:
        # A reflection of a host pod vnest did not copy (vnest.integrations.kubevirt.launchers) is
        # never copied back; a tenant who marks a pod so only keeps it off the host.
        return mappings.ANNOTATION_REFLECTS in mappings.annotations_of(self.virtual.get(key))

    async def deleting(self, vpod: Obj, hpod: Obj | None) -> bool:
        if hpod is not None and mappings.uid_matches(vpod, hpod):
            if not hpod["metadata"].get("deletionTimestamp"):
                await self.patcher.delete(hpod, grace=vpod["metadata"].get("deletionGracePeriodSeconds"))
            if vpod["spec"].get("nodeName"):
                # Its last status too (the kubelet ends a deleted pod Failed): a Job's tracking
                # finalizer holds the virtual pod until its phase is terminal.
                await self._sync_status(vpod, hpod)
            return True
        phase = (vpod.get("status") or {}).get("phase")
        if vpod["metadata"].get("finalizers") and vpod["spec"].get("nodeName") and phase not in TERMINAL:
            # Its host copy went before its end was seen: ended as a kubelet ends a deleted pod, so
            # the controllers whose finalizers hold it (a Job's tracking) let it go.
            meta = vpod["metadata"]
            await self.ctx.virtual.patch(
                "Pod", meta["name"], {"status": {"phase": "Failed"}}, meta["namespace"], "status"
            )
        await self._delete_virtual(vpod)  # acting as its kubelet: nothing runs it any more
        return True

    async def forget(self, key: str) -> None:
        self._bound.pop(key, None)
        self._status_written.pop(key, None)

    async def replaced(self, vpod: Obj, hpod: Obj) -> None:
        # A host copy of an earlier pod of the same name: replaced; its DELETED event brings us back.
        await self.patcher.delete(hpod, grace=0)

    async def to_host(self, vpod: Obj) -> None:
        if ANNOTATION_HOST_UID in mappings.annotations_of(vpod):
            # It ran on the host and its host pod is gone: so goes the virtual pod.
            await self._delete_virtual(vpod)
            return
        if (vpod.get("status") or {}).get("phase") in TERMINAL:
            return  # ended without running (rejected by its node): nothing runs it again
        if self.security is not None and (problem := await self.security.violation(vpod)):
            # Never on the host, whatever the tenant's namespace labels say; its next change
            # (or a new pod from its controller) is checked again.
            await self.ctx.warn_once(vpod, "PodSecurity", problem)
            return
        runtime_class = self.runtime_classes.host_class(vpod["spec"].get("runtimeClassName"))
        if runtime_class.problem:
            await self.ctx.warn_once(vpod, "RuntimeClass", runtime_class.problem)
            return
        await self.patcher.create(vpod, self.translate(vpod))

    async def sync(self, vpod: Obj, hpod: Obj) -> None:
        if (rejection := kubelet_rejection(vpod, hpod)) is not None:
            await self._reject(vpod, hpod, *rejection)
            return
        hpod = await self._update_host(vpod, hpod)
        await self._sync_status(vpod, hpod)

    async def _reject(self, vpod: Obj, hpod: Obj, reason: str, message: str) -> None:
        """Ends a pod its node cannot take as that node's kubelet would: Failed, never started, for
        its controller to replace (a StatefulSet's pod whose host port is taken)."""
        meta = vpod["metadata"]
        if (vpod.get("status") or {}).get("phase") not in TERMINAL:
            status = {"phase": "Failed", "reason": reason, "message": f"Pod was rejected: {message}"}
            await self.ctx.virtual.patch("Pod", meta["name"], {"status": status}, meta["namespace"], "status")
            # Once per pod, though the cache may show it unended for another round.
            await self.ctx.warn_once(vpod, reason, message)
        await self.patcher.delete(hpod, grace=0)

    async def _delete_virtual(self, vpod: Obj) -> None:
        await self.ctx.virtual.delete_exact("Pod", vpod, grace=0)

    async def _update_host(self, vpod: Obj, hpod: Obj) -> Obj:
        """Brings the host pod's mutable parts to the virtual pod's; returns the host pod as it is
        now (the response of the last write: its generation counts the writes just made)."""
        # Only metadata, images, activeDeadlineSeconds and (through `resize`) resources of a
        # running pod may change: the whole translation (deep copies of the spec) is made only for
        # new ephemeral containers, not on every status change.
        desired = self._host_metadata(vpod)
        patch: Obj = {}
        if not (
            desired["labels"] == hpod["metadata"].get("labels")
            and all(
                hpod["metadata"].get("annotations", {}).get(k) == v for k, v in desired["annotations"].items()
            )
        ):
            # A label the virtual pod lost goes from the copy too (a ReplicaSet releasing it).
            gone = dict.fromkeys(set(hpod["metadata"].get("labels") or {}) - set(desired["labels"]))
            patch["metadata"] = {
                "labels": {**gone, **desired["labels"]},
                "annotations": desired["annotations"],
            }
        spec: Obj = {}
        images = {c["name"]: c["image"] for c in vpod["spec"].get("containers", [])}
        if any(images.get(c["name"], c["image"]) != c["image"] for c in hpod["spec"].get("containers", [])):
            spec["containers"] = [{"name": n, "image": i} for n, i in images.items()]
        # Set or shortened on a running pod (the virtual API server allows nothing else); the
        # host's kubelet then ends the pod, and its status comes back.
        deadline = vpod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and deadline != hpod["spec"].get("activeDeadlineSeconds"):
            spec["activeDeadlineSeconds"] = deadline
        if spec:
            patch["spec"] = spec
        if patch:
            hpod = await self.ctx.host.request(
                "PATCH",
                self.resource.path(self.ctx.host_namespace, hpod["metadata"]["name"]),
                body=patch,
                content_type="application/strategic-merge-patch+json",
            )
        if resize := resize_patch(vpod, hpod):
            # In-place resize: resources change only through the `resize` subresource, where the
            # host's quota and its kubelet decide, as for any pod of the host namespace.
            name = hpod["metadata"]["name"]
            try:
                hpod = await self.ctx.host.request(
                    "PATCH",
                    self.resource.path(self.ctx.host_namespace, name, "resize"),
                    body=resize,
                    content_type="application/json-patch+json",
                )
            except ApiError as e:
                # The host's quota, say: retried, and the tenant hears why.
                await self.patcher.tell_refusal(vpod, e, name, "resize")
                raise
        await self._add_ephemeral_containers(vpod, hpod)
        return hpod

    async def _add_ephemeral_containers(self, vpod: Obj, hpod: Obj) -> None:
        """`kubectl debug`: ephemeral containers added to the virtual pod join its host pod, when the
        pod with them still meets the Pod Security level (they cannot be removed once added)."""
        on_host = {c["name"] for c in hpod["spec"].get("ephemeralContainers") or []}
        if all(c["name"] in on_host for c in vpod["spec"].get("ephemeralContainers") or []):
            return
        desired = self.translate(vpod)
        new = [c for c in desired["spec"].get("ephemeralContainers") or [] if c["name"] not in on_host]
        if self.security is not None and (problem := await self.security.violation(vpod)):
            await self.ctx.warn_once(vpod, "PodSecurity", problem)
            return
        await self.ctx.host.request(
            "PATCH",
            self.resource.path(self.ctx.host_namespace, hpod["metadata"]["name"], "ephemeralcontainers"),
            body={"spec": {"ephemeralContainers": new}},
            content_type="application/strategic-merge-patch+json",
        )

    async def _sync_status(self, vpod: Obj, hpod: Obj) -> None:
        node = hpod["spec"].get("nodeName")
        meta = vpod["metadata"]
        key = key_of(vpod)
        if node:
            await self.nodes.ensure(node, (hpod.get("status") or {}).get("hostIP", ""))
            host_uid = hpod["metadata"]["uid"]
            ran = {ANNOTATION_HOST_UID: host_uid}
            if vpod["spec"].get("nodeName"):
                self._bound.pop(key, None)
                if mappings.annotations_of(vpod).get(ANNOTATION_HOST_UID) != host_uid:
                    # Bound before it reached the host (its node named at create): one patch records it.
                    vpod = await self.ctx.virtual.request(
                        "PATCH",
                        self.resource.path(meta["namespace"], meta["name"]),
                        body={"metadata": {"annotations": ran}},
                        content_type="application/merge-patch+json",
                    )
            elif self._bound.get(key) != meta["uid"]:
                # Not bound yet, unless by this syncer a moment ago (the cache lags its own writes).
                await self.ctx.virtual.request(
                    "POST",
                    self.resource.path(meta["namespace"], meta["name"], "binding"),
                    body={
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {
                            "name": meta["name"],
                            "namespace": meta["namespace"],
                            "uid": meta["uid"],
                            "annotations": ran,  # the binding copies them onto the pod
                        },
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                    },
                )
                self._bound[key] = meta["uid"]
        status = virtual_status(hpod.get("status") or {}, vpod, hpod)
        if not status or vpod.get("status") == status or self._wrote_already(vpod, status):
            return
        # A merge patch of the status alone, at no resourceVersion: the host's status is the truth
        # whatever the virtual pod became meanwhile, so a cache behind the binding just written is no
        # conflict. (Not a PUT of pods/status without resourceVersion: for pods that also writes the
        # metadata sent, and the cache's may be older than the binding's annotations.)
        # Every field the host's status lacks is removed, those the cache may not show yet too.
        gone = {*POD_STATUS_FIELDS, *(vpod.get("status") or {})} - status.keys()
        patch = {**dict.fromkeys(gone), **status}
        written = await self.ctx.virtual.patch(
            "Pod", meta["name"], {"status": patch}, meta["namespace"], "status"
        )
        self._status_written[key] = (meta["uid"], _revision(written), status)

    def _wrote_already(self, vpod: Obj, status: Obj) -> bool:
        """Whether this syncer wrote this status and the cache just has not seen that write yet."""
        wrote = self._status_written.get(key_of(vpod))
        if wrote is None:
            return False
        uid, revision, written = wrote
        if uid != vpod["metadata"]["uid"] or _revision(vpod) >= revision:
            del self._status_written[key_of(vpod)]  # the cache caught up (or it is another pod now)
            return False
        return written == status
