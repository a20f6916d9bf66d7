"""ServiceAccounts, table by table (sync.toHost.serviceAccounts, off by default) (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
    NS,
    Fail,
    Row,
    check,
    foreign,
    hn,
    host_copy,
    obj,
    restart,
    run_row,
)
from vnest.config.load import load_config
from vnest.syncer import registry
from vnest.syncer.mappings import (
    ANNOTATION_KIND,
    ANNOTATION_NAME,
    ANNOTATION_UID,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
)

pytestmark = pytest.mark.unit

ON = "sync.toHost.serviceAccounts.enabled=true"
NOT_OURS = "exists and is not managed by this virtual cluster; vnest leaves it alone"
RUNNER = obj(
    "ServiceAccount",
    "runner",
    labels={"team": "ci"},
    imagePullSecrets=[{"name": "registry"}],
    secrets=[{"name": "runner-token"}],
)
HRUNNER = hn("runner")


def hsa(vsa: dict, *, of_uid: str = "", **fields: Any) -> dict:
    return host_copy(vsa, of_uid=of_uid, **{"automountServiceAccountToken": False, **fields})


ROWS = [
    pytest.param(
        Row(
            virtual=[RUNNER],
            sets=[ON],
            host_has={
                ("ServiceAccount", HRUNNER): {
                    "metadata": {
                        "labels": {"team": "ci", LABEL_MANAGED_BY: "vc", LABEL_NAMESPACE: "default"},
                        "annotations": {ANNOTATION_NAME: "runner", ANNOTATION_KIND: "ServiceAccount"},
                    },
                    "automountServiceAccountToken": False,
                    "imagePullSecrets": None,
                    "secrets": None,
                }
            },
            host_writes=["POST serviceaccounts"],
        ),
        id="create-without-secrets-or-pull-secrets-no-automount",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            host=[hsa(RUNNER, imagePullSecrets=[{"name": hn("registry")}])],
            sets=[ON],
            host_has={("ServiceAccount", HRUNNER): {"imagePullSecrets": None}},
            host_writes=[f"PUT serviceaccounts/{HRUNNER}"],
        ),
        id="pull-secrets-added-on-the-host-removed",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            host=[hsa(RUNNER, automountServiceAccountToken=True)],
            sets=[ON],
            host_has={("ServiceAccount", HRUNNER): {"automountServiceAccountToken": False}},
            host_writes=[f"PUT serviceaccounts/{HRUNNER}"],
        ),
        id="automount-turned-on-on-the-host-turned-off",
    ),
    pytest.param(
        Row(
            virtual=[obj("ServiceAccount", "runner", labels={"team": "cd"})],
            host=[hsa(RUNNER)],
            sets=[ON],
            host_has={("ServiceAccount", HRUNNER): {"metadata": {"labels": {"team": "cd"}}}},
            host_writes=[f"PUT serviceaccounts/{HRUNNER}"],
        ),
        id="label-change-put",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            host=[hsa(RUNNER)],
            sets=[ON],
            untouched=[("ServiceAccount", HRUNNER)],
            host_writes=[],
        ),
        id="in-line-no-write",
    ),
    pytest.param(
        Row(
            host=[hsa(RUNNER)],
            sets=[ON],
            host_lacks=[("ServiceAccount", HRUNNER)],
            host_writes=[f"DELETE serviceaccounts/{HRUNNER}"],
        ),
        id="virtual-gone-copy-deleted",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            host=[hsa(RUNNER, of_uid="old-uid")],
            sets=[ON],
            host_has={
                ("ServiceAccount", HRUNNER): {"metadata": {"annotations": {ANNOTATION_UID: "runner-uid"}}}
            },
            host_writes=[f"DELETE serviceaccounts/{HRUNNER}", "POST serviceaccounts"],
        ),
        id="uid-mismatch-replaced",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            host=[foreign("ServiceAccount", HRUNNER)],
            sets=[ON],
            untouched=[("ServiceAccount", HRUNNER)],
            events=[("SyncError", f"host ServiceAccount {NS}/{HRUNNER} {NOT_OURS}")],
        ),
        id="not-ours-left-alone-and-reported",
    ),
    pytest.param(
        Row(
            virtual=[RUNNER],
            sets=[ON],
            fail=[
                Fail(
                    "POST",
                    "serviceaccounts",
                    403,
                    f'serviceaccounts "{HRUNNER}" is forbidden: exceeded quota',
                )
            ],
            host_has={("ServiceAccount", HRUNNER): {}},
            events=[
                ("SyncError", 'the host refused the ServiceAccount: serviceaccounts "runner" is forbidden')
            ],
            host_writes=["POST serviceaccounts", "POST serviceaccounts"],
        ),
        id="host-refusal-one-event-in-virtual-names-then-retried",
    ),
]


@pytest.mark.parametrize("row", ROWS)
def test_service_accounts(row: Row) -> None:
    check(row, run_row("ServiceAccount", row))


def _pod(sa: str = "") -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "nginx"}]}
    if sa:
        spec["serviceAccountName"] = sa
    return obj("Pod", "worker", spec=spec)


@pytest.mark.parametrize(
    ("sets", "pod", "want"),
    [
        pytest.param([ON], _pod("runner"), HRUNNER, id="on-pods-run-as-the-copy"),
        pytest.param([ON], _pod(), hn("default"), id="on-the-default-account-is-the-defaults-copy"),
        pytest.param([], _pod("runner"), None, id="off-the-host-namespaces-own"),
    ],
)
def test_pods_run_as_the_copy_of_their_service_account(sets, pod, want) -> None:
    row = Row(
        virtual=[RUNNER, pod],
        sets=sets,
        host_has={
            ("Pod", hn("worker")): {
                "spec": {"serviceAccountName": want, "automountServiceAccountToken": False}
            }
        },
    )
    check(row, run_row(("ServiceAccount", "Pod") if ON in sets else "Pod", row))


def test_service_accounts_do_not_sync_by_default() -> None:
    config = load_config([], [])
    enabled = {k.name for k in registry.KINDS if k.enabled(config)}
    assert "ServiceAccount" not in enabled and "Pod" in enabled
    assert "ServiceAccount" in {k.name for k in registry.KINDS if k.enabled(load_config([], [ON]))}


def test_a_restarted_service_account_syncer_writes_nothing() -> None:
    first = run_row("ServiceAccount", Row(virtual=[RUNNER], sets=[ON]))
    again = restart("ServiceAccount", first, sets=[ON])
    assert again.host_writes == [] and again.virtual_writes == []
