import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vnest import certs
from vnest.controlplane import pki


def test_leaf_is_signed_by_its_ca_and_carries_names(tmp_path):
    ca = certs.new_ca("test-ca")
    leaf = certs.issue(
        ca,
        "kube-apiserver",
        dns_names=("localhost", "kubernetes.default.svc"),
        ips=("127.0.0.1",),
        server=True,
    )
    leaf.cert.verify_directly_issued_by(ca.cert)
    sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "kubernetes.default.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_cert_has_groups_as_organizations_and_round_trips(tmp_path):
    ca = certs.new_ca("test-ca")
    client = certs.issue(ca, "kubernetes-admin", organizations=("system:masters",), client=True)
    client.write(tmp_path, "admin")
    again = certs.CertKey.read(tmp_path, "admin")
    assert again.cert == client.cert
    assert isinstance(again.key, ec.EllipticCurvePrivateKey)
    subject = again.cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600


def test_the_kubelet_client_and_etcd_have_cas_of_their_own():
    names = pki.ServingNames(("localhost",), ("127.0.0.1",))
    files = pki.generate(names)

    def issuer(stem: str) -> x509.Name:
        return x509.load_pem_x509_certificate(files[f"{stem}.crt"]).issuer

    def subject(stem: str) -> x509.Name:
        return x509.load_pem_x509_certificate(files[f"{stem}.crt"]).subject

    # The cluster CA signs tenants' CSRs (the controller manager holds its key): it must not issue
    # the one identity the kubelet API accepts, nor anything etcd trusts.
    assert issuer("apiserver-kubelet-client") == subject("kubelet-client-ca") != subject("ca")
    assert issuer("apiserver-etcd-client") == issuer("etcd-server") == subject("etcd-ca") != subject("ca")
    assert pki.complete(files) is False  # nothing missing

    # A PKI from an older vnest: the kubelet client came from the cluster CA, and there was no etcd CA.
    old = {
        k: v for k, v in files.items() if not k.startswith(("kubelet-client-ca", "etcd-", "apiserver-etcd"))
    }
    before = old["apiserver-kubelet-client.crt"]
    assert pki.complete(old) is True
    assert old["apiserver-kubelet-client.crt"] != before
    assert {"kubelet-client-ca.crt", "etcd-ca.crt", "etcd-server.crt", "apiserver-etcd-client.key"} <= set(
        old
    )
    assert old["ca.crt"] == files["ca.crt"]  # the cluster's identity is kept
