"""The in-memory API server (tests/unit/kubeapi.py), through the real KubeClient and the real informer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.unit.kubeapi import FakeApiServer, namespace_object
from vnest.kube.client import ApiError, KubeClient, Obj, Resource, resource_of
from vnest.syncer.engine import Handlers, Informer

PODS = "/api/v1/namespaces/default/pods"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


def _pod(name: str, labels: dict[str, str] | None = None, namespace: str = "default", **spec: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "nginx"}], **spec},
    }


def _crd(status: bool = True) -> Obj:
    version: Obj = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object"}},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [version],
        },
    }


async def _refused(call: Coroutine[Any, Any, Any]) -> ApiError:
    with pytest.raises(ApiError) as e:
        await call
    return e.value


# ---- reads and writes ------------------------------------------------------------------------


def test_create_get_and_list_with_selectors(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        web = _pod("", {"app": "web", "tier": "a"})
        web["metadata"] = {"generateName": "web-", "labels": web["metadata"]["labels"]}
        made = await kube.create(web, "default")
        meta = made["metadata"]
        assert meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
        assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
        assert made["status"] == {"phase": "Pending"}  # a Pod's status starts as the API server's
        await kube.create(_pod("db", {"app": "db"}))
        await kube.create(_pod("plain"))
        await kube.create(namespace_object("other"))
        await kube.create(_pod("elsewhere", {"app": "web"}, "other"))
        assert await kube.get("Pod", meta["name"], "default") == made
        assert await kube.get_or_none("Pod", "absent", "default") is None

        def names(items: list[Obj]) -> list[str]:
            return [o["metadata"]["name"] for o in items]

        assert names(await kube.list("Pod", "default", "app=web")) == [meta["name"]]
        assert names(await kube.list("Pod", "default", "app!=web")) == ["db", "plain"]
        assert names(await kube.list("Pod", "default", "app")) == ["db", meta["name"]]
        assert names(await kube.list("Pod", "default", "!app")) == ["plain"]
        assert names(await kube.list("Pod", "default", "app in (db,x),!tier")) == ["db"]
        assert names(await kube.list("Pod", "default", "app notin (db)")) == ["plain", meta["name"]]
        assert names(await kube.list("Pod", None, "app==web")) == [meta["name"], "elsewhere"]
        assert all(o["kind"] == "Pod" for o in await kube.list("Pod"))
        page = await kube.request("GET", "/api/v1/pods", params={"fieldSelector": "metadata.name=db"})
        assert (
            page["kind"] == "PodList" and page["metadata"]["resourceVersion"] == virtual_api.resource_version
        )
        assert names(page["items"]) == ["db"] and "kind" not in page["items"][0]  # as typed lists are
        page = await kube.request(
            "GET", "/api/v1/pods", params={"fieldSelector": "metadata.namespace!=default"}
        )
        assert names(page["items"]) == ["elsewhere"]
        first = await kube.request("GET", PODS, params={"limit": 2})
        rest = await kube.request("GET", PODS, params={"limit": 2, "continue": first["metadata"]["continue"]})
        assert names(first["items"]) + names(rest["items"]) == ["db", "plain", meta["name"]]
        assert "continue" not in rest["metadata"]
        assert (await kube.request("GET", "/version"))["gitVersion"].startswith("v1.")

    _run(_with_client(virtual_api, scenario))


async def _with_client(
    server: FakeApiServer, scenario: Callable[[KubeClient], Coroutine[Any, Any, None]]
) -> None:
    async with server.client() as kube:
        await scenario(kube)


def test_refusals_are_api_server_statuses(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        await kube.create(_pod("a"))
        e = await _refused(kube.create(_pod("a")))
        assert (e.status, e.reason, e.detail) == (409, "AlreadyExists", 'pods "a" already exists')
        e = await _refused(kube.create(_pod("a", namespace="nowhere")))
        assert (e.status, e.reason, e.detail) == (404, "NotFound", 'namespaces "nowhere" not found')
        e = await _refused(kube.get("StorageClass", "fast"))
        assert (e.status, e.detail) == (404, 'storageclasses.storage.k8s.io "fast" not found')
        e = await _refused(kube.request("GET", "/api/v1/namespaces/default/gadgets"))
        assert (e.status, e.reason, e.detail) == (
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        e = await _refused(kube.request("GET", "/apis/example.com/v1/widgets"))  # no CRD: no such kind
        assert e.status == 404
        e = await _refused(kube.request("POST", "/api/v1/pods", body=_pod("b")))
        assert e.status == 405
        e = await _refused(kube.create(_pod("b", namespace="kube-system"), "default"))
        assert e.status == 400

    _run(_with_client(virtual_api, scenario))


def test_updates_need_the_current_resource_version(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        made = await kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"},
                "data": {"a": "1"},
            }
        )
        path = resource_of("ConfigMap").path("default", "c")
        updated = await kube.request("PUT", path, body={**made, "data": {"a": "2"}})
        assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
        assert (
            updated["metadata"]["uid"] == made["metadata"]["uid"] and updated["metadata"]["generation"] == 2
        )
        e = await _refused(kube.request("PUT", path, body={**made, "data": {"a": "3"}}))  # made is stale now
        assert (e.status, e.reason) == (409, "Conflict") and "the object has been modified" in e.detail
        other_uid = {**updated, "metadata": {**updated["metadata"], "uid": "someone-else"}}
        assert (await _refused(kube.request("PUT", path, body=other_uid))).status == 409
        same = await kube.request("PUT", path, body=updated)
        assert same == updated  # nothing changed: no new resourceVersion
        assert virtual_api.get("ConfigMap", "c", "default") == {**updated, "kind": "ConfigMap"}
        assert (
            await _refused(
                kube.request(
                    "PUT",
                    resource_of("ConfigMap").path("default", "gone"),
                    body={**made, "metadata": {"name": "gone"}},
                )
            )
        ).status == 404

    _run(_with_client(virtual_api, scenario))


def test_deletes_with_preconditions_and_finalizers(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        made = await kube.create(_pod("a"))
        stranger = {**made, "metadata": {**made["metadata"], "uid": "another"}}
        assert await kube.delete_exact("Pod", stranger) is False  # 409: another object of that name
        assert virtual_api.get("Pod", "a", "default") is not None
        e = await _refused(
            kube.request("DELETE", PODS + "/a", body={"preconditions": {"resourceVersion": "1"}})
        )
        assert e.status == 409 and "ResourceVersion in precondition: 1" in e.detail
        assert await kube.delete_exact("Pod", made, grace=0) is True
        assert virtual_api.get("Pod", "a", "default") is None
        assert await kube.delete_exact("Pod", made) is False  # 404
        assert await kube.delete("Pod", "a", "default") is False

        held = await kube.create(
            {**_pod("held"), "metadata": {"name": "held", "namespace": "default", "finalizers": ["x/y"]}}
        )
        assert await kube.delete("Pod", "held", "default") is True
        deleting = await kube.get("Pod", "held", "default")
        assert (
            deleting["metadata"]["deletionTimestamp"]
            and deleting["metadata"]["uid"] == held["metadata"]["uid"]
        )
        await kube.request(
            "PUT", PODS + "/held", body={**deleting, "metadata": {**deleting["metadata"], "finalizers": []}}
        )
        assert await kube.get_or_none("Pod", "held", "default") is None

        await kube.create(_pod("bound", nodeName="n1"))  # on a node: the kubelet's final delete ends it
        assert await kube.delete("Pod", "bound", "default") is True
        assert (await kube.get("Pod", "bound", "default"))["metadata"]["deletionGracePeriodSeconds"] == 30
        await kube.request("DELETE", PODS + "/bound", body={"gracePeriodSeconds": 0})
        assert await kube.get_or_none("Pod", "bound", "default") is None
        bad_policy = {"propagationPolicy": "Sometimes"}
        await kube.create(_pod("p"))
        assert (await _refused(kube.request("DELETE", PODS + "/p", body=bad_policy))).status == 400

        await kube.create(namespace_object("team"))
        await kube.create(_pod("p", namespace="team"))
        assert await kube.delete("Namespace", "team") is True
        assert virtual_api.objects("Pod", "team") == [] and virtual_api.get("Namespace", "team") is None

    _run(_with_client(virtual_api, scenario))


def test_patches(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        await kube.create(
            {
                **_pod("a", {"keep": "1", "drop": "1"}),
                "spec": {
                    "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}]
                },
            }
        )
        merged = await kube.patch("Pod", "a", {"metadata": {"labels": {"drop": None, "new": "1"}}}, "default")
        assert merged["metadata"]["labels"] == {"keep": "1", "new": "1"}
        strategic = await kube.request(
            "PATCH",
            PODS + "/a",
            body={"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}},
            content_type="application/strategic-merge-patch+json",
        )
        assert strategic["spec"]["containers"] == [
            {"name": "app", "image": "nginx:2"},
            {"name": "side", "image": "busybox"},
        ]
        deleted = await kube.request(
            "PATCH",
            PODS + "/a",
            body={"spec": {"containers": [{"name": "side", "$patch": "delete"}]}},
            content_type="application/strategic-merge-patch+json",
        )
        assert deleted["spec"]["containers"] == [{"name": "app", "image": "nginx:2"}]
        replaced = await kube.patch(
            "Pod", "a", {"spec": {"containers": [{"name": "app", "image": "nginx:3"}]}}, "default"
        )
        assert replaced["spec"]["containers"] == [
            {"name": "app", "image": "nginx:3"}
        ]  # a merge patch replaces lists
        stale = {"metadata": {"resourceVersion": "1"}, "spec": {"restartPolicy": "Never"}}
        assert (await _refused(kube.patch("Pod", "a", stale, "default"))).status == 409
        jp = "application/json-patch+json"
        wrong_name = [{"op": "test", "path": "/spec/containers/0/name", "value": "other"}]
        assert (
            await _refused(kube.request("PATCH", PODS + "/a", body=wrong_name, content_type=jp))
        ).status == 422
        image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:4"}]
        patched = await kube.request("PATCH", PODS + "/a", body=image, content_type=jp)
        assert patched["spec"]["containers"][0]["image"] == "nginx:4"
        other = kube.request("PATCH", PODS + "/a", body={}, content_type="application/yaml")
        assert (await _refused(other)).status == 415
        assert (await _refused(kube.patch("Pod", "absent", {}, "default"))).status == 404

        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "labels": {"a": "1"}},
            "data": {"x": "1"},
        }
        created = await kube.apply(config)
        assert created["data"] == {"x": "1"} and created["metadata"]["uid"]
        await kube.patch("ConfigMap", "c", {"metadata": {"annotations": {"theirs": "1"}}}, "default")
        applied = await kube.apply({**config, "data": {"y": "2"}})
        assert applied["data"]["y"] == "2"
        assert (
            applied["metadata"]["annotations"] == {"theirs": "1"}
            and applied["metadata"]["uid"] == created["metadata"]["uid"]
        )
        no_manager = kube.request(
            "PATCH",
            resource_of("ConfigMap").path("default", "c"),
            body=config,
            content_type="application/apply-patch+yaml",
        )
        assert (await _refused(no_manager)).status == 400

    _run(_with_client(virtual_api, scenario))


def test_status_is_written_through_its_subresource(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        made = await kube.create({**_pod("a"), "status": {"phase": "Running"}})
        assert made["status"] == {"phase": "Pending"}
        body = {**made, "spec": {**made["spec"], "nodeName": "n1"}, "status": {"phase": "Running"}}
        updated = await kube.request("PUT", PODS + "/a", body=body)
        assert updated["spec"]["nodeName"] == "n1" and updated["status"] == {"phase": "Pending"}
        body = {
            **updated,
            "spec": {"containers": []},
            "metadata": {**updated["metadata"], "labels": {"x": "1"}},
            "status": {"phase": "Running"},
        }
        status = await kube.request("PUT", PODS + "/a/status", body=body)
        assert status["status"] == {"phase": "Running"}
        assert status["spec"] == updated["spec"] and status["metadata"].get("labels") == {}
        patched = await kube.request(
            "PATCH",
            PODS + "/a/status",
            body={"status": {"podIP": "10.0.0.1"}},
            content_type="application/merge-patch+json",
        )
        assert patched["status"] == {"phase": "Running", "podIP": "10.0.0.1"}

        # A ConfigMap has no status subresource; a custom resource has one when its CRD says so.
        assert (
            await _refused(kube.request("GET", resource_of("ConfigMap").path("default", "c", "status")))
        ).status == 404
        for with_status in (True, False):
            crd = await kube.request("POST", CRDS, body=_crd(with_status))
            assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
                "NamesAccepted": "True",
                "Established": "True",
            }
            path = "/apis/example.com/v1/namespaces/default/widgets"
            widget = await kube.request(
                "POST",
                path,
                body={
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w"},
                    "spec": {"size": 1},
                    "status": {"phase": "New"},
                },
            )
            assert ("status" in widget) is not with_status
            e = await _refused(kube.request("PUT", path + "/w", body={**widget, "metadata": {"name": "w"}}))
            assert (e.status, e.reason) == (
                422,
                "Invalid",
            )  # custom resources are updated with a resourceVersion
            status_put = kube.request(
                "PUT", path + "/w/status", body={**widget, "status": {"phase": "Ready"}}
            )
            if with_status:
                assert (await status_put)["status"] == {"phase": "Ready"}
            else:
                assert (await _refused(status_put)).status == 404
            page = await kube.request("GET", path)
            assert page["items"][0]["kind"] == "Widget"  # custom resources' list items carry their kind
            await kube.request("DELETE", CRDS + "/widgets.example.com")  # its objects go with it
            assert virtual_api.objects("CustomResourceDefinition") == []
            assert (await _refused(kube.request("GET", path))).status == 404

    _run(_with_client(virtual_api, scenario))


def test_pod_binding_ephemeral_containers_and_tokens(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        pod = await kube.create(_pod("a"))
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "a", "uid": pod["metadata"]["uid"], "annotations": {"seen": "yes"}},
            "target": {"kind": "Node", "name": "n1"},
        }
        assert (await kube.request("POST", PODS + "/a/binding", body=binding))["status"] == "Success"
        bound = await kube.get("Pod", "a", "default")
        assert bound["spec"]["nodeName"] == "n1" and bound["metadata"]["annotations"] == {"seen": "yes"}
        e = await _refused(kube.request("POST", PODS + "/a/binding", body=binding))
        assert e.status == 409 and 'already assigned to node "n1"' in e.detail
        assert (await _refused(kube.request("PUT", PODS + "/a/binding", body=binding))).status == 405

        debug = {"name": "debug", "image": "busybox"}
        added = await kube.request(
            "PATCH",
            PODS + "/a/ephemeralcontainers",
            body={"spec": {"ephemeralContainers": [debug]}},
            content_type="application/strategic-merge-patch+json",
        )
        assert added["spec"]["ephemeralContainers"] == [debug]
        removing = kube.request(
            "PATCH",
            PODS + "/a/ephemeralcontainers",
            body={"spec": {"ephemeralContainers": [{"name": "other", "image": "busybox"}]}},
            content_type="application/merge-patch+json",
        )
        assert (await _refused(removing)).status == 422

        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": "default"},
            }
        )
        request = {
            "spec": {
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "name": "a", "uid": pod["metadata"]["uid"]},
            }
        }
        token = await kube.request(
            "POST", "/api/v1/namespaces/default/serviceaccounts/default/token", body=request
        )
        assert token["kind"] == "TokenRequest" and token["status"]["token"].startswith("fake-token.")
        assert token["spec"]["expirationSeconds"] == 600 and token["status"]["expirationTimestamp"]
        missing = kube.request(
            "POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token", body=request
        )
        assert (await _refused(missing)).status == 404

    _run(_with_client(virtual_api, scenario))


def test_requests_are_recorded_and_failures_injected(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        virtual_api.fail_next("POST", "pods", status=403, message='pods "a" is forbidden: quota exceeded')
        e = await _refused(kube.create(_pod("a")))
        assert (e.status, e.reason, e.detail) == (403, "Forbidden", 'pods "a" is forbidden: quota exceeded')
        assert virtual_api.get("Pod", "a", "default") is None
        await kube.create(_pod("a"))  # only the next one fails
        await kube.get("Pod", "a", "default")
        virtual_api.fail_next("DELETE", "pods", name="b", status=500)
        assert await kube.delete("Pod", "a", "default") is True

    _run(_with_client(virtual_api, scenario))
    assert [(r.method, r.path) for r in virtual_api.requests] == [
        ("POST", PODS),
        ("POST", PODS),
        ("GET", PODS + "/a"),
        ("DELETE", PODS + "/a"),
    ]
    assert [r.method for r in virtual_api.writes()] == ["POST", "POST", "DELETE"]
    assert virtual_api.requests[0].body["metadata"]["name"] == "a"
    assert virtual_api.requests[-1].body["propagationPolicy"] == "Background"


def test_a_kind_served_by_the_test(virtual_api: FakeApiServer) -> None:
    leases = Resource("coordination.k8s.io/v1", "leases")
    path = leases.path("default")

    async def scenario(kube: KubeClient) -> None:
        assert (await _refused(kube.request("GET", path))).status == 404
        virtual_api.serve("Lease", leases)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}}
        made = await kube.request("POST", path, body=lease)
        assert made["kind"] == "Lease" and made["metadata"]["namespace"] == "default"
        assert (await kube.request("GET", path))["items"][0]["metadata"]["name"] == "l"
        assert (await _refused(kube.request("GET", path + "/l/binding"))).status == 404

    _run(_with_client(virtual_api, scenario))


def test_cluster_ips_are_allocated_when_asked_to(host_api: FakeApiServer) -> None:
    services = resource_of("Service").path("default")

    def service(name: str, **spec: Any) -> Obj:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}

    async def scenario(kube: KubeClient) -> None:
        made = await kube.request("POST", services, body=service("plain"))
        assert "clusterIP" not in made["spec"]  # off by default: nothing allocated
        host_api.allocate_cluster_ips("10.0.0.")
        made = await kube.request("POST", services, body=service("a"))
        assert made["spec"]["clusterIP"] == "10.0.0.1" and made["spec"]["clusterIPs"] == ["10.0.0.1"]
        assert (await kube.request("POST", services, body=service("b")))["spec"]["clusterIP"] == "10.0.0.2"
        taken = await _refused(kube.request("POST", services, body=service("c", clusterIP="10.0.0.1")))
        assert taken.status == 422 and "provided IP is already allocated" in str(taken)
        assert (await kube.request("POST", services, body=service("d", clusterIP="None")))["spec"][
            "clusterIP"
        ] == "None"
        ext = await kube.request(
            "POST", services, body=service("e", type="ExternalName", externalName="x.example")
        )
        assert "clusterIP" not in ext["spec"]

    _run(_with_client(host_api, scenario))


def test_seeded_objects_keep_their_uid_and_status(virtual_api: FakeApiServer) -> None:
    seeded = virtual_api.seed(
        {
            **_pod("a"),
            "metadata": {"name": "a", "namespace": "default", "uid": "u1"},
            "status": {"phase": "Running"},
        }
    )
    assert seeded["metadata"]["uid"] == "u1" and seeded["status"] == {"phase": "Running"}
    assert seeded["metadata"]["resourceVersion"] == virtual_api.resource_version
    assert not virtual_api.requests
    with pytest.raises(ValueError, match="seed the Namespace first"):
        virtual_api.seed(_pod("b", namespace="nowhere"))


# ---- watches and the informer ------------------------------------------------------------------


def _change(old: Obj | None, new: Obj | None) -> tuple[str, str]:
    kind = "ADDED" if old is None else "DELETED" if new is None else "MODIFIED"
    return kind, (new or old or {})["metadata"]["name"]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_watches_replay_from_a_resource_version_and_end_with_the_server(virtual_api: FakeApiServer) -> None:
    async def watch(
        kube: KubeClient, params: dict[str, Any], until_closed: bool = False
    ) -> list[tuple[str, str]]:
        out = []
        async for event in kube.stream_lines(PODS, {"watch": "1", **params}):  # until the server closes
            out.append((event["type"], event["object"]["metadata"].get("name", "")))
            if event["type"] == "BOOKMARK":
                virtual_api.close()
        return out

    async def scenario(kube: KubeClient) -> None:
        start = virtual_api.resource_version
        await kube.create(_pod("a", {"app": "web"}))
        await kube.patch("Pod", "a", {"metadata": {"labels": {"app": "db"}}}, "default")  # leaves app=web
        await kube.create(_pod("b"))
        await kube.delete("Pod", "b", "default")
        task = asyncio.create_task(watch(kube, {"resourceVersion": start, "allowWatchBookmarks": "true"}))
        selected = asyncio.create_task(watch(kube, {"resourceVersion": start, "labelSelector": "app=web"}))
        await _until(lambda: len(virtual_api.watchers) == 2)
        virtual_api.bookmark()
        assert await task == [
            ("ADDED", "a"),
            ("MODIFIED", "a"),
            ("ADDED", "b"),
            ("DELETED", "b"),
            ("BOOKMARK", ""),
        ]
        assert await selected == [("ADDED", "a"), ("DELETED", "a")]  # out of the selector
        assert not virtual_api.watchers
        e = await _refused(watch(kube, {}))
        assert e.status == 503  # a closed server takes no new watches

    _run(_with_client(virtual_api, scenario))


def test_a_watch_from_a_compacted_version_is_expired(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        start = virtual_api.resource_version
        await kube.create(_pod("a"))
        virtual_api.compact()
        events = [e async for e in kube.stream_lines(PODS, {"watch": "true", "resourceVersion": start})]
        assert [e["type"] for e in events] == ["ERROR"]
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"

    _run(_with_client(virtual_api, scenario))


def test_an_informer_lists_then_follows_the_watch(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        await kube.create(_pod("a"))
        informer = Informer(kube, resource_of("Pod"), "Pod", namespace="default")
        seen: list[tuple[str, str]] = []
        informer.add_handlers(Handlers.diff(lambda old, new: seen.append(_change(old, new))))
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 5)
        assert seen == [("ADDED", "a")]
        await kube.create(_pod("b"))
        await kube.patch("Pod", "a", {"metadata": {"labels": {"x": "1"}}}, "default")
        await kube.delete("Pod", "b", "default")
        await _until(lambda: len(seen) == 4)
        assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert set(informer.store) == {"default/a"}
        assert informer.store["default/a"]["metadata"]["labels"] == {"x": "1"}
        assert informer.store["default/a"]["kind"] == "Pod"
        assert informer.resource_version == virtual_api.resource_version
        await _stop(task)
        assert not virtual_api.watchers

    _run(_with_client(virtual_api, scenario))


def test_an_expired_watch_makes_the_informer_list_again(virtual_api: FakeApiServer) -> None:
    async def scenario(kube: KubeClient) -> None:
        for name in ("a", "b"):
            await kube.create(_pod(name))
        informer = Informer(kube, resource_of("Pod"), "Pod", namespace="default")
        seen: list[tuple[str, str]] = []
        informer.add_handlers(Handlers.diff(lambda old, new: seen.append(_change(old, new))))
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 5)
        await _until(lambda: len(virtual_api.watchers) == 1)
        seen.clear()
        # Changes whose events the compaction drops: the informer learns of them by listing again.
        virtual_api.remove("Pod", "a", "default")
        virtual_api.seed(_pod("c"))
        virtual_api.compact()
        await _until(lambda: informer.relists == 1 and len(seen) == 2)
        assert sorted(seen) == [("ADDED", "c"), ("DELETED", "a")]
        assert set(informer.store) == {"default/b", "default/c"}
        await kube.create(_pod("d"))  # and watches on from the new list
        await _until(lambda: ("ADDED", "d") in seen)
        assert informer.relists == 1
        await _stop(task)

    _run(_with_client(virtual_api, scenario))
