"""networking.dns.mode=coredns: the CoreDNS objects and Corefile vnest puts in the virtual cluster."""

from __future__ import annotations

import pytest

from vnest import naming
from vnest.binaries.build import pins
from vnest.config import VClusterConfig, load_config
from vnest.dns import coredns
from vnest.errors import UsageError


def _config(*sets: str) -> VClusterConfig:
    return load_config([], list(sets))


def _by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


def test_the_image_follows_the_pinned_coredns_version():
    assert pins()["coredns"]["version"] == coredns.COREDNS_VERSION
    deployment = _by_kind(coredns.manifests(_config("networking.dns.mode=coredns"), None))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"registry.k8s.io/coredns/coredns:{coredns.COREDNS_VERSION}"
    )


def test_without_fallback_names_outside_go_to_the_nodes_resolvers():
    config = _config("networking.dns.mode=coredns")
    objs = _by_kind(coredns.manifests(config, "10.96.0.10"))
    corefile = objs["ConfigMap"]["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    # Only reverse lookups fall through: a missing cluster name is NXDOMAIN.
    assert "fallthrough in-addr.arpa ip6.arpa\n" in corefile
    assert "forward . /etc/resolv.conf" in corefile
    assert objs["Deployment"]["spec"]["template"]["spec"]["dnsPolicy"] == "Default"


def test_with_fallback_the_host_dns_answers_what_the_virtual_cluster_lacks():
    config = _config(
        "networking.dns.mode=coredns",
        "networking.advanced.fallbackHostCluster=true",
        "networking.advanced.clusterDomain=tenant.local",
    )
    corefile = _by_kind(coredns.manifests(config, "10.96.0.10"))["ConfigMap"]["data"]["Corefile"]
    assert "fallthrough tenant.local in-addr.arpa ip6.arpa" in corefile
    assert "forward . 10.96.0.10" in corefile
    # Fallback with no host DNS known: the node's resolvers, never a made-up address.
    corefile = _by_kind(coredns.manifests(config, None))["ConfigMap"]["data"]["Corefile"]
    assert "forward . /etc/resolv.conf" in corefile


def test_service_deployment_and_rbac_fit_together():
    config = _config("networking.dns.mode=coredns", "networking.dns.coredns.replicas=2")
    objs = _by_kind(coredns.manifests(config, None))
    deployment, service = objs["Deployment"], objs["Service"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"]
        == service["spec"]["selector"]
        == pod["metadata"]["labels"]
    )
    container = pod["spec"]["containers"][0]
    served = {(p["protocol"], p["containerPort"]) for p in container["ports"]}
    assert {(p["protocol"], p["targetPort"]) for p in service["spec"]["ports"]} <= served
    assert ("UDP", 53) in {(p["protocol"], p["port"]) for p in service["spec"]["ports"]}
    assert f":{coredns.PORT} {{" in objs["ConfigMap"]["data"]["Corefile"]
    assert pod["spec"]["serviceAccountName"] == objs["ServiceAccount"]["metadata"]["name"]
    binding = objs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objs["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
    # The mode label lets a switch back to embedded remove exactly these; the Service must not
    # carry the embedded server's marker, or its host copy would select the control-plane pod.
    for obj in objs.values():
        assert obj["metadata"]["labels"][naming.LABEL_DNS_SERVICE] == "coredns"


def test_a_custom_image_is_used_as_given():
    config = _config("networking.dns.mode=coredns", "networking.dns.coredns.image=mirror.example/coredns:v9")
    deployment = _by_kind(coredns.manifests(config, None))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "mirror.example/coredns:v9"


def test_the_corefile_can_be_run_outside_a_pod():
    text = coredns.corefile(port=15353, bind="127.0.0.1", kubeconfig="/tmp/k", health_port=1, ready_port=2)
    assert text.startswith(".:15353 {\n    bind 127.0.0.1\n")
    assert "        kubeconfig /tmp/k\n" in text
    assert "health :1 {" in text and "ready :2" in text


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("networking.dns.mode=kube-dns", ["networking.dns.mode", "embedded", "coredns"]),
        ("networking.dns.coredns.replicas=0", ["networking.dns.coredns.replicas"]),
        ("controlPlane.coredns.enabled=true", ["controlPlane.coredns", "networking.dns.mode"]),
    ],
)
def test_bad_dns_settings_name_the_field(setting, words):
    with pytest.raises(UsageError) as err:
        load_config([], [setting])
    for word in words:
        assert word in str(err.value)
