"""sync.toHost.customResources against the real local host: the CRD from the host, CRs to it, status back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vnest import naming
from vnest.procs import wait_until

from .vcluster import VirtualCluster

HOST = "vnest-host"
WAIT = 60
GROUP = "crtest.example.com"
CRD_NAME = f"widgets.{GROUP}"
MISSING_CRD = f"nothings.{GROUP}"


def _version(name: str, storage: bool) -> dict:
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "subresources": {"status": {}},
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {"size": {"type": "integer"}, "color": {"type": "string"}},
                    },
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                },
            }
        },
    }


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME, "labels": {"team": "platform"}},
    "spec": {
        "group": GROUP,
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
        "scope": "Namespaced",
        "versions": [_version("v1beta1", False), _version("v1", True)],
    },
}


class Cluster(VirtualCluster):
    """A virtual cluster made for one test, deleted after it."""

    def get(self, kind: str, name: str, namespace: str | None = "team") -> dict | None:
        return super().get(kind, name, namespace)

    def host(self, kind: str, name: str) -> dict | None:
        return _host_get(self.env, kind, name, self.namespace)

    def host_name(self, name: str, namespace: str = "team") -> str:
        return naming.host_name(name, namespace, self.name)


def _write(env, stem: str, obj: dict) -> Path:
    path = env.root / f"{stem}.json"
    path.write_text(json.dumps(obj))
    return path


def _host_get(env, kind: str, name: str, namespace: str | None = None) -> dict | None:
    scope = ["-n", namespace] if namespace else []
    proc = env.kubectl("--context", HOST, "get", kind, name, *scope, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _values(env, name: str, values: dict) -> str:
    path = env.root / f"{name}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _custom_resources(*keys: str) -> dict:
    return {"sync": {"toHost": {"customResources": {k: {"enabled": True} for k in keys}}}}


def _widget(name: str, size: int, **labels: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "team", "labels": labels},
        "spec": {"size": size, "color": "blue"},
    }


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


@pytest.fixture
def host_crd(env):
    """The Widget CRD on the host, removed (with any widgets left) at the end."""
    env.kubectl("--context", HOST, "apply", "-f", str(_write(env, "widget-crd", CRD)))
    env.kubectl("--context", HOST, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD
    env.kubectl("--context", HOST, "delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=false")


@pytest.fixture
def make_cluster(env):
    made: list[Cluster] = []

    def make(name: str, values: dict, *args: str) -> Cluster:
        namespace = f"{name}-host"
        env.vnest("create", name, "-n", namespace, "--no-connect", "-f", _values(env, name, values), *args)
        made.append(Cluster(env, name, namespace))
        return made[-1]

    yield make
    for c in made:
        env.vnest("delete", c.name, "-n", c.namespace, check=False)


def test_custom_resources_sync_to_the_host_and_status_comes_back(env, host_crd, make_cluster):
    vc = make_cluster("cr-sync", _custom_resources(CRD_NAME))

    # The CRD came from the host: its storage version only, marked as vnest's copy, Established.
    vcrd = vc.json("get", "crd", CRD_NAME)
    assert vcrd["metadata"]["labels"] == {
        "team": "platform",
        naming.LABEL_MANAGED_BY: "cr-sync",
        "vnest.io/from-host": "true",
    }
    assert [(v["name"], v["served"], v["storage"]) for v in vcrd["spec"]["versions"]] == [("v1", True, True)]
    assert vcrd["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert any(c["type"] == "Established" and c["status"] == "True" for c in vcrd["status"]["conditions"])

    # A virtual Widget appears on the host under the translated name, with its spec and our labels.
    vc.kubectl("create", "namespace", "team")
    vc.apply(_widget("widget-a", 3, app="shop"))
    hname = vc.host_name("widget-a")
    hobj = wait_until(lambda: vc.host("widget", hname), WAIT, "the host copy of widget-a")
    vobj = vc.get("widget", "widget-a")
    assert hobj["spec"] == {"size": 3, "color": "blue"}
    labels = hobj["metadata"]["labels"]
    assert labels["app"] == "shop"
    assert labels[naming.LABEL_MANAGED_BY] == "cr-sync"
    assert labels["vnest.io/namespace"] == "team"
    annotations = hobj["metadata"]["annotations"]
    assert annotations[naming.ANNOTATION_NAME] == "widget-a"
    assert annotations[naming.ANNOTATION_NAMESPACE] == "team"
    assert annotations[naming.ANNOTATION_UID] == vobj["metadata"]["uid"]
    assert annotations[naming.ANNOTATION_KIND] == "Widget"
    config = _host_get(env, "secret", naming.config_secret("cr-sync"), vc.namespace)
    assert config is not None
    assert hobj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Secret", "name": "vc-config-cr-sync", "uid": config["metadata"]["uid"]}
    ]

    # A spec edit follows.
    vc.kubectl("patch", "widget", "widget-a", "-n", "team", "--type=merge", "-p", '{"spec":{"size":5}}')
    wait_until(lambda: (vc.host("widget", hname) or {}).get("spec", {}).get("size") == 5, WAIT, "size 5")

    # Status written on the host comes back to the virtual object (the status subresource).
    env.kubectl(
        "--context", HOST, "patch", "widget", hname, "-n", vc.namespace, "--subresource=status",
        "--type=merge", "-p", '{"status":{"phase":"Ready"}}',
    )  # fmt: skip
    wait_until(
        lambda: (vc.get("widget", "widget-a") or {}).get("status", {}).get("phase") == "Ready",
        WAIT,
        "the host's status on the virtual widget",
    )
    assert vc.get("widget", "widget-a")["spec"] == {"size": 5, "color": "blue"}

    # Deleting the virtual object deletes its host copy.
    vc.kubectl("delete", "widget", "widget-a", "-n", "team")
    wait_until(lambda: vc.host("widget", hname) is None, WAIT, "the host copy of widget-a to go")

    # A host copy deleted under a virtual object takes it along, as in vCluster.
    vc.apply(_widget("widget-b", 1))
    hname_b = vc.host_name("widget-b")
    wait_until(lambda: vc.host("widget", hname_b), WAIT, "the host copy of widget-b")
    env.kubectl("--context", HOST, "delete", "widget", hname_b, "-n", vc.namespace)
    wait_until(lambda: vc.get("widget", "widget-b") is None, WAIT, "the virtual widget-b to go")

    # A host object vnest does not manage at the target name is left alone; the tenant gets an event.
    squatter = _widget(vc.host_name("taken"), 99, owner="admin")
    squatter["metadata"]["namespace"] = vc.namespace
    env.kubectl("--context", HOST, "apply", "-f", str(_write(env, "squatter", squatter)))
    vc.apply(_widget("taken", 1))
    events = wait_until(
        lambda: [
            e
            for e in vc.json("get", "events", "-n", "team", "--field-selector", "reason=SyncError")["items"]
            if e["involvedObject"]["name"] == "taken" and e["involvedObject"]["kind"] == "Widget"
        ],
        WAIT,
        "a SyncError event on the virtual widget",
    )
    assert "not managed by this virtual cluster" in events[0]["message"]
    untouched = vc.host("widget", vc.host_name("taken"))
    assert untouched["metadata"]["labels"] == {"owner": "admin"}
    assert untouched["spec"] == {"size": 99, "color": "blue"}

    # Deleting the virtual cluster leaves none of its copies behind (they are owned by its config
    # Secret), and never the object that was not its own.
    vc.apply(_widget("widget-c", 2))
    wait_until(lambda: vc.host("widget", vc.host_name("widget-c")), WAIT, "the host copy of widget-c")
    env.vnest("delete", vc.name, "-n", vc.namespace)

    def copies() -> list[dict]:
        out = env.kubectl(
            "--context", HOST, "get", "widgets", "-n", vc.namespace, "-l",
            f"{naming.LABEL_MANAGED_BY}=cr-sync", "-o", "json",
        ).stdout  # fmt: skip
        return json.loads(out)["items"]

    wait_until(lambda: not copies(), WAIT, "the host copies to be garbage-collected")
    assert _host_get(env, "widget", vc.host_name("taken"), vc.namespace) is not None
    env.kubectl("--context", HOST, "delete", "widget", vc.host_name("taken"), "-n", vc.namespace)


def test_a_crd_missing_on_the_host_stops_the_syncer_loudly(env, host_crd, make_cluster):
    vc = make_cluster("cr-missing", _custom_resources(MISSING_CRD), "--no-wait")
    message = (
        f"sync.toHost.customResources.{MISSING_CRD}: the host has no CustomResourceDefinition {MISSING_CRD}"
    )

    def host_events() -> list[dict]:
        out = env.kubectl(
            "--context", HOST, "get", "events", "-n", vc.namespace,
            "--field-selector", "reason=CustomResourceSyncFailed", "-o", "json",
        ).stdout  # fmt: skip
        return json.loads(out)["items"]

    [event, *_] = wait_until(host_events, 120, "a CustomResourceSyncFailed event on the host")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Secret"
    assert event["involvedObject"]["name"] == naming.config_secret("cr-missing")
    assert event["message"].startswith(message)
    log = Path(env.vars["VNEST_HOME"]) / "clusters" / vc.namespace / vc.name / "data" / "logs" / "syncer.log"
    assert message in log.read_text()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"sync": {"toHost": {"customResources": {"widgets": {"enabled": True}}}}},
            "sync.toHost.customResources.widgets: expected a key of the form plural.group, got 'widgets'",
        ),
        (
            {"sync": {"toHost": {"customResources": {CRD_NAME: {"enabled": True, "scope": "Cluster"}}}}},
            f"sync.toHost.customResources.{CRD_NAME}.scope: unsupported scope 'Cluster': "
            "only 'Namespaced' is allowed",
        ),
    ],
    ids=["invalidKey", "clusterScope"],
)
def test_invalid_custom_resource_config_is_refused_before_touching_the_host(env, values, message):
    proc = env.vnest(
        "create", "cr-bad", "-n", "cr-bad-host", "-f", _values(env, "cr-bad", values), check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert _host_get(env, "namespace", "cr-bad-host") is None
