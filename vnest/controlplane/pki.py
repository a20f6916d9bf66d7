"""The virtual cluster's PKI, kept in the host Secret ``NAME-certs``.

Generated once, then read back on every start, so a restarted control plane
keeps its identity (tokens, kubeconfigs and the CA stay valid). When the
serving names grow (a new extraSAN, a new host Service IP), only the API
server's certificate is issued again, by the same CA.

Three CAs besides the front proxy's, so that no identity a tenant can obtain
opens what it must not:
- `ca`: the cluster's, which the controller manager signs CSRs with; the
  tenant (admin inside) can have it sign any client name;
- `kubelet-client-ca`: issues only the API server's kubelet-client
  certificate, the one identity the syncer's kubelet API accepts, so a
  certificate from a tenant's CSR never reaches it;
- `etcd-ca`: the embedded etcd's serving and client certificates; etcd
  accepts only clients it issued (the API server), never plain TCP.
A PKI made by an older vnest gets what it lacks on the next start (`complete`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from vnest import certs

# Client identities, as kubeadm names them; system:masters where RBAC must not stand in the way.
CLIENTS = {
    "admin": ("kubernetes-admin", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "syncer": ("vnest:syncer", ("system:masters",)),
}
KUBELET_CLIENT = ("kube-apiserver-kubelet-client", ("system:masters",))


@dataclass(frozen=True)
class ServingNames:
    dns: tuple[str, ...]
    ips: tuple[str, ...]


def serving_names(
    name: str,
    namespace: str,
    cluster_domain: str,
    host_service_ip: str | None,
    kubernetes_service_ip: str,
    extra_sans: list[str],
) -> ServingNames:
    dns = [
        "localhost",
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{cluster_domain}",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{cluster_domain}",
    ]
    ips = ["127.0.0.1", kubernetes_service_ip]
    if host_service_ip and host_service_ip != "None":
        ips.append(host_service_ip)
    for san in extra_sans:
        try:
            ipaddress.ip_address(san)
            ips.append(san)
        except ValueError:
            dns.append(san)
    return ServingNames(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))


def generate(names: ServingNames) -> dict[str, bytes]:
    """Every file of a fresh PKI, by file name."""
    files: dict[str, bytes] = {}
    ca = certs.new_ca("vnest-ca")
    front_proxy_ca = certs.new_ca("vnest-front-proxy-ca")
    _put(files, "ca", ca)
    _put(files, "front-proxy-ca", front_proxy_ca)
    _put(files, "front-proxy-client", certs.issue(front_proxy_ca, "front-proxy-client", client=True))
    for stem, (cn, orgs) in CLIENTS.items():
        _put(files, stem, certs.issue(ca, cn, organizations=orgs, client=True))
    sa = certs.new_key()
    files["sa.key"] = certs.key_pem(sa)
    files["sa.pub"] = certs.public_key_pem(sa)
    files.update(issue_apiserver(files, names))
    complete(files)
    return files


def complete(files: dict[str, bytes]) -> bool:
    """Adds what a PKI lacks (one made by an older vnest); True when anything was added."""
    added = False
    if "kubelet-client-ca.crt" not in files:
        # Before, the cluster CA issued it, and the kubelet API trusted any client of that CA.
        kubelet_ca = certs.new_ca("vnest-kubelet-client-ca")
        _put(files, "kubelet-client-ca", kubelet_ca)
        cn, orgs = KUBELET_CLIENT
        _put(files, "apiserver-kubelet-client", certs.issue(kubelet_ca, cn, organizations=orgs, client=True))
        added = True
    if "etcd-ca.crt" not in files:
        etcd_ca = certs.new_ca("vnest-etcd-ca")
        _put(files, "etcd-ca", etcd_ca)
        serving = certs.issue(
            etcd_ca, "etcd", dns_names=("localhost",), ips=("127.0.0.1",), server=True, client=True
        )
        _put(files, "etcd-server", serving)
        _put(files, "apiserver-etcd-client", certs.issue(etcd_ca, "kube-apiserver-etcd-client", client=True))
        added = True
    return added


def issue_apiserver(files: dict[str, bytes], names: ServingNames) -> dict[str, bytes]:
    ca = _read(files, "ca")
    cert = certs.issue(ca, "kube-apiserver", dns_names=names.dns, ips=names.ips, server=True)
    return {"apiserver.crt": cert.cert_pem, "apiserver.key": cert.key_pem}


def covers(files: dict[str, bytes], names: ServingNames) -> bool:
    """Whether the API server certificate already serves every name."""
    cert = x509.load_pem_x509_certificate(files["apiserver.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    return set(names.dns) <= have_dns and set(names.ips) <= have_ips


def write(files: dict[str, bytes], folder: Path) -> None:
    for fname, data in files.items():
        certs.write_private(folder / fname, data)


def _put(files: dict[str, bytes], stem: str, ck: certs.CertKey) -> None:
    files[f"{stem}.crt"] = ck.cert_pem
    files[f"{stem}.key"] = ck.key_pem


def _read(files: dict[str, bytes], stem: str) -> certs.CertKey:
    return certs.CertKey.from_pem(files[f"{stem}.crt"], files[f"{stem}.key"])
