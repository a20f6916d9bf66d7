"""Ingresses, NetworkPolicies and EndpointSlices, table by table (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    ABSENT,
    NS,
    Change,
    Result,
    Row,
    check,
    engine_rows,
    hn,
    host_copy,
    obj,
    pod,
    restarted_writes_nothing,
    run_row,
    table,
    with_meta,
)
from vnest.syncer.mappings import (
    ANNOTATION_KIND,
    ANNOTATION_NAME,
    ENDPOINTS_CONTROLLER,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
    LABEL_SERVICE_NAME,
    LABEL_SLICE_MANAGER,
    namespace_label_key,
)

pytestmark = pytest.mark.unit

# ---- Ingresses -------------------------------------------------------------------------------

INGRESSES = "sync.toHost.ingresses.enabled=true"


def ingress(host: str = "site.example", **spec: Any) -> dict:
    base = {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "site", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ],
        "tls": [{"hosts": [host], "secretName": "site-tls"}],
    }
    return obj("Ingress", "site", spec={**base, **spec})


def hingress(ving: dict, *, status: dict | None = None) -> dict:
    spec = ving["spec"]
    hspec = {
        "rules": [
            {
                **rule,
                "http": {
                    "paths": [
                        {
                            **p,
                            "backend": {
                                "service": {
                                    **p["backend"]["service"],
                                    "name": hn(p["backend"]["service"]["name"]),
                                }
                            },
                        }
                        for p in rule["http"]["paths"]
                    ]
                },
            }
            for rule in spec["rules"]
        ],
        "tls": [{**t, "secretName": hn(t["secretName"])} for t in spec["tls"]],
    }
    return host_copy(ving, spec=hspec, status=status)


SITE = ingress()
HSITE = hn("site")
LB = {"loadBalancer": {"ingress": [{"ip": "192.0.2.80"}]}}

INGRESS_SHARED = engine_rows(
    "Ingress",
    SITE,
    copy_of=hingress,
    sets=[INGRESSES],
    changes=[
        Change("rule-change-put", ingress("other.example"), {"spec": {"rules": [{"host": "other.example"}]}}),
        Change(
            "annotation-change-put",
            with_meta(SITE, annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/v2"}),
            {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/v2"}}},
        ),
    ],
    # sync() compares spec and labels only: an annotation edit (how ingress controllers are
    # configured) never reaches an existing copy.
    not_ours={"spec": {"rules": []}},
    refusal=(400, 'admission webhook denied the request: host "site.example" is taken by {}'),
)

INGRESS_ROWS = [
    pytest.param(
        Row(
            virtual=[ingress(defaultBackend={"resource": {"kind": "Bucket", "name": "b"}})],
            sets=[INGRESSES],
            host_has={
                ("Ingress", HSITE): {
                    "metadata": {
                        "labels": {LABEL_MANAGED_BY: "vc"},
                        "annotations": {ANNOTATION_KIND: "Ingress"},
                    },
                    "spec": {
                        "rules": [
                            {
                                "host": "site.example",
                                "http": {"paths": [{"backend": {"service": {"name": hn("site")}}}]},
                            }
                        ],
                        "tls": [{"secretName": hn("site-tls")}],
                        "defaultBackend": {"resource": ABSENT},
                    },
                }
            },
            host_writes=["POST ingresses"],
        ),
        id="create-backends-and-tls-name-the-host-copies",
    ),
    pytest.param(
        Row(
            virtual=[SITE],
            host=[hingress(SITE, status=LB)],
            sets=[INGRESSES],
            virtual_has={("Ingress", "default/site"): {"status": LB}},
            host_writes=[],
            virtual_writes=["PUT ingresses/site/status"],
        ),
        id="load-balancer-status-comes-back",
    ),
]


test_ingresses = table("Ingress", INGRESS_SHARED, INGRESS_ROWS)


# ---- NetworkPolicies -------------------------------------------------------------------------

POLICIES = "sync.toHost.networkPolicies.enabled=true"
POLICY = obj(
    "NetworkPolicy",
    "allow-frontend",
    "web",
    spec={
        "podSelector": {"matchLabels": {"app": "api"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"team": "frontend"}}},
                    {"podSelector": {"matchLabels": {"role": "client"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                ],
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        ],
    },
)
HPOLICY = hn("allow-frontend", "web")
POLICY_SPEC = {
    "podSelector": {"matchLabels": {"app": "api", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "web"}},
    "policyTypes": ["Ingress"],
    "ingress": [
        {
            "ports": [{"port": 80, "protocol": "TCP"}],
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {namespace_label_key("team"): "frontend", LABEL_MANAGED_BY: "vc"}
                    }
                },
                {
                    "podSelector": {
                        "matchLabels": {"role": "client", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "web"}
                    }
                },
                {"ipBlock": {"cidr": "10.0.0.0/8"}},
            ],
        }
    ],
}


def hpolicy(vpolicy: dict, **spec: Any) -> dict:
    """The copy of POLICY (with `spec` drifted on the host)."""
    return host_copy(vpolicy, spec={**POLICY_SPEC, **spec})


POLICY_SHARED = engine_rows(
    "NetworkPolicy",
    POLICY,
    copy_of=hpolicy,
    sets=[POLICIES],
    relabel={"team": "a"},
    not_ours={"spec": {"podSelector": {}}},
    refusal=(422, 'NetworkPolicy "{}" is invalid: spec.ingress[0].from[2].ipBlock'),
)

POLICY_ROWS = [
    pytest.param(
        Row(
            virtual=[POLICY],
            sets=[POLICIES],
            host_has={("NetworkPolicy", "allow-frontend-x-web-x-vc"): {"spec": POLICY_SPEC}},
            host_writes=["POST networkpolicies"],
        ),
        id="create-selectors-stay-within-the-cluster",
    ),
    pytest.param(
        Row(
            virtual=[POLICY],
            host=[hpolicy(POLICY, policyTypes=["Ingress", "Egress"])],
            sets=[POLICIES],
            host_has={("NetworkPolicy", HPOLICY): {"spec": {"policyTypes": ["Ingress"]}}},
            host_writes=[f"PUT networkpolicies/{HPOLICY}"],
        ),
        id="spec-change-put",
    ),
]


test_network_policies = table("NetworkPolicy", POLICY_SHARED, POLICY_ROWS)


def test_namespace_labels_ride_on_pods_for_namespace_selectors() -> None:
    """What a translated namespaceSelector selects: pods of the virtual namespace, relabelled with it."""
    vpod = pod("api", "web", labels={"app": "api"})
    old = host_copy(vpod, labels={namespace_label_key("team"): "frontend"}, spec=vpod["spec"])
    row = Row(
        virtual=[obj("Namespace", "web", labels={"team": "backend"}), vpod, POLICY],
        host=[old],
        sets=[POLICIES],
        host_has={
            ("Pod", hn("api", "web")): {"metadata": {"labels": {namespace_label_key("team"): "backend"}}},
            ("NetworkPolicy", HPOLICY): {"spec": POLICY_SPEC},
        },
    )
    check(row, run_row(("Pod", "NetworkPolicy"), row))


# ---- EndpointSlices --------------------------------------------------------------------------

ALLOWED = "policies.allowedEndpointCIDRs=[192.0.2.0/24]"
PORTS = [{"name": "main", "port": 5432, "protocol": "TCP"}]
DB = obj("Service", "db", spec={"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": PORTS})
HDB = host_copy(DB, spec={"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": PORTS})
WITH_SELECTOR = obj("Service", "db", spec={**DB["spec"], "selector": {"app": "db"}})
HSLICE = hn("db-1")
RUNNING = pod("backend")
HRUNNING = host_copy(
    RUNNING,
    spec={**RUNNING["spec"], "nodeName": "node-1"},
    status={"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
)


def endpoint_slice(
    *endpoints: dict, service: str = "db", name: str = "db-1", address_type: str = "IPv4"
) -> dict:
    return obj(
        "EndpointSlice",
        name,
        labels={LABEL_SERVICE_NAME: service},
        addressType=address_type,
        endpoints=list(endpoints),
        ports=PORTS,
    )


def hslice(vslice: dict) -> dict:
    """The copy of `vslice` (of Service db), owned by the host Service."""
    owner = {"apiVersion": "v1", "kind": "Service", "name": hn("db"), "uid": HDB["metadata"]["uid"]}
    out = host_copy(
        vslice,
        labels={LABEL_SERVICE_NAME: hn("db"), LABEL_SLICE_MANAGER: ENDPOINTS_CONTROLLER},
        addressType=vslice["addressType"],
        endpoints=vslice["endpoints"],
        ports=PORTS,
    )
    out["metadata"]["ownerReferences"] = [owner]
    return out


EXTERNAL = {"addresses": ["192.0.2.10"], "conditions": {"ready": True}}
SLICE = endpoint_slice(EXTERNAL)


def srow(**kw: Any) -> Row:
    """A slice row; the admin allows TEST-NET-1 (192.0.2.0/24) unless the row says otherwise."""
    kw.setdefault("sets", [ALLOWED])
    return Row(**kw)


def _dropped_on_the_service(result: Result) -> None:
    (event,) = result.events
    assert event["involvedObject"]["kind"] == "Service" and event["involvedObject"]["name"] == "db"


SLICE_SHARED = engine_rows(
    "EndpointSlice",
    SLICE,
    copy_of=hslice,
    sets=[ALLOWED],
    beside=[DB],
    host_beside=[HDB],
    changes=[
        Change(
            "endpoints-change-put",
            endpoint_slice({"addresses": ["192.0.2.20"]}),
            {"endpoints": [{"addresses": ["192.0.2.20"], "conditions": ABSENT}]},
        )
    ],
    not_ours={"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.99"]}]},
    squatters={
        "the-host-controllers-slice-is-not-a-copy": {
            LABEL_MANAGED_BY: "vc",
            LABEL_SLICE_MANAGER: "endpointslice-controller.k8s.io",
        }
    },
    never_deleted={"not-ours-outlives-the-virtual-slice-and-service": {}},
    refusal=(403, 'endpointslices.discovery.k8s.io "{}" is forbidden'),
)

SLICE_ROWS = [
    pytest.param(
        srow(
            virtual=[DB, SLICE],
            host=[HDB],
            host_has={
                ("EndpointSlice", HSLICE): {
                    "metadata": {
                        "labels": {
                            LABEL_SERVICE_NAME: hn("db"),
                            LABEL_SLICE_MANAGER: ENDPOINTS_CONTROLLER,
                            LABEL_MANAGED_BY: "vc",
                        },
                        "annotations": {ANNOTATION_NAME: "db-1", ANNOTATION_KIND: "EndpointSlice"},
                        "ownerReferences": [
                            {"kind": "Service", "name": hn("db"), "uid": HDB["metadata"]["uid"]}
                        ],
                    },
                    "addressType": "IPv4",
                    "endpoints": [EXTERNAL],
                    "ports": PORTS,
                }
            },
            host_writes=["POST endpointslices"],
        ),
        id="selector-less-service-slice-copied-owned-by-the-host-service",
    ),
    pytest.param(
        srow(
            virtual=[
                DB,
                endpoint_slice(
                    {
                        "addresses": ["10.244.1.5"],
                        "nodeName": "node-1",
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": "backend", "uid": "x"},
                    },
                    {
                        "addresses": ["192.0.2.11"],
                        "nodeName": "no-such-node",
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": "no-such-pod"},
                    },
                ),
            ],
            host=[HDB, HRUNNING],
            host_has={
                ("EndpointSlice", HSLICE): {
                    "endpoints": [
                        {
                            "addresses": ["10.244.1.5"],
                            "nodeName": "node-1",
                            "targetRef": {
                                "kind": "Pod",
                                "namespace": NS,
                                "name": hn("backend"),
                                "uid": ABSENT,
                            },
                        },
                        {"addresses": ["192.0.2.11"], "nodeName": ABSENT, "targetRef": ABSENT},
                    ]
                }
            },
        ),
        id="own-pod-named-by-its-host-copy-unknown-pod-and-node-dropped",
    ),
    pytest.param(
        srow(
            virtual=[
                DB,
                endpoint_slice(
                    EXTERNAL, {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "192.0.2.12"]}
                ),
            ],
            host=[HDB],
            host_has={("EndpointSlice", HSLICE): {"endpoints": [EXTERNAL, {"addresses": ["192.0.2.12"]}]}},
            events=[("EndpointsDropped", "endpoint addresses 10.0.0.1, 10.0.0.2 not copied to the host")],
            also=_dropped_on_the_service,
        ),
        id="addresses-not-allowed-dropped-with-an-event-on-the-service",
    ),
    pytest.param(
        srow(
            virtual=[DB, endpoint_slice(EXTERNAL, {"addresses": ["10.96.0.1"]})],
            host=[HDB],
            sets=[],
            host_has={("EndpointSlice", HSLICE): {"endpoints": []}},
            events=[("EndpointsDropped", "10.96.0.1, 192.0.2.10")],
        ),
        id="nothing-allowed-by-default",
    ),
    pytest.param(
        srow(
            virtual=[WITH_SELECTOR, SLICE], host=[HDB], host_lacks=[("EndpointSlice", HSLICE)], host_writes=[]
        ),
        id="service-with-a-selector-host-controller-owns-the-endpoints",
    ),
    pytest.param(
        srow(virtual=[DB, SLICE], host_lacks=[("EndpointSlice", HSLICE)], host_writes=[]),
        id="service-copy-missing-not-synced",
    ),
    pytest.param(
        srow(
            virtual=[
                obj("Service", "kubernetes", spec={"clusterIP": "10.96.0.1", "ports": PORTS}),
                endpoint_slice(EXTERNAL, service="kubernetes", name="kubernetes"),
            ],
            host=[host_copy(obj("Service", "kubernetes"), spec={"clusterIP": "10.96.0.1"})],
            host_lacks=[("EndpointSlice", hn("kubernetes"))],
            host_writes=[],
        ),
        id="the-virtual-api-servers-own-slice-never-synced",
    ),
    pytest.param(
        srow(
            virtual=[WITH_SELECTOR, SLICE],
            host=[HDB, hslice(SLICE)],
            host_lacks=[("EndpointSlice", HSLICE)],
            host_writes=[f"DELETE endpointslices/{HSLICE}"],
        ),
        id="service-gained-a-selector-copy-deleted",
    ),
    pytest.param(
        srow(
            virtual=[DB, endpoint_slice({"addresses": ["2001:db8::1"]}, address_type="IPv6")],
            host=[HDB, hslice(SLICE)],
            sets=["policies.allowedEndpointCIDRs=[2001:db8::/32]"],
            host_has={
                ("EndpointSlice", HSLICE): {
                    "addressType": "IPv6",
                    "endpoints": [{"addresses": ["2001:db8::1"]}],
                }
            },
            host_writes=[f"DELETE endpointslices/{HSLICE}", "POST endpointslices"],
        ),
        id="address-type-change-recreated",
    ),
]


test_endpoint_slices = table("EndpointSlice", SLICE_SHARED, SLICE_ROWS)


def test_a_restarted_slice_syncer_writes_nothing() -> None:
    row = Row(virtual=[DB, SLICE], host=[HDB], sets=[ALLOWED], host_has={("EndpointSlice", HSLICE): {}})
    restarted_writes_nothing("EndpointSlice", row)
