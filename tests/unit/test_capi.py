"""vnest as a Cluster API provider (vnest.integrations.capi): the pure parts, and the reconcile
logic over the in-memory API. The clusterctl flow against real servers is tests/e2e/test_capi.py."""

from __future__ import annotations

import asyncio
import base64
import datetime
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.unit.kubeapi import FakeApiServer
from vnest import lifecycle, naming
from vnest.errors import UsageError
from vnest.integrations.capi import api, certissuer, local, provider, repository
from vnest.kube.client import RESOURCES, Obj

pytestmark = pytest.mark.unit

NS = "tenant1"


def _serve(server: FakeApiServer) -> None:
    api.register_kinds()
    certissuer.register_kinds()
    for kind in ("Certificate", "Issuer", "ClusterIssuer", api.KIND, "Cluster", "APIService"):
        server.serve(kind, RESOURCES[kind], status=True)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        server.serve(kind, RESOURCES[kind])


async def _until(what: str, check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return found


def _cond(obj: Obj, type_: str) -> dict[str, Any]:
    return dict(api.condition(obj, type_) or {})


# ---- certificates --------------------------------------------------------------------------


def _sans(pem: bytes) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sans.get_values_for_type(x509.DNSName), [str(i) for i in sans.get_values_for_type(x509.IPAddress)]


def test_a_self_signed_certificate_names_what_the_spec_asks_and_is_its_own_ca():
    issued = certissuer.issue({"dnsNames": ["svc.ns.svc"], "ipAddresses": ["127.0.0.1"]}, None)
    assert _sans(issued.cert_pem) == (["svc.ns.svc"], ["127.0.0.1"])
    assert issued.ca_pem == issued.cert_pem
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    cert.verify_directly_issued_by(cert)
    assert issued.not_after - issued.not_before == certissuer.DEFAULT_DURATION


def test_a_dns_name_longer_than_a_common_name_may_be_is_a_critical_san_under_an_empty_subject():
    # Cluster API's kubeadm bootstrap webhook: 72 characters, and a common name may hold 64.
    name = "capi-kubeadm-bootstrap-webhook-service.capi-kubeadm-bootstrap-system.svc"
    issued = certissuer.issue({"dnsNames": [name]}, None)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert _sans(issued.cert_pem) == ([name], [])
    cert.verify_directly_issued_by(cert)


def test_a_ca_issuer_signs_with_its_key():
    ca = certissuer.issue({"isCA": True, "commonName": "ca", "privateKey": {"algorithm": "ECDSA"}}, None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    from cryptography.hazmat.primitives import serialization

    signer = (ca_cert, serialization.load_pem_private_key(ca.key_pem, None))
    leaf = certissuer.issue({"dnsNames": ["a.example"], "duration": "1h"}, signer)
    x509.load_pem_x509_certificate(leaf.cert_pem).verify_directly_issued_by(ca_cert)
    assert leaf.ca_pem == ca.cert_pem
    assert leaf.not_after - leaf.not_before == datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "seconds"), [("2160h", 2160 * 3600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400)]
)
def test_durations_read_as_go_writes_them(text, seconds):
    assert certissuer.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["90d", "", "h", "1h 30m"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError, match="is not a duration"):
        certissuer.parse_duration(text)


def test_renewal_comes_at_two_thirds_or_renew_before_the_end():
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    end = start + datetime.timedelta(days=90)
    assert certissuer.renewal_time({}, start, end) == start + datetime.timedelta(days=60)
    assert certissuer.renewal_time({"renewBefore": "240h"}, start, end) == end - datetime.timedelta(days=10)


def test_the_spec_digest_follows_what_decides_the_certificate():
    spec = {"dnsNames": ["a"], "secretName": "s", "issuerRef": {"name": "i"}}
    assert certissuer.spec_digest(spec) == certissuer.spec_digest({**spec, "secretTemplate": {"labels": {}}})
    assert certissuer.spec_digest(spec) != certissuer.spec_digest({**spec, "ipAddresses": ["127.0.0.1"]})


def _webhooks(name: str, inject: str) -> Obj:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "annotations": {certissuer.INJECT_FROM: inject}},
        "webhooks": [
            {"name": "a.example", "clientConfig": {"service": {"name": "svc", "namespace": "capi-system"}}},
            {"name": "b.example", "clientConfig": {"service": {"name": "svc", "namespace": "capi-system"}}},
        ],
    }


def _crd(name: str, inject: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, "annotations": {certissuer.INJECT_FROM: inject}},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Thing", "plural": "things"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True}],
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {"name": "svc", "namespace": "capi-system", "path": "/convert"}
                    },
                    "conversionReviewVersions": ["v1"],
                },
            },
        },
    }


def _seed(server: FakeApiServer, kind: str, namespace: str, name: str, spec: Obj) -> None:
    server.seed({"kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def test_certificates_are_issued_and_their_ca_injected_then_issued_again_when_the_spec_changes():
    server = FakeApiServer(namespaces=["default", "capi-system"])
    _serve(server)
    _seed(server, "Issuer", "capi-system", "self", {"selfSigned": {}})
    spec = {"dnsNames": ["svc.capi-system.svc"], "secretName": "serving-tls", "issuerRef": {"name": "self"}}
    _seed(server, "Certificate", "capi-system", "serving", spec)
    server.seed(_webhooks("capi-validating", "capi-system/serving"))
    server.seed(_crd("things.example.com", "capi-system/serving"))
    server.seed(_webhooks("unrelated", "elsewhere/other"))

    def bundle(kind: str, name: str) -> str | None:
        obj = server.get(kind, name) or {}
        if kind == "CustomResourceDefinition":
            return obj["spec"]["conversion"]["webhook"]["clientConfig"].get("caBundle")
        found = {w["clientConfig"].get("caBundle") for w in obj["webhooks"]}
        return found.pop() if len(found) == 1 else None

    async def run() -> None:
        async with server.client() as client:
            issuer = certissuer.CertificateIssuer(client)
            task = asyncio.create_task(issuer.start())
            try:
                secret = await _until(
                    "the Secret", lambda: server.get("Secret", "serving-tls", "capi-system")
                )
                assert secret["type"] == "kubernetes.io/tls"
                ca = secret["data"]["ca.crt"]
                assert _sans(base64.b64decode(secret["data"]["tls.crt"])) == (["svc.capi-system.svc"], [])
                await _until(
                    "the webhooks' CA",
                    lambda: bundle("ValidatingWebhookConfiguration", "capi-validating") == ca,
                )
                await _until(
                    "the CRD's CA", lambda: bundle("CustomResourceDefinition", "things.example.com") == ca
                )
                cert = await _until(
                    "Ready",
                    lambda: (
                        _cond(server.get("Certificate", "serving", "capi-system") or {}, "Ready").get(
                            "status"
                        )
                        == "True"
                    ),
                )
                assert cert
                issuer_obj = server.get("Issuer", "self", "capi-system")
                assert api.condition(issuer_obj or {}, "Ready")["status"] == "True"  # type: ignore[index]
                assert bundle("ValidatingWebhookConfiguration", "unrelated") is None

                await client.patch(
                    "Certificate", "serving", {"spec": {"ipAddresses": ["127.0.0.1"]}}, "capi-system"
                )
                renewed = await _until(
                    "a new certificate",
                    lambda: (
                        (s := server.get("Secret", "serving-tls", "capi-system"))
                        and s["data"]["ca.crt"] != ca
                        and s
                    ),
                )
                assert _sans(base64.b64decode(renewed["data"]["tls.crt"])) == (
                    ["svc.capi-system.svc"],
                    ["127.0.0.1"],
                )
                new_ca = renewed["data"]["ca.crt"]
                await _until(
                    "the new CA injected",
                    lambda: bundle("ValidatingWebhookConfiguration", "capi-validating") == new_ca,
                )
            finally:
                task.cancel()

    asyncio.run(run())


def test_an_issuer_vnest_does_not_serve_says_so():
    server = FakeApiServer(namespaces=["default", "apps"])
    _serve(server)
    _seed(server, "Issuer", "apps", "acme", {"acme": {"server": "x"}})
    _seed(
        server,
        "Certificate",
        "apps",
        "web",
        {"dnsNames": ["web"], "secretName": "web-tls", "issuerRef": {"name": "acme"}},
    )

    async def run() -> None:
        async with server.client() as client:
            task = asyncio.create_task(certissuer.CertificateIssuer(client).start())
            try:
                await _until(
                    "the refusal",
                    lambda: (
                        _cond(server.get("Certificate", "web", "apps") or {}, "Ready").get("reason")
                        == "Failed"
                    ),
                )
            finally:
                task.cancel()
        assert server.get("Secret", "web-tls", "apps") is None
        assert api.condition(server.get("Issuer", "acme", "apps") or {}, "Ready")["reason"] == "Unsupported"  # type: ignore[index]

    asyncio.run(run())


# ---- the provider --------------------------------------------------------------------------


def _vnest_cluster(values: str = "", version: str = "", owned: bool = True, **meta: Any) -> Obj:
    metadata: dict[str, Any] = {"name": "tenant1", "namespace": NS, **meta}
    if owned:
        metadata["ownerReferences"] = [
            {
                "apiVersion": api.CLUSTER_API_VERSION,
                "kind": "Cluster",
                "name": "tenant1",
                "uid": "cluster-uid",
            }
        ]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": metadata,
        "spec": {"values": values, "version": version},
    }


def _cluster(paused: bool = False) -> Obj:
    return {
        "apiVersion": api.CLUSTER_API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": "tenant1", "namespace": NS, "uid": "cluster-uid"},
        "spec": {
            "paused": paused,
            "infrastructureRef": {"apiGroup": api.GROUP, "kind": api.KIND, "name": "tenant1"},
            "controlPlaneRef": {"apiGroup": api.GROUP, "kind": api.KIND, "name": "tenant1"},
        },
    }


def test_config_values_are_checked_as_vnest_create_checks_a_file():
    values = provider.config_values(_vnest_cluster("sync:\n  toHost:\n    ingresses:\n      enabled: true\n"))
    assert values["sync"]["toHost"]["ingresses"]["enabled"] is True
    with pytest.raises(
        UsageError, match=r"unknown key 'sync.toHost.podz' in spec.values of VNestCluster tenant1/tenant1"
    ):
        provider.config_values(_vnest_cluster("sync:\n  toHost:\n    podz: {}\n"))
    with pytest.raises(UsageError, match=r"spec\.values of VNestCluster tenant1/tenant1 is not valid YAML"):
        provider.config_values(_vnest_cluster("sync: ["))
    pinned = provider.config_values(_vnest_cluster(version="v1.36.3"))
    assert pinned["controlPlane"]["distro"]["k8s"]["version"] == "v1.36.3"
    assert provider.config_digest(pinned) != provider.config_digest(provider.config_values(_vnest_cluster()))


def test_a_users_endpoint_is_a_name_of_the_api_servers_certificate_the_providers_own_are_already():
    def sans(host: str) -> list[str]:
        obj = _vnest_cluster("controlPlane:\n  proxy:\n    extraSANs: [vc.example]\n")
        obj["spec"]["controlPlaneEndpoint"] = {"host": host, "port": 443}
        return provider.config_values(obj)["controlPlane"]["proxy"]["extraSANs"]

    assert sans("lb.example.com") == ["vc.example", "lb.example.com"]
    assert sans("10.0.0.7") == ["vc.example", "10.0.0.7"]
    # What the provider fills in itself changes nothing, so it is no config change (no upgrade).
    assert sans("tenant1.tenant1.svc") == sans("127.0.0.1") == sans("") == ["vc.example"]


def _reconciled(server: FakeApiServer, until: Callable[[Obj], bool]) -> Obj:
    async def run() -> Obj:
        async with server.client() as client:
            controller = provider.VNestClusterController(client, "host")
            task = asyncio.create_task(controller.start())
            try:
                return await _until(
                    "the VNestCluster's status",
                    lambda: (o := server.get(api.KIND, "tenant1", NS)) and until(o) and o,
                )
            finally:
                task.cancel()

    return asyncio.run(run())


def _host_objects(server: FakeApiServer) -> list[str]:
    return [
        f"{k}/{o['metadata']['name']}"
        for k in ("Secret", "Service", "StatefulSet")
        for o in server.objects(k, NS)
    ]


def _ready_reason(obj: Obj) -> str | None:
    return _cond(obj, api.READY).get("reason")


def test_a_vnest_cluster_no_cluster_owns_waits():
    server = FakeApiServer(namespaces=["default", NS])
    _serve(server)
    server.seed(_vnest_cluster(owned=False))
    obj = _reconciled(server, lambda o: _ready_reason(o) == api.REASON_WAITING_FOR_CLUSTER)
    assert api.condition(obj, api.READY)["status"] == "False"  # type: ignore[index]
    assert not obj["metadata"].get("finalizers")
    assert _host_objects(server) == []


def test_bad_values_are_a_condition_naming_the_key_and_nothing_is_made():
    server = FakeApiServer(namespaces=["default", NS])
    _serve(server)
    server.seed(_cluster())
    server.seed(_vnest_cluster("controlPlane:\n  backingStore:\n    etcd:\n      embeded: {}\n"))
    obj = _reconciled(server, lambda o: _ready_reason(o) == api.REASON_INVALID)
    message = api.condition(obj, api.READY)["message"]  # type: ignore[index]
    assert (
        "controlPlane.backingStore.etcd.embeded" in message
        and "did you mean 'controlPlane.backingStore.etcd.embedded'" in message
    )
    assert obj["metadata"]["finalizers"] == [api.FINALIZER]
    assert (
        api.ANNOTATION_BLOCK_MOVE in obj["metadata"]["annotations"]
    )  # clusterctl move would leave it behind
    assert api.condition(obj, api.PAUSED)["status"] == "False"  # type: ignore[index]
    assert _host_objects(server) == []


def test_a_paused_cluster_is_left_alone():
    server = FakeApiServer(namespaces=["default", NS])
    _serve(server)
    server.seed(_cluster(paused=True))
    server.seed(_vnest_cluster("not: [valid"))
    obj = _reconciled(server, lambda o: _cond(o, api.PAUSED).get("status") == "True")
    assert api.condition(obj, api.READY) is None  # the bad values were not even read
    assert not obj["metadata"].get("finalizers")


# ---- packaging -------------------------------------------------------------------------------


def test_the_crd_follows_the_v1beta2_contract():
    crd = api.crd()
    assert crd["metadata"]["labels"] == {"cluster.x-k8s.io/v1beta2": "v1alpha1"}
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status["initialization"]["properties"]) == {"provisioned", "controlPlaneInitialized"}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(spec["controlPlaneEndpoint"]["properties"]) == {"host", "port"}


def test_the_cluster_template_fills_in_as_clusterctl_does():
    text = repository.cluster_template()
    filled = (
        text.replace("${CLUSTER_NAME}", "tenant1")
        .replace('${KUBERNETES_VERSION:=""}', "v1.36.3")
        .replace("${VNEST_VALUES:={}}", "sync:\\n  toHost:\\n    ingresses:\\n      enabled: true")
        .replace('${VNEST_HOST:=""}', '""')
        .replace("${VNEST_PORT:=0}", "0")
    )
    cluster, vnc = yaml.safe_load_all(filled)
    assert (
        cluster["spec"]["infrastructureRef"]
        == cluster["spec"]["controlPlaneRef"]
        == {
            "apiGroup": api.GROUP,
            "kind": api.KIND,
            "name": "tenant1",
        }
    )
    values = provider.config_values({**vnc, "metadata": {**vnc["metadata"], "namespace": NS}})
    assert values["sync"]["toHost"]["ingresses"]["enabled"] is True
    assert vnc["spec"]["version"] == "v1.36.3" and vnc["spec"]["controlPlaneEndpoint"] == {
        "host": "",
        "port": 0,
    }
    # Every variable unset: the defaults stand for "none".
    defaults = yaml.safe_load_all(
        re.sub(r"\$\{(\w+)(?::=([^}]*\}?))?\}", lambda m: m.group(2) or "tenant1", text)
    )
    vnc = list(defaults)[1]
    assert vnc["spec"] == {"version": "", "values": "{}", "controlPlaneEndpoint": {"host": "", "port": 0}}
    assert provider.config_values(
        {**vnc, "metadata": {**vnc["metadata"], "namespace": NS}}
    ) == provider.config_values(_vnest_cluster())


def test_the_provider_components_let_cluster_apis_core_read_the_kind():
    objs = repository.infrastructure_components()
    kinds = [o["kind"] for o in objs]
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
    aggregated = [
        o for o in objs if o["metadata"].get("labels", {}).get("cluster.x-k8s.io/aggregate-to-manager")
    ]
    assert aggregated and aggregated[0]["rules"][0]["resources"] == [api.PLURAL, f"{api.PLURAL}/status"]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == ["vnest", "capi", "provider"]


# ---- the KWOK host ---------------------------------------------------------------------------


def test_the_core_managers_arguments_keep_clusterctls_but_where_it_runs():
    deployment = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "args": [
                                "--leader-elect",
                                "--diagnostics-address=:8443",
                                "--insecure-diagnostics=false",
                                "--feature-gates=MachinePool=true",
                            ]
                        }
                    ]
                }
            }
        }
    }
    assert local._core_args(deployment) == ["--feature-gates=MachinePool=true"]


def test_the_cores_webhooks_are_pointed_at_the_loopback_and_others_left():
    server = FakeApiServer()
    _serve(server)
    mine = _webhooks("capi-validating", "capi-system/serving")
    mine["metadata"]["labels"] = {"cluster.x-k8s.io/provider": "cluster-api"}
    for w in mine["webhooks"]:
        w["clientConfig"] = {
            "service": {"name": local.WEBHOOK_SERVICE, "namespace": "capi-system", "path": "/validate"},
            "caBundle": "Q0E=",
        }
    server.seed(mine)
    crd = _crd("clusters.cluster.x-k8s.io", "capi-system/serving")
    crd["metadata"]["labels"] = {"cluster.x-k8s.io/provider": "cluster-api"}
    crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["name"] = local.WEBHOOK_SERVICE
    server.seed(crd)
    other = _webhooks("kubeadm", "capi-kubeadm-bootstrap-system/serving")
    other["metadata"]["labels"] = {"cluster.x-k8s.io/provider": "bootstrap-kubeadm"}
    server.seed(other)

    async def run() -> None:
        async with server.client() as client:
            await local._point_webhooks_at(client, "https://127.0.0.1:4321")

    asyncio.run(run())
    pointed = server.get("ValidatingWebhookConfiguration", "capi-validating") or {}
    assert [w["clientConfig"] for w in pointed["webhooks"]] == [
        {"url": "https://127.0.0.1:4321/validate", "caBundle": "Q0E="}
    ] * 2
    converted = server.get("CustomResourceDefinition", "clusters.cluster.x-k8s.io") or {}
    assert converted["spec"]["conversion"]["webhook"]["clientConfig"] == {
        "url": "https://127.0.0.1:4321/convert"
    }
    assert (server.get("ValidatingWebhookConfiguration", "kubeadm") or {})["webhooks"][0]["clientConfig"][
        "service"
    ]

    async def again() -> None:  # `vnest capi local start` once more, on another port
        async with server.client() as client:
            await local._point_webhooks_at(client, "https://127.0.0.1:5555")

    asyncio.run(again())
    pointed = server.get("ValidatingWebhookConfiguration", "capi-validating") or {}
    assert {w["clientConfig"]["url"] for w in pointed["webhooks"]} == {"https://127.0.0.1:5555/validate"}
    converted = server.get("CustomResourceDefinition", "clusters.cluster.x-k8s.io") or {}
    assert (
        converted["spec"]["conversion"]["webhook"]["clientConfig"]["url"] == "https://127.0.0.1:5555/convert"
    )


def _running(version: str) -> dict:
    return {"metadata": {"annotations": {naming.ANNOTATION_KUBERNETES_VERSION: version}}}


@pytest.mark.parametrize("wanted", ["v1.36.3", "v1.36.4", "v1.37.0"])
def test_a_control_plane_upgrades_one_minor_at_a_time(wanted):
    lifecycle._check_version_change(_running("v1.36.3"), wanted)


@pytest.mark.parametrize(
    ("wanted", "why"),
    [
        ("v1.35.4", "never downgraded"),
        ("v1.36.2", "never downgraded"),
        ("v1.38.0", "one minor release at a time"),
    ],
)
def test_a_downgrade_or_a_skipped_minor_is_refused_naming_the_key(wanted, why):
    with pytest.raises(UsageError, match=f"controlPlane.distro.k8s.version '{wanted}'.*{why}"):
        lifecycle._check_version_change(_running("v1.36.3"), wanted)
