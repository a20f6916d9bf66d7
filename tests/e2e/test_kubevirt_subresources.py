"""subresources.kubevirt.io in a real virtual cluster: registered, Available, discovered, checked.

The virtual API server's aggregator reaches the syncer's server at `localhost` (the APIService's
ExternalName Service) with its front-proxy client certificate and checks the serving certificate
against the caBundle: Available proves all of that. The host has KubeVirt's two required CRDs (as
minimal as the VM syncer needs to start) but no virt-api: the forwarding to the host's virt-api is
tested with the host's KubeVirt stand-in.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import yaml

from vnest.procs import wait_until
from vnest.syncer.mappings import LABEL_MANAGED_BY

from .vcluster import HOST, VirtualCluster

APISERVICE = "v1.subresources.kubevirt.io"
BASE = "/apis/subresources.kubevirt.io/v1"


@pytest.fixture
def env(host_env):
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


def _values(env, name: str, values: dict) -> str:
    path = env.root / f"{name}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _kubevirt(enabled: bool) -> dict:
    return {"integrations": {"kubeVirt": {"enabled": enabled}}}


def _available(vc: VirtualCluster) -> dict | None:
    found = vc.kubectl("get", "apiservice", APISERVICE, "-o", "json", "--ignore-not-found")
    apiservice = json.loads(found) if found.strip() else {}
    ok = any(
        c["type"] == "Available" and c["status"] == "True"
        for c in apiservice.get("status", {}).get("conditions", [])
    )
    return apiservice if ok else None


def _gone(vc: VirtualCluster, what: tuple[str, ...]) -> bool:
    return vc.kubectl("get", *what, "--ignore-not-found").strip() == ""


def test_the_virtual_cluster_serves_kubevirts_subresources_and_drops_them_with_the_integration(
    env, kubevirt_host
):
    name, namespace = "kv-sub", "kv-sub-host"
    env.vnest("create", name, "-n", namespace, "--no-connect", "-f", _values(env, name, _kubevirt(True)))
    vc = VirtualCluster(env, name, namespace)
    try:
        # Registered and Available (the syncer is ready only then): the aggregator reached the syncer
        # at localhost and trusted its certificate.
        apiservice = wait_until(lambda: _available(vc), 60, f"APIService {APISERVICE} to be Available")
        spec = apiservice["spec"]
        assert spec["service"]["namespace"] == "kube-system" and spec["caBundle"]
        assert (spec["groupPriorityMinimum"], spec["versionPriority"]) == (1000, 15)
        assert apiservice["metadata"]["labels"][LABEL_MANAGED_BY] == name
        service = vc.json("get", "service", spec["service"]["name"], "-n", "kube-system")
        assert service["spec"]["type"] == "ExternalName" and service["spec"]["externalName"] == "localhost"

        # Discovery lists virt-api's subresources.
        resources = json.loads(vc.kubectl("get", "--raw", BASE))
        names = {r["name"] for r in resources["resources"]}
        assert {"virtualmachines/start", "virtualmachines/stop", "virtualmachineinstances/console"} <= names
        assert {"virtualmachineinstances/vnc", "virtualmachineinstances/portforward"} <= names

        # virtctl start of a VM that does not exist: KubeVirt's 404, after the caller's review.
        body = env.root / "start.json"
        body.write_text(json.dumps({"kind": "StartOptions", "apiVersion": "subresources.kubevirt.io/v1"}))
        start = f"{BASE}/namespaces/default/virtualmachines/nope/start"
        proc = env.vnest(
            "connect", name, "-n", namespace, "--", env.kubectl_path, "replace", "--raw", start, "-f", str(body),
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        assert 'virtualmachine.kubevirt.io "nope" not found' in proc.stderr, proc.stderr

        # A user without RBAC for it is refused.
        proc = env.vnest(
            "connect", name, "-n", namespace, "--", env.kubectl_path, "replace", "--raw", start, "-f", str(body),
            "--as=nobody", check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr

        # The integration turned off: the APIService and its Service go.
        env.vnest(
            "create",
            name,
            "-n",
            namespace,
            "--no-connect",
            "--upgrade",
            "-f",
            _values(env, name, _kubevirt(False)),
        )
        for what in (("apiservice", APISERVICE), ("service", spec["service"]["name"], "-n", "kube-system")):
            wait_until(partial(_gone, vc, what), 120, f"{what[0]} {what[1]} to go")
    finally:
        env.vnest("delete", name, "-n", namespace, check=False)
