"""ConfigMaps and Secrets, table by table: copied only while a pod (or Ingress) uses them (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    NS,
    Fail,
    Row,
    b64,
    check,
    foreign,
    hn,
    host_copy,
    obj,
    restart,
    run_row,
)
from vnest.syncer.mappings import ANNOTATION_KIND, ANNOTATION_UID, LABEL_MANAGED_BY, LABEL_NAMESPACE

pytestmark = pytest.mark.unit

NOT_OURS = "exists and is not managed by this virtual cluster; vnest leaves it alone"


def cm(name: str = "settings", ns: str = "default", **fields: Any) -> dict:
    return obj("ConfigMap", name, ns, **{"data": {"mode": "fast"}, **fields})


def secret(name: str = "creds", ns: str = "default", **fields: Any) -> dict:
    return obj("Secret", name, ns, **{"type": "Opaque", "data": {"password": b64("s3cret")}, **fields})


def pod(name: str = "web", ns: str = "default", **spec: Any) -> dict:
    return obj("Pod", name, ns, spec={"containers": [{"name": "c", "image": "nginx"}], **spec})


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
        Row(virtual=[CM, pod()], host_lacks=[("ConfigMap", HCM)], host_writes=[]),
        id="unused-not-copied",
    ),
    pytest.param(
        Row(virtual=[USES_CM], host_writes=[]),
        id="used-but-missing-nothing",
    ),
    pytest.param(
        Row(virtual=[CM], sets=["sync.toHost.configMaps.all=true"], host_has={("ConfigMap", HCM): {}}),
        id="all-true-copies-unused",
    ),
    pytest.param(
        Row(
            virtual=[CM, pod()],
            host=[host_copy(CM, data={"mode": "fast"})],
            host_lacks=[("ConfigMap", HCM)],
            host_writes=[f"DELETE configmaps/{HCM}"],
        ),
        id="no-longer-used-copy-deleted",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, cm(data={"mode": "slow"})],
            host=[host_copy(CM, data={"mode": "fast"})],
            host_has={("ConfigMap", HCM): {"data": {"mode": "slow"}, "metadata": {"uid": f"host-{HCM}"}}},
            host_writes=[f"PUT configmaps/{HCM}"],
        ),
        id="data-change-put-in-place",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, cm(labels={"v": "2"})],
            host=[host_copy(CM, data={"mode": "fast"})],
            host_has={("ConfigMap", HCM): {"metadata": {"labels": {"v": "2"}}}},
            host_writes=[f"PUT configmaps/{HCM}"],
        ),
        id="label-change-put",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, CM],
            host=[host_copy(CM, data={"mode": "fast"})],
            untouched=[("ConfigMap", HCM)],
            host_writes=[],
        ),
        id="in-line-no-write",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, cm(data={"mode": "slow"}, immutable=True)],
            host=[host_copy(CM, data={"mode": "fast"}, immutable=True)],
            host_has={("ConfigMap", HCM): {"data": {"mode": "slow"}, "immutable": True}},
            host_writes=[f"DELETE configmaps/{HCM}", "POST configmaps"],
        ),
        id="immutable-changed-recreated",
    ),
    pytest.param(
        Row(host=[host_copy(CM, data={"mode": "fast"})], host_lacks=[("ConfigMap", HCM)]),
        id="virtual-gone-copy-deleted",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, CM],
            host=[host_copy(CM, of_uid="old-uid", data={"mode": "old"})],
            host_has={
                ("ConfigMap", HCM): {
                    "data": {"mode": "fast"},
                    "metadata": {"annotations": {ANNOTATION_UID: "settings-uid"}},
                }
            },
            host_writes=[f"DELETE configmaps/{HCM}", "POST configmaps"],
        ),
        id="uid-mismatch-replaced",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, CM],
            host=[foreign("ConfigMap", HCM, data={"theirs": "1"})],
            untouched=[("ConfigMap", HCM)],
            events=[("SyncError", f"host ConfigMap {NS}/{HCM} {NOT_OURS}")],
        ),
        id="not-ours-left-alone-and-reported",
    ),
    pytest.param(
        Row(
            host=[foreign("ConfigMap", HCM, labels={LABEL_MANAGED_BY: "other"})],
            untouched=[("ConfigMap", HCM)],
            host_writes=[],
        ),
        id="another-clusters-left-alone",
    ),
    pytest.param(
        Row(
            virtual=[USES_CM, CM],
            fail=[Fail("POST", "configmaps", 422, f'ConfigMap "{HCM}" is invalid: data: Too long')],
            host_has={("ConfigMap", HCM): {}},
            events=[("SyncError", 'the host refused the ConfigMap: ConfigMap "settings" is invalid')],
            host_writes=["POST configmaps", "POST configmaps"],
        ),
        id="host-refusal-one-event-then-retried",
    ),
]

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
        Row(virtual=[SECRET], host_lacks=[("Secret", HSECRET)], host_writes=[]),
        id="unused-not-copied",
    ),
    pytest.param(
        Row(virtual=[SECRET], sets=["sync.toHost.secrets.all=true"], host_has={("Secret", HSECRET): {}}),
        id="all-true-copies-unused",
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
            virtual=[USES_SECRET, secret(data={"password": b64("new")})],
            host=[host_copy(SECRET, type="Opaque", data={"password": b64("s3cret")})],
            host_has={("Secret", HSECRET): {"data": {"password": b64("new")}}},
            host_writes=[f"PUT secrets/{HSECRET}"],
        ),
        id="data-change-put",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, secret(data={"password": b64("new")}, immutable=True)],
            host=[host_copy(SECRET, type="Opaque", data={"password": b64("s3cret")}, immutable=True)],
            host_has={("Secret", HSECRET): {"data": {"password": b64("new")}}},
            host_writes=[f"DELETE secrets/{HSECRET}", "POST secrets"],
        ),
        id="immutable-changed-recreated",
    ),
    pytest.param(
        Row(
            host=[host_copy(SECRET, type="Opaque", data={"password": b64("s3cret")})],
            host_lacks=[("Secret", HSECRET)],
            host_writes=[f"DELETE secrets/{HSECRET}"],
        ),
        id="virtual-gone-copy-deleted",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, SECRET],
            host=[host_copy(SECRET, of_uid="old-uid", type="Opaque", data={"password": b64("old")})],
            host_has={
                ("Secret", HSECRET): {
                    "data": {"password": b64("s3cret")},
                    "metadata": {"annotations": {ANNOTATION_UID: "creds-uid"}},
                }
            },
            host_writes=[f"DELETE secrets/{HSECRET}", "POST secrets"],
        ),
        id="uid-mismatch-replaced",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, SECRET],
            host=[foreign("Secret", HSECRET, data={"k": b64("v")})],
            untouched=[("Secret", HSECRET)],
            events=[("SyncError", f"host Secret {NS}/{HSECRET} {NOT_OURS}")],
        ),
        id="not-ours-left-alone-and-reported",
    ),
    pytest.param(
        Row(
            virtual=[USES_SECRET, secret(type="kubernetes.io/tls")],
            fail=[
                Fail("POST", "secrets", 422, f'Secret "{HSECRET}" is invalid: data[tls.crt]: Required value')
            ],
            host_has={("Secret", HSECRET): {}},
            events=[("SyncError", 'the host refused the Secret: Secret "creds" is invalid: data[tls.crt]')],
        ),
        id="host-refusal-one-event-in-virtual-names-then-retried",
    ),
    pytest.param(
        Row(
            virtual=[
                uses({"name": "sec", "secret": {"secretName": "vnest-token-web"}}),
                secret("vnest-token-web"),
            ],
            host=[
                host_copy(
                    obj("Pod", "web"),
                    kind="Secret",
                    name=hn("vnest-token-web"),
                    annotations={ANNOTATION_KIND: "PodToken"},
                    data={"token": b64("t")},
                )
            ],
            untouched=[("Secret", hn("vnest-token-web"))],
            host_writes=[],
        ),
        id="a-pods-token-secret-is-the-pod-syncers-never-a-copy",
    ),
    pytest.param(
        Row(
            host=[
                host_copy(
                    obj("Pod", "web"),
                    kind="Secret",
                    name=hn("vnest-token-web"),
                    annotations={ANNOTATION_KIND: "PodToken"},
                    data={"token": b64("t")},
                )
            ],
            untouched=[("Secret", hn("vnest-token-web"))],
            host_writes=[],
        ),
        id="a-token-secret-without-a-virtual-secret-left-alone",
    ),
]


@pytest.mark.parametrize("row", CONFIGMAP_ROWS)
def test_configmaps(row: Row) -> None:
    check(row, run_row("ConfigMap", row))


@pytest.mark.parametrize("row", SECRET_ROWS)
def test_secrets(row: Row) -> None:
    check(row, run_row("Secret", row))


def test_a_restarted_config_syncer_writes_nothing() -> None:
    first = run_row(("ConfigMap", "Secret"), Row(virtual=[uses(CM_VOLUME, SECRET_VOLUME), CM, SECRET]))
    assert first.host("ConfigMap", HCM) is not None and first.host("Secret", HSECRET) is not None
    again = restart(("ConfigMap", "Secret"), first)
    assert again.host_writes == [] and again.virtual_writes == []
