import os
import re
import subprocess
import sys
from pathlib import Path

from vnest.binaries import build, conformance


def _go_mod(module: str) -> str:
    return (build.GO_DIR / module / "go.mod").read_text()


def _required(go_mod: str, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", go_mod, re.M)
    assert match, f"{module} is not required in go.mod"
    return match.group(1)


def test_go_modules_follow_the_pins_file():
    pins = build.pins()
    kube_mod = _go_mod("kube")
    assert _required(kube_mod, "k8s.io/kubernetes") == pins["kubernetes"]["version"]
    assert _required(kube_mod, "sigs.k8s.io/kwok") == pins["kwok"]["version"]
    assert _required(kube_mod, "helm.sh/helm/v3") == pins["helm"]["version"]
    assert _required(_go_mod("kine"), "github.com/k3s-io/kine") == pins["kine"]["version"]
    assert _required(_go_mod("etcd"), "go.etcd.io/etcd/server/v3") == pins["etcd"]["version"]
    coredns_mod = _go_mod("coredns")
    assert _required(coredns_mod, "github.com/coredns/coredns") == pins["coredns"]["version"]
    crane_mod = _go_mod("crane")
    assert (
        _required(crane_mod, "github.com/google/go-containerregistry")
        == pins["go-containerregistry"]["version"]
    )
    capi_mod = _go_mod("capi")
    assert _required(capi_mod, "sigs.k8s.io/cluster-api") == pins["cluster-api"]["version"]
    # Cluster API's own api module is versioned with it (its go.mod points at ./api).
    assert _required(capi_mod, "sigs.k8s.io/cluster-api/api") == pins["cluster-api"]["version"]
    # Every pinned module builds with the Go the README asks for, without fetching a newer toolchain.
    for module in ("kube", "kube-previous", "kine", "etcd", "coredns", "crane", "capi", "conformance"):
        go = re.search(r"^go (\S+)$", _go_mod(module), re.M)
        assert go and tuple(int(n) for n in go.group(1).split(".")[:2]) <= (1, 26), module
        assert not re.search(r"^toolchain ", _go_mod(module), re.M), module
    # Every k8s.io staging module is replaced by the release that matches the pinned Kubernetes.
    staging = "v0." + pins["kubernetes"]["version"].removeprefix("v1.")
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", kube_mod, re.M)
    assert len(replaces) > 20
    assert {version for _, version in replaces} == {staging}
    # The release before, built the same way from build/go/kube-previous.
    previous_mod = _go_mod("kube-previous")
    previous = pins["kubernetes-previous"]["version"]
    assert _required(previous_mod, "k8s.io/kubernetes") == previous
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", previous_mod, re.M)
    assert len(replaces) > 20 and {v for _, v in replaces} == {"v0." + previous.removeprefix("v1.")}
    # One minor release back: the skew Kubernetes supports for an in-place control plane upgrade.
    minor = lambda v: int(v.split(".")[1])  # noqa: E731
    assert minor(previous) == minor(pins["kubernetes"]["version"]) - 1


def test_the_conformance_module_builds_from_the_pinned_kubernetes():
    pins = build.pins()
    mod = _go_mod("conformance")
    assert _required(mod, "k8s.io/kubernetes") == pins["kubernetes"]["version"]
    # The same staging replace block as build/go/kube: the pinned release's staging modules.
    replaces = dict(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", mod, re.M))
    kube = dict(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", _go_mod("kube"), re.M))
    assert replaces == kube
    # ginkgo's CLI at the version the Kubernetes module requires (read from Go's module cache,
    # which holds that go.mod once anything of Kubernetes was built).
    ginkgo = _required(mod, "github.com/onsi/ginkgo/v2")
    cache = Path(os.environ.get("GOMODCACHE") or Path.home() / "go" / "pkg" / "mod")
    upstream = (
        cache / "cache" / "download" / "k8s.io" / "kubernetes" / "@v" / f"{pins['kubernetes']['version']}.mod"
    )
    if upstream.is_file():
        assert _required(upstream.read_text(), "github.com/onsi/ginkgo/v2") == ginkgo


def test_the_conformance_tools_are_keyed_apart_from_the_binaries(tmp_path, monkeypatch):
    go = tmp_path / "go"
    for module in ("kube", "conformance"):
        (go / module).mkdir(parents=True)
        (go / module / "go.mod").write_text(f"module {module}\n")
    (tmp_path / "versions.toml").write_text(build.VERSIONS_FILE.read_text())
    monkeypatch.setattr(build, "VERSIONS_FILE", tmp_path / "versions.toml")
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path)
    monkeypatch.setattr(build, "GO_DIR", go)
    monkeypatch.setenv("VNEST_CACHE_DIR", str(tmp_path / "cache"))
    keys = build.build_key(), conformance.conformance_key()
    # A change to the conformance module leaves the binaries' key (and the demo's build) alone.
    (go / "conformance" / "tools.go").write_text("package tools\n")
    assert build.build_key() == keys[0]
    assert conformance.conformance_key() != keys[1]
    assert conformance.conformance_dir() == tmp_path / "cache" / "conformance" / conformance.conformance_key()
    keys = build.build_key(), conformance.conformance_key()
    (go / "kube" / "main.go").write_text("package main\n")
    assert build.build_key() != keys[0] and conformance.conformance_key() == keys[1]
    # A pin change moves both.
    keys = build.build_key(), conformance.conformance_key()
    (tmp_path / "versions.toml").write_text(build.VERSIONS_FILE.read_text().replace("v1.36.3", "v1.36.4"))
    assert build.build_key() != keys[0] and conformance.conformance_key() != keys[1]


def test_build_key_follows_the_build_inputs(tmp_path, monkeypatch):
    first = build.build_key()
    assert first == build.build_key()
    versions = tmp_path / "versions.toml"
    versions.write_text(build.VERSIONS_FILE.read_text().replace("v1.36.3", "v1.36.4"))
    monkeypatch.setattr(build, "VERSIONS_FILE", versions)
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path)
    monkeypatch.setattr(build, "GO_DIR", tmp_path / "go")
    assert build.build_key() != first


def test_missing_go_is_a_clear_error(tmp_path):
    env = {"PATH": f"{tmp_path}:/bin", "HOME": str(tmp_path), "VNEST_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "vnest", "binaries", "ensure"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "`go` is not on PATH" in proc.stderr
    assert "install Go 1.26 or newer" in proc.stderr
    assert not (tmp_path / "cache" / "bin" / build.build_key()).exists()


def test_coredns_is_a_custom_build_with_a_small_plugin_set():
    main = (build.GO_DIR / "coredns" / "main.go").read_text()
    # Upstream's core/plugin imports every plugin and their cloud SDKs.
    assert '"github.com/coredns/coredns/core/plugin"' not in main
    directives = re.findall(r'^\t"(\w+)",$', main, re.M)
    assert directives == [
        "reload", "bind", "debug", "ready", "health", "prometheus", "errors", "log",
        "loadbalance", "cache", "hosts", "kubernetes", "loop", "forward",
    ]  # fmt: skip
    imported = set(re.findall(r'_ "github.com/coredns/coredns/plugin/(\w+)"', main))
    assert imported == {"metrics" if d == "prometheus" else d for d in directives}
    target = next(t for t in build._targets(build.pins()) if t.output == "coredns")
    assert target.module == "coredns"


def test_binaries_path_tells_the_conformance_folder_apart(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vnest.cli.main import cli

    monkeypatch.setenv("VNEST_CACHE_DIR", str(tmp_path))
    main = CliRunner().invoke(cli, ["binaries", "path"])
    tools = CliRunner().invoke(cli, ["binaries", "path", "--conformance"])
    assert main.exit_code == tools.exit_code == 0
    assert main.output.strip() == str(tmp_path / "bin" / build.build_key())
    assert tools.output.strip() == str(tmp_path / "conformance" / conformance.conformance_key())
    assert list(tmp_path.iterdir()) == []  # `path` builds nothing
