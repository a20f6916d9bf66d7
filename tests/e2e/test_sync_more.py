"""More syncers against the real local host: EndpointSlices of selector-less Services, ServiceAccounts."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from vnest import naming
from vnest.procs import wait_until
from vnest.syncer.mappings import ENDPOINTS_CONTROLLER as CONTROLLER

from .vcluster import VirtualCluster

HOST = "vnest-host"
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_MANAGER = "endpointslice.kubernetes.io/managed-by"
WAIT = 60


class Cluster(VirtualCluster):
    """A virtual cluster made for this module's tests."""

    def host(self, kind: str, name: str) -> dict | None:
        proc = self.env.kubectl(
            "--context", HOST, "get", kind, name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def host_list(self, kind: str, selector: str) -> list[dict]:
        out = self.env.kubectl(
            "--context", HOST, "get", kind, "-n", self.namespace, "-l", selector, "-o", "json"
        ).stdout
        return json.loads(out)["items"]

    def host_name(self, name: str, namespace: str = "default") -> str:
        return naming.host_name(name, namespace, self.name)


def _make(env, name: str, namespace: str, values: dict | None = None) -> Cluster:
    args = ["create", name, "-n", namespace, "--no-connect"]
    if values is not None:
        path = env.root / f"{name}-values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    env.vnest(*args)
    return Cluster(env, name, namespace)


@pytest.fixture(scope="module")
def defaults_cluster(host_env):
    """A virtual cluster with the default config (endpoints sync on, ServiceAccount sync off), whose
    admin lets endpoints point at TEST-NET-1, the tenant's "external database" (tests/e2e/test_isolation.py
    shows what happens to other addresses)."""
    vc = _make(host_env, "sm-ep", "sm-ep-host", {"policies": {"allowedEndpointCIDRs": ["192.0.2.0/24"]}})
    try:
        yield vc
    finally:
        host_env.vnest("delete", vc.name, "-n", vc.namespace, check=False)


def _running_host_pod(vc: Cluster, name: str) -> dict | None:
    hpod = vc.host("pod", vc.host_name(name))
    if hpod and hpod["status"].get("phase") == "Running" and hpod["status"].get("podIP"):
        return hpod
    return None


def _selector_less_service(name: str, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "main", "port": port, "protocol": "TCP"}]},
    }


def _slice(name: str, service: str, endpoints: list[dict], port: int) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {SERVICE_NAME: service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "main", "port": port, "protocol": "TCP"}],
    }


def _addresses(hslice: dict | None) -> list[str]:
    return [a for e in (hslice or {}).get("endpoints") or [] for a in e["addresses"]]


def test_endpoint_slices_of_selector_less_services_sync_to_the_host(defaults_cluster):
    vc = defaults_cluster
    vc.kubectl("run", "backend", "--image=nginx")
    hpod = wait_until(lambda: _running_host_pod(vc, "backend"), WAIT, "the running host pod")
    pod_ip, node = hpod["status"]["podIP"], hpod["spec"]["nodeName"]

    vc.apply(_selector_less_service("db", 5432))
    hsvc = wait_until(lambda: vc.host("service", vc.host_name("db")), WAIT, "the host Service")
    assert "selector" not in hsvc["spec"]
    vc.apply(
        _slice(
            "db-1",
            "db",
            [
                {"addresses": ["192.0.2.10"], "conditions": {"ready": True}},
                {
                    "addresses": [pod_ip],
                    "conditions": {"ready": True},
                    "nodeName": node,
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "backend"},
                },
                {
                    "addresses": ["192.0.2.11"],
                    "nodeName": "no-such-node",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "no-such-pod"},
                },
            ],
            5432,
        )
    )
    hname = vc.host_name("db-1")
    hslice = wait_until(lambda: vc.host("endpointslice", hname), WAIT, "the host EndpointSlice")
    labels = hslice["metadata"]["labels"]
    assert labels[SERVICE_NAME] == vc.host_name("db")
    assert labels[SLICE_MANAGER] == CONTROLLER
    assert labels[naming.LABEL_MANAGED_BY] == vc.name
    annotations = hslice["metadata"]["annotations"]
    assert annotations[naming.ANNOTATION_NAME] == "db-1"
    assert annotations[naming.ANNOTATION_NAMESPACE] == "default"
    assert annotations[naming.ANNOTATION_KIND] == "EndpointSlice"
    assert [o["uid"] for o in hslice["metadata"]["ownerReferences"]] == [hsvc["metadata"]["uid"]]
    assert hslice["addressType"] == "IPv4"
    assert hslice["ports"] == [{"name": "main", "port": 5432, "protocol": "TCP"}]
    plain, synced, unknown = hslice["endpoints"]
    assert plain == {"addresses": ["192.0.2.10"], "conditions": {"ready": True}}
    # A synced pod is named by its host copy; the node it runs on exists on the host.
    assert synced["addresses"] == [pod_ip]
    assert synced["nodeName"] == node
    assert synced["targetRef"]["name"] == vc.host_name("backend")
    assert synced["targetRef"]["namespace"] == vc.namespace
    # A pod that is not synced and a node the host lacks are dropped, the address stays.
    assert unknown["addresses"] == ["192.0.2.11"]
    assert "targetRef" not in unknown and "nodeName" not in unknown

    # An update: the host follows.
    vc.kubectl(
        "patch", "endpointslice", "db-1", "--type", "json",
        "-p", json.dumps([{"op": "replace", "path": "/endpoints/0/addresses", "value": ["192.0.2.20"]}]),
    )  # fmt: skip
    wait_until(
        lambda: _addresses(vc.host("endpointslice", hname))[:1] == ["192.0.2.20"], WAIT, "the updated slice"
    )

    # With a selector the host's own controller makes the endpoints: vnest's slice goes, and
    # comes back when the selector does.
    vc.kubectl("patch", "service", "db", "-p", json.dumps({"spec": {"selector": {"app": "db"}}}))
    wait_until(lambda: vc.host("endpointslice", hname) is None, WAIT, "the slice to go with a selector")
    vc.kubectl(
        "patch", "service", "db", "--type", "json", "-p", json.dumps([{"op": "remove", "path": "/spec/selector"}])
    )  # fmt: skip
    wait_until(lambda: vc.host("endpointslice", hname), WAIT, "the slice to come back without a selector")

    # Deleting the virtual slice deletes the host slice.
    vc.kubectl("delete", "endpointslice", "db-1")
    wait_until(lambda: vc.host("endpointslice", hname) is None, WAIT, "the host slice to go")


def test_a_tenants_endpoints_object_is_mirrored_then_synced(defaults_cluster):
    vc = defaults_cluster
    vc.apply(_selector_less_service("legacy", 80))
    wait_until(lambda: vc.host("service", vc.host_name("legacy")), WAIT, "the host Service")
    vc.apply(
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "192.0.2.30"}], "ports": [{"name": "main", "port": 80}]}],
        }
    )

    def mirrored() -> list[dict]:
        return vc.json("get", "endpointslices", "-l", f"{SERVICE_NAME}=legacy")["items"]

    vslice = wait_until(mirrored, WAIT, "the virtual cluster's mirroring controller's slice")[0]
    assert vslice["metadata"]["labels"][SLICE_MANAGER] == "endpointslicemirroring-controller.k8s.io"
    hname = vc.host_name(vslice["metadata"]["name"])
    hslice = wait_until(lambda: vc.host("endpointslice", hname), WAIT, "the mirrored slice on the host")
    assert hslice["metadata"]["labels"][SERVICE_NAME] == vc.host_name("legacy")
    assert hslice["metadata"]["labels"][SLICE_MANAGER] == CONTROLLER  # never the host's mirroring controller
    assert _addresses(hslice) == ["192.0.2.30"]
    assert hslice["ports"][0]["port"] == 80

    # The Service going takes the host slice with it.
    vc.kubectl("delete", "service", "legacy")
    wait_until(lambda: vc.host("endpointslice", hname) is None, WAIT, "the host slice to go with its Service")


def test_service_accounts_do_not_sync_by_default(defaults_cluster):
    vc = defaults_cluster
    vc.kubectl("create", "serviceaccount", "runner")
    overrides = json.dumps({"spec": {"serviceAccountName": "runner"}})
    vc.kubectl("run", "as-runner", "--image=nginx", f"--overrides={overrides}")
    hpod = wait_until(lambda: vc.host("pod", vc.host_name("as-runner")), WAIT, "the host pod")
    assert hpod["spec"]["serviceAccountName"] == "default"  # the host namespace's own
    assert hpod["spec"]["automountServiceAccountToken"] is False
    assert vc.host_list("serviceaccounts", f"{naming.LABEL_MANAGED_BY}={vc.name}") == []


def _token_review(vc: Cluster, token: str, audiences: list[str] | None = None) -> dict:
    review: dict = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    if audiences:
        review["spec"]["audiences"] = audiences
    path = vc.env.root / f"{vc.name}-review.json"
    path.write_text(json.dumps(review))
    return json.loads(vc.kubectl("create", "-f", str(path), "-o", "json"))["status"]


def test_a_pods_tokens_are_bound_to_it_with_its_audience_and_go_with_it(defaults_cluster):
    """The tokens a synced pod mounts are the virtual API server's, bound to the virtual pod and its
    node, with each projection's audience: what a kubelet asks for (conformance checks the claims)."""
    vc = defaults_cluster
    vc.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bound", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "image": "nginx"}],
                "volumes": [
                    {
                        "name": "oidc",
                        "projected": {
                            "sources": [
                                {
                                    "serviceAccountToken": {
                                        "path": "t",
                                        "audience": "oidc-test",
                                        "expirationSeconds": 600,
                                    }
                                }
                            ]
                        },
                    }
                ],
            },
        }
    )
    vpod = wait_until(
        lambda: (p := vc.get("pod", "bound")) and p["spec"].get("nodeName") and p, WAIT, "the binding"
    )
    node = vc.get_existing("node", vpod["spec"]["nodeName"])
    secret = wait_until(
        lambda: vc.host("secret", vc.host_name("vnest-token-bound")), WAIT, "the token Secret"
    )
    hpod = vc.host("pod", vc.host_name("bound"))
    assert hpod is not None
    keys = {
        src["secret"]["items"][0]["path"]: src["secret"]["items"][0]["key"]
        for vol in hpod["spec"]["volumes"]
        for src in (vol.get("projected") or {}).get("sources") or []
        if src.get("secret", {}).get("name") == secret["metadata"]["name"]
    }
    assert set(keys) == {"token", "t"}  # admission's kube-api-access projection, and the pod's own
    tokens = {path: base64.b64decode(secret["data"][key]).decode() for path, key in keys.items()}

    status = _token_review(vc, tokens["token"])
    assert status["authenticated"] is True
    assert status["user"]["username"] == "system:serviceaccount:default:default"
    extra = status["user"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["bound"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [vpod["metadata"]["uid"]]
    assert extra["authentication.kubernetes.io/node-name"] == [node["metadata"]["name"]]
    assert extra["authentication.kubernetes.io/node-uid"] == [node["metadata"]["uid"]]
    # The pod's own projection: its audience, not the API server's.
    assert _token_review(vc, tokens["t"]).get("authenticated") is not True
    assert _token_review(vc, tokens["t"], ["oidc-test"])["audiences"] == ["oidc-test"]

    vc.kubectl("delete", "pod", "bound", "--wait=true")
    wait_until(lambda: vc.host("secret", secret["metadata"]["name"]) is None, WAIT, "the Secret to go")
    # Bound to the pod: it ended with it (once the API server's 10 s cache of good tokens forgets it).
    wait_until(
        lambda: _token_review(vc, tokens["token"]).get("authenticated") is not True, 30, "the token to end"
    )


def test_service_accounts_sync_when_enabled_and_pods_run_as_their_copy(host_env):
    vc = _make(host_env, "sm-sa", "sm-sa-host", {"sync": {"toHost": {"serviceAccounts": {"enabled": True}}}})
    try:
        vc.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "runner", "namespace": "default", "labels": {"team": "ci"}},
                "imagePullSecrets": [{"name": "registry"}],
            }
        )
        hname = vc.host_name("runner")
        hsa = wait_until(lambda: vc.host("serviceaccount", hname), WAIT, "the host ServiceAccount")
        assert hsa["metadata"]["labels"] == {
            "team": "ci",
            naming.LABEL_MANAGED_BY: vc.name,
            "vnest.io/namespace": "default",
        }
        assert hsa["metadata"]["annotations"][naming.ANNOTATION_NAME] == "runner"
        assert hsa["metadata"]["annotations"][naming.ANNOTATION_KIND] == "ServiceAccount"
        assert hsa["automountServiceAccountToken"] is False
        assert not hsa.get("imagePullSecrets") and not hsa.get("secrets")
        # Every virtual ServiceAccount syncs, the namespaces' default ones too.
        wait_until(lambda: vc.host("serviceaccount", vc.host_name("default")), WAIT, "the default's copy")

        overrides = json.dumps({"spec": {"serviceAccountName": "runner"}})
        vc.kubectl("run", "worker", "--image=nginx", f"--overrides={overrides}")
        hpod = wait_until(lambda: _running_host_pod(vc, "worker"), WAIT, "the running host pod")
        spec = hpod["spec"]
        assert spec["serviceAccountName"] == hname
        # No host token: the pod's token is the virtual API server's, from a host Secret.
        assert spec["automountServiceAccountToken"] is False
        sources = [
            s for v in spec.get("volumes") or [] for s in (v.get("projected") or {}).get("sources") or []
        ]
        assert not any("serviceAccountToken" in s for s in sources)
        assert naming.host_name("vnest-token-worker", "default", vc.name) in {
            s["secret"]["name"] for s in sources if "secret" in s
        }

        vc.kubectl("delete", "serviceaccount", "runner")
        wait_until(lambda: vc.host("serviceaccount", hname) is None, WAIT, "the host ServiceAccount to go")
    finally:
        host_env.vnest("delete", vc.name, "-n", vc.namespace, check=False)
