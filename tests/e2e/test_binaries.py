import json
import os
import subprocess
import sys

import pytest

from vnest import binaries


def _run(*argv: str) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def bins():
    return binaries.ensure()


@pytest.mark.parametrize("component", ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_kubernetes_components_report_the_pinned_version(bins, component):
    assert _run(bins.dir / component, "--version").strip() == "Kubernetes v1.36.3"


def test_kubectl_matches_the_api_server(bins):
    version = json.loads(_run(bins.kubectl, "version", "--client", "-o", "json"))
    assert version["clientVersion"]["gitVersion"] == "v1.36.3"


def test_datastores_kwok_and_helm_run(bins):
    pins = binaries.pins()
    assert pins["etcd"]["version"].lstrip("v") in _run(bins.etcd, "--version")
    assert pins["kine"]["version"] in _run(bins.kine, "--version")
    assert pins["kwok"]["version"].lstrip("v") in _run(bins.kwok, "--version")
    assert pins["helm"]["version"] in _run(bins.helm, "version", "--short")
    assert {p.name for p in bins.kwok_stages} >= {"node-initialize.yaml", "pod-ready.yaml"}


def test_second_ensure_is_a_no_op(tmp_path, bins):
    before = {p.name: p.stat().st_mtime_ns for p in bins.dir.iterdir()}
    # With Go off PATH, an ensure that tried to build would fail: it must only find the cache.
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = f"{tmp_path}:/bin"
    proc = subprocess.run(
        [sys.executable, "-m", "vnest", "binaries", "ensure"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(bins.dir)
    assert proc.stderr == ""  # no progress: nothing to build
    assert {p.name: p.stat().st_mtime_ns for p in bins.dir.iterdir()} == before


def test_coredns_has_the_pinned_version_and_its_plugin_set(bins):
    version = binaries.pins()["coredns"]["version"]
    assert f"CoreDNS-{version.lstrip('v')}" in _run(bins.coredns, "-version")
    chosen = {"errors", "log", "health", "ready", "prometheus", "hosts", "kubernetes", "loop"}
    chosen |= {"forward", "cache", "reload", "loadbalance", "bind", "debug"}
    # forward, cache, log and kubernetes import these three as libraries, so they register
    # too; a Corefile cannot use them, since they are not among the build's directives.
    assert set(_run(bins.coredns, "-plugins").split()) == chosen | {"dnstap", "metadata", "transfer"}
