"""The seed's Cluster API flow on real nodes: every controller `clusterctl init` installs runs as a
pod from a locally built image (Cluster API's managers from the pinned module, vnest's issuer and
provider from vnest's image), and the provider makes the virtual cluster with the chart, as a pod.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Env
from tests.e2e.test_capi import (
    PINNED,
    PREVIOUS,
    _clusterctl,
    _condition,
    _generate_and_apply,
    _get,
    _initialized,
    _ready_at_this_generation,
    _server_version,
    _set_version,
    _wait,
)
from tests.e2e.vcluster import VirtualCluster
from tests.real.pods import page_through_port_forward
from vnest import binaries, naming
from vnest.procs import free_port

NAME = NS = "tenant1"
HOST = "vnest-host"
READY_SECONDS = 240  # stated in the README: apply to Cluster initialized on real nodes
SERVICE = naming.service_name(NAME)


def _host(env: Env, *args: str, check: bool = True, timeout: float = 120) -> str:
    return env.kubectl("--context", HOST, *args, check=check, timeout=timeout).stdout


@pytest.fixture(scope="module")
def capi_real(real_host_env) -> Iterator[tuple[Env, str]]:
    """Cluster API installed by clusterctl on the real host, its controllers as pods; removed after."""
    env = real_host_env
    config = env.vnest("capi", "repository", "--dir", str(env.root / "capi-repository")).stdout.strip()
    try:
        _clusterctl(
            env, "init", "--infrastructure", "vnest", "--config", config,
            "--wait-providers", "--wait-provider-timeout", "600",
        )  # fmt: skip
        yield env, config
    finally:
        _clusterctl(
            env, "delete", "--all", "--include-crd", "--include-namespace", "--config", config, check=False
        )
        _host(env, "delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def _host_pod(env: Env) -> dict:
    """The control plane's pod: NAME-0 of the chart's StatefulSet."""
    return json.loads(_host(env, "get", "pod", f"{NAME}-0", "-n", NS, "-o", "json"))


def _pod_of(env: Env, namespace: str, deployment: str) -> dict:
    selector = json.loads(_host(env, "get", "deployment", deployment, "-n", namespace, "-o", "json"))
    labels = ",".join(f"{k}={v}" for k, v in selector["spec"]["selector"]["matchLabels"].items())
    (pod,) = json.loads(_host(env, "get", "pods", "-n", namespace, "-l", labels, "-o", "json"))["items"]
    return pod


def test_clusterctl_init_runs_every_controller_as_a_pod_from_a_locally_built_image(capi_real):
    env, _ = capi_real
    capi = binaries.pins()["cluster-api"]["version"]
    expected = {
        ("capi-system", "capi-controller-manager"): f"registry.k8s.io/cluster-api/cluster-api-controller:{capi}",
        ("capi-kubeadm-bootstrap-system", "capi-kubeadm-bootstrap-controller-manager"):
            f"registry.k8s.io/cluster-api/kubeadm-bootstrap-controller:{capi}",
        ("capi-kubeadm-control-plane-system", "capi-kubeadm-control-plane-controller-manager"):
            f"registry.k8s.io/cluster-api/kubeadm-control-plane-controller:{capi}",
        ("cert-manager", "vnest-cert-issuer"): "docker.io/library/vnest:0.1.0",
        ("vnest-system", "vnest-capi-provider"): "docker.io/library/vnest:0.1.0",
    }  # fmt: skip
    for (namespace, deployment), image in expected.items():
        pod = _pod_of(env, namespace, deployment)
        assert pod["status"]["phase"] == "Running", (deployment, pod["status"])
        assert pod["spec"]["nodeName"] in ("worker1", "worker2")
        (status,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "manager"]
        assert status["ready"] and status["image"] == image, status


def test_seed_flow_on_real_nodes_generate_apply_connect_port_forward_upgrade_delete(capi_real, tmp_path):
    env, config = capi_real
    _host(env, "create", "namespace", NS)
    started = time.monotonic()
    _generate_and_apply(env, config, PREVIOUS)
    _wait("the Cluster's infrastructure and control plane", lambda: _initialized(env), timeout=READY_SECONDS)
    took = time.monotonic() - started
    print(f"Cluster {NS}/{NAME} initialized {took:.1f} s after kubectl apply")  # for the README's number
    # The provider made it with the chart: the control plane is pod NAME-0 from vnest's image.
    assert _host_pod(env)["status"]["phase"] == "Running", took
    cluster = _get(env, "cluster.cluster.x-k8s.io")
    assert cluster and cluster["spec"]["controlPlaneEndpoint"] == {"host": f"{SERVICE}.{NS}.svc", "port": 443}

    # vnest connect reaches the virtual API; a Deployment inside runs, and port-forward serves it.
    vc = VirtualCluster(env, NAME, NS)
    assert "namespace/kube-system" in vc.kubectl("get", "namespaces", "-o", "name")
    vc.kubectl("create", "deployment", "web", "--image=nginx")
    vc.kubectl("rollout", "status", "deployment/web", "--timeout=180s")
    web_uid = vc.kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.uid}")
    page = page_through_port_forward(
        vc.connect_argv(), env.vars, "deployment/web", "kubectl port-forward to the virtual Deployment"
    )
    assert "Welcome to nginx!" in page

    # clusterctl get kubeconfig: its server is the Service, which the core controller dials from
    # its pod; from this machine the same credentials and name check work through a port-forward.
    kubeconfig = tmp_path / "tenant1.kubeconfig"
    kubeconfig.write_text(_clusterctl(env, "get", "kubeconfig", NAME, "-n", NS).stdout)
    assert f"server: https://{SERVICE}.{NS}.svc:443" in kubeconfig.read_text()
    port = free_port()
    forward = subprocess.Popen(
        [env.kubectl_path, "--context", HOST, "-n", NS, "port-forward", f"service/{SERVICE}", f"{port}:443"],
        env=env.vars,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        through = [
            "--kubeconfig", str(kubeconfig), f"--server=https://127.0.0.1:{port}",
            f"--tls-server-name={SERVICE}.{NS}.svc",
        ]  # fmt: skip
        deployments = _wait(
            "the virtual API through clusterctl's kubeconfig",
            lambda: env.kubectl(*through, "get", "deployments", "-o", "name", check=False).stdout,
            timeout=30,
        )
        assert "deployment.apps/web" in deployments
    finally:
        forward.terminate()
        forward.wait(10)

    # Cluster API's core reached it too: the Cluster is Available, and clusterctl describe says so.
    _wait(
        "the Cluster to be Available",
        lambda: _condition(_get(env, "cluster.cluster.x-k8s.io"), "Available").get("status") == "True",
        timeout=120,
    )
    described = _clusterctl(env, "describe", "cluster", NAME, "-n", NS, "--config", config).stdout
    row = next((line for line in described.splitlines() if line.startswith(f"Cluster {NS}/{NAME}")), "")
    assert row.split()[2:7] == ["1/1", "1", "1", "1", "True"], described

    # New values: the provider's helm upgrades the release in place, the virtual objects stay.
    patch = {"spec": {"values": "policies:\n  resourceQuota:\n    enabled: true\n"}}
    _host(env, "patch", "vnestcluster", NAME, "-n", NS, "--type=merge", "-p", json.dumps(patch))
    _wait(
        "the ResourceQuota of the new values",
        lambda: _host(env, "get", "resourcequota", "-n", NS, "-o", "name"),
    )

    _wait("Ready again", lambda: _ready_at_this_generation(env), timeout=180)
    assert vc.kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.uid}") == web_uid

    # A new Kubernetes version: the pod is replaced by one from the new release's images, same data.
    assert _server_version(env) == PREVIOUS
    _set_version(env, PINNED)
    _wait("Ready at the new version", lambda: _ready_at_this_generation(env), timeout=240)
    assert _server_version(env) == PINNED
    images = {c["image"] for c in _host_pod(env)["spec"]["initContainers"]}
    assert f"registry.k8s.io/kube-apiserver:{PINNED}" in images, images
    assert vc.kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.uid}") == web_uid

    # Deleting the Cluster deletes the release, the control plane's data and every synced object.
    _host(env, "delete", "cluster.cluster.x-k8s.io", NAME, "-n", NS, "--wait=true", timeout=300)
    assert _get(env, "vnestcluster") is None

    def left() -> list[str]:
        kinds = "statefulsets,pods,services,secrets,configmaps,persistentvolumeclaims,serviceaccounts,roles,rolebindings,resourcequotas"
        found = _host(env, "get", kinds, "-n", NS, "-o", "name").split()
        return [o for o in found if o not in ("serviceaccount/default", "configmap/kube-root-ca.crt")]

    _wait("the host namespace to be empty", lambda: not left(), timeout=180)
