"""The lifecycle CLI against the real local host: the seed's "Create a vCluster" demo and its edges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VNEST
from vnest import naming
from vnest.procs import wait_until

HOST = "vnest-host"


@pytest.fixture
def env(host_env):
    """The session host; whatever a test connects to, the current context is the host's again after it."""
    yield host_env
    host_env.kubectl("config", "use-context", HOST)


def _clusters(env) -> dict[tuple[str, str], dict]:
    rows = json.loads(env.vnest("list", "-o", "json").stdout)
    return {(r["namespace"], r["name"]): r for r in rows}


def _state_dir(env, name: str, namespace: str) -> Path:
    return Path(env.vars["VNEST_HOME"]) / "clusters" / namespace / name


def _processes_under(folder: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if str(folder) in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _virtual(env, name: str, namespace: str, *kubectl_args: str) -> str:
    return env.vnest("connect", name, "-n", namespace, "--", env.kubectl_path, *kubectl_args).stdout


def _host_objects(env, namespace: str, selector: str) -> list[str]:
    kinds = "all,secrets,configmaps,serviceaccounts,roles,rolebindings,persistentvolumeclaims"
    out = env.kubectl("--context", HOST, "get", kinds, "-n", namespace, "-l", selector, "-o", "name").stdout
    return out.split()


def test_seed_demo_create_connect_pause_resume_delete(env):
    name, ns = "my-vcluster", "vcluster1"
    env.vnest("create", name, "-n", ns)
    assert env.kubectl("config", "current-context").stdout.strip() == f"vnest_{name}_{ns}_{HOST}"
    namespaces = env.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert set(namespaces) == {
        f"namespace/{n}" for n in ("default", "kube-system", "kube-public", "kube-node-lease")
    }
    env.kubectl("create", "configmap", "kept", "--from-literal=seed=demo")

    env.vnest("disconnect")
    assert env.kubectl("config", "current-context").stdout.strip() == HOST
    assert "namespace/kube-node-lease" in _virtual(env, name, ns, "get", "ns", "-o", "name")
    assert env.kubectl("config", "current-context").stdout.strip() == HOST  # connect -- CMD leaves it alone
    # A TERM reaches the command, and the temporary kubeconfig goes with it.
    tmp = env.root / "tmp"
    tmp.mkdir()
    waiting = subprocess.Popen(
        [*VNEST, "connect", name, "-n", ns, "--", "sleep", "60"],
        env={**env.vars, "TMPDIR": str(tmp)},
    )
    wait_until(lambda: list(tmp.iterdir()), 30, "connect to write its kubeconfig")
    waiting.terminate()
    assert waiting.wait(20) == 128 + signal.SIGTERM  # sleep's own end, passed through
    assert list(tmp.iterdir()) == []

    row = _clusters(env)[(ns, name)]
    assert row["status"] == "Running"
    assert row["version"] == "v1.36.3"
    assert row["driver"] == "process"
    assert row["created"].endswith("Z")
    table = env.vnest("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "NAMESPACE", "STATUS", "VERSION", "CONNECTED", "AGE"]

    # The control plane's host objects, named as SPEC.md section 4 says.
    objects = set(_host_objects(env, ns, f"vnest.io/cluster={name}"))
    assert {
        f"service/{name}",
        f"secret/vc-{name}",
        f"secret/vc-config-{name}",
        f"secret/{name}-certs",
        f"serviceaccount/vc-{name}",
        f"role.rbac.authorization.k8s.io/vc-{name}",
        f"rolebinding.rbac.authorization.k8s.io/vc-{name}",
    } <= objects

    state = _state_dir(env, name, ns)
    env.vnest("pause", name, "-n", ns)
    assert _clusters(env)[(ns, name)]["status"] == "Paused"
    assert _processes_under(state) == []

    env.vnest("resume", name, "-n", ns)
    assert _clusters(env)[(ns, name)]["status"] == "Running"
    assert _virtual(env, name, ns, "get", "configmap", "kept", "-o", "jsonpath={.data.seed}") == "demo"

    # kill -9 of the whole control plane: the data survives a restart.
    pid = int((state / "pids" / "controlplane.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not _processes_under(state), 10, "the killed control plane to be gone")
    assert _clusters(env)[(ns, name)]["status"] == "Failed"
    env.vnest("resume", name, "-n", ns)
    assert _virtual(env, name, ns, "get", "configmap", "kept", "-o", "jsonpath={.data.seed}") == "demo"

    described = json.loads(env.vnest("describe", name, "-n", ns, "-o", "json").stdout)
    assert described["health"]["apiServer"] == "ok"
    assert described["config"]["controlPlane"]["backingStore"] is not None
    assert described["endpoints"]["hostService"] != ""

    env.vnest("delete", name, "-n", ns)
    assert _host_objects(env, ns, f"vnest.io/cluster={name}") == []
    assert _processes_under(state) == []
    assert not state.exists()
    assert (ns, name) not in _clusters(env)


def test_two_virtual_clusters_are_isolated(env):
    env.vnest("create", "iso-a", "-n", "iso-a-ns", "--no-connect")
    env.vnest("create", "iso-b", "-n", "iso-b-ns", "--no-connect")
    try:
        _virtual(env, "iso-a", "iso-a-ns", "create", "namespace", "only-in-a")
        assert "namespace/only-in-a" in _virtual(env, "iso-a", "iso-a-ns", "get", "ns", "-o", "name")
        assert "only-in-a" not in _virtual(env, "iso-b", "iso-b-ns", "get", "ns", "-o", "name")
        clusters = _clusters(env)
        assert (
            clusters[("iso-a-ns", "iso-a")]["status"]
            == clusters[("iso-b-ns", "iso-b")]["status"]
            == "Running"
        )
    finally:
        env.vnest("delete", "iso-a", "-n", "iso-a-ns", check=False)
        env.vnest("delete", "iso-b", "-n", "iso-b-ns", check=False)


def _host_snapshot(env) -> set[str]:
    kinds = "namespaces,services,secrets,serviceaccounts,roles,rolebindings,statefulsets,configmaps"
    out = env.kubectl("--context", HOST, "get", kinds, "-A", "-o", "json").stdout
    return {
        f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
        for i in json.loads(out)["items"]
    }


@pytest.mark.parametrize(
    ("args", "values", "code", "message"),
    [
        (
            ["bad-key"],
            "sync:\n  toHost:\n    podz:\n      enabled: true\n",
            2,
            "did you mean 'sync.toHost.pods'",
        ),
        (
            ["bad-type"],
            "sync:\n  toHost:\n    pods:\n      enabled: maybe\n",
            2,
            "expected a boolean, got 'maybe'",
        ),
        (["k3s"], "controlPlane:\n  distro:\n    k3s:\n      enabled: true\n", 2, "vnest does not support"),
        (["Not_A_Label"], "", 2, "is not a valid name"),
    ],
    ids=["unknown-key", "wrong-type", "unsupported-vcluster-key", "bad-name"],
)
def test_bad_input_exits_with_a_reason_and_leaves_the_host_alone(env, tmp_path, args, values, code, message):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(values)
    before = _host_snapshot(env)
    proc = env.vnest("create", *args, "-n", "bad-input", "-f", str(values_file), check=False)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert _host_snapshot(env) == before


def test_existing_name_needs_upgrade(env):
    env.vnest("create", "twice", "-n", "twice-ns", "--no-connect")
    try:
        before = _host_snapshot(env)
        proc = env.vnest("create", "twice", "-n", "twice-ns", "--no-connect", check=False)
        assert proc.returncode == 1
        assert "already exists in namespace 'twice-ns'" in proc.stderr
        assert "--upgrade" in proc.stderr
        assert _host_snapshot(env) == before
        port = json.loads((_state_dir(env, "twice", "twice-ns") / "cluster.json").read_text())["apiPort"]
        env.vnest("create", "twice", "-n", "twice-ns", "--no-connect", "--upgrade")
        assert _clusters(env)[("twice-ns", "twice")]["status"] == "Running"
        # The same port: kubeconfigs handed out before the upgrade still reach it.
        assert (
            json.loads((_state_dir(env, "twice", "twice-ns") / "cluster.json").read_text())["apiPort"] == port
        )

        # One virtual cluster per host namespace: a second one there is refused, and makes nothing.
        before = _host_snapshot(env)
        proc = env.vnest("create", "second", "-n", "twice-ns", "--no-connect", check=False)
        assert proc.returncode == 1
        assert "namespace 'twice-ns' already holds virtual cluster 'twice'" in proc.stderr
        assert _host_snapshot(env) == before
    finally:
        env.vnest("delete", "twice", "-n", "twice-ns")


def test_a_planted_control_plane_secret_is_refused(env):
    # A Secret under a cluster's config name, without vnest's labels: never taken for its config.
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": naming.config_secret("planted"), "namespace": "planted-ns"},
        "stringData": {"config.yaml": "{}"},
    }
    manifest = env.root / "planted.json"
    manifest.write_text(json.dumps(planted))
    env.kubectl("--context", HOST, "create", "namespace", "planted-ns")
    try:
        env.kubectl("--context", HOST, "apply", "-f", str(manifest))
        for args in (["create", "planted"], ["describe", "planted"], ["connect", "planted", "--print"]):
            proc = env.vnest(*args, "-n", "planted-ns", check=False)
            assert proc.returncode == 1, args
            assert "Secret planted-ns/vc-config-planted is not vnest's" in proc.stderr, args
        assert env.kubectl("--context", HOST, "get", "pods", "-n", "planted-ns", "-o", "name").stdout == ""
    finally:
        env.kubectl(
            "--context", HOST, "delete", "namespace", "planted-ns", check=False
        )  # gone for the next test


def test_kubernetes_driver_installs_the_chart_objects(env):
    name, ns = "kd", "kd-ns"
    env.vnest("create", name, "-n", ns, "--driver", "kubernetes", "--no-wait", "--no-connect")
    try:
        get = lambda kind, obj: json.loads(  # noqa: E731
            env.kubectl("--context", HOST, "get", kind, obj, "-n", ns, "-o", "json").stdout
        )
        sts = get("statefulset", name)
        pod = sts["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"vc-{name}"
        assert [c["name"] for c in pod["initContainers"]] == [
            "vnest-copy",
            "kube-apiserver",
            "kube-controller-manager",
        ]
        assert pod["initContainers"][1]["image"] == "registry.k8s.io/kube-apiserver:v1.36.3"
        syncer = pod["containers"][0]
        assert syncer["command"][:3] == ["vnest", "controlplane", "run"]
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
        service = get("service", name)
        assert {p["port"] for p in service["spec"]["ports"]} == {443, 10250}
        assert service["spec"]["selector"] == naming.control_plane_pod_selector(name)
        assert get("service", f"{name}-headless")["spec"]["clusterIP"] == "None"
        role = get("role", f"vc-{name}")
        assert any("pods" in r["resources"] for r in role["rules"])
        binding = get("rolebinding", f"vc-{name}")
        assert binding["subjects"][0]["name"] == f"vc-{name}"
        assert get("serviceaccount", f"vc-{name}")["metadata"]["labels"]["vnest.io/cluster"] == name
        config = get("secret", f"vc-config-{name}")
        assert config["metadata"]["annotations"]["vnest.io/driver"] == "kubernetes"
        assert _clusters(env)[(ns, name)]["driver"] == "kubernetes"
    finally:
        env.vnest("delete", name, "-n", ns)
    assert _host_objects(env, ns, f"vnest.io/cluster={name}") == []


def test_a_failed_create_in_an_existing_namespace_leaves_it_as_it_was(env):
    env.kubectl("--context", HOST, "create", "namespace", "fail-ns")
    env.kubectl(
        "--context", HOST, "label", "namespace", "fail-ns", "pod-security.kubernetes.io/enforce=restricted"
    )

    def snapshot() -> set[str]:  # this namespace only: others may still be going away
        return {x for x in _host_snapshot(env) if "/fail-ns/" in x or x.endswith("//fail-ns")}

    try:
        before = snapshot()
        assert "Namespace//fail-ns" in before
        labels = json.loads(
            env.kubectl("--context", HOST, "get", "namespace", "fail-ns", "-o", "json").stdout
        )["metadata"]["labels"]
        # Too short a wait for any control plane: the create fails and cleans up after itself.
        proc = env.vnest("create", "fail", "-n", "fail-ns", "--no-connect", "--timeout", "1", check=False)
        assert proc.returncode == 1
        assert snapshot() == before
        after = json.loads(env.kubectl("--context", HOST, "get", "namespace", "fail-ns", "-o", "json").stdout)
        assert after["metadata"]["labels"] == labels  # its Pod Security label put back
    finally:
        env.kubectl("--context", HOST, "delete", "namespace", "fail-ns", "--wait=false", check=False)
