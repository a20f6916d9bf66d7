"""Pods, table by table: (virtual, host) -> host copies, virtual pods, events, writes (tests/unit/syncing.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.syncing import (
    ABSENT,
    NS,
    Change,
    Fail,
    Result,
    Row,
    b64,
    engine_rows,
    hn,
    host_copy,
    obj,
    pod,
    restarted_writes_nothing,
    table,
    token_secret,
    with_meta,
)
from vnest.syncer.mappings import (
    ANNOTATION_HOST_UID,
    ANNOTATION_KIND,
    ANNOTATION_NAME,
    ANNOTATION_NAMESPACE,
    ANNOTATION_REFRESH_AFTER,
    ANNOTATION_UID,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
    hashed_label_key,
    namespace_label_key,
)
from vnest.syncer.resources.pods import resize_patch, virtual_status
from vnest.syncer.resources.tokens import Projection, token_key

pytestmark = pytest.mark.unit


def hpod(vpod: dict, *, node: str = "", image: str = "", **kw: Any) -> dict:
    """The host copy of `vpod` (on `node` when given)."""
    spec = {
        "containers": [{"name": "c", "image": image or vpod["spec"]["containers"][0]["image"], "env": []}],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostname": vpod["metadata"]["name"],
    }
    if node:
        spec["nodeName"] = node
    return host_copy(vpod, spec=spec, **kw)


WEB = pod(labels={"app": "web"})
SHOP = pod("web", "shop", labels={"app": "web"})
ON_NODE = hpod(WEB, node="node-1", status={"phase": "Running", "podIP": "10.244.0.7"})
TOKEN_VOLUME = {
    "name": "kube-api-access",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]},
}
WITH_TOKEN = pod(volumes=[TOKEN_VOLUME])
AUDIENCE_VOLUME = {
    "name": "oidc",
    "projected": {
        "sources": [
            {"serviceAccountToken": {"path": "sa-token", "audience": "oidc-test", "expirationSeconds": 600}}
        ]
    },
}
POD_TOKEN = hn("vnest-token-web")
DEFAULT_TOKEN_KEY = token_key(Projection("", 3607))
AUDIENCE_TOKEN_KEY = token_key(Projection("oidc-test", 600))
SA_TOKEN = hn("vnest-sa-token-default")  # shared by the pods of an account, as earlier vnest versions made it
DEFAULT_SA = obj("ServiceAccount", "default")
PAST, FUTURE = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"


def pod_token(vpod: dict = WITH_TOKEN, refresh_after: str = FUTURE) -> dict:
    """The host Secret of `vpod`'s tokens, as vnest.syncer.resources.tokens writes it."""
    out = token_secret(vpod)
    out["data"] = {DEFAULT_TOKEN_KEY: b64("earlier-token")}
    out["metadata"]["annotations"][ANNOTATION_REFRESH_AFTER] = refresh_after
    return out


def _token_requests(wanted: list[dict]) -> Callable[[Result], None]:
    """A check that the virtual API server was asked for exactly these tokens, in this order."""

    def check(result: Result) -> None:
        asked = [
            {
                "kind": body["spec"]["boundObjectRef"]["kind"],
                "name": body["spec"]["boundObjectRef"]["name"],
                "uid": body["spec"]["boundObjectRef"]["uid"],
                "audiences": body["spec"].get("audiences"),
                "seconds": body["spec"]["expirationSeconds"],
            }
            for body in result.virtual_bodies("token")
        ]
        assert asked == wanted

    return check


def sa_token(sa: dict = DEFAULT_SA, refresh_after: str = FUTURE) -> dict:
    """A ServiceAccount's shared token Secret, as earlier vnest versions wrote it."""
    out = host_copy(sa, kind="Secret", name=hn(f"vnest-sa-token-{sa['metadata']['name']}"), type="Opaque")
    out["data"] = {"token": b64("earlier-token")}
    out["metadata"]["annotations"][ANNOTATION_KIND] = "ServiceAccountToken"
    out["metadata"]["annotations"][ANNOTATION_REFRESH_AFTER] = refresh_after
    return out


def _token_volume_to(secret: str) -> dict:
    source = {"secret": {"name": secret, "items": [{"key": DEFAULT_TOKEN_KEY, "path": "token"}]}}
    return {"spec": {"volumes": [{"name": "kube-api-access", "projected": {"sources": [source]}}]}}


def _sized(p: dict, cpu: str, observed: int | None = None) -> dict:
    """`p` with container c requesting `cpu` (and its status observing generation `observed`)."""
    out = copy.deepcopy(p)
    out["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu}}
    if observed is not None:
        out["status"]["observedGeneration"] = observed
    return out


NAMED_NODE = pod(nodeName="node-1")
PORTS_TAKEN = (
    "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) "
    "didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 No preemption "
    "victims found for incoming pod."
)


def _unschedulable(vpod: dict, message: str) -> dict:
    """`vpod`'s host copy, which the host scheduler could not place, saying why."""
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return hpod(vpod, status={"phase": "Pending", "conditions": [condition]})


DELETING = {"deletionTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 10}
RAN = {ANNOTATION_HOST_UID: "host-uid-1"}


def _deleting(vpod: dict) -> dict:
    return with_meta(vpod, **DELETING)


def _host_deleting(vpod: dict) -> dict:
    out = hpod(vpod, node="node-1")
    out["metadata"].update(DELETING)
    return out


def _grace_of_delete(seconds: int) -> Callable[[Result], None]:
    def check_body(result: Result) -> None:
        deletes = [r for r in result.requests["host"] if r.method == "DELETE"]
        assert [r.body.get("gracePeriodSeconds") for r in deletes] == [seconds]

    return check_body


SHARED = engine_rows(
    "Pod",
    WEB,
    copy_of=hpod,
    update="PATCH",
    relabel={"app": "new"},
    changes=[
        Change(
            "image-change-patched",
            pod(image="nginx:2", labels={"app": "web"}),
            {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}},
        ),
    ],
    not_ours={"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    squatters={"another-clusters-copy-left-alone-and-reported": {LABEL_MANAGED_BY: "other-vc"}},
    never_deleted={"not-ours-without-virtual-pod-never-deleted": {}},
    refusal=(403, 'pods "{}" is forbidden: exceeded quota: vc, count/pods'),
    extra={
        "uid-mismatch-replaced": {"also": _grace_of_delete(0)},  # at once: the old copy is no pod of ours
        "not-ours-left-alone-and-reported": {"host_writes": ["POST pods"]},
    },
)

ROWS = [
    pytest.param(
        Row(
            virtual=[SHOP],
            host_has={
                ("Pod", "web-x-shop-x-vc"): {
                    "metadata": {
                        "namespace": NS,
                        "labels": {"app": "web", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "shop"},
                        "annotations": {
                            ANNOTATION_NAME: "web",
                            ANNOTATION_NAMESPACE: "shop",
                            ANNOTATION_UID: "web-uid",
                            ANNOTATION_KIND: "Pod",
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "hostname": "web",
                        "nodeName": ABSENT,
                    },
                }
            },
            host_writes=["POST pods"],
        ),
        id="create-the-copy",
    ),
    pytest.param(
        Row(
            virtual=[pod(labels={LABEL_MANAGED_BY: "other", "app": "x"})],
            host_has={
                ("Pod", hn("web")): {
                    "metadata": {
                        "labels": {
                            "app": "x",
                            LABEL_MANAGED_BY: "vc",
                            hashed_label_key(LABEL_MANAGED_BY): "other",
                        }
                    }
                }
            },
        ),
        id="a-forged-managed-by-label-is-hashed",
    ),
    pytest.param(
        Row(
            virtual=[
                obj("Namespace", "shop", labels={"team": "a"}),
                SHOP,
            ],
            host_has={
                ("Pod", "web-x-shop-x-vc"): {"metadata": {"labels": {namespace_label_key("team"): "a"}}}
            },
        ),
        id="namespace-labels-ride-on-the-copy",
    ),
    pytest.param(
        Row(
            virtual=[obj("Namespace", "shop", labels={"team": "b"}), SHOP],
            host=[hpod(SHOP, labels={namespace_label_key("team"): "a"})],
            host_has={
                ("Pod", "web-x-shop-x-vc"): {"metadata": {"labels": {namespace_label_key("team"): "b"}}}
            },
            host_writes=["PATCH pods/web-x-shop-x-vc"],
        ),
        id="namespace-relabelled-copy-patched",
    ),
    pytest.param(
        Row(
            virtual=[pod(nodeName="node-2")],
            host_has={
                ("Pod", hn("web")): {
                    "spec": {
                        "nodeName": ABSENT,
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [
                                        {
                                            "matchFields": [
                                                {
                                                    "key": "metadata.name",
                                                    "operator": "In",
                                                    "values": ["node-2"],
                                                }
                                            ]
                                        }
                                    ]
                                }
                            }
                        },
                    }
                }
            },
            host_writes=["POST pods"],
        ),
        id="a-named-node-is-a-required-affinity",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            host=[ON_NODE],
            virtual_has={
                ("Pod", "default/web"): {
                    "metadata": {"annotations": {ANNOTATION_HOST_UID: ON_NODE["metadata"]["uid"]}},
                    "spec": {"nodeName": "node-1"},
                    "status": {"phase": "Running", "podIP": "10.244.0.7"},
                }
            },
            nodes=["node-1"],
            host_writes=[],
            virtual_writes=["POST pods/web/binding", "PATCH pods/web/status"],
        ),
        id="scheduled-on-the-host-bound-and-status-back",
    ),
    pytest.param(
        Row(
            virtual=[pod(nodeName="node-1")],
            host=[ON_NODE],
            virtual_has={
                ("Pod", "default/web"): {
                    "metadata": {"annotations": {ANNOTATION_HOST_UID: ON_NODE["metadata"]["uid"]}},
                    "status": {"phase": "Running"},
                }
            },
        ),
        id="bound-before-the-host-ran-it-recorded-by-one-patch",
    ),
    pytest.param(
        Row(
            host=[ON_NODE],
            host_has={("Pod", hn("web")): {"metadata": {"deletionGracePeriodSeconds": 30}}},
            # Again on the copy's MODIFIED event (deletionTimestamp set): a no-op delete.
            host_writes=[f"DELETE pods/{hn('web')}"] * 2,
        ),
        id="virtual-gone-running-copy-deleted-with-its-grace",
    ),
    pytest.param(
        Row(
            virtual=[_deleting(WEB)],
            host=[ON_NODE],
            host_has={("Pod", hn("web")): {"metadata": {"deletionGracePeriodSeconds": 10}}},
            virtual_has={
                ("Pod", "default/web"): {"metadata": {"deletionTimestamp": DELETING["deletionTimestamp"]}}
            },
            host_writes=[f"DELETE pods/{hn('web')}"],
            also=_grace_of_delete(10),
        ),
        id="virtual-deleting-copy-deleted-with-the-same-grace",
    ),
    pytest.param(
        Row(
            virtual=[_deleting(WEB)],
            host=[_host_deleting(WEB)],
            host_writes=[],
        ),
        id="virtual-deleting-copy-already-deleting-no-write",
    ),
    pytest.param(
        Row(
            # A Job's pod: its tracking finalizer holds it until its phase is terminal. Without
            # the fix it stayed Running and deleting for ever, its Job never counting it.
            virtual=[
                {
                    **with_meta(
                        pod(nodeName="node-1"),
                        finalizers=["batch.kubernetes.io/job-tracking"],
                        annotations=RAN,
                        **DELETING,
                    ),
                    "status": {"phase": "Running"},
                }
            ],
            virtual_has={
                ("Pod", "default/web"): {
                    "metadata": {"finalizers": ["batch.kubernetes.io/job-tracking"]},
                    "status": {"phase": "Failed"},
                }
            },
            host_writes=[],
        ),
        id="a-deleting-pod-whose-copy-went-ends-failed-for-its-finalizers",
    ),
    pytest.param(
        Row(
            virtual=[_deleting(WEB)],
            virtual_lacks=[("Pod", "default/web")],
            host_writes=[],
            virtual_writes=["DELETE pods/web"],
        ),
        id="virtual-deleting-without-a-copy-deleted-as-its-kubelet",
    ),
    pytest.param(
        Row(
            virtual=[with_meta(pod(nodeName="node-1"), annotations=RAN)],
            virtual_lacks=[("Pod", "default/web")],
            host_lacks=[("Pod", hn("web"))],
            host_writes=[],
            virtual_writes=["DELETE pods/web"],
        ),
        id="copy-vanished-after-running-virtual-pod-deleted",
    ),
    pytest.param(
        Row(
            virtual=[WEB],
            fail=[
                Fail("POST", "pods", 422, f'Pod "{hn("web")}" is invalid: spec.runtimeClassName: not found'),
                Fail("POST", "pods", 422, f'Pod "{hn("web")}" is invalid: spec.runtimeClassName: not found'),
            ],
            host_has={("Pod", hn("web")): {}},
            events=[("SyncError", 'the host refused the Pod: Pod "web" is invalid')],
            host_writes=["POST pods", "POST pods", "POST pods"],
        ),
        id="host-refusal-422-twice-told-once",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[hpod(WITH_TOKEN, node="node-1")],
            host_has={
                ("Secret", POD_TOKEN): {
                    "type": "Opaque",
                    "data": {DEFAULT_TOKEN_KEY: b64("fake-token.default.default.1")},
                    "metadata": {
                        "labels": {LABEL_MANAGED_BY: "vc"},
                        "annotations": {
                            ANNOTATION_KIND: "PodToken",
                            ANNOTATION_NAME: "web",
                            ANNOTATION_UID: "web-uid",
                        },
                    },
                },
            },
            host_writes=["POST secrets"],
            virtual_writes=[
                "POST pods/web/binding",
                "POST serviceaccounts/default/token",
            ],
            also=_token_requests(
                [{"kind": "Pod", "name": "web", "uid": "web-uid", "audiences": None, "seconds": 3607}]
            ),
        ),
        id="token-issued-once-bound-to-the-pod",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host_has={("Pod", hn("web")): _token_volume_to(POD_TOKEN)},
            host_lacks=[("Secret", POD_TOKEN)],
            host_writes=["POST pods"],
            virtual_writes=["PATCH pods/web/status"],
        ),
        id="unbound-pod-goes-to-the-host-before-its-token",
        # Its kubelet waits for the Secret; the token is asked for once the pod is bound.
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, pod(volumes=[TOKEN_VOLUME, AUDIENCE_VOLUME], nodeName="node-1")],
            host_has={
                ("Secret", POD_TOKEN): {
                    "data": {
                        DEFAULT_TOKEN_KEY: b64("fake-token.default.default.1"),
                        AUDIENCE_TOKEN_KEY: b64("fake-token.default.default.2"),
                    }
                },
                ("Pod", hn("web")): {
                    "spec": {
                        "volumes": [
                            _token_volume_to(POD_TOKEN)["spec"]["volumes"][0],
                            {
                                "name": "oidc",
                                "projected": {
                                    "sources": [
                                        {
                                            "secret": {
                                                "name": POD_TOKEN,
                                                "items": [{"key": AUDIENCE_TOKEN_KEY, "path": "sa-token"}],
                                            }
                                        }
                                    ]
                                },
                            },
                        ]
                    }
                },
            },
            also=_token_requests(
                [
                    {"kind": "Pod", "name": "web", "uid": "web-uid", "audiences": None, "seconds": 3607},
                    {
                        "kind": "Pod",
                        "name": "web",
                        "uid": "web-uid",
                        "audiences": ["oidc-test"],
                        "seconds": 600,
                    },
                ]
            ),
        ),
        id="each-projection-its-audience-and-expiry",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[hpod(WITH_TOKEN, node="node-1"), pod_token()],
            host_has={("Secret", POD_TOKEN): {"data": {DEFAULT_TOKEN_KEY: b64("earlier-token")}}},
            host_writes=[],
            virtual_writes=["POST pods/web/binding"],  # no TokenRequest
        ),
        id="current-token-reused",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[hpod(WITH_TOKEN, node="node-1"), pod_token(refresh_after=PAST)],
            host_has={
                ("Secret", POD_TOKEN): {"data": {DEFAULT_TOKEN_KEY: b64("fake-token.default.default.1")}}
            },
            host_writes=[f"PUT secrets/{POD_TOKEN}"],
        ),
        id="token-due-for-refresh-issued-again",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[hpod(WITH_TOKEN, node="node-1"), pod_token(with_meta(WITH_TOKEN, uid="old-uid"))],
            host_has={
                ("Secret", POD_TOKEN): {
                    "data": {DEFAULT_TOKEN_KEY: b64("fake-token.default.default.1")},
                    "metadata": {"annotations": {ANNOTATION_UID: "web-uid"}},
                }
            },
            host_writes=[f"PUT secrets/{POD_TOKEN}"],
        ),
        id="pod-replaced-token-issued-again",
        # The old token names the old pod's uid: the API server refuses it.
    ),
    pytest.param(
        Row(
            host=[hpod(WITH_TOKEN), pod_token()],
            host_lacks=[("Pod", hn("web")), ("Secret", POD_TOKEN)],
        ),
        id="virtual-gone-token-secret-goes-with-the-copy",
    ),
    pytest.param(
        Row(host=[pod_token()], host_lacks=[("Secret", POD_TOKEN)]),
        id="orphan-token-secret-removed",
        # Neither side has the pod (both went while the syncer was down): the Secret's own event
        # names the pod, which is gone.
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WEB],
            host=[sa_token()],
            host_has={("Pod", hn("web")): {}},
            host_lacks=[("Secret", SA_TOKEN)],
        ),
        id="shared-token-secret-of-earlier-versions-removed",
    ),
    pytest.param(
        Row(
            virtual=[NAMED_NODE],
            host=[_unschedulable(NAMED_NODE, PORTS_TAKEN)],
            virtual_has={
                ("Pod", "default/web"): {
                    "status": {
                        "phase": "Failed",
                        "reason": "NodePorts",
                        "message": "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free "
                        "ports for the requested pod ports",
                    }
                }
            },
            host_lacks=[("Pod", hn("web"))],
            events=[("NodePorts", "didn't have free ports", "web")],
            host_writes=[f"DELETE pods/{hn('web')}"],
        ),
        id="named-node-cannot-take-it-failed-as-its-kubelet-would",
    ),
    pytest.param(
        Row(
            virtual=[with_meta(NAMED_NODE, uid="web-uid")],
            host=[
                _unschedulable(
                    NAMED_NODE, "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
                )
            ],
            host_has={("Pod", hn("web")): {}},
            virtual_has={("Pod", "default/web"): {"status": {"phase": "Pending"}}},
        ),
        id="named-node-waits-for-what-a-kubelet-waits-for",
    ),
    pytest.param(
        Row(
            virtual=[{**NAMED_NODE, "status": {"phase": "Failed", "reason": "NodePorts"}}],
            host_lacks=[("Pod", hn("web"))],
            host_writes=[],
        ),
        id="rejected-pod-never-goes-to-the-host-again",
    ),
    pytest.param(
        Row(
            virtual=[pod(containers=[{"name": "c", "image": "x", "securityContext": {"privileged": True}}])],
            pod_security=True,
            host_lacks=[("Pod", hn("web"))],
            events=[("PodSecurity", 'violates PodSecurity "baseline:latest": privileged')],
            host_writes=[],
        ),
        id="pod-security-refusal-never-reaches-the-host",
    ),
    pytest.param(
        Row(virtual=[WEB], pod_security=True, host_has={("Pod", hn("web")): {}}, host_writes=["POST pods"]),
        id="pod-security-compliant-pod-synced",
    ),
    pytest.param(
        Row(
            virtual=[
                pod(
                    volumes=[
                        {"name": "a", "configMap": {"name": "settings"}},
                        {"name": "b", "secret": {"secretName": "creds"}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                    ],
                    imagePullSecrets=[{"name": "registry"}],
                )
            ],
            host_has={
                ("Pod", hn("web")): {
                    "spec": {
                        "volumes": [
                            {"configMap": {"name": hn("settings")}},
                            {"secret": {"secretName": hn("creds")}},
                            {"persistentVolumeClaim": {"claimName": hn("data")}},
                        ],
                        "imagePullSecrets": [{"name": hn("registry")}],
                    }
                }
            },
        ),
        id="references-name-the-host-copies",
    ),
    pytest.param(
        Row(
            virtual=[with_meta(_sized(WEB, "200m"), generation=2)],
            host=[_sized(ON_NODE, "100m", observed=1)],
            host_has={
                ("Pod", hn("web")): {
                    "metadata": {"generation": 2},
                    "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "200m"}}}]},
                }
            },
            # The host has not observed its resize yet, so neither has the virtual pod.
            virtual_has={("Pod", "default/web"): {"status": {"observedGeneration": 1}}},
            host_writes=[f"PATCH pods/{hn('web')}/resize"],
        ),
        id="resized-in-place-through-the-hosts-resize",
    ),
    pytest.param(
        Row(
            virtual=[with_meta(pod(labels={"app": "web"}, activeDeadlineSeconds=5), generation=2)],
            host=[ON_NODE],
            host_has={("Pod", hn("web")): {"spec": {"activeDeadlineSeconds": 5}}},
            host_writes=[f"PATCH pods/{hn('web')}"],
        ),
        id="a-deadline-set-on-a-running-pod-reaches-the-copy",
    ),
    pytest.param(
        Row(
            virtual=[
                obj("Service", "db-main", spec={"clusterIP": "10.96.0.9", "ports": [{"port": 5432}]}),
                obj("Service", "elsewhere", "shop", spec={"clusterIP": "10.96.0.8", "ports": [{"port": 80}]}),
                pod(
                    containers=[
                        {"name": "c", "image": "nginx", "env": [{"name": "DB_MAIN_PORT", "value": "own"}]}
                    ]
                ),
            ],
            host_has={
                ("Pod", hn("web")): {
                    "spec": {
                        "enableServiceLinks": False,
                        "containers": [
                            {
                                "env": [
                                    {"name": "DB_MAIN_SERVICE_HOST", "value": "10.96.0.9"},
                                    {"name": "DB_MAIN_SERVICE_PORT", "value": "5432"},
                                    {"name": "DB_MAIN_PORT_5432_TCP", "value": "tcp://10.96.0.9:5432"},
                                    {"name": "DB_MAIN_PORT_5432_TCP_PROTO", "value": "tcp"},
                                    {"name": "DB_MAIN_PORT_5432_TCP_PORT", "value": "5432"},
                                    {"name": "DB_MAIN_PORT_5432_TCP_ADDR", "value": "10.96.0.9"},
                                    {"name": "DB_MAIN_PORT", "value": "own"},  # the container's own wins
                                ]
                            }
                        ],
                    }
                }
            },
        ),
        id="service-links-of-the-virtual-namespace-as-a-kubelet-makes-them",
    ),
    pytest.param(
        Row(
            virtual=[
                obj("Service", "db", spec={"clusterIP": "10.96.0.9", "ports": [{"port": 5432}]}),
                pod(enableServiceLinks=False),
            ],
            host_has={("Pod", hn("web")): {"spec": {"containers": [{"env": []}]}}},
        ),
        id="no-service-links-when-the-pod-turns-them-off",
    ),
    pytest.param(
        Row(
            virtual=[pod()],
            host=[ON_NODE],
            host_has={("Pod", hn("web")): {"metadata": {"labels": {"app": ABSENT}}}},
            host_writes=[f"PATCH pods/{hn('web')}"],
        ),
        id="a-label-the-virtual-pod-lost-goes-from-the-copy",
    ),
]


test_pods = table("Pod", SHARED, ROWS)


def test_a_restarted_pod_syncer_writes_nothing() -> None:
    restarted_writes_nothing("Pod", Row(virtual=[DEFAULT_SA, SHOP, WITH_TOKEN]))


def test_observed_generations_are_counted_in_the_virtual_pods_generation() -> None:
    vpod = with_meta(WEB, generation=5)
    hpod_ = with_meta(ON_NODE, generation=3)
    status = {
        "phase": "Running",
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}, {"type": "Old"}],
    }
    assert virtual_status(status, vpod, hpod_) == {
        "phase": "Running",
        "observedGeneration": 5,  # the host caught up with its own: so has the virtual pod
        "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 4}, {"type": "Old"}],
    }
    assert virtual_status(status, with_meta(WEB, generation=3), hpod_) is status  # same generations
    # Never ahead of the virtual pod, never below zero.
    assert virtual_status({"observedGeneration": 9}, vpod, hpod_)["observedGeneration"] == 5
    assert (
        virtual_status({"observedGeneration": 1}, with_meta(WEB, generation=1), hpod_)["observedGeneration"]
        == 0
    )


def test_a_disruption_the_virtual_cluster_marked_stays_on_the_pod_the_host_reports_failed() -> None:
    # An eviction through the virtual API marks the pod; the host copy, merely deleted, fails
    # without the mark, and a Job's podFailurePolicy would count it. Without the fix it was lost.
    mark = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    vpod = {**WEB, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}, mark]}}
    failed = {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}
    assert virtual_status(failed, vpod, ON_NODE)["conditions"] == [{"type": "Ready", "status": "False"}, mark]
    host_marked = {"phase": "Failed", "conditions": [{**mark, "reason": "TerminationByKubelet"}]}
    assert virtual_status(host_marked, vpod, ON_NODE) == host_marked  # the host's own mark wins


def test_a_resize_patch_tests_each_containers_name_and_sets_the_pod_level_resources() -> None:
    vpod = pod(
        containers=[{"name": "a", "resources": {"limits": {"memory": "1Gi"}}}, {"name": "b"}],
        resources={"requests": {"cpu": "1"}},
    )
    hpod_ = pod(containers=[{"name": "b"}, {"name": "a", "resources": {"limits": {"memory": "512Mi"}}}])
    assert resize_patch(vpod, hpod_) == [
        {"op": "test", "path": "/spec/containers/1/name", "value": "a"},
        {"op": "add", "path": "/spec/containers/1/resources", "value": {"limits": {"memory": "1Gi"}}},
        {"op": "add", "path": "/spec/resources", "value": {"requests": {"cpu": "1"}}},
    ]
    assert resize_patch(vpod, vpod) == []


def test_a_resize_changes_only_cpu_and_memory_and_keeps_what_a_host_limitrange_added() -> None:
    vpod = pod(containers=[{"name": "c", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "3"}}}])
    host = {"requests": {"cpu": "1", "ephemeral-storage": "3Gi"}, "limits": {"cpu": "2", "memory": "512Mi"}}
    hpod_ = pod(containers=[{"name": "c", "resources": host}])
    resized = {
        "requests": {"cpu": "2", "ephemeral-storage": "3Gi"},
        "limits": {"cpu": "3", "memory": "512Mi"},
    }
    assert resize_patch(vpod, hpod_)[1]["value"] == resized
    # The virtual pod as the host has it but for what it never set: nothing to resize.
    same = pod(containers=[{"name": "c", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}])
    assert resize_patch(same, hpod_) == []
