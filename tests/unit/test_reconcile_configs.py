"""ConfigMaps and Secrets, table by table: copied only while a pod (or Ingress) uses them (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    Change,
    Row,
    b64,
    engine_rows,
    hn,
    obj,
    plain_copy,
    pod,
    restarted_writes_nothing,
    table,
    token_secret,
)
from vnest.syncer.mappings import ANNOTATION_KIND, ANNOTATION_UID, LABEL_MANAGED_BY, LABEL_NAMESPACE

pytestmark = pytest.mark.unit


def cm(name: str = "settings", ns: str = "default", **fields: Any) -> dict:
    return obj("ConfigMap", name, ns, **{"data": {"mode": "fast"}, **fields})


def secret(name: str = "creds", ns: str = "default", **fields: Any) -> dict:
    return obj("Secret", name, ns, **{"type": "Opaque", "data": {"password": b64("s3cret")}, **fields})


def uses(*volumes: dict, **spec: Any) -> dict:
    return pod(volumes=list(volumes), **spec)


CM_VOLUME = {"name": "cfg", "configMap": {"name": "settings"}}
SECRET_VOLUME = {"name": "sec", "secret": {"secretName": "creds"}}
USES_CM = uses(CM_VOLUME)
USES_SECRET = uses(SECRET_VOLUME)
CM = cm()
SECRET = secret()
HCM = hn("settings")
HSECRET = hn("creds")


def env_pod(**source: Any) -> dict:
    return pod(containers=[{"name": "c", "image": "nginx", **source}])


def only_while_used(vobj: dict, field: str) -> list:
    """The rows of a kind copied only while used: not while unused (beside a pod that uses nothing),
    unless `sync.toHost.<field>.all`."""
    key = (vobj["kind"], hn(vobj["metadata"]["name"]))
    return [
        pytest.param(Row(virtual=[vobj, pod()], host_lacks=[key], host_writes=[]), id="unused-not-copied"),
        pytest.param(
            Row(virtual=[vobj], sets=[f"sync.toHost.{field}.all=true"], host_has={key: {}}),
            id="all-true-copies-unused",
        ),
    ]


CONFIGMAP_SHARED = engine_rows(
    "ConfigMap",
    CM,
    uses=[USES_CM],
    earlier=cm(uid="old-uid", data={"mode": "old"}),
    relabel={"v": "2"},
    changes=[Change("data-change-put-in-place", cm(data={"mode": "slow"}), {"data": {"mode": "slow"}})],
    not_ours={"data": {"theirs": "1"}},
    never_deleted={"another-clusters-left-alone": {LABEL_MANAGED_BY: "other"}},
    refusal=(422, 'ConfigMap "{}" is invalid: data: Too long'),
)

CONFIGMAP_ROWS = [
    pytest.param(
        Row(
            virtual=[USES_CM, cm("settings", labels={"app": "web"})],
            host_has={
                ("ConfigMap", HCM): {
                    "data": {"mode": "fast"},
                    "metadata": {
                        "labels": {"app": "web", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "default"},
                        "annotations": {ANNOTATION_UID: "settings-uid", ANNOTATION_KIND: "ConfigMap"},
                    },
                }
            },
            host_writes=["POST configmaps"],
        ),
        id="used-by-a-volume-copied",
    ),
    pytest.param(
        Row(
            virtual=[env_pod(envFrom=[{"configMapRef": {"name": "settings"}}]), CM],
            host_has={("ConfigMap", HCM): {}},
        ),
        id="used-by-envfrom-copied",
    ),
    pytest.param(
        Row(
            virtual=[
                env_pod(
                    env=[{"name": "M", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}]
                ),
                CM,
            ],
            host_has={("ConfigMap", HCM): {}},
        ),
        id="used-by-an-env-key-copied",
    ),
    pytest.param(
        Row(
            virtual=[
                uses({"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}),
                cm("kube-root-ca.crt", data={"ca.crt": "PEM"}),
            ],
            host_has={("ConfigMap", "kube-root-ca.crt-x-default-x-vc"): {"data": {"ca.crt": "PEM"}}},
            host_writes=["POST configmaps"],
        ),
        id="root-ca-of-a-projected-volume-copied-beside-the-hosts",
    ),
    pytest.param(
        Row(virtual=[USES_CM], host_writes=[]),
        id="used-but-missing-nothing",
    ),
    pytest.param(
        Row(
            virtual=[CM, pod()],
            host=[plain_copy(CM)],
            host_lacks=[("ConfigMap", HCM)],
            host_writes=[f"DELETE configmaps/{HCM}"],
        ),
        id="no-longer-used-copy-deleted",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, cm(data={"mode": "slow"}, immutable=True)],
            host=[plain_copy(cm(immutable=True))],
            host_has={("ConfigMap", HCM): {"data": {"mode": "slow"}, "immutable": True}},
            host_writes=[f"DELETE configmaps/{HCM}", "POST configmaps"],
        ),
        id="immutable-changed-recreated",
    ),
]

SECRET_SHARED = engine_rows(
    "Secret",
    SECRET,
    uses=[USES_SECRET],
    earlier=secret(uid="old-uid", data={"password": b64("old")}),
    changes=[
        Change("data-change-put", secret(data={"password": b64("new")}), {"data": {"password": b64("new")}})
    ],
    not_ours={"data": {"k": b64("v")}},
    refusal=(422, 'Secret "{}" is invalid: data[tls.crt]: Required value'),
)

SECRET_ROWS = [
    pytest.param(
        Row(
            virtual=[USES_SECRET, SECRET],
            host_has={("Secret", HSECRET): {"type": "Opaque", "data": {"password": b64("s3cret")}}},
            host_writes=["POST secrets"],
        ),
        id="used-by-a-volume-copied",
    ),
    pytest.param(
        Row(
            virtual=[
                pod(imagePullSecrets=[{"name": "registry"}]),
                secret("registry", type="kubernetes.io/dockerconfigjson"),
            ],
            host_has={("Secret", hn("registry")): {"type": "kubernetes.io/dockerconfigjson"}},
        ),
        id="image-pull-secret-copied-with-its-type",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, secret(type="kubernetes.io/service-account-token")],
            host_has={("Secret", HSECRET): {"type": "Opaque"}},
        ),
        id="service-account-token-type-copied-as-opaque",
    ),
    pytest.param(
        Row(
            virtual=[
                uses({"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "creds"}}}),
                SECRET,
            ],
            host_has={("Secret", HSECRET): {}},
        ),
        id="csi-node-publish-secret-copied",
    ),
    pytest.param(
        Row(
            virtual=[
                obj("Ingress", "site", spec={"tls": [{"secretName": "creds"}], "rules": []}),
                secret(type="kubernetes.io/tls"),
            ],
            sets=["sync.toHost.ingresses.enabled=true"],
            host_has={("Secret", HSECRET): {"type": "kubernetes.io/tls"}},
        ),
        id="tls-secret-of-a-synced-ingress-copied",
    ),
    pytest.param(
        Row(
            virtual=[obj("Ingress", "site", spec={"tls": [{"secretName": "creds"}], "rules": []}), SECRET],
            host_lacks=[("Secret", HSECRET)],
        ),
        id="tls-secret-of-an-ingress-not-synced-not-copied",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, secret(data={"password": b64("new")}, immutable=True)],
            host=[plain_copy(secret(immutable=True))],
            host_has={("Secret", HSECRET): {"data": {"password": b64("new")}}},
            host_writes=[f"DELETE secrets/{HSECRET}", "POST secrets"],
        ),
        id="immutable-changed-recreated",
    ),
    pytest.param(
        Row(
            virtual=[
                uses({"name": "sec", "secret": {"secretName": "vnest-token-web"}}),
                secret("vnest-token-web"),
            ],
            host=[token_secret(pod())],
            untouched=[("Secret", hn("vnest-token-web"))],
            host_writes=[],
        ),
        id="a-pods-token-secret-is-the-pod-syncers-never-a-copy",
    ),
    pytest.param(
        Row(
            host=[token_secret(pod())],
            untouched=[("Secret", hn("vnest-token-web"))],
            host_writes=[],
        ),
        id="a-token-secret-without-a-virtual-secret-left-alone",
    ),
]


test_configmaps = table("ConfigMap", CONFIGMAP_SHARED, only_while_used(CM, "configMaps"), CONFIGMAP_ROWS)


test_secrets = table("Secret", SECRET_SHARED, only_while_used(SECRET, "secrets"), SECRET_ROWS)


def test_a_restarted_config_syncer_writes_nothing() -> None:
    row = Row(
        virtual=[uses(CM_VOLUME, SECRET_VOLUME), CM, SECRET],
        host_has={("ConfigMap", HCM): {}, ("Secret", HSECRET): {}},
    )
    restarted_writes_nothing(("ConfigMap", "Secret"), row)
