"""`networking.dns.mode: coredns`: CoreDNS as a Deployment inside the virtual cluster.

The objects are the ones vCluster (and kubeadm) deploy: ServiceAccount, ClusterRole and
binding `system:coredns`, ConfigMap `coredns` with the Corefile, Deployment `coredns` and
Service `kube-dns`, all in the virtual `kube-system`. They are ordinary virtual objects: the
syncer copies the CoreDNS pod and the kube-dns Service to the host like any other, and
synced pods' ClusterFirst DNS points at kube-dns's IP, which is the same on both sides.

CoreDNS reads the *virtual* API (its pod's in-cluster config: the syncer points
KUBERNETES_SERVICE_HOST at the virtual API server), so it answers with the virtual
cluster's services. Names it lacks go to the host cluster's DNS when
`networking.advanced.fallbackHostCluster` is on, otherwise to the node's resolvers
(`dnsPolicy: Default`).

Every object carries `vnest.io/dns: coredns`, so switching back to the embedded server
removes exactly these.
"""

from __future__ import annotations

import contextlib

from vnest import log, naming
from vnest.config import VClusterConfig
from vnest.config.models import CoreDns
from vnest.kube.client import ApiError, KubeClient, Obj

_log = log.get("dns.coredns")

# Must equal build/versions.toml [coredns].version (a unit test checks): the syncer runs in
# the vnest image, which carries the package but not the build pins.
COREDNS_VERSION = "v1.15.0"
DEFAULT_IMAGE = f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}"
NAMESPACE = "kube-system"
# CoreDNS listens above 1024 so that it needs no NET_BIND_SERVICE (vCluster does the same);
# the kube-dns Service maps port 53 to it.
PORT = naming.DNS_POD_PORT
METRICS_PORT = 9153
HEALTH_PORT = 8080
READY_PORT = 8181
MODE_LABEL_VALUE = "coredns"
APP_LABELS = {"k8s-app": "kube-dns"}

# Deleted in this order when the mode switches back to embedded (dependents first).
KINDS = ("Service", "Deployment", "ConfigMap", "ClusterRoleBinding", "ClusterRole", "ServiceAccount")


def corefile(
    cluster_domain: str = "cluster.local",
    forward: str = "/etc/resolv.conf",
    fallback_in_domain: bool = False,
    *,
    port: int = PORT,
    bind: str | None = None,
    kubeconfig: str | None = None,
    health_port: int = HEALTH_PORT,
    ready_port: int = READY_PORT,
    metrics_port: int = METRICS_PORT,
) -> str:
    """The Corefile. ``fallback_in_domain``: names of the cluster domain this cluster lacks go
    on to ``forward`` too (the host cluster's DNS, so the host's own services resolve).

    ``bind`` and ``kubeconfig`` exist for running the same configuration outside a pod (the
    e2e tests run the pinned CoreDNS binary on this machine against the virtual API)."""
    zones = f"{cluster_domain} in-addr.arpa ip6.arpa"
    fallthrough = zones if fallback_in_domain else "in-addr.arpa ip6.arpa"
    kubernetes = [f"    kubernetes {zones} {{", "        pods insecure", f"        fallthrough {fallthrough}"]
    if kubeconfig:
        kubernetes.append(f"        kubeconfig {kubeconfig}")
    kubernetes.append("        ttl 5")
    kubernetes.append("    }")
    lines = [
        f".:{port} {{",
        *([f"    bind {bind}"] if bind else []),
        "    errors",
        f"    health :{health_port} {{",
        "        lameduck 5s",
        "    }",
        f"    ready :{ready_port}",
        *kubernetes,
        f"    prometheus :{metrics_port}",
        f"    forward . {forward}",
        # Short: a tenant expects a Service it just created to resolve right away.
        "    cache 5",
        "    loop",
        "    reload",
        "    loadbalance",
        "}",
    ]
    return "\n".join(lines) + "\n"


def manifests(config: VClusterConfig, host_dns: str | None) -> list[Obj]:
    """The virtual objects of CoreDNS mode. ``host_dns``: the host cluster's DNS (ip[:port])."""
    advanced = config.networking.advanced
    settings = config.networking.dns.coredns
    # CoreDNS takes ip, ip:port and [ipv6]:port as the syncer is given them.
    fallback = host_dns if advanced.fallback_host_cluster and host_dns else None
    labels = {**APP_LABELS, "kubernetes.io/name": "CoreDNS", naming.LABEL_DNS_SERVICE: MODE_LABEL_VALUE}
    meta = {"namespace": NAMESPACE, "labels": labels}
    cluster_meta = {"labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", **cluster_meta},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", **cluster_meta},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {
                "Corefile": corefile(advanced.cluster_domain, fallback or "/etc/resolv.conf", bool(fallback))
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": settings.replicas,
                "selector": {"matchLabels": dict(APP_LABELS)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": dict(APP_LABELS)}, "spec": _pod_spec(settings)},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "selector": dict(APP_LABELS),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": PORT},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": PORT},
                    {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP", "targetPort": METRICS_PORT},
                ],
            },
        },
    ]


def _pod_spec(settings: CoreDns) -> Obj:
    return {
        "serviceAccountName": "coredns",
        # The node's resolvers: CoreDNS must not ask itself (ClusterFirst would).
        "dnsPolicy": "Default",
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "containers": [
            {
                "name": "coredns",
                "image": settings.image or DEFAULT_IMAGE,
                "args": ["-conf", "/etc/coredns/Corefile"],
                "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "20m", "memory": "64Mi"}},
                "ports": [
                    {"name": "dns", "containerPort": PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "runAsUser": 1001,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/health", "port": HEALTH_PORT},
                    "initialDelaySeconds": 60,
                    "timeoutSeconds": 5,
                    "failureThreshold": 5,
                },
                "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT}},
                "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
            }
        ],
        "volumes": [
            {
                "name": "config-volume",
                "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]},
            }
        ],
    }


async def reconcile(virtual: KubeClient, config: VClusterConfig, host_dns: str | None) -> None:
    """Puts the virtual cluster's DNS objects in the state the mode asks for.

    coredns: applies the CoreDNS objects (server-side apply, so a tenant's later edits to
    fields vnest does not set survive), replacing an embedded-mode kube-dns Service;
    embedded: removes CoreDNS objects vnest made, if the mode was coredns before."""
    coredns = config.networking.dns.mode == "coredns"
    selector = f"{naming.LABEL_DNS_SERVICE}={'true' if coredns else MODE_LABEL_VALUE}"
    for kind in KINDS:
        namespaced = kind not in ("ClusterRole", "ClusterRoleBinding")
        for obj in await virtual.list(kind, NAMESPACE if namespaced else None, label_selector=selector):
            _log.info("removing a DNS object of the other mode", kind=kind, name=obj["metadata"]["name"])
            with contextlib.suppress(ApiError):
                await virtual.delete(kind, obj["metadata"]["name"], obj["metadata"].get("namespace"))
    if not coredns:
        return
    for obj in manifests(config, host_dns):
        await virtual.apply(obj, namespace=obj["metadata"].get("namespace"))
