"""Builds the pinned upstream binaries from the Go modules under build/go/.

The cache folder is keyed by a hash of everything that decides the build
(build/versions.toml, every go.mod, go.sum and .go file under build/go, and
this recipe's version), so a pin change builds into a new folder and an
unchanged tree finds its binaries without running Go at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from vnest import log
from vnest.errors import VnestError
from vnest.procs import run_streaming

_log = log.get("binaries")

# Bump when the recipe below changes in a way that changes the outputs.
RECIPE_VERSION = "2"

SOURCE_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = SOURCE_ROOT / "build"
GO_DIR = BUILD_DIR / "go"
VERSIONS_FILE = BUILD_DIR / "versions.toml"
# Kubernetes' e2e.test and ginkgo, built on demand only (vnest.binaries.conformance).
CONFORMANCE_MODULE = "conformance"

# Names the multi-call binary `kube` answers to (see build/go/kube/main.go).
KUBE_COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# KWOK's own default stages, copied from the pinned module: the same ones kwokctl uses.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
MANIFEST = "manifest.json"
# KubeVirt's and CDI's CRDs, generated from the pinned npm package of their models (kubevirt_api).
KUBEVIRT_CRDS = "kubevirt-crds.yaml"


def pins() -> dict[str, dict[str, str]]:
    with VERSIONS_FILE.open("rb") as f:
        return tomllib.load(f)


@dataclass(frozen=True)
class _Target:
    output: str
    module: str  # folder under build/go
    package: str  # what `go build` builds inside that module
    ldflags: tuple[str, ...]


def _kube_version_flags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return tuple(flags)


def _targets(p: dict[str, dict[str, str]]) -> list[_Target]:
    return [
        _Target("kube", "kube", ".", _kube_version_flags(p["kubernetes"]["version"])),
        # The control plane of the release before: what virtual clusters upgrade from.
        _Target(
            PREVIOUS_KUBE, "kube-previous", ".", _kube_version_flags(p["kubernetes-previous"]["version"])
        ),
        # vnest's own: upstream's Pod Security Standards checks, served to the syncer.
        _Target("pod-security-check", "kube", "./cmd/pod-security-check", ()),
        _Target(
            "kwok",
            "kube",
            "sigs.k8s.io/kwok/cmd/kwok",
            (f"-X sigs.k8s.io/kwok/pkg/consts.Version={p['kwok']['version'].lstrip('v')}",),
        ),
        _Target(
            "helm",
            "kube",
            "helm.sh/helm/v3/cmd/helm",
            (f"-X helm.sh/helm/v3/internal/version.version={p['helm']['version']}",),
        ),
        _Target(
            "kine",
            "kine",
            "github.com/k3s-io/kine",
            (f"-X github.com/k3s-io/kine/pkg/version.Version={p['kine']['version']}",),
        ),
        _Target("etcd", "etcd", ".", ()),
        # CoreVersion is a const; GitCommit is the one -X upstream's Makefile sets,
        # and `coredns -version` prints it.
        _Target(
            "coredns",
            "coredns",
            ".",
            (f"-X github.com/coredns/coredns/coremain.GitCommit={p['coredns']['version']}",),
        ),
        # The local host's image registry (`crane registry serve`) and image layering tool.
        _Target(
            "crane",
            "crane",
            "github.com/google/go-containerregistry/cmd/crane",
            (
                "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version="
                + p["go-containerregistry"]["version"],
            ),
        ),
        *_capi_targets(p["cluster-api"]["version"]),
    ]


# Cluster API's binaries: (output, main package). The managers keep the names of their images.
CAPI_BINARIES = (
    ("clusterctl", "sigs.k8s.io/cluster-api/cmd/clusterctl"),
    ("cluster-api-controller", "sigs.k8s.io/cluster-api/core"),
    ("kubeadm-bootstrap-controller", "sigs.k8s.io/cluster-api/bootstrap/kubeadm"),
    ("kubeadm-control-plane-controller", "sigs.k8s.io/cluster-api/controlplane/kubeadm"),
)


def _capi_targets(version: str) -> list[_Target]:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "sigs.k8s.io/cluster-api/version"
    flags = (
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
    )
    return [_Target(output, "capi", package, flags) for output, package in CAPI_BINARIES]


@dataclass(frozen=True)
class Binaries:
    """Paths to the pinned upstream binaries in one cache folder."""

    dir: Path

    def __getattr__(self, name: str) -> Path:
        # kube_apiserver -> <dir>/kube-apiserver, etcd -> <dir>/etcd, ...
        path = self.dir / name.replace("_", "-")
        if not path.exists():
            raise AttributeError(f"no binary {name!r} in {self.dir}")
        return path

    def for_kubernetes(self, version: str) -> Path:
        """A folder of these binaries whose control plane (kube-apiserver, kube-controller-manager,
        kube-scheduler) is Kubernetes `version`: the pinned one's or the release before's."""
        p = pins()
        if version == p["kubernetes"]["version"]:
            return self.dir
        if version == p["kubernetes-previous"]["version"]:
            return self.dir / f"kubernetes-{version}"
        raise VnestError(f"no binaries of Kubernetes {version} here")

    @property
    def kubevirt_crds(self) -> Path:
        """KubeVirt's and CDI's CRDs (one multi-document YAML) for the test host's stand-in."""
        return self.dir / KUBEVIRT_CRDS

    @property
    def kwok_stages(self) -> list[Path]:
        return sorted((self.dir / "kwok-stages").glob("*.yaml"))

    @property
    def versions(self) -> dict[str, str]:
        versions: dict[str, str] = json.loads((self.dir / MANIFEST).read_text())["versions"]
        return versions


def _cache_root() -> Path:
    if env := os.environ.get("VNEST_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vnest"


def _go_sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".mod", ".sum", ".go"))


def _hash(recipe: str, inputs: list[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe={recipe} {platform.system()} {platform.machine()}\n".encode())
    for path in inputs:
        digest.update(str(path.relative_to(BUILD_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_key() -> str:
    # The conformance module is keyed apart (conformance_key): it builds only test tools, lazily.
    conformance = GO_DIR / CONFORMANCE_MODULE
    sources = [p for p in _go_sources(GO_DIR) if not p.is_relative_to(conformance)]
    return _hash(RECIPE_VERSION, [VERSIONS_FILE, *sources])


def bin_dir() -> Path:
    """Where the binaries for the current pins live (built or not)."""
    if env := os.environ.get("VNEST_BIN_DIR"):
        return Path(env)
    return _cache_root() / "bin" / build_key()


def _missing(folder: Path) -> list[str]:
    """What a complete folder has that this one lacks: the manifest (written last) and the
    outputs that are not binaries."""
    return [name for name in (MANIFEST, KUBEVIRT_CRDS) if not (folder / name).is_file()]


def _complete(folder: Path) -> bool:
    return not _missing(folder)


def ensure() -> Binaries:
    """Returns the binaries for the current pins, building whatever is missing."""
    target = bin_dir()
    if _complete(target):
        return Binaries(target)
    if os.environ.get("VNEST_BIN_DIR"):
        raise VnestError(
            f"VNEST_BIN_DIR={target} holds no complete set of binaries ({', '.join(_missing(target))} missing)",
            hint="unset VNEST_BIN_DIR to build them, or point it at a folder `vnest binaries ensure` made",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        # Two concurrent ensures (two terminals, parallel tests) build once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(target):
            _build(target)
    return Binaries(target)


def helm() -> Path:
    """The helm binary: $VNEST_HELM (vnest's image carries one, and no Go toolchain), else the pinned one."""
    if env := os.environ.get("VNEST_HELM"):
        return Path(env)
    return ensure().helm


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise VnestError(
            "Go is needed to build the pinned Kubernetes binaries, and `go` is not on PATH",
            hint="install Go 1.26 or newer (the official Linux tarball unpacked into /usr/local/go, "
            "then PATH=$PATH:/usr/local/go/bin), or set VNEST_BIN_DIR to a folder of prebuilt binaries",
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"  # static binaries; kine's SQLite driver is pure Go without cgo
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false"
    return env


def _run_go(args: list[str], module: str, what: str) -> None:
    """Runs a go command in a module folder, reporting progress from its -v output.

    go prints nothing while it downloads modules, so progress is also reported
    on a timer, not only when a line arrives.
    """
    cmd = [_go(), *args]
    _log.debug("running", cmd=" ".join(cmd), module=module)
    tail: deque[str] = deque(maxlen=40)
    compiled = downloaded = 0

    def status() -> str:
        return (
            f"{downloaded} modules downloaded, {compiled} packages compiled"
            if downloaded
            else f"{compiled} packages compiled"
        )

    with log.step(_log, what, every=15) as progress:

        def on_line(line: str) -> None:
            nonlocal compiled, downloaded
            tail.append(line)
            if line.startswith("go: downloading"):
                downloaded += 1
                _log.debug(line)
            else:
                compiled += 1
                if _log.debugging:
                    _log.debug(line)
            progress.update(status())

        code = run_streaming(
            cmd, on_line, lambda: progress.update(status()), cwd=GO_DIR / module, env=_go_env()
        )
        if code != 0:
            raise VnestError(
                f"{what} failed (go exited {code}):\n" + "\n".join(tail),
                hint="run with --debug to see every line go printed",
            )


def _build(target: Path) -> None:
    p = pins()
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _log.info(
            "building the pinned upstream binaries; this takes a while the first time", into=str(target)
        )
        for t in _targets(p):
            ldflags = " ".join(("-s", "-w", *t.ldflags))
            out = staging / t.output
            _run_go(
                ["build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out), t.package],
                t.module,
                f"building {t.output}",
            )
        for name in KUBE_COMPONENTS:
            (staging / name).symlink_to("kube")
        _link_previous(staging, p["kubernetes-previous"]["version"])
        _copy_kwok_stages(staging)
        _render_capi(staging, p)
        _render_kubevirt(staging, p["kubevirt-api"])
        manifest = {
            "key": target.name,
            "recipe": RECIPE_VERSION,
            "versions": {name: pin["version"] for name, pin in p.items()},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file() and not f.is_symlink())
    _log.done("binaries ready", dir=str(target), size=f"{size / 2**20:.0f}MiB")


PREVIOUS_KUBE = "kube-previous"
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _link_previous(staging: Path, version: str) -> None:
    """`kubernetes-<version>/`: the same binaries, with the control plane of the release before
    (what `vnest controlplane run --bin-dir` takes for a cluster at that version)."""
    folder = staging / f"kubernetes-{version}"
    folder.mkdir()
    for path in staging.iterdir():
        if path.is_file() and path.name not in CONTROL_PLANE_COMPONENTS and path != folder:
            (folder / path.name).symlink_to(f"../{path.name}")
    for name in CONTROL_PLANE_COMPONENTS:
        (folder / name).symlink_to(f"../{PREVIOUS_KUBE}")


# Cluster API's components as its release publishes them (`kustomize build` of each provider's
# config/default), rendered with the pinned kubectl's kustomize; images are set when a clusterctl
# repository is written (vnest.integrations.capi.repository).
CAPI_COMPONENTS = {
    "core-components.yaml": "core/config/default",
    "bootstrap-components.yaml": "bootstrap/kubeadm/config/default",
    "control-plane-components.yaml": "controlplane/kubeadm/config/default",
}
CAPI_DIR = "capi"


def _module_dir(module: str, version: str | None = None) -> Path:
    """Where the Go module cache holds a module: build/go/capi's requirement, or an exact version."""
    if version is None:
        args, cwd = ["list", "-m", "-f", "{{.Dir}}", module], GO_DIR / "capi"
    else:
        args, cwd = ["mod", "download", "-json", f"{module}@{version}"], GO_DIR / "capi"
    out = subprocess.run([_go(), *args], cwd=cwd, env=_go_env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise VnestError(f"go {' '.join(args)} failed: {out.stderr.strip()}")
    return Path(json.loads(out.stdout)["Dir"] if version else out.stdout.strip())


def _render_capi(staging: Path, p: dict[str, dict[str, str]]) -> None:
    out_dir = staging / CAPI_DIR
    out_dir.mkdir()
    capi = _module_dir(p["cluster-api"]["module"])
    for name, config in CAPI_COMPONENTS.items():
        rendered = subprocess.run(
            [str(staging / "kubectl"), "kustomize", str(capi / config)], capture_output=True, text=True
        )
        if rendered.returncode != 0:
            raise VnestError(f"kustomize of Cluster API's {config} failed: {rendered.stderr.strip()}")
        (out_dir / name).write_text(rendered.stdout)
    shutil.copyfile(capi / "metadata.yaml", out_dir / "metadata.yaml")
    # cert-manager's CRDs, from its chart in the pinned module: the API vnest's issuer serves.
    certmanager = _module_dir(p["cert-manager"]["module"], p["cert-manager"]["version"])
    chart = certmanager / "deploy" / "charts" / "cert-manager"
    crds = subprocess.run(
        [
            str(staging / "helm"),
            "template",
            "cert-manager",
            str(chart),
            "--namespace=cert-manager",
            "--set=crds.enabled=true",
            f"--kube-version={p['kubernetes']['version']}",
            *[f"--show-only=templates/{t.name}" for t in sorted((chart / "templates").glob("crd-*.yaml"))],
        ],
        capture_output=True,
        text=True,
    )
    if crds.returncode != 0:
        raise VnestError(f"rendering cert-manager's CRDs failed: {crds.stderr.strip()}")
    # The chart's version is set by cert-manager's release tool; the module's says v0.0.0.
    version = p["cert-manager"]["version"]
    (out_dir / "cert-manager-crds.yaml").write_text(crds.stdout.replace('"v0.0.0"', f'"{version}"'))


def _render_kubevirt(staging: Path, pin: dict[str, str]) -> None:
    """KubeVirt's and CDI's CRDs, generated from their OpenAPI models in the pinned npm package
    (`npm pack`, checked against the pinned integrity): KubeVirt's images and Go modules are not
    within reach, and the test host's stand-in serves the real API from these."""
    # Imported here: `python -m vnest.binaries.kubevirt_api` must find it not yet imported.
    from vnest.binaries import kubevirt_api

    what = f"generating KubeVirt's CRDs from {pin['package']}@{pin['version']}"
    with log.step(_log, what), tempfile.TemporaryDirectory(prefix="vnest-kubevirt-api-") as tmp:
        root = kubevirt_api.fetch_package(pin["package"], pin["version"], pin["integrity"], Path(tmp))
        (staging / KUBEVIRT_CRDS).write_text(kubevirt_api.render_crds(root))


def _copy_kwok_stages(staging: Path) -> None:
    out = subprocess.run(
        [_go(), "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=GO_DIR / "kube",
        env=_go_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    kwok_src = Path(out.stdout.strip())
    stages = staging / "kwok-stages"
    stages.mkdir()
    for rel in KWOK_STAGE_FILES:
        shutil.copyfile(kwok_src / rel, stages / Path(rel).name)
