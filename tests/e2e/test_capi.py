"""The seed's Cluster API flow on the KWOK local host: clusterctl init, generate, apply; ready,
connect, upgrade in place, bad values, a dead control plane, deletion (vnest.integrations.capi).

On this host Cluster API's controllers run as local processes (`vnest capi local start`); the
API server, the CRDs, clusterctl and Cluster API's core manager are all real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Env
from vnest import binaries, naming
from vnest.integrations.capi import api

NAME = NS = "tenant1"
HOST = "vnest-host"
READY_SECONDS = 90  # stated in the README: apply to Cluster ready on the KWOK host


PINNED = binaries.pins()["kubernetes"]["version"]
PREVIOUS = binaries.pins()["kubernetes-previous"]["version"]


def _clusterctl(
    env: Env, *args: str, check: bool = True, variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(binaries.ensure().clusterctl), *args, "--kubeconfig", env.vars["KUBECONFIG"]],
        env={**env.vars, **(variables or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"clusterctl {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _get(env: Env, kind: str, name: str = NAME, namespace: str = NS) -> dict | None:
    proc = env.kubectl("--context", HOST, "get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _wait(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return found


def _condition(obj: dict | None, type_: str) -> dict:
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def _ready_at_this_generation(env: Env) -> bool:
    """Ready, Running, for the spec as it is now (not a status left from before a change)."""
    obj = _get(env, "vnestcluster") or {"metadata": {}}
    ready = _condition(obj, "Ready")
    return ready.get("reason") == api.REASON_RUNNING and ready.get("observedGeneration") == obj[
        "metadata"
    ].get("generation")


def _virtual(env: Env, *kubectl_args: str) -> str:
    return env.vnest("connect", NAME, "-n", NS, "--", env.kubectl_path, *kubectl_args).stdout


def _generate_and_apply(env: Env, config: str, version: str) -> None:
    """`clusterctl generate cluster NAME --infrastructure vnest --target-namespace NS | kubectl apply -f -`."""
    manifest = _clusterctl(
        env, "generate", "cluster", NAME, "--infrastructure", "vnest", "--target-namespace", NS,
        "--config", config, variables={"KUBERNETES_VERSION": version},
    ).stdout  # fmt: skip
    subprocess.run(
        [env.kubectl_path, "--context", HOST, "apply", "-f", "-"],
        input=manifest,
        env=env.vars,
        text=True,
        check=True,
    )


def _initialized(env: Env) -> bool:
    """The Cluster reports its infrastructure provisioned and its control plane initialized."""
    init = (_get(env, "cluster.cluster.x-k8s.io") or {}).get("status", {}).get("initialization", {})
    return bool(init.get("infrastructureProvisioned") and init.get("controlPlaneInitialized"))


def _server_version(env: Env) -> str:
    return json.loads(_virtual(env, "version", "-o", "json"))["serverVersion"]["gitVersion"]


def _set_version(env: Env, version: str) -> None:
    patch = json.dumps({"spec": {"version": version}})
    env.kubectl("--context", HOST, "patch", "vnestcluster", NAME, "-n", NS, "--type=merge", "-p", patch)


@pytest.fixture
def capi_env(host_env):
    """Cluster API installed on the session host by clusterctl, its controllers running; removed after."""
    env = host_env
    config = env.vnest("capi", "repository", "--dir", str(env.root / "capi-repository")).stdout.strip()
    init = _clusterctl(env, "init", "--infrastructure", "vnest", "--config", config)
    assert "Installing cert-manager" in init.stderr + init.stdout
    env.vnest("capi", "local", "start", timeout=300)
    yield env, config
    env.vnest("capi", "local", "stop", check=False)
    _clusterctl(
        env, "delete", "--all", "--include-crd", "--include-namespace", "--config", config, check=False
    )


def test_seed_flow_clusterctl_init_generate_apply_connect_upgrade_delete(capi_env, tmp_path):
    env, config = capi_env
    env.kubectl("--context", HOST, "create", "namespace", NS)

    # clusterctl generate cluster ... | kubectl apply -f -
    started = time.monotonic()
    _generate_and_apply(env, config, PREVIOUS)  # the release before: upgraded in place below
    _wait("the Cluster's infrastructure and control plane", lambda: _initialized(env), timeout=READY_SECONDS)
    took = time.monotonic() - started
    cluster = _get(env, "cluster.cluster.x-k8s.io")
    assert cluster and cluster["spec"]["controlPlaneEndpoint"]["host"] == "127.0.0.1", took
    vnc = _get(env, "vnestcluster")
    assert vnc and vnc["status"]["initialization"] == {"provisioned": True, "controlPlaneInitialized": True}
    assert _condition(vnc, "Ready")["status"] == "True"
    assert vnc["status"]["version"] == PREVIOUS

    # vnest connect and clusterctl get kubeconfig both reach the virtual API.
    assert "kube-system" in _virtual(env, "get", "namespaces", "-o", "name")
    kubeconfig = tmp_path / "tenant1.kubeconfig"
    kubeconfig.write_text(_clusterctl(env, "get", "kubeconfig", NAME, "-n", NS).stdout)
    nodes = env.kubectl("--kubeconfig", str(kubeconfig), "get", "namespaces", "-o", "name").stdout
    assert "namespace/default" in nodes

    # A Deployment inside runs (KWOK plays its pod on the host).
    env.kubectl("--kubeconfig", str(kubeconfig), "create", "deployment", "web", "--image=nginx")
    _wait(
        "the Deployment to be available",
        lambda: (
            env.kubectl(
                "--kubeconfig",
                str(kubeconfig),
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ).stdout
            == "1"
        ),
    )
    web_uid = env.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"
    ).stdout

    # clusterctl describe shows it healthy, from the conditions the core controller computed.
    _wait(
        "the Cluster to be Available",
        lambda: _condition(_get(env, "cluster.cluster.x-k8s.io"), "Available").get("status") == "True",
    )
    described = _clusterctl(env, "describe", "cluster", NAME, "-n", NS, "--config", config).stdout
    cluster_row = next(
        (line for line in described.splitlines() if line.startswith(f"Cluster {NS}/{NAME}")), ""
    )
    assert cluster_row.split()[2:7] == ["1/1", "1", "1", "1", "True"], described

    # New values upgrade the virtual cluster in place: the host gets the quota, the Deployment stays.
    patch = {"spec": {"values": "policies:\n  resourceQuota:\n    enabled: true\n"}}
    env.kubectl(
        "--context", HOST, "patch", "vnestcluster", NAME, "-n", NS, "--type=merge", "-p", json.dumps(patch)
    )
    _wait(
        "the ResourceQuota of the new values",
        lambda: env.kubectl("--context", HOST, "get", "resourcequota", "-n", NS, "-o", "name").stdout.strip(),
    )
    _wait("Ready again", lambda: _ready_at_this_generation(env), timeout=90)
    assert (
        web_uid
        == env.kubectl(
            "--kubeconfig", str(kubeconfig), "get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"
        ).stdout
    )

    # Bad values: a condition naming the key; the running cluster and its host objects are left as they were.
    secret_before = _get(env, "secret", naming.config_secret(NAME))
    bad = {"spec": {"values": "policies:\n  resourceQuota:\n    enabeld: true\n"}}
    env.kubectl(
        "--context", HOST, "patch", "vnestcluster", NAME, "-n", NS, "--type=merge", "-p", json.dumps(bad)
    )
    condition = _wait(
        "the InvalidValues condition",
        lambda: (
            (c := _condition(_get(env, "vnestcluster"), "Ready")).get("reason") == api.REASON_INVALID and c
        ),
    )
    assert "policies.resourceQuota.enabeld" in condition["message"]
    assert _get(env, "secret", naming.config_secret(NAME))["data"] == secret_before["data"]  # type: ignore[index]
    assert "kube-system" in _virtual(env, "get", "namespaces", "-o", "name")
    env.kubectl(
        "--context", HOST, "patch", "vnestcluster", NAME, "-n", NS, "--type=merge", "-p", json.dumps(patch)
    )
    _wait("Ready after the fix", lambda: _ready_at_this_generation(env))

    # A new Kubernetes version upgrades the control plane in place; a downgrade is refused.
    assert _server_version(env) == PREVIOUS
    _set_version(env, PINNED)
    _wait("Ready at the new version", lambda: _ready_at_this_generation(env), timeout=120)
    assert _get(env, "vnestcluster")["status"]["version"] == PINNED  # type: ignore[index]
    assert _server_version(env) == PINNED
    assert (
        web_uid
        == env.kubectl(
            "--kubeconfig", str(kubeconfig), "get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"
        ).stdout
    )
    _set_version(env, PREVIOUS)
    condition = _wait(
        "the refused downgrade",
        lambda: (
            (c := _condition(_get(env, "vnestcluster"), "Ready")).get("reason") == api.REASON_INVALID and c
        ),
    )
    assert "never downgraded" in condition["message"] and _server_version(env) == PINNED
    _set_version(env, PINNED)
    _wait("Ready after the downgrade is taken back", lambda: _ready_at_this_generation(env))

    # A control plane that dies is reported and comes back.
    pid_file = Path(env.vars["VNEST_HOME"]) / "clusters" / NS / NAME / "pids" / "controlplane.pid"
    os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    _wait(
        "ControlPlaneDown",
        lambda: _condition(_get(env, "vnestcluster"), "Available").get("reason") == api.REASON_DOWN,
        timeout=60,
    )
    _wait(
        "the control plane back",
        lambda: _condition(_get(env, "vnestcluster"), "Available").get("status") == "True",
        timeout=120,
    )
    assert (
        web_uid
        == env.kubectl(
            "--kubeconfig", str(kubeconfig), "get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"
        ).stdout
    )

    # Deleting the Cluster deletes the virtual cluster and every host object it owned.
    env.kubectl(
        "--context", HOST, "delete", "cluster.cluster.x-k8s.io", NAME, "-n", NS, "--wait=true", timeout=180
    )
    assert _get(env, "vnestcluster") is None
    assert _get(env, "secret", f"{NAME}-kubeconfig") is None
    left = env.kubectl(
        "--context",
        HOST,
        "get",
        "all,secrets,configmaps,serviceaccounts,roles,rolebindings,resourcequotas",
        "-n",
        NS,
        "-l",
        f"{naming.LABEL_CLUSTER}={NAME}",
        "-o",
        "name",
    ).stdout.split()
    synced = env.kubectl(
        "--context",
        HOST,
        "get",
        "pods,services,secrets,configmaps",
        "-n",
        NS,
        "-l",
        f"{naming.LABEL_MANAGED_BY}={NAME}",
        "-o",
        "name",
    ).stdout.split()
    assert left == [] and synced == []
    assert not (Path(env.vars["VNEST_HOME"]) / "clusters" / NS / NAME).exists()
    env.kubectl("--context", HOST, "delete", "namespace", NS, "--wait=false")


def test_the_process_driver_refuses_a_kubernetes_version_it_does_not_run(host_env, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"controlPlane": {"distro": {"k8s": {"version": "v1.30.2"}}}}))
    proc = host_env.vnest("create", "old", "-n", "old-k8s", "-f", str(values), "--no-connect", check=False)
    assert proc.returncode == 2
    assert "controlPlane.distro.k8s.version 'v1.30.2'" in proc.stderr
    assert host_env.kubectl("--context", HOST, "get", "namespace", "old-k8s", check=False).returncode != 0
