"""The local host's images, built for real, pushed to a real registry and run with runc.

Needs root, mmdebstrap, runc and `ip` (network namespaces); skipped without them unless
VNEST_REQUIRE_REAL=1. Everything it makes (registry, containers, their cgroups, the network
namespace, temp folders) is removed at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vnest
from vnest import binaries
from vnest.host import images
from vnest.procs import free_port

pytestmark = pytest.mark.real

# The capabilities containerd gives a container by default (nginx needs SETUID/SETGID to
# drop to www-data).
CAPABILITIES = [
    f"CAP_{c}"
    for c in [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ]
]


def _require_real() -> None:
    missing = [tool for tool in ("mmdebstrap", "runc", "ip", "tar") if shutil.which(tool) is None]
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif missing:
        why = f"missing {', '.join(missing)}"
    if why is None:
        return
    if os.environ.get("VNEST_REQUIRE_REAL") == "1":
        pytest.fail(f"VNEST_REQUIRE_REAL=1, but images cannot be built and run here: {why}")
    pytest.skip(f"images cannot be built and run here: {why}")


def _run(*argv: object, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def crane() -> Path:
    return binaries.ensure().crane


@pytest.fixture(scope="module")
def built() -> images.BuiltImages:
    _require_real()
    return images.ensure_built()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vnest-images-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(built: images.BuiltImages, crane: Path, workdir: Path) -> Iterator[str]:
    disk = workdir / "registry"
    disk.mkdir()
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        images.registry_command(crane, address, disk), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        while not images.registry_ready(address):
            assert proc.poll() is None and time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.05)
        images.push_all(built, address)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"vnest-images-{os.getpid()}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    assert name not in _run("ip", "netns", "list").stdout


class Containers:
    """Runs images with runc the way a node would: rootfs from the registry, process from the config."""

    def __init__(self, crane: Path, registry: str, netns: str, root: Path) -> None:
        self.crane, self.registry, self.netns, self.root = crane, registry, netns, root
        self.state = root / "runc-state"
        self.ids: list[str] = []

    def runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def bundle(self, path: str, args: list[str] | None = None, entrypoint: list[str] | None = None) -> str:
        cid = f"vnest-images-{os.getpid()}-{len(self.ids)}"
        bundle = self.root / cid
        rootfs = bundle / "rootfs"
        rootfs.mkdir(parents=True)
        export = subprocess.Popen(
            [str(self.crane), "export", "--insecure", f"{self.registry}/{path}", "-"], stdout=subprocess.PIPE
        )
        _run("tar", "-x", "-C", rootfs, stdin=export.stdout, timeout=120)
        assert export.wait() == 0
        config = json.loads(_run(self.crane, "config", "--insecure", f"{self.registry}/{path}").stdout)[
            "config"
        ]
        _run("runc", "spec", "--bundle", bundle)
        spec = json.loads((bundle / "config.json").read_text())
        process = spec["process"]
        process["terminal"] = False
        # As a node does: the pod's command replaces the entrypoint, its args the cmd.
        command = config.get("Entrypoint") or [] if entrypoint is None else entrypoint
        process["args"] = command + (config.get("Cmd") or [] if args is None else args)
        process["env"] = config.get("Env") or []
        process["cwd"] = config.get("WorkingDir") or "/"
        if user := config.get("User"):
            uid, _, gid = user.partition(":")
            process["user"] = {"uid": int(uid), "gid": int(gid or uid)}
        for kind in ("bounding", "effective", "permitted"):
            process["capabilities"][kind] = CAPABILITIES
        spec["root"]["readonly"] = False
        for ns in spec["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/var/run/netns/{self.netns}"
        (bundle / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)
        return cid

    def run(self, path: str, args: list[str] | None = None, entrypoint: list[str] | None = None) -> str:
        cid = self.bundle(path, args, entrypoint)
        proc = _run(*self.runc("run", "--bundle", str(self.root / cid), cid), stdin=subprocess.DEVNULL)
        return proc.stdout + proc.stderr

    def start(self, path: str) -> tuple[str, subprocess.Popen[str]]:
        cid = self.bundle(path)
        proc = subprocess.Popen(
            self.runc("run", "--bundle", str(self.root / cid), cid),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return cid, proc

    def stop(self, cid: str) -> None:
        subprocess.run(self.runc("kill", cid, "KILL"), capture_output=True, check=False)
        subprocess.run(self.runc("delete", "--force", cid), capture_output=True, check=False)

    def cleanup(self) -> None:
        for cid in self.ids:
            self.stop(cid)
        listed = subprocess.run(self.runc("list", "--quiet"), capture_output=True, text=True).stdout.split()
        assert not listed, f"containers left behind: {listed}"


@pytest.fixture(scope="module")
def containers(crane: Path, registry: str, netns: str, workdir: Path) -> Iterator[Containers]:
    c = Containers(crane, registry, netns, workdir / "containers")
    try:
        yield c
    finally:
        c.cleanup()


def test_every_reference_resolves_in_the_mirror_path(
    built: images.BuiltImages, registry: str, crane: Path
) -> None:
    for image in images.catalogue():
        digest = _run(crane, "digest", "--insecure", f"{registry}/{image.path}").stdout.strip()
        assert digest == built.get(image.reference).digest
        config = json.loads(_run(crane, "config", "--insecure", f"{registry}/{image.path}").stdout)
        # containerd skips a manifest whose config names no platform.
        assert (config["os"], config["architecture"]) == ("linux", images._arch())


def test_nginx_and_vnest_image_configs(registry: str, crane: Path) -> None:
    config = json.loads(_run(crane, "config", "--insecure", f"{registry}/library/nginx:latest").stdout)[
        "config"
    ]
    assert config.get("Entrypoint") is None
    assert config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert "80/tcp" in config["ExposedPorts"]
    assert any(e.startswith("PATH=") for e in config["Env"])
    ref = f"{registry}/library/vnest:{vnest.__version__}"
    config = json.loads(_run(crane, "config", "--insecure", ref).stdout)["config"]
    assert config["Entrypoint"] == ["vnest"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])


def test_repeated_push_only_checks_blobs(built: images.BuiltImages, registry: str) -> None:
    started = time.monotonic()
    images.push_all(built, registry)
    assert time.monotonic() - started < 5


def test_warm_ensure_built_builds_nothing(built: images.BuiltImages) -> None:
    started = time.monotonic()
    again = images.ensure_built()
    assert time.monotonic() - started < 2
    assert again == built


def test_pause_version_is_the_pinned_kubernetes_default(built: images.BuiltImages) -> None:
    module = images._kubernetes_module()
    constants = (module / "cmd/kubeadm/app/constants/constants.go").read_text()
    assert f'PauseVersion = "{images.PAUSE_VERSION}"' in constants


def test_nginx_serves_its_welcome_page_and_busybox_and_curl_reach_it(
    containers: Containers, netns: str
) -> None:
    cid, nginx = containers.start("library/nginx:latest")
    try:
        page = ""
        deadline = time.monotonic() + 20
        while "Welcome to nginx!" not in page:
            assert nginx.poll() is None, nginx.communicate()
            assert time.monotonic() < deadline, "nginx did not answer on port 80"
            got = subprocess.run(
                ["ip", "netns", "exec", netns, "curl", "-s", "--max-time", "2", "http://127.0.0.1:80/"],
                capture_output=True,
                text=True,
            )
            page = got.stdout
            time.sleep(0.2)
        # The applets are links a runtime can exec directly (`command: [sleep, "3600"]`).
        script = (
            "for a in sh sleep wget nslookup nc; do readlink /bin/$a; done; wget -q -O - http://127.0.0.1/"
        )
        out = containers.run("library/busybox:latest", ["sh", "-c", script])
        assert "Welcome to nginx!" in out
        assert out.count("busybox\n") == 5
        containers.run("library/busybox:latest", ["sleep", "0.1"])
        assert "Welcome to nginx!" in containers.run("curlimages/curl:latest", ["-s", "http://127.0.0.1/"])
        assert "Welcome to nginx!" in containers.run(
            "curlimages/curl:latest", ["sh", "-c", "curl -s 127.0.0.1"]
        )
    finally:
        containers.stop(cid)
        out, _err = nginx.communicate(timeout=20)
    # Access log on stdout, as Docker's nginx image does: `kubectl logs` shows the requests.
    assert '"GET / HTTP/1.1" 200' in out


def test_the_other_images_run(containers: Containers, registry: str) -> None:
    kube = binaries.pins()["kubernetes"]["version"]
    assert "curl " in containers.run("curlimages/curl:latest", ["--version"])
    assert f"Kubernetes {kube}" in containers.run(f"kube-apiserver:{kube}", ["--version"])
    assert f"Kubernetes {kube}" in containers.run(f"kube-scheduler:{kube}", ["--version"])
    assert f"v{images.PAUSE_VERSION}" in containers.run(f"pause:{images.PAUSE_VERSION}", ["-v"])
    previous = binaries.pins()["kubernetes-previous"]["version"]
    assert f"Kubernetes {previous}" in containers.run(f"kube-apiserver:{previous}", ["--version"])
    (coredns,) = [i for i in images.catalogue() if i.repository == "coredns/coredns"]
    assert "CoreDNS-" in containers.run(coredns.path, ["-version"])
    capi = binaries.pins()["cluster-api"]["version"]
    for manager in images.CAPI_MANAGERS:
        # Each manager's flags, from the binary at /manager that the components' Deployments run.
        assert "--webhook-port" in containers.run(f"cluster-api/{manager}:{capi}", ["--help"]), manager


def test_vnest_image_has_what_the_chart_copies_and_runs(containers: Containers) -> None:
    ref = f"library/vnest:{vnest.__version__}"
    assert vnest.__version__ in containers.run(ref, ["--version"])
    # The chart's first init container: `cp` these into the shared /binaries volume.
    copy = "cp /usr/local/bin/busybox /usr/local/bin/kine /usr/local/bin/etcd /usr/local/bin/pod-security-check /tmp/"
    out = containers.run(
        ref, ["-c", f"{copy} && /tmp/busybox ls /tmp && /tmp/kine --version"], entrypoint=["sh"]
    )
    assert "pod-security-check" in out and "kine" in out.lower()
    # helm and the chart, for the Cluster API provider's pod.
    helm = binaries.pins()["helm"]["version"]
    out = containers.run(
        ref, ["-c", "helm version --short && cat $VNEST_CHART_DIR/Chart.yaml"], entrypoint=["sh"]
    )
    assert out.startswith(helm) and "name: vnest" in out, out
    # The compiled wheels load with the image's Python and glibc.
    imports = (
        "import pydantic_core, cryptography.hazmat.bindings._rust, psutil, yaml, lightkube, vnest.cli.main"
    )
    out = containers.run(
        ref,
        ["-c", f"import sys; sys.path.insert(0, '{images.SITE_PACKAGES}'); {imports}; print('ok')"],
        entrypoint=["python3"],
    )
    assert out.strip().endswith("ok")
