"""ServiceAccounts, table by table (sync.toHost.serviceAccounts, off by default) (tests/unit/syncing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.syncing import (
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
)
from vnest.config.load import load_config
from vnest.syncer import registry
from vnest.syncer.mappings import ANNOTATION_KIND, ANNOTATION_NAME, LABEL_MANAGED_BY, LABEL_NAMESPACE

pytestmark = pytest.mark.unit

ON = "sync.toHost.serviceAccounts.enabled=true"
RUNNER = obj(
    "ServiceAccount",
    "runner",
    labels={"team": "ci"},
    imagePullSecrets=[{"name": "registry"}],
    secrets=[{"name": "runner-token"}],
)
HRUNNER = hn("runner")


def hsa(vsa: dict, **fields: Any) -> dict:
    """The copy of `vsa`: without its secrets, no token mounted (`fields`: drifted on the host)."""
    return host_copy(vsa, **{"automountServiceAccountToken": False, **fields})


SHARED = engine_rows(
    "ServiceAccount",
    RUNNER,
    copy_of=hsa,
    sets=[ON],
    relabel={"team": "cd"},
    not_ours={},
    refusal=(403, 'serviceaccounts "{}" is forbidden: exceeded quota'),
)

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
]


test_service_accounts = table("ServiceAccount", SHARED, ROWS)


def _pod(sa: str = "") -> dict:
    out = pod("worker")
    if sa:
        out["spec"]["serviceAccountName"] = sa
    return out


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
    restarted_writes_nothing("ServiceAccount", Row(virtual=[RUNNER], sets=[ON]))
