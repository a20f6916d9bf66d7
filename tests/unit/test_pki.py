import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vnest import pki


def test_leaf_is_signed_by_its_ca_and_carries_names(tmp_path):
    ca = pki.new_ca("test-ca")
    leaf = pki.issue(
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
    ca = pki.new_ca("test-ca")
    client = pki.issue(ca, "kubernetes-admin", organizations=("system:masters",), client=True)
    client.write(tmp_path, "admin")
    again = pki.CertKey.read(tmp_path, "admin")
    assert again.cert == client.cert
    assert isinstance(again.key, ec.EllipticCurvePrivateKey)
    subject = again.cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
