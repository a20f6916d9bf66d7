"""sync.toHost.customResources without a cluster: config, the CRD copy, translation, both-way deletion.

Syncers run on a SyncContext whose clients talk to in-memory API servers (tests/unit/kubeapi.py),
which record what is sent; informers are never run, the tests fill the caches themselves.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.unit.kubeapi import FakeApiServer, namespace_object
from tests.unit.syncing import context
from vnest import naming
from vnest.config.load import load_config, to_values
from vnest.config.models import VClusterConfig
from vnest.errors import UsageError, VnestError
from vnest.kube.client import Resource, register, resource_of
from vnest.kube.objects import OwnerReference
from vnest.syncer.engine import SyncContext
from vnest.syncer.mappings import LABEL_FROM_HOST, hashed_label_key
from vnest.syncer.resources import customresources as cr

pytestmark = pytest.mark.unit

NAME, NS = "vc", "team-host"
KEY = r"sync.toHost.customResources.widgets\.example\.com"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
SCHEMA = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


def _version(name: str, storage: bool, status: bool = True) -> dict:
    out: dict[str, Any] = {"name": name, "served": True, "storage": storage, "schema": copy.deepcopy(SCHEMA)}
    if status:
        out["subresources"] = {"status": {}}
    return out


def host_crd(scope: str = "Namespaced", status: bool = True) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "widgets.example.com",
            "uid": "host-crd-uid",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
            "ownerReferences": [{"kind": "Deployment", "name": "operator", "uid": "o"}],
            "labels": {"app": "widgets", "vnest.io/managed-by": "someone-else"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "cert-manager.io/inject-ca-from": "ops/ca",
            },
        },
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": scope,
            "conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {"service": {"name": "hook"}}}},
            "versions": [_version("v1alpha1", False, status), _version("v1", True, status)],
        },
        "status": {"storedVersions": ["v1"], "conditions": [{"type": "Established", "status": "True"}]},
    }


def _values(*sets: str) -> VClusterConfig:
    return load_config([], list(sets))


def _ctx(*sets: str, virtual: FakeApiServer | None = None, host: FakeApiServer | None = None) -> SyncContext:
    return context(*sets, virtual=virtual, host=host)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def _calls(server: FakeApiServer) -> list[tuple[str, str, Any]]:
    """The requests the server got: method, path and body of each."""
    return [(r.method, r.path, r.body) for r in server.requests]


def _config_secret(host: FakeApiServer) -> None:
    """The cluster's config Secret on the host: the host copies' owner."""
    meta = {
        "name": naming.config_secret(NAME),
        "namespace": NS,
        "uid": "cfg-uid",
        "labels": naming.control_plane_labels(NAME, "config"),
    }
    host.seed({"apiVersion": "v1", "kind": "Secret", "metadata": meta})


def _serve_widgets(virtual: FakeApiServer, host: FakeApiServer, status: bool = True) -> None:
    """Both servers serve Widgets, as after the syncer's start: the host's CRD, its virtual copy, and the
    tenant's namespace."""
    host.seed(host_crd(status=status))
    virtual.seed(cr.virtual_crd(host_crd(status=status), cr.Key.parse("widgets.example.com"), NAME))
    virtual.seed(namespace_object("team"))


# --- config -----------------------------------------------------------------------------------


def test_config_accepts_plural_group_and_an_optional_version():
    values = _values(f"{KEY}.enabled=true", r"sync.toHost.customResources.gadgets\.other\.io/v2.enabled=true")
    keys = cr.enabled_keys(values)
    assert [(k.plural, k.group, k.version, k.crd_name) for k in keys] == [
        ("widgets", "example.com", None, "widgets.example.com"),
        ("gadgets", "other.io", "v2", "gadgets.other.io"),
    ]
    assert to_values(values)["sync"]["toHost"]["customResources"]["widgets.example.com"] == {
        "enabled": True,
        "scope": "Namespaced",
        "patches": [],
    }


def test_disabled_kinds_do_not_sync():
    assert cr.enabled_keys(_values(f"{KEY}.enabled=false")) == []
    assert cr.enabled_keys(_values()) == []


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [f"{KEY}.scope=Cluster"],
            "sync.toHost.customResources.widgets.example.com.scope: unsupported scope 'Cluster': "
            "only 'Namespaced' is allowed",
        ),
        (
            [f"{KEY}.patches=[{{path: spec.x, expression: value}}]"],
            "sync.toHost.customResources.widgets.example.com.patches: vnest does not support sync patches",
        ),
        (
            ["sync.toHost.customResources.widgets.enabled=true"],
            "sync.toHost.customResources.widgets: expected a key of the form plural.group, got 'widgets'",
        ),
        (
            [f"{KEY}.enabled=true", rf"{KEY}/v2.enabled=true"],
            "already syncs as 'widgets.example.com'; one version only",
        ),
        (
            [f"{KEY}.selector=x"],
            "unknown key 'sync.toHost.customResources.widgets.example.com.selector'",
        ),
    ],
    ids=["clusterScope", "patches", "noGroup", "twoVersions", "unknownKey"],
)
def test_config_errors_name_the_field(sets, message):
    with pytest.raises(UsageError) as e:
        load_config([], sets)
    assert message in str(e.value)


def test_two_versions_are_fine_when_only_one_is_enabled():
    keys = cr.enabled_keys(_values(f"{KEY}.enabled=false", rf"{KEY}/v2.enabled=true"))
    assert [k.key for k in keys] == ["widgets.example.com/v2"]


# --- the CRD copy -----------------------------------------------------------------------------


def test_virtual_crd_is_the_hosts_with_one_version_and_no_host_metadata():
    host = host_crd()
    before = copy.deepcopy(host)
    out = cr.virtual_crd(host, cr.Key.parse("widgets.example.com"), NAME)
    assert host == before
    assert out["metadata"] == {
        "name": "widgets.example.com",
        "labels": {"app": "widgets", naming.LABEL_MANAGED_BY: NAME, LABEL_FROM_HOST: "true"},
        "annotations": {"cert-manager.io/inject-ca-from": "ops/ca"},
    }
    assert "status" not in out
    assert "conversion" not in out["spec"]
    assert out["spec"]["preserveUnknownFields"] is False
    assert out["spec"]["versions"] == [_version("v1", True)]  # the host's storage version only
    assert out["spec"]["names"] == host["spec"]["names"]
    assert out["spec"]["scope"] == "Namespaced"


def test_a_version_in_the_key_is_served_and_stored():
    out = cr.virtual_crd(host_crd(), cr.Key.parse("widgets.example.com/v1alpha1"), NAME)
    assert out["spec"]["versions"] == [_version("v1alpha1", True)]


def test_a_version_the_host_lacks_is_an_error_naming_the_key():
    with pytest.raises(cr.CustomResourceError) as e:
        cr.chosen_version(host_crd(), cr.Key.parse("widgets.example.com/v9"))
    assert str(e.value) == (
        "sync.toHost.customResources.widgets.example.com/v9: the host's CustomResourceDefinition "
        "widgets.example.com has no version v9 (it has: v1alpha1, v1)"
    )


def test_versions_the_virtual_crd_still_stores_are_kept_unstored():
    existing = cr.virtual_crd(host_crd(), cr.Key.parse("widgets.example.com/v1alpha1"), NAME)
    existing["status"] = {"storedVersions": ["v1alpha1"]}
    out = cr.virtual_crd(host_crd(), cr.Key.parse("widgets.example.com"), NAME, existing)
    assert out["spec"]["versions"] == [_version("v1", True), _version("v1alpha1", False)]
    existing["status"] = {"storedVersions": ["v1"]}
    out = cr.virtual_crd(host_crd(), cr.Key.parse("widgets.example.com"), NAME, existing)
    assert out["spec"]["versions"] == [_version("v1", True)]


def test_status_subresource_is_read_from_the_chosen_version():
    assert cr.has_status(_version("v1", True)) is True
    assert cr.has_status(_version("v1", True, status=False)) is False


def test_setup_copies_the_crd_registers_the_kind_and_makes_a_syncer(virtual_api, host_api):
    ctx = _ctx(f"{KEY}.enabled=true", virtual=virtual_api, host=host_api)
    host_api.seed(host_crd())
    _config_secret(host_api)
    [syncer] = _run(cr.syncers(ctx))
    assert syncer.kind == "Widget"
    assert syncer.api_version == "example.com/v1"
    assert syncer.status_subresource is True
    assert syncer.owner == {"apiVersion": "v1", "kind": "Secret", "name": "vc-config-vc", "uid": "cfg-uid"}
    assert resource_of("Widget") == Resource("example.com/v1", "widgets")
    posts = [c for c in _calls(virtual_api) if c[0] == "POST"]
    assert len(posts) == 1 and posts[0][1] == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    assert posts[0][2]["metadata"]["labels"][LABEL_FROM_HOST] == "true"
    assert virtual_api.get("CustomResourceDefinition", "widgets.example.com") is not None

    # Started again: the copy exists and is updated in place, never created twice.
    virtual_api.requests.clear()
    _run(cr.syncers(ctx))
    puts = [c for c in _calls(virtual_api) if c[0] == "PUT"]
    assert [c[1] for c in puts] == [CRD_PATH]
    assert not [c for c in _calls(virtual_api) if c[0] == "POST"]


@pytest.mark.parametrize(
    ("crd", "message"),
    [
        (None, "the host has no CustomResourceDefinition widgets.example.com"),
        (host_crd(scope="Cluster"), "is cluster-scoped on the host; only namespaced custom resources"),
    ],
    ids=["missing", "clusterScoped"],
)
def test_a_kind_that_cannot_sync_stops_the_syncer_loudly(crd, message, virtual_api, host_api):
    ctx = _ctx(f"{KEY}.enabled=true", virtual=virtual_api, host=host_api)
    if crd is not None:
        host_api.seed(crd)
    _config_secret(host_api)
    with pytest.raises(cr.CustomResourceError) as e:
        _run(cr.syncers(ctx))
    assert str(e.value).startswith("sync.toHost.customResources.widgets.example.com: ")
    assert message in str(e.value)
    # ...and says so on the host, on the cluster's config Secret.
    [event] = [c[2] for c in _calls(host_api) if c[0] == "POST"]
    assert event["reason"] == "CustomResourceSyncFailed" and event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "vc-config-vc"
    assert event["message"] == str(e.value)
    assert [e["message"] for e in host_api.objects("Event", NS)] == [event["message"]]
    assert not [c for c in _calls(virtual_api) if c[0] != "GET"]


def test_register_refuses_a_kind_known_elsewhere():
    register("Widget", Resource("example.com/v1", "widgets"))  # the same again: fine
    with pytest.raises(VnestError, match=r"kind Service .* vnest already knows"):
        register("Service", Resource("serving.knative.dev/v1", "services"))
    assert resource_of("Service") == Resource("v1", "services")


# --- the syncer -------------------------------------------------------------------------------


def _syncer(ctx: SyncContext, status: bool = True) -> cr.CustomResourceSyncer:
    register("Widget", Resource("example.com/v1", "widgets"))
    owner: OwnerReference = {"apiVersion": "v1", "kind": "Secret", "name": "vc-config-vc", "uid": "cfg-uid"}
    return cr.CustomResourceSyncer(ctx, "Widget", "example.com/v1", status, owner)


def _widget(name: str = "w", ns: str = "team", uid: str = "w-uid", **fields) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "resourceVersion": "7",
            "labels": {"app": "shop", "vnest.io/managed-by": "forged"},
            "annotations": {"note": "hi"},
            "finalizers": ["example.com/cleanup"],
        },
        **fields,
    }


def _host_of(syncer: cr.CustomResourceSyncer, vobj: dict, **fields) -> dict:
    hobj = syncer.translate(vobj)
    hobj["metadata"].update(uid="h-uid", resourceVersion="9")
    hobj.update(fields)
    return hobj


def test_translate_copies_every_field_but_metadata_and_status():
    ctx = _ctx()
    syncer = _syncer(ctx)
    vobj = _widget(spec={"size": 3}, data={"k": "v"}, status={"phase": "Tenant"})
    out = syncer.translate(vobj)
    assert out == {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {
            "name": "w-x-team-x-vc",
            "namespace": NS,
            "labels": {
                "app": "shop",
                hashed_label_key("vnest.io/managed-by"): "forged",
                naming.LABEL_MANAGED_BY: NAME,
                "vnest.io/namespace": "team",
            },
            "annotations": {
                "note": "hi",
                naming.ANNOTATION_NAME: "w",
                naming.ANNOTATION_NAMESPACE: "team",
                naming.ANNOTATION_UID: "w-uid",
                naming.ANNOTATION_KIND: "Widget",
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Secret", "name": "vc-config-vc", "uid": "cfg-uid"}
            ],
        },
        "spec": {"size": 3},
        "data": {"k": "v"},
    }


def test_a_spec_edit_is_put_on_the_host_keeping_the_hosts_status(virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api)
    syncer = _syncer(ctx)
    hobj = host_api.seed(_host_of(syncer, _widget(spec={"size": 3}), status={"phase": "Ready"}))
    vobj = virtual_api.seed(_widget(spec={"size": 5}, status={"phase": "Ready"}))
    syncer.virtual.store["team/w"] = vobj
    syncer.host.store[f"{NS}/w-x-team-x-vc"] = hobj
    _run(syncer.reconcile("team/w"))
    [(method, path, body)] = _calls(host_api)
    assert (method, path) == ("PUT", f"/apis/example.com/v1/namespaces/{NS}/widgets/w-x-team-x-vc")
    assert body["spec"] == {"size": 5}
    assert body["status"] == {"phase": "Ready"}
    assert body["metadata"]["resourceVersion"] == hobj["metadata"]["resourceVersion"]
    assert not virtual_api.requests

    # In line already (the host object as the PUT left it): nothing is written.
    host_api.requests.clear()
    syncer.host.store[f"{NS}/w-x-team-x-vc"] = host_api.get("Widget", "w-x-team-x-vc", NS)
    assert syncer.host.store[f"{NS}/w-x-team-x-vc"]["status"] == {"phase": "Ready"}
    _run(syncer.reconcile("team/w"))
    assert not host_api.requests and not virtual_api.requests


@pytest.mark.parametrize("subresource", [True, False])
def test_status_comes_back_from_the_host(subresource, virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api, status=subresource)
    syncer = _syncer(ctx, status=subresource)
    vobj = virtual_api.seed(_widget(spec={"size": 3}))
    syncer.virtual.store["team/w"] = vobj
    hobj = host_api.seed(_host_of(syncer, vobj, status={"phase": "Ready"}))
    syncer.host.store[f"{NS}/w-x-team-x-vc"] = hobj
    _run(syncer.reconcile("team/w"))
    assert not host_api.requests
    [(method, path, body)] = _calls(virtual_api)
    suffix = "/status" if subresource else ""
    assert (method, path) == ("PUT", f"/apis/example.com/v1/namespaces/team/widgets/w{suffix}")
    assert body["status"] == {"phase": "Ready"}
    assert body["metadata"]["resourceVersion"] == vobj["metadata"]["resourceVersion"]
    assert body["spec"] == {"size": 3}
    assert virtual_api.get("Widget", "w", "team")["status"] == {"phase": "Ready"}


def test_deleting_the_virtual_object_deletes_the_host_copy_with_a_uid_precondition(virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api)
    syncer = _syncer(ctx)
    syncer.host.store[f"{NS}/w-x-team-x-vc"] = host_api.seed(_host_of(syncer, _widget()))
    _run(syncer.reconcile("team/w"))
    [(method, path, body)] = _calls(host_api)
    assert (method, path) == ("DELETE", f"/apis/example.com/v1/namespaces/{NS}/widgets/w-x-team-x-vc")
    assert body["preconditions"] == {"uid": "h-uid"}
    assert host_api.get("Widget", "w-x-team-x-vc", NS) is None


async def _host_deleted_then_reconcile(syncer: cr.CustomResourceSyncer, hobj: dict) -> None:
    syncer.host_handlers().on_delete(
        hobj
    )  # the host informer's DELETED event (its queue needs a running loop)
    await syncer.reconcile("team/w")


def test_a_host_copy_deleted_while_running_takes_the_virtual_object_along(virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api)
    syncer = _syncer(ctx)
    vobj = virtual_api.seed(_widget())
    hobj = _host_of(syncer, vobj)  # gone from the host
    syncer.virtual.store["team/w"] = vobj
    _run(_host_deleted_then_reconcile(syncer, hobj))  # the host informer saw it go
    [(method, path, body)] = _calls(virtual_api)
    assert (method, path) == ("DELETE", "/apis/example.com/v1/namespaces/team/widgets/w")
    assert body["preconditions"] == {"uid": "w-uid"}
    assert not host_api.requests
    assert syncer.host_deleted == {}
    # Its finalizer holds it until the tenant's controller lets go.
    assert virtual_api.get("Widget", "w", "team")["metadata"]["deletionTimestamp"]


def test_a_missing_host_copy_of_another_virtual_object_is_created_again(virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api)
    syncer = _syncer(ctx)
    old = _host_of(syncer, _widget(uid="old-uid"))
    syncer.virtual.store["team/w"] = virtual_api.seed(_widget(uid="new-uid"))
    _run(_host_deleted_then_reconcile(syncer, old))  # a copy of an earlier object of that name
    assert not virtual_api.requests
    [(_, _, body)] = [c for c in _calls(host_api) if c[0] == "POST"]
    assert body["metadata"]["annotations"][naming.ANNOTATION_UID] == "new-uid"
    made = host_api.get("Widget", "w-x-team-x-vc", NS)
    assert made["metadata"]["annotations"][naming.ANNOTATION_UID] == "new-uid"


def test_an_unowned_host_object_at_the_name_is_left_alone_with_a_sync_error(virtual_api, host_api):
    ctx = _ctx(virtual=virtual_api, host=host_api)
    _serve_widgets(virtual_api, host_api)
    syncer = _syncer(ctx)
    syncer.virtual.store["team/w"] = virtual_api.seed(_widget())
    # Not ours, at the copy's name: the create gets a 409.
    meta = {"name": "w-x-team-x-vc", "namespace": NS, "labels": {}}
    unowned = host_api.seed({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta})
    _run(syncer.reconcile("team/w"))
    assert [c[0] for c in _calls(host_api)] == ["POST", "GET"]
    assert host_api.get("Widget", "w-x-team-x-vc", NS) == unowned
    [(method, _, event)] = _calls(virtual_api)
    assert method == "POST" and event["reason"] == "SyncError"
    assert "not managed by this virtual cluster" in event["message"]
    assert event["involvedObject"]["kind"] == "Widget"
