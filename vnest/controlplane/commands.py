"""Command lines of the Kubernetes control-plane servers, written once for both control planes.

The virtual cluster's (vnest.controlplane.run) and the embedded local host's (vnest.host.local)
run the same servers with the same certificate file names in their PKI folder; each caller
appends the flags only it needs, and anything a user adds goes last, where a repeated flag wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def kube_apiserver(
    binary: Path,
    pki_dir: Path,
    *,
    bind_address: str,
    advertise_address: str,
    secure_port: int,
    etcd_servers: str,
    service_cidr: str,
    cluster_domain: str,
    authorization_mode: str,
    reconcile_kubernetes_endpoints: bool,
) -> list[str]:
    p = pki_dir
    argv = [
        str(binary),
        f"--bind-address={bind_address}",
        f"--advertise-address={advertise_address}",
        f"--secure-port={secure_port}",
        f"--etcd-servers={etcd_servers}",
        f"--service-cluster-ip-range={service_cidr}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-account-issuer=https://kubernetes.default.svc.{cluster_domain}",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        # A virtual node's kubelet is the syncer's kubelet API, at the InternalDNS address the
        # syncer writes (its InternalIP is the host node's: vnest.syncer.resources.nodes); a local
        # host's real node has none, and its own kubelet at its InternalIP.
        "--kubelet-preferred-address-types=InternalDNS,InternalIP",
        f"--authorization-mode={authorization_mode}",
        "--allow-privileged=true",
        "--profiling=false",
        # The aggregation layer: aggregated API servers (KubeVirt's virt-api, vnest's own KubeVirt
        # subresources) trust the caller's identity in X-Remote-* only from this client certificate.
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
    ]
    if not reconcile_kubernetes_endpoints:
        argv.append("--endpoint-reconciler-type=none")
    return argv


def kube_controller_manager(
    binary: Path, pki_dir: Path, *, kubeconfig: Path, secure_port: int, service_cidr: str
) -> list[str]:
    return [
        *_client_component(binary, kubeconfig, secure_port),
        f"--root-ca-file={pki_dir / 'ca.crt'}",
        f"--service-account-private-key-file={pki_dir / 'sa.key'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={service_cidr}",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def kube_scheduler(binary: Path, *, kubeconfig: Path, secure_port: int) -> list[str]:
    return _client_component(binary, kubeconfig, secure_port)


def _client_component(binary: Path, kubeconfig: Path, secure_port: int) -> list[str]:
    """A server that reaches the API server with one kubeconfig and serves only health, on loopback."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={secure_port}",
        "--leader-elect=false",  # one replica of each
        "--profiling=false",
    ]


def go_env(gogc: int, memory_limit_mib: int | None, environ: Mapping[str, str]) -> dict[str, str]:
    """GOGC and GOMEMLIMIT for a Go server, except where ``environ`` (the caller's) sets them already.

    GOGC is how much the heap may grow over what the last collection kept before the next one
    (100 by default: an idle server holds twice its live heap); GOMEMLIMIT makes the collector run
    earlier as the process nears it, and is soft: above it, collections run more often, they do
    not fail allocations. A variable set in the environment wins, so each can be measured.
    """
    env = {"GOGC": str(gogc)}
    if memory_limit_mib is not None:
        env["GOMEMLIMIT"] = f"{memory_limit_mib}MiB"
    return {k: v for k, v in env.items() if k not in environ}
