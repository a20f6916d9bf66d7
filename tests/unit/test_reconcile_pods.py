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
OLD_TOKEN = hn("vnest-token-web")  # a pod's own token Secret, as earlier vnest versions made them
SA_TOKEN = hn("vnest-sa-token-default")
DEFAULT_SA = obj("ServiceAccount", "default")
PAST, FUTURE = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"


def sa_token(sa: dict = DEFAULT_SA, refresh_after: str = FUTURE) -> dict:
    """The host Secret of `sa`'s token, as vnest.syncer.resources.tokens writes it."""
    out = host_copy(sa, kind="Secret", name=hn(f"vnest-sa-token-{sa['metadata']['name']}"), type="Opaque")
    out["data"] = {"token": b64("earlier-token")}
    out["metadata"]["annotations"][ANNOTATION_KIND] = "ServiceAccountToken"
    out["metadata"]["annotations"][ANNOTATION_REFRESH_AFTER] = refresh_after
    return out


def _token_volume_to(secret: str) -> dict:
    source = {"secret": {"name": secret, "items": [{"key": "token", "path": "token"}]}}
    return {"spec": {"volumes": [{"name": "kube-api-access", "projected": {"sources": [source]}}]}}


def _sized(p: dict, cpu: str, observed: int | None = None) -> dict:
    """`p` with container c requesting `cpu` (and its status observing generation `observed`)."""
    out = copy.deepcopy(p)
    out["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu}}
    if observed is not None:
        out["status"]["observedGeneration"] = observed
    return out


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
            host_has={
                ("Secret", SA_TOKEN): {
                    "type": "Opaque",
                    "data": {"token": b64("fake-token.default.default.1")},
                    "metadata": {
                        "labels": {LABEL_MANAGED_BY: "vc"},
                        "annotations": {ANNOTATION_KIND: "ServiceAccountToken", ANNOTATION_NAME: "default"},
                    },
                },
                ("Pod", hn("web")): _token_volume_to(SA_TOKEN),
            },
            host_writes=["POST secrets", "POST pods"],
            virtual_writes=["POST serviceaccounts/default/token", "PATCH pods/web/status"],
        ),
        id="token-secret-made-before-the-pod",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN, with_meta(WITH_TOKEN, name="api", uid="api-uid")],
            host_has={("Secret", SA_TOKEN): {}, ("Pod", hn("web")): {}, ("Pod", hn("api")): {}},
            host_writes=["POST secrets", "POST pods", "POST pods"],
        ),
        id="pods-of-one-service-account-share-one-token",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[sa_token()],
            host_has={("Secret", SA_TOKEN): {"data": {"token": b64("earlier-token")}}},
            host_writes=["POST pods"],
            virtual_writes=["PATCH pods/web/status"],  # no TokenRequest
        ),
        id="current-token-reused",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[sa_token(refresh_after=PAST)],
            host_has={("Secret", SA_TOKEN): {"data": {"token": b64("fake-token.default.default.1")}}},
            host_writes=[f"PUT secrets/{SA_TOKEN}", "POST pods"],
        ),
        id="token-due-for-refresh-issued-again",
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WITH_TOKEN],
            host=[sa_token(with_meta(DEFAULT_SA, uid="old-uid"))],
            host_has={
                ("Secret", SA_TOKEN): {
                    "data": {"token": b64("fake-token.default.default.1")},
                    "metadata": {"annotations": {ANNOTATION_UID: "default-uid"}},
                }
            },
            host_writes=[f"PUT secrets/{SA_TOKEN}", "POST pods"],
        ),
        id="service-account-replaced-token-issued-again",
        # The old token names the old account's uid: the API server refuses it.
    ),
    pytest.param(
        Row(
            virtual=[DEFAULT_SA, WEB],
            host=[sa_token()],
            host_has={("Pod", hn("web")): {}},
            host_lacks=[("Secret", SA_TOKEN)],
        ),
        id="no-pod-mounts-the-token-secret-goes",
    ),
    pytest.param(
        Row(
            host=[hpod(WITH_TOKEN), token_secret(WITH_TOKEN)],
            host_lacks=[("Pod", hn("web")), ("Secret", OLD_TOKEN)],
            host_writes=[f"DELETE pods/{hn('web')}", f"DELETE secrets/{OLD_TOKEN}"],
        ),
        id="virtual-gone-old-token-secret-goes-with-the-copy",
    ),
    pytest.param(
        Row(
            virtual=[_deleting(WITH_TOKEN)],
            host=[token_secret(WITH_TOKEN)],
            host_lacks=[("Secret", OLD_TOKEN)],
            virtual_lacks=[("Pod", "default/web")],
            host_writes=[f"DELETE secrets/{OLD_TOKEN}"],
        ),
        id="deleting-without-a-copy-old-token-secret-goes",
    ),
    pytest.param(
        Row(host=[token_secret(WITH_TOKEN)], host_lacks=[("Secret", OLD_TOKEN)]),
        id="orphan-old-token-secret-removed",
        # Neither side has the pod (both went while the syncer was down): no key names it, so the
        # token Secret (the virtual API server's credential) stays on the host for good.
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
