"""What upstream's conformance specs showed apart from the host (bench/conformance.py): a virtual
Job's pods finish on a KWOK host, and a pod with the tenant's own RuntimeClass runs with the class
the host offers for that handler, never with one the host does not offer."""

from __future__ import annotations

import functools
import json

import pytest

from vnest import naming
from vnest.procs import wait_until

from .test_cluster_sync import Cluster, host_apply, host_delete, host_get

HOST = "vnest-host"
OFFER = {"vnest-e2e-offer": "runtime"}  # what the host admin labels the classes tenants may use


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


def _host_pods(vc: Cluster) -> list[dict]:
    out = vc.env.kubectl(
        "--context",
        HOST,
        "get",
        "pods",
        "-n",
        vc.namespace,
        "-l",
        f"{naming.LABEL_MANAGED_BY}={vc.name}",
        "-o",
        "json",
    ).stdout
    return json.loads(out)["items"]


def _host_pod(vc: Cluster, name: str) -> dict | None:
    return next(
        (p for p in _host_pods(vc) if p["metadata"]["annotations"].get(naming.ANNOTATION_NAME) == name), None
    )


def test_a_virtual_jobs_pods_complete_on_a_kwok_host_and_only_those(env):
    vc = Cluster(env, "jobs", "jobs-host")
    try:
        vc.kubectl("create", "job", "once", "--image=busybox", "--", "true")
        vc.kubectl("run", "server", "--image=nginx")
        # A tenant cannot mark its own pod for completion: vnest.io annotations never reach the host.
        forged = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "forged",
                "namespace": "default",
                "annotations": {naming.ANNOTATION_OWNER_SET_KIND: "Job"},
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        vc.apply(forged)

        def complete() -> dict | None:
            job = vc.json("get", "job", "once")
            done = any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in job["status"].get("conditions") or []
            )
            return job if done else None

        job = wait_until(complete, 60, "the virtual Job to complete")
        assert job["status"]["succeeded"] == 1
        pod = vc.json("get", "pods", "-l", "job-name=once")["items"][0]
        assert pod["status"]["phase"] == "Succeeded"
        hpod = _host_pod(vc, pod["metadata"]["name"])
        assert hpod is not None and hpod["status"]["phase"] == "Succeeded"
        assert hpod["metadata"]["annotations"][naming.ANNOTATION_OWNER_SET_KIND] == "Job"
        assert all(ref.get("kind") != "Job" for ref in hpod["metadata"].get("ownerReferences") or [])

        def running(name: str) -> dict | None:
            hpod = _host_pod(vc, name)
            return hpod if hpod and hpod["status"].get("phase") == "Running" else None

        for name in ("server", "forged"):
            running_pod = wait_until(functools.partial(running, name), 60, f"host pod of {name} to run")
            assert naming.ANNOTATION_OWNER_SET_KIND not in running_pod["metadata"]["annotations"]
        # Long enough for KWOK to have finished them if it were going to (it finished the Job's at once).
        wait_until(
            lambda: vc.json("get", "pod", "forged")["status"].get("phase") == "Running", 30, "forged Running"
        )
        assert _host_pod(vc, "server")["status"]["phase"] == "Running"  # type: ignore[index]
        assert _host_pod(vc, "forged")["status"]["phase"] == "Running"  # type: ignore[index]
    finally:
        vc.delete()


def _runtime_class(name: str, handler: str, labels: dict | None = None, overhead: str | None = None) -> dict:
    obj: dict = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name, "labels": labels or {}},
        "handler": handler,
    }
    if overhead:
        obj["overhead"] = {"podFixed": {"cpu": overhead}}
    return obj


def _pod(name: str, runtime_class: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runtimeClassName": runtime_class, "containers": [{"name": "c", "image": "nginx"}]},
    }


def test_a_tenants_runtime_class_runs_with_the_host_class_offered_for_its_handler(env):
    offered = _runtime_class("vnest-e2e-offered", "test-handler", OFFER, overhead="5m")
    hidden = _runtime_class("vnest-e2e-hidden", "hidden-handler")
    host_apply(env, offered)
    host_apply(env, hidden)
    values = {"sync": {"fromHost": {"runtimeClasses": {"enabled": True, "selector": {"matchLabels": OFFER}}}}}
    vc = Cluster(env, "rtc", "rtc-host", values)
    try:
        # The conformance specs' shape: the tenant's own class, with its own overhead, for a handler.
        vc.apply(_runtime_class("mine", "test-handler", overhead="10m"))
        vc.apply(_pod("uses-mine", "mine"))
        hpod = wait_until(lambda: _host_pod(vc, "uses-mine"), 60, "the host copy of uses-mine")
        assert hpod["spec"]["runtimeClassName"] == "vnest-e2e-offered"
        assert hpod["spec"]["overhead"] == {"cpu": "5m"}  # the host's class decides on the host
        vpod = wait_until(
            lambda: (p := vc.json("get", "pod", "uses-mine"))["spec"].get("nodeName") and p,
            60,
            "uses-mine to be scheduled",
        )
        assert vpod["spec"]["overhead"] == {"cpu": "10m"} and vpod["spec"]["runtimeClassName"] == "mine"
        assert host_get(env, "runtimeclass", "mine") is None  # the tenant's class never goes to the host

        # A class for a handler the host does not offer, named like a host class outside the offer:
        # refused, with an event naming the class and the handler.
        vc.apply(_runtime_class("vnest-e2e-hidden", "hidden-handler"))
        vc.apply(_pod("uses-hidden", "vnest-e2e-hidden"))

        def refused() -> list[dict]:
            events = vc.json("get", "events", "--field-selector", "involvedObject.name=uses-hidden")["items"]
            return [e for e in events if e["reason"] == "RuntimeClass"]

        event = wait_until(refused, 60, "the RuntimeClass event on uses-hidden")[0]
        assert "'vnest-e2e-hidden'" in event["message"] and "'hidden-handler'" in event["message"]
        assert _host_pod(vc, "uses-hidden") is None

        # The offer grows: the refused pod goes to the host with the new class.
        host_apply(env, _runtime_class("vnest-e2e-offered-later", "hidden-handler", OFFER))
        hpod = wait_until(lambda: _host_pod(vc, "uses-hidden"), 60, "uses-hidden on the host once offered")
        assert hpod["spec"]["runtimeClassName"] == "vnest-e2e-offered-later"
    finally:
        vc.delete()
        host_delete(env, "runtimeclass", "vnest-e2e-offered", "vnest-e2e-hidden", "vnest-e2e-offered-later")


def test_without_an_offer_a_pods_runtime_class_name_goes_to_the_host_as_it_is(env):
    """vCluster's behaviour, and the guard off: any host class, by its name."""
    host_apply(env, _runtime_class("vnest-e2e-unoffered", "hidden-handler"))
    vc = Cluster(env, "rtc-plain", "rtc-plain-host")
    try:
        vc.apply(_runtime_class("vnest-e2e-unoffered", "test-handler"))
        vc.apply(_pod("by-name", "vnest-e2e-unoffered"))
        hpod = wait_until(lambda: _host_pod(vc, "by-name"), 60, "the host copy of by-name")
        assert hpod["spec"]["runtimeClassName"] == "vnest-e2e-unoffered"
    finally:
        vc.delete()
        host_delete(env, "runtimeclass", "vnest-e2e-unoffered")


def _on_node(name: str, node: str, labels: dict | None = None) -> dict:
    """A pod spec that names its node and takes host port 21017 there (the conformance spec's)."""
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "nginx", "ports": [{"containerPort": 21017, "hostPort": 21017}]}
            ],
        },
    }


def test_a_pod_whose_named_node_cannot_take_it_fails_as_its_kubelet_would(env):
    """A pod that names its node is refused by that node's kubelet when its host port is taken: it
    ends Failed and its StatefulSet makes it again, until the port comes free."""
    # Host ports are for privileged pods (vnest's Pod Security check, as the host's admission).
    vc = Cluster(env, "rejects", "rejects-host", {"policies": {"podSecurityStandard": "privileged"}})
    try:
        vc.kubectl("run", "first", "--image=nginx")
        node = wait_until(lambda: vc.json("get", "pod", "first")["spec"].get("nodeName"), 60, "a node")
        vc.apply({"apiVersion": "v1", "kind": "Pod", **_on_node("holder", node)})
        wait_until(
            lambda: vc.json("get", "pod", "holder")["status"].get("phase") == "Running", 60, "the holder"
        )
        template = _on_node("", node, {"app": "ss"})
        del template["metadata"]["name"]
        vc.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "ss"},
                "spec": {
                    "serviceName": "ss",
                    "selector": {"matchLabels": {"app": "ss"}},
                    "template": template,
                },
            }
        )

        def rejections() -> list[dict]:
            events = vc.json("get", "events", "--field-selector", "involvedObject.name=ss-0")["items"]
            return [e for e in events if e["reason"] == "NodePorts"]

        rejected = wait_until(rejections, 60, "ss-0 refused for its host port")
        assert "didn't have free ports" in rejected[0]["message"]
        first_uid = rejected[0]["involvedObject"]["uid"]
        # Never pending on the host meanwhile: the host copy of a refused pod goes with it.
        wait_until(
            lambda: len({e["involvedObject"]["uid"] for e in rejections()}) >= 2, 60, "ss-0 made again"
        )

        vc.kubectl("delete", "pod", "holder", "--wait=true")

        def replaced_and_running() -> bool:
            pod = vc.get("pod", "ss-0")
            return bool(
                pod and pod["metadata"]["uid"] != first_uid and pod["status"].get("phase") == "Running"
            )

        wait_until(replaced_and_running, 90, "ss-0 running once the port is free")
        copy = _host_pod(vc, "ss-0")
        assert copy is not None and copy["spec"]["nodeName"] == node
    finally:
        vc.delete()
