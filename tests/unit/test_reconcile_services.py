"""Services, table by table: (virtual, host) -> host copies, virtual Services, events, writes (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    ABSENT,
    NS,
    Change,
    Result,
    Row,
    engine_rows,
    hn,
    host_copy,
    obj,
    restarted_writes_nothing,
    table,
    with_meta,
)
from vnest import naming
from vnest.syncer.mappings import ANNOTATION_UID, LABEL_DNS_SERVICE, LABEL_MANAGED_BY, LABEL_NAMESPACE

pytestmark = pytest.mark.unit

IP = "10.96.0.10"
PORTS = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]
CVE = "CVE-2020-8554"


def svc(name: str = "web", ns: str = "default", *, ip: str = IP, uid: str = "", **spec: Any) -> dict:
    base: dict[str, Any] = {"type": "ClusterIP", "ports": PORTS, "clusterIP": ip, "clusterIPs": [ip]}
    if "selector" not in spec:
        base["selector"] = {"app": name}
    return obj("Service", name, ns, uid=uid, spec={**base, **spec})


def hsvc(vsvc: dict, *, ip: str = "", status: dict | None = None, **spec: Any) -> dict:
    """The host copy of `vsvc` as the syncer makes it (ClusterIP `ip` when the host gave another)."""
    vspec, ns = vsvc["spec"], vsvc["metadata"]["namespace"]
    ip = ip or vspec["clusterIP"]
    hspec: dict[str, Any] = {
        "type": vspec["type"],
        "ports": vspec["ports"],
        "clusterIP": ip,
        "clusterIPs": [ip],
    }
    if vspec.get("selector"):
        hspec["selector"] = {**vspec["selector"], LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: ns}
    return host_copy(vsvc, spec={**hspec, **spec}, status=status)


WEB = svc()
HOST_DB = obj(
    "Service", "db", NS, uid="host-db-uid", spec={"clusterIP": IP, "clusterIPs": [IP], "ports": PORTS}
)


def _virtual_follows_the_host(result: Result) -> None:
    vsvc = result.virtual("Service", "default/web")
    hobj = result.host("Service", hn("web"))
    assert vsvc is not None and hobj is not None
    assert vsvc["spec"]["clusterIP"] == hobj["spec"]["clusterIP"] != IP
    assert vsvc["metadata"]["uid"] != "web-uid"  # made again: a ClusterIP cannot change in place
    assert hobj["metadata"]["annotations"][ANNOTATION_UID] == vsvc["metadata"]["uid"]


SHARED = engine_rows(
    "Service",
    WEB,
    copy_of=hsvc,
    changes=[
        Change(
            "selector-change-put",
            svc(selector={"app": "web", "tier": "2"}),
            {
                "spec": {
                    "selector": {
                        "app": "web",
                        "tier": "2",
                        LABEL_MANAGED_BY: "vc",
                        LABEL_NAMESPACE: "default",
                    }
                }
            },
        ),
        Change(
            "port-change-put",
            svc(ports=[{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 80}]),
            {"spec": {"ports": [{"port": 8080}]}},
        ),
    ],
    # A Service's copy of an earlier Service of the name: see the uid-mismatch-* rows.
    omit=["uid-mismatch-replaced"],
    not_ours={"spec": {"clusterIP": "10.96.0.50", "ports": PORTS}},
    refusal=(403, 'services "{}" is forbidden: exceeded quota'),
)

ROWS = [
    pytest.param(
        Row(
            virtual=[
                svc(
                    type="ExternalName",
                    externalName="db.example.com",
                    ip="",
                    clusterIPs=None,
                    ipFamilies=None,
                )
            ],
            host=[hsvc(WEB, ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack")],
            host_has={
                ("Service", hn("web")): {
                    "spec": {
                        "type": "ExternalName",
                        "externalName": "db.example.com",
                        "clusterIP": ABSENT,
                        "clusterIPs": ABSENT,
                        "ipFamilies": ABSENT,
                        "ipFamilyPolicy": ABSENT,
                    }
                }
            },
        ),
        id="a-clusterip-service-turned-externalname-loses-its-ip-on-the-host",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[
                host_copy(
                    WEB, spec={"type": "ExternalName", "externalName": "db.example.com", "ports": PORTS}
                )
            ],
            host_has={
                ("Service", hn("web")): {
                    "spec": {"type": "ClusterIP", "clusterIP": IP, "clusterIPs": [IP], "externalName": ABSENT}
                }
            },
        ),
        id="an-externalname-turned-clusterip-gets-the-virtual-ip-on-the-host",
    ),
    pytest.param(
        Row(
            virtual=[svc("web", "shop")],
            host_has={
                ("Service", "web-x-shop-x-vc"): {
                    "metadata": {"labels": {LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "shop"}},
                    "spec": {
                        "clusterIP": IP,
                        "clusterIPs": [IP],
                        "selector": {"app": "web", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "shop"},
                        "ports": PORTS,
                    },
                }
            },
            host_writes=["POST services"],
        ),
        id="create-the-copy-with-the-same-clusterip-and-a-confined-selector",
    ),
    pytest.param(
        Row(
            virtual=[svc(ip="None", clusterIPs=["None"])],
            host_has={("Service", hn("web")): {"spec": {"clusterIP": "None"}}},
            host_writes=["POST services"],
        ),
        id="headless-stays-headless",
    ),
    pytest.param(
        Row(
            virtual=[with_meta(WEB, deletionTimestamp="2024-01-01T00:00:00Z")],
            host=[hsvc(WEB)],
            untouched=[("Service", hn("web"))],
            host_writes=[],
        ),
        id="virtual-deleting-copy-goes-with-it-not-before",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[hsvc(with_meta(WEB, uid="old-uid"))],
            host_has={
                ("Service", hn("web")): {
                    "metadata": {"uid": f"host-{hn('web')}", "annotations": {ANNOTATION_UID: "web-uid"}}
                }
            },
            host_writes=[f"PATCH services/{hn('web')}"],
        ),
        id="uid-mismatch-same-ip-annotations-follow-no-recreate",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[hsvc(svc(ip="10.96.0.99", uid="old-uid"))],
            host_has={
                ("Service", hn("web")): {
                    "spec": {"clusterIP": IP},
                    "metadata": {"annotations": {ANNOTATION_UID: "web-uid"}},
                }
            },
            host_writes=[f"DELETE services/{hn('web')}", "POST services"],
        ),
        id="uid-mismatch-other-ip-copy-replaced",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[hsvc(WEB, ip="10.96.100.7")],
            also=_virtual_follows_the_host,
            # replaced() would only re-annotate the copy (same IP), but the old virtual Service's
            # DELETED event is reconciled before the new one's ADDED: the copy is deleted and made again.
            host_writes=[f"DELETE services/{hn('web')}", "POST services"],
            virtual_writes=["DELETE services/web", "POST services"],
        ),
        id="host-copy-has-another-clusterip-virtual-made-again-with-it",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[HOST_DB],
            untouched=[("Service", "db")],
            also=_virtual_follows_the_host,
            # The 422 of the taken IP is handled (the host chooses): no refusal to tell the tenant.
            # As above: the copy made with the host's IP is deleted and made again once the virtual follows.
            host_writes=["POST services", "POST services", f"DELETE services/{hn('web')}", "POST services"],
        ),
        id="clusterip-taken-on-the-host-virtual-follows-the-hosts",
    ),
    pytest.param(
        Row(
            virtual=[svc("kubernetes", ip="10.96.0.1", selector=None)],
            host_lacks=[("Service", hn("kubernetes"))],
            host_writes=[],
            virtual_writes=[],
        ),
        id="kubernetes-service-stays-virtual",
    ),
    pytest.param(
        Row(
            virtual=[svc("kubernetes", ip="10.96.0.1", selector=None)],
            host_service_ip="10.96.5.5",
            virtual_has={
                ("Service", "default/kubernetes"): {"spec": {"clusterIP": "10.96.5.5"}},
                # Without the fix the virtual cluster had none (its API server does not reconcile them).
                ("Endpoints", "default/kubernetes"): {
                    "subsets": [
                        {
                            "addresses": [{"ip": "10.96.5.5"}],
                            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
                        }
                    ]
                },
            },
            host_lacks=[("Service", hn("kubernetes"))],
            host_writes=[],
            virtual_writes=["DELETE services/kubernetes", "POST services", "POST endpoints"],
        ),
        id="kubernetes-service-carries-the-host-services-ip",
    ),
    pytest.param(
        Row(
            virtual=[svc("db", "shop", selector=None)],
            sets=["networking.replicateServices.fromHost=[{from: db, to: shop/db}]"],
            host_lacks=[("Service", hn("db", "shop"))],
            host_writes=[],
        ),
        id="replicated-from-host-target-left-alone",
    ),
    pytest.param(
        Row(
            virtual=[svc(externalIPs=["203.0.113.10"], externalTrafficPolicy="Cluster")],
            host_has={
                ("Service", hn("web")): {"spec": {"externalIPs": ABSENT, "externalTrafficPolicy": ABSENT}}
            },
            events=[("ExternalIPsDropped", f"spec.externalIPs 203.0.113.10 not copied to the host: {''}")],
        ),
        id="external-ips-dropped-with-an-event",
    ),
    pytest.param(
        Row(
            virtual=[svc(externalIPs=["203.0.113.10", "198.51.100.1"])],
            sets=["policies.allowedExternalIPs=[203.0.113.0/24]"],
            host_has={("Service", hn("web")): {"spec": {"externalIPs": ["203.0.113.10"]}}},
            events=[("ExternalIPsDropped", "spec.externalIPs 198.51.100.1 not copied to the host")],
        ),
        id="external-ips-within-the-allowed-cidrs-cross",
    ),
    pytest.param(
        Row(
            virtual=[svc(externalIPs=["203.0.113.10"])],
            host=[hsvc(WEB)],
            untouched=[("Service", hn("web"))],
            events=[("ExternalIPsDropped", CVE)],
            host_writes=[],
        ),
        id="external-ips-added-later-dropped-copy-unchanged",
    ),
    pytest.param(
        Row(
            virtual=[svc(type="NodePort")],
            host=[hsvc(svc(type="NodePort"), ports=[{**PORTS[0], "nodePort": 30080}])],
            virtual_has={("Service", "default/web"): {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}},
            host_writes=[],
            virtual_writes=["PATCH services/web"],
        ),
        id="node-port-the-host-assigned-comes-back",
    ),
    pytest.param(
        Row(
            # Clients read the NodePort from the virtual Service the moment it is made: without
            # the fix the host picked its own, and the virtual one's port answered nowhere.
            virtual=[svc(type="NodePort", ports=[{**PORTS[0], "nodePort": 30950}])],
            host_has={("Service", hn("web")): {"spec": {"ports": [{"port": 80, "nodePort": 30950}]}}},
            host_writes=["POST services"],
            virtual_writes=[],
        ),
        id="node-port-the-virtual-cluster-chose-asked-of-the-host",
    ),
    pytest.param(
        Row(
            virtual=[svc(type="NodePort", ports=[{**PORTS[0], "nodePort": 30950}])],
            host=[hsvc(svc(type="NodePort"), ports=[{**PORTS[0], "nodePort": 30080}])],
            host_has={("Service", hn("web")): {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}},
            virtual_has={("Service", "default/web"): {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}},
            host_writes=[],
        ),
        id="node-port-the-host-assigned-stays-and-the-virtual-service-follows",
    ),
    pytest.param(
        Row(
            virtual=[svc(type="LoadBalancer")],
            host=[
                hsvc(svc(type="LoadBalancer"), status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
            ],
            virtual_has={
                ("Service", "default/web"): {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
            },
            virtual_writes=["PUT services/web/status"],
        ),
        id="load-balancer-status-comes-back",
    ),
    pytest.param(
        Row(
            virtual=[
                obj(
                    "Service",
                    "kube-dns",
                    "kube-system",
                    labels={LABEL_DNS_SERVICE: "true"},
                    spec={"type": "ClusterIP", "clusterIP": IP, "ports": PORTS},
                )
            ],
            host_has={
                ("Service", hn("kube-dns", "kube-system")): {
                    "spec": {"selector": naming.control_plane_pod_selector("vc")}
                }
            },
        ),
        id="kube-dns-copy-selects-the-control-plane-pod",
    ),
]


test_services = table("Service", SHARED, ROWS)


def test_a_restarted_service_syncer_writes_nothing() -> None:
    restarted_writes_nothing("Service", Row(virtual=[WEB, svc("db", ip="10.96.0.11", type="NodePort")]))
