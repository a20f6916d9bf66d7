"""The container images real nodes pull, built here from Debian packages, served by a local registry.

Real nodes must not reach the internet, and there is no Docker engine to build with, so every
image a demo or the chart needs is made from distribution packages and the pinned binaries:
root filesystems come from Debian (mmdebstrap, with the machine's own apt sources), pause is
compiled from the pinned Kubernetes module's pause.c, the Kubernetes, CoreDNS, kine and etcd
binaries are the ones vnest already builds. Layers are plain ``tar.gz`` files; crane assembles
the images. The local registry stands in for docker.io and registry.k8s.io (containerd uses it
as their mirror), so each image sits at the path those registries would have: ``nginx`` is
``library/nginx:latest``, ``registry.k8s.io/pause:3.10.2`` is ``pause:3.10.2``.

Each layer is cached under its own key (a hash of everything that decides its content), so a
code change rebuilds the small vnest layer and never the Debian base. Each image is kept as an
OCI layout whose layer blobs are hard links to the cached layers; pushing a layout sends only
the blobs a registry lacks and never recompresses anything, which keeps the push that every
``vnest host up`` does (the registry forgets manifests when it stops) to about a second.

The images upstream's conformance specs pull are built the same way (vnest.host.e2e_images), only
when asked: ``VNEST_E2E_IMAGES=1`` adds them to what ``ensure_built`` builds and the host serves.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import TypedDict

import httpx

import vnest
from vnest import binaries, log
from vnest.binaries.build import GO_DIR
from vnest.errors import VnestError
from vnest.procs import free_port, run_streaming

_log = log.get("images")

SOURCE_ROOT = Path(__file__).resolve().parents[2]

# Bump when a recipe changes in a way its hashed inputs do not show (e.g. the tar options).
RECIPE_VERSION = "1"

# bookworm's python3 is 3.11, the Python vnest's own image runs and its wheels are picked for.
DEBIAN_SUITE = "bookworm"
IMAGE_PYTHON = "3.11"
# The glibc of DEBIAN_SUITE: wheels built for a newer one would not load in the image.
IMAGE_GLIBC_MINOR = 36

# kubeadm's default sandbox image for the pinned Kubernetes (cmd/kubeadm/app/constants:
# PauseVersion); the pause layer's build checks the two still agree.
PAUSE_VERSION = "3.10.2"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_PACKAGES = ("ca-certificates", "curl", "nginx", "python3")
KUBE_IMAGE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SITE_PACKAGES = "/opt/vnest/site-packages"
CHART_PATH = "/opt/vnest/chart"  # the chart, for the Cluster API provider's helm
# Cluster API's managers, each image with its binary at /manager as upstream's images have it.
CAPI_MANAGERS = ("cluster-api-controller", "kubeadm-bootstrap-controller", "kubeadm-control-plane-controller")

LAYER_FILE = "layer.tar.gz"
LAYER_INFO = "layer.json"
IMAGE_INFO = "image.json"

_MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
_BASE_OPTIONS = (
    "--variant=minbase",
    '--aptopt=APT::Install-Recommends "false"',
    # Documentation is dead weight in an image; the licences stay.
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # Device nodes belong to the runtime, which mounts its own /dev.
    "--skip=output/dev",
)
_BASE_HOOKS = (
    # The build machine's name, resolvers and apt settings (proxies) must not ship; the runtime
    # provides the first two.
    'rm -f "$1/etc/resolv.conf" "$1/etc/hostname" "$1/etc/apt/apt.conf.d/99mmdebstrap"',
    # As Docker's nginx image: logs go to the container's output, where `kubectl logs` reads them.
    'ln -sf /dev/stdout "$1/var/log/nginx/access.log"',
    'ln -sf /dev/stderr "$1/var/log/nginx/error.log"',
)
_BUSYBOX_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\nnobody:x:65534:\n",
}
# curlimages/curl's entrypoint: arguments that are not a command are curl's, so both
# `args: [-s, URL]` and `command: [sh, -c, ...]` work as they do with the real image.
_CURL_ENTRYPOINT = """\
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ -z "$(command -v "$1")" ]; then
  set -- curl "$@"
fi
exec "$@"
"""
# What pip's console script would be, for the packages under SITE_PACKAGES.
_VNEST_LAUNCHER = f"""\
#!/usr/bin/python3
import sys

sys.path.insert(0, "{SITE_PACKAGES}")
from vnest.cli.main import main

sys.exit(main())
"""


# ---- the catalogue -------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image the local registry serves: its public reference, its layers and its config."""

    reference: str  # fully qualified, e.g. "docker.io/library/nginx:latest"
    layers: tuple[str, ...]  # names of cached layers, bottom first
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)
    workdir: str = ""
    user: str = ""
    ports: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # "key=value"; tells apart two tags of the same content

    @property
    def registry(self) -> str:
        return self.reference.split("/", 1)[0]

    @property
    def repository(self) -> str:
        """The repository in the mirror: what containerd asks a docker.io or registry.k8s.io mirror for."""
        return self.reference.split("/", 1)[1].rpartition(":")[0]

    @property
    def tag(self) -> str:
        return self.reference.rpartition(":")[2]

    @property
    def path(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def name(self) -> str:
        """A short unique name, for cache folders and logs (two releases of a component are two)."""
        return f"{self.repository.rsplit('/', 1)[-1]}-{self.tag}"


def normalize(reference: str) -> str:
    """A reference as containerd resolves it: ``nginx`` is ``docker.io/library/nginx:latest``."""
    first, sep, rest = reference.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        registry, path = "docker.io", reference
    else:
        registry, path = first, rest
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if ":" not in path.rsplit("/", 1)[-1]:
        path += ":latest"
    return f"{registry}/{path}"


def catalogue() -> list[Image]:
    """Every image the local host serves, in the order they are pushed."""
    from vnest.config.models import REWRITE_HOSTS_IMAGE
    from vnest.dns.coredns import DEFAULT_IMAGE as COREDNS_IMAGE

    kube = binaries.pins()["kubernetes"]["version"]
    capi = binaries.pins()["cluster-api"]["version"]
    previous = binaries.pins()["kubernetes-previous"]["version"]
    python_env = ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
    images = [
        Image(
            "docker.io/library/nginx:latest", ("base",), cmd=("nginx", "-g", "daemon off;"), ports=("80/tcp",)
        ),
        Image("docker.io/library/busybox:latest", ("busybox",), cmd=("sh",)),
        # What writes a StatefulSet pod's /etc/hosts (sync.toHost.pods.rewriteHosts).
        Image(REWRITE_HOSTS_IMAGE, ("busybox",), cmd=("sh",)),
        Image(
            "docker.io/curlimages/curl:latest",
            ("base", "curl-entrypoint"),
            entrypoint=("/entrypoint.sh",),
            cmd=("curl",),
        ),
        Image(PAUSE_IMAGE, ("pause",), entrypoint=("/pause",), user="65535:65535"),
        *(
            Image(f"registry.k8s.io/{c}:{kube}", ("kube",), entrypoint=(f"/usr/local/bin/{c}",))
            for c in KUBE_IMAGE_COMPONENTS
        ),
        # The release before: a virtual cluster can run it, and be upgraded from it in place.
        *(
            Image(f"registry.k8s.io/{c}:{previous}", ("kube-previous",), entrypoint=(f"/usr/local/bin/{c}",))
            for c in KUBE_IMAGE_COMPONENTS
        ),
        Image(COREDNS_IMAGE, ("coredns",), entrypoint=("/coredns",), ports=("53/tcp", "53/udp")),
        Image(
            f"docker.io/library/vnest:{vnest.__version__}",
            ("base", "vnest-bin", "helm", "vnest-deps", "vnest-app"),
            entrypoint=("vnest",),
            cmd=("--help",),
            # The supervisor starts the syncer as `python3 -m vnest`: the package must be on the path.
            env=(
                DEFAULT_PATH,
                *python_env,
                f"PYTHONPATH={SITE_PACKAGES}",
                f"VNEST_CHART_DIR={CHART_PATH}",
                "VNEST_HELM=/usr/local/bin/helm",
            ),
            workdir="/",
        ),
        *(
            Image(
                f"registry.k8s.io/cluster-api/{m}:{capi}", (m,), entrypoint=("/manager",), user="65532:65532"
            )
            for m in CAPI_MANAGERS
        ),
    ]
    return images


# ---- where things live ---------------------------------------------------------------------


def cache_dir() -> Path:
    """The images' cache, beside the binaries' (VNEST_CACHE_DIR moves both)."""
    if env := os.environ.get("VNEST_CACHE_DIR"):
        return Path(env) / "images"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vnest" / "images"


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def key_of(name: str, inputs: Mapping[str, object]) -> str:
    """A short hash of everything that decides an output: the same inputs find the same cache folder."""
    text = json.dumps({"name": name, "recipe": RECIPE_VERSION, "arch": _arch(), **inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_id(path: Path) -> str:
    """Cheap identity of a big input file (the pinned binaries live in folders named by their own key)."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _tree_digest(root: Path, paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def vnest_sources(root: Path | None = None) -> list[Path]:
    """The files vnest's wheel is built from: what the vnest-app layer's key hashes."""
    root = root or SOURCE_ROOT
    files = [root / "pyproject.toml", root / "README.md"]
    files += [p for p in (root / "vnest").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(files)


def chart_files(root: Path | None = None) -> list[Path]:
    """The chart, which vnest's image carries for the Cluster API provider's helm."""
    root = root or SOURCE_ROOT
    return sorted(p for p in (root / "chart").rglob("*") if p.is_file())


# ---- Python dependencies of the vnest image ------------------------------------------------

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(requirement: str, extras: Iterable[str] = ()) -> tuple[str, set[str]] | None:
    """The distribution a requirement names and the extras it asks of it; None when the
    requirement belongs to an extra other than ``extras`` (an optional dependency)."""
    marker = requirement.partition(";")[2]
    needs = _EXTRA.findall(marker)
    if needs and not {_canonical(e) for e in needs} & {_canonical(e) for e in extras}:
        return None
    match = _REQUIREMENT.match(requirement)
    if not match:
        return None
    wanted = {_canonical(e) for e in (match.group(2) or "").split(",") if e.strip()}
    return _canonical(match.group(1)), wanted


def runtime_requirements(pyproject: Path | None = None) -> list[str]:
    with (pyproject or SOURCE_ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def installed_pins(requirements: Iterable[str]) -> dict[str, str]:
    """The versions this environment has of the requirements and everything they pull in.

    The image gets the versions vnest was tested with here, not whatever PyPI has today."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()  # (distribution, extra or "")
    todo = [parsed for r in requirements if (parsed := parse_requirement(r))]
    while todo:
        name, extras = todo.pop()
        new = {e for e in extras | {""} if (name, e) not in seen}
        if not new:
            continue
        seen |= {(name, e) for e in new}
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        pins[name] = dist.version
        todo += [parsed for r in dist.requires or () if (parsed := parse_requirement(r, new - {""}))]
    return dict(sorted(pins.items()))


def wheel_platforms(arch: str | None = None) -> list[str]:
    """The manylinux tags a wheel may carry to load with the image's glibc (pip does not expand them)."""
    machine = arch or platform.machine()
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(IMAGE_GLIBC_MINOR, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine in ("x86_64", "i686"):
        tags += [f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags


# ---- apt sources for mmdebstrap ------------------------------------------------------------


class AptSource(TypedDict):
    uris: list[str]
    suites: list[str]
    components: list[str]
    options: dict[str, str]  # deb822 fields besides those, e.g. Signed-By (values as written)


_ONE_LINE_OPTIONS = {"signed-by": "Signed-By", "arch": "Architectures", "trusted": "Trusted"}


def parse_one_line_sources(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = line[4:].strip()
        options: dict[str, str] = {}
        if line.startswith("["):
            opts, _, line = line[1:].partition("]")
            for opt in opts.split():
                key, _, value = opt.partition("=")
                if key in _ONE_LINE_OPTIONS:
                    options[_ONE_LINE_OPTIONS[key]] = value.replace(",", " ")
        fields = line.split()
        if len(fields) >= 2:
            sources.append(
                AptSource(uris=[fields[0]], suites=[fields[1]], components=fields[2:], options=options)
            )
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line  # a continuation (an inline Signed-By key)
                continue
            key, sep, value = line.partition(":")
            if sep:
                current = key.strip()
                fields[current] = value.strip()
        types = fields.pop("Types", "").split()
        if "deb" not in types or fields.pop("Enabled", "yes").lower() == "no":
            continue
        sources.append(
            AptSource(
                uris=fields.pop("URIs", "").split(),
                suites=fields.pop("Suites", "").split(),
                components=fields.pop("Components", "").split(),
                options=fields,
            )
        )
    return sources


def host_apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """The machine's enabled apt sources (the files apt itself reads)."""
    sources: list[AptSource] = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        if path.name == "sources.list" or path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def suite_sources(sources: Iterable[AptSource], suite: str = DEBIAN_SUITE) -> str:
    """deb822 text with the entries of ``suite`` (and its -updates, -security) from ``sources``.

    Falls back to deb.debian.org when the machine has none, e.g. on another release."""
    stanzas = []
    for source in sources:
        suites = [s for s in source["suites"] if s == suite or s.startswith(f"{suite}-")]
        if not suites or not source["uris"]:
            continue
        lines = [
            "Types: deb",
            f"URIs: {' '.join(source['uris'])}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(source['components'] or ['main'])}",
            *(f"{k}: {v}" for k, v in source["options"].items()),
        ]
        stanzas.append("\n".join(lines))
    if not stanzas:
        keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
        signed = f"\nSigned-By: {keyring}" if keyring.exists() else ""
        stanzas = [
            f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite} {suite}-updates\nComponents: main{signed}",
            f"Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {suite}-security\n"
            f"Components: main{signed}",
        ]
    return "\n\n".join(stanzas) + "\n"


def _host_apt_options() -> list[str]:
    """The machine's apt settings that decide whether the archive can be reached at all (proxies,
    snapshot validity), for mmdebstrap's own apt, which does not read the machine's config."""
    try:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    wanted = (
        "Acquire::http::Proxy",
        "Acquire::https::Proxy",
        "Acquire::Check-Valid-Until",
        "Acquire::Check-Date",
    )
    return [f"--aptopt={line}" for line in dump.splitlines() if line.startswith(wanted)]


# ---- layers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltLayer:
    name: str
    key: str
    dir: Path
    digest: str  # sha256 of layer.tar.gz: the blob's digest in every image
    size: int

    @property
    def file(self) -> Path:
        return self.dir / LAYER_FILE


@dataclass(frozen=True)
class _LayerSpec:
    name: str
    inputs: dict[str, object]
    build: Callable[[Path, log.Progress], None]  # fills staging/rootfs or writes staging/layer.tar.gz

    @property
    def key(self) -> str:
        return key_of(self.name, self.inputs)


def _layer_dir(name: str, key: str) -> Path:
    return cache_dir() / f"layer-{name}-{key}"


def _load_layer(name: str, key: str) -> BuiltLayer | None:
    folder = _layer_dir(name, key)
    try:
        info = json.loads((folder / LAYER_INFO).read_text())
    except (OSError, ValueError):
        return None
    return BuiltLayer(name, key, folder, info["digest"], info["size"])


def _layer_specs(bins: binaries.Binaries) -> list[_LayerSpec]:
    """Every layer, each after the layers it uses (vnest-bin takes busybox's binary)."""
    kube_version = binaries.pins()["kubernetes"]["version"]
    busybox = _LayerSpec(
        "busybox",
        {"suite": DEBIAN_SUITE, "package": "busybox-static", "etc": _BUSYBOX_ETC},
        _build_busybox,
    )
    requirements = runtime_requirements()
    specs = [
        _LayerSpec(
            "base",
            {
                "suite": DEBIAN_SUITE,
                "packages": BASE_PACKAGES,
                "options": _BASE_OPTIONS,
                "hooks": _BASE_HOOKS,
            },
            _build_base,
        ),
        busybox,
        _LayerSpec("curl-entrypoint", {"script": _CURL_ENTRYPOINT}, _build_curl_entrypoint),
        _LayerSpec(
            "pause",
            # The module version fixes pause.c (go.sum pins its content).
            {"kubernetes": kube_version, "pause": PAUSE_VERSION, "cflags": _pause_cflags()},
            _build_pause,
        ),
        _LayerSpec(
            "kube",
            {"kube": _file_id(bins.dir / "kube"), "components": KUBE_IMAGE_COMPONENTS},
            lambda staging, progress: _build_kube(staging, bins),
        ),
        _LayerSpec(
            "kube-previous",
            {"kube": _file_id(bins.dir / "kube-previous"), "components": KUBE_IMAGE_COMPONENTS},
            lambda staging, progress: _build_kube(staging, bins, "kube-previous"),
        ),
        _LayerSpec(
            "coredns",
            {"coredns": _file_id(bins.coredns)},
            lambda staging, progress: _build_coredns(staging, bins),
        ),
        _LayerSpec(
            "vnest-bin",
            {
                "binaries": {n: _file_id(bins.dir / n) for n in ("kine", "etcd", "pod-security-check")},
                "busybox": busybox.key,
            },
            lambda staging, progress: _build_vnest_bin(staging, bins, _layer_dir("busybox", busybox.key)),
        ),
        _LayerSpec(
            "helm", {"helm": _file_id(bins.helm)}, lambda staging, progress: _build_helm(staging, bins)
        ),
        *(_manager_layer(bins, m) for m in CAPI_MANAGERS),
        _LayerSpec(
            "vnest-deps",
            {
                "python": IMAGE_PYTHON,
                "platforms": wheel_platforms(),
                "requirements": requirements,
                "pins": installed_pins(requirements),
            },
            _build_vnest_deps,
        ),
        _LayerSpec(
            "vnest-app",
            {
                "sources": _tree_digest(SOURCE_ROOT, vnest_sources()),
                "chart": _tree_digest(SOURCE_ROOT, chart_files()),
                "chart_path": CHART_PATH,
                "launcher": _VNEST_LAUNCHER,
                "site": SITE_PACKAGES,
            },
            _build_vnest_app,
        ),
    ]
    return specs


def _build_layer(spec: _LayerSpec) -> BuiltLayer:
    """Builds into a temporary folder and renames it into place once complete."""
    target = _layer_dir(spec.name, spec.key)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with log.step(_log, f"building image layer {spec.name}") as progress:
            spec.build(staging, progress)
            rootfs = staging / "rootfs"
            if rootfs.exists():
                progress.update("compressing")
                _tar(rootfs, staging / LAYER_FILE, progress)
                shutil.rmtree(rootfs)
            seconds = progress.elapsed
        layer = staging / LAYER_FILE
        info = {
            "name": spec.name,
            "key": spec.key,
            "digest": "sha256:" + _sha256(layer),
            "size": layer.stat().st_size,
            "seconds": round(seconds, 1),
            "inputs": spec.inputs,
        }
        (staging / LAYER_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    built = _load_layer(spec.name, spec.key)
    assert built is not None
    return built


def _tar(rootfs: Path, out: Path, progress: log.Progress) -> None:
    # Owned by root whoever builds; hard links (the kube components) are stored once.
    _run(
        [
            "tar",
            "--create",
            "--gzip",
            f"--file={out}",
            f"--directory={rootfs}",
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            ".",
        ],
        "packing a layer",
        progress,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _mmdebstrap(args: list[str], out: Path, staging: Path, progress: log.Progress) -> None:
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise VnestError(
            "building the local host's images needs mmdebstrap, which is not installed",
            hint="apt-get install mmdebstrap",
        )
    sources = staging / "apt" / "debian.sources"
    sources.parent.mkdir()
    sources.write_text(suite_sources(host_apt_sources()))
    _log.debug("apt sources for mmdebstrap", sources=sources.read_text().replace("\n", " | "))
    _run(
        [tool, *_host_apt_options(), *args, DEBIAN_SUITE, str(out), str(sources)],
        f"mmdebstrap {DEBIAN_SUITE}",
        progress,
        hint="mmdebstrap runs as root (or in unshare mode with /etc/subuid set up) and needs the Debian "
        "archive named in the machine's apt sources; run with --debug to see its output",
    )
    shutil.rmtree(sources.parent)


def _build_base(staging: Path, progress: log.Progress) -> None:
    args = [*_BASE_OPTIONS, f"--include={','.join(BASE_PACKAGES)}"]
    if _MERGED_USR_HOOKS.is_dir():
        # Without it apt pulls in usrmerge and with it all of perl (50 MB).
        args.append(f"--hook-dir={_MERGED_USR_HOOKS}")
    args += [f"--customize-hook={hook}" for hook in _BASE_HOOKS]
    _mmdebstrap(args, staging / LAYER_FILE, staging, progress)


def _build_busybox(staging: Path, progress: log.Progress) -> None:
    extract = staging / "extract.tar"
    _mmdebstrap(
        ["--variant=extract", "--include=busybox-static", "--skip=output/dev"], extract, staging, progress
    )
    wanted = ["./bin/busybox", "./usr/share/doc/busybox-static/copyright"]
    rootfs = staging / "rootfs"
    rootfs.mkdir()
    _run(
        ["tar", "--extract", f"--file={extract}", f"--directory={rootfs}", *wanted],
        "unpacking busybox",
        progress,
    )
    extract.unlink()
    busybox = rootfs / "bin" / "busybox"
    shutil.copy2(busybox, staging / "busybox")  # kept beside the layer for the vnest image
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc").mkdir()
    for name, text in _BUSYBOX_ETC.items():
        (rootfs / "etc" / name).write_text(text)
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "root").mkdir(mode=0o700)


def _build_curl_entrypoint(staging: Path, progress: log.Progress) -> None:
    script = staging / "rootfs" / "entrypoint.sh"
    script.parent.mkdir()
    script.write_text(_CURL_ENTRYPOINT)
    script.chmod(0o755)


def _pause_cflags() -> list[str]:
    return ["-Os", "-Wall", "-Werror", "-static", "-s", f"-DVERSION=v{PAUSE_VERSION}-vnest"]


def _kubernetes_module() -> Path:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise VnestError(
            "building the pause image needs Go (to find the pinned Kubernetes module), and `go` is not on PATH",
            hint="add /usr/local/go/bin to PATH",
        )
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}
    out = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=GO_DIR / "kube",
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise VnestError(f"cannot find the Kubernetes module: {out.stderr.strip()}")
    return Path(out.stdout.strip())


def _build_pause(staging: Path, progress: log.Progress) -> None:
    module = _kubernetes_module()
    constants = (module / "cmd/kubeadm/app/constants/constants.go").read_text()
    match = re.search(r'PauseVersion\s*=\s*"([^"]+)"', constants)
    if match and match.group(1) != PAUSE_VERSION:
        raise VnestError(
            f"the pinned Kubernetes uses pause {match.group(1)}, vnest's PAUSE_VERSION says {PAUSE_VERSION}",
            hint="update PAUSE_VERSION in vnest/host/images.py",
        )
    gcc = shutil.which("gcc")
    if gcc is None:
        raise VnestError("building the pause image needs gcc", hint="apt-get install gcc libc6-dev")
    rootfs = staging / "rootfs"
    rootfs.mkdir()
    source = module / "build/pause/linux/pause.c"
    _run(
        [gcc, *_pause_cflags(), "-o", str(rootfs / "pause"), str(source)],
        "compiling pause",
        progress,
        hint="pause links statically: install libc6-dev (it has libc.a)",
    )
    (rootfs / "pause").chmod(0o755)


def _copy_binary(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(0o755)


def _build_kube(staging: Path, bins: binaries.Binaries, binary: str = "kube") -> None:
    # One multi-call binary under every component's name (hard links, stored once): the three
    # images share this layer, so a node pulls it once.
    bindir = staging / "rootfs" / "usr" / "local" / "bin"
    first = bindir / KUBE_IMAGE_COMPONENTS[0]
    _copy_binary(bins.dir / binary, first)
    for component in KUBE_IMAGE_COMPONENTS[1:]:
        os.link(first, bindir / component)


def _build_coredns(staging: Path, bins: binaries.Binaries) -> None:
    _copy_binary(bins.coredns, staging / "rootfs" / "coredns")


def _build_helm(staging: Path, bins: binaries.Binaries) -> None:
    _copy_binary(bins.helm, staging / "rootfs" / "usr" / "local" / "bin" / "helm")


def _manager_layer(bins: binaries.Binaries, manager: str) -> _LayerSpec:
    return _LayerSpec(
        manager,
        {"binary": _file_id(bins.dir / manager)},
        lambda staging, progress: _copy_binary(bins.dir / manager, staging / "rootfs" / "manager"),
    )


def _build_vnest_bin(staging: Path, bins: binaries.Binaries, busybox_layer: Path) -> None:
    # As the Dockerfile: what the chart's first init container copies into the pod.
    bindir = staging / "rootfs" / "usr" / "local" / "bin"
    for name in ("kine", "etcd", "pod-security-check"):
        _copy_binary(bins.dir / name, bindir / name)
    _copy_binary(busybox_layer / "busybox", bindir / "busybox")


def _pip(args: list[str], what: str, progress: log.Progress) -> None:
    if find_spec("pip") is None:
        raise VnestError(
            "building vnest's image needs pip in vnest's own environment", hint="python -m ensurepip"
        )
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    _run(
        [sys.executable, "-m", "pip", *args],
        what,
        progress,
        env=env,
        hint="pip fetches vnest's dependencies from PyPI (wheels for CPython 3.11 on glibc 2.36)",
    )


def _compile_flag() -> list[str]:
    # .pyc files spare every `vnest` start in a pod from compiling pydantic and lightkube
    # (PYTHONDONTWRITEBYTECODE keeps them from being written there), but only this
    # interpreter's are any use, and only when it is the image's.
    return [] if f"{sys.version_info[0]}.{sys.version_info[1]}" == IMAGE_PYTHON else ["--no-compile"]


def _build_vnest_deps(staging: Path, progress: log.Progress) -> None:
    requirements = runtime_requirements()
    constraints = staging / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in installed_pins(requirements).items()))
    site = staging / "rootfs" / SITE_PACKAGES.lstrip("/")
    platforms = [f"--platform={p}" for p in wheel_platforms()]
    _pip(
        [
            "install",
            "--quiet",
            "--target",
            str(site),
            "--only-binary=:all:",
            "--implementation=cp",
            f"--python-version={IMAGE_PYTHON}",
            f"--abi=cp{IMAGE_PYTHON.replace('.', '')}",
            *platforms,
            *_compile_flag(),
            "--constraint",
            str(constraints),
            *requirements,
        ],
        "installing vnest's dependencies",
        progress,
    )
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with this machine's interpreter
    constraints.unlink()


def _can_build_wheels_here() -> bool:
    """Whether this environment's setuptools builds wheels (from 70.1, or with `wheel`), which
    spares pip fetching a build environment from PyPI."""
    try:
        setuptools = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return False
    release = tuple(int(p) for p in re.findall(r"\d+", setuptools)[:2])
    return release >= (70, 1) or find_spec("wheel") is not None


def _build_vnest_app(staging: Path, progress: log.Progress) -> None:
    # Built from a copy, as the Dockerfile does: setuptools writes build/ beside pyproject.toml,
    # and the repo's build/ is the Go modules' folder.
    src = staging / "src"
    for path in vnest_sources():
        dest = src / path.relative_to(SOURCE_ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    dist = staging / "dist"
    isolation = ["--no-build-isolation"] if _can_build_wheels_here() else []
    _pip(
        ["wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir", str(dist), str(src)],
        "building vnest's wheel",
        progress,
    )
    wheel = next(dist.glob("*.whl"))
    site = staging / "rootfs" / SITE_PACKAGES.lstrip("/")
    _pip(
        ["install", "--quiet", "--no-deps", *_compile_flag(), "--target", str(site), str(wheel)],
        "installing vnest",
        progress,
    )
    shutil.rmtree(site / "bin", ignore_errors=True)
    launcher = staging / "rootfs" / "usr" / "local" / "bin" / "vnest"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(_VNEST_LAUNCHER)
    launcher.chmod(0o755)
    chart = staging / "rootfs" / CHART_PATH.lstrip("/")
    for path in chart_files():
        dest = chart / path.relative_to(SOURCE_ROOT / "chart")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    shutil.rmtree(src)
    shutil.rmtree(dist)


# ---- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    image: Image
    key: str
    layout: Path  # an OCI image layout holding just this image: what `crane push` sends
    digest: str  # the manifest's
    layers: tuple[BuiltLayer, ...]


@dataclass(frozen=True)
class BuiltImages:
    images: tuple[BuiltImage, ...]

    @property
    def layers(self) -> dict[str, BuiltLayer]:
        return {layer.name: layer for image in self.images for layer in image.layers}

    def get(self, reference: str) -> BuiltImage:
        wanted = normalize(reference)
        for built in self.images:
            if built.image.reference == wanted:
                return built
        raise KeyError(reference)


def image_key(image: Image, layer_keys: Iterable[str]) -> str:
    spec = {
        "reference": image.reference,
        "layers": list(layer_keys),
        "entrypoint": image.entrypoint,
        "cmd": image.cmd,
        "env": image.env,
        "workdir": image.workdir,
        "user": image.user,
        "ports": image.ports,
    }
    if image.labels:  # only when set, so that the keys of images without labels stay as they were
        spec["labels"] = image.labels
    return key_of(f"image-{image.name}", spec)


def _image_dir(image: Image, key: str) -> Path:
    return cache_dir() / f"image-{image.name}-{key}"


def _load_image(image: Image, key: str, layers: tuple[BuiltLayer, ...]) -> BuiltImage | None:
    folder = _image_dir(image, key)
    try:
        info = json.loads((folder / IMAGE_INFO).read_text())
    except (OSError, ValueError):
        return None
    return BuiltImage(image, key, folder, info["digest"], layers)


# Set to 1 (e.g. for `vnest host up`), the local host also builds and serves the images upstream's
# conformance specs pull (vnest.host.e2e_images); never by default, since they take minutes to build.
E2E_IMAGES_ENV = "VNEST_E2E_IMAGES"


def e2e_images_wanted() -> bool:
    return os.environ.get(E2E_IMAGES_ENV, "").strip().lower() in ("1", "true", "yes")


def ensure_built() -> BuiltImages:
    """Every image of the catalogue (and, when $VNEST_E2E_IMAGES asks, the conformance specs'),
    building the layers and images the cache lacks."""
    bins = binaries.ensure()
    specs = _layer_specs(bins)
    wanted = catalogue()
    if e2e_images_wanted():
        from vnest.host import e2e_images

        specs += e2e_images.layer_specs(bins)
        wanted += e2e_images.catalogue()
    return ensure_images(wanted, specs)


def ensure_images(wanted_images: Iterable[Image], all_specs: Iterable[_LayerSpec]) -> BuiltImages:
    """``wanted_images``, building the layers (of ``all_specs``, those the images use) and the
    images the cache lacks."""
    bins = binaries.ensure()
    wanted_images = list(wanted_images)
    used = {name for image in wanted_images for name in image.layers}
    by_name: dict[str, _LayerSpec] = {}
    for spec in all_specs:
        if spec.name in used:
            by_name.setdefault(spec.name, spec)  # the first recipe of a name (lists may repeat one)
    specs = list(by_name.values())
    keys = {spec.name: spec.key for spec in specs}
    missing_recipes = used - set(keys)
    if missing_recipes:
        raise VnestError(f"no recipe for the image layers {', '.join(sorted(missing_recipes))}")
    wanted = [(image, image_key(image, [keys[n] for n in image.layers])) for image in wanted_images]
    loaded = _load_all(specs, wanted)
    if loaded is not None:
        return loaded
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        # Two concurrent builds (two terminals, parallel tests) build once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        layers: dict[str, BuiltLayer] = {}
        for spec in specs:
            layers[spec.name] = _load_layer(spec.name, spec.key) or _build_layer(spec)
        missing = [(image, key) for image, key in wanted if _load_image(image, key, ()) is None]
        if missing:
            _assemble(missing, layers, bins.crane)
        loaded = _load_all(specs, wanted)
    assert loaded is not None
    return loaded


def _load_all(specs: list[_LayerSpec], wanted: list[tuple[Image, str]]) -> BuiltImages | None:
    layers = {spec.name: _load_layer(spec.name, spec.key) for spec in specs}
    images = []
    for image, key in wanted:
        own = tuple(layer for n in image.layers if (layer := layers[n]) is not None)
        if len(own) != len(image.layers):
            return None
        built = _load_image(image, key, own)
        if built is None:
            return None
        images.append(built)
    return BuiltImages(tuple(images))


def _csv(items: Iterable[str]) -> str:
    """crane's list flags are read as one CSV record (pflag's StringSlice)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(list(items))
    return out.getvalue()


def mutate_flags(image: Image) -> list[str]:
    """crane mutate's flags that give ``image`` its config."""
    flags = [f"--set-platform=linux/{_arch()}"]
    if image.entrypoint:
        flags.append(f"--entrypoint={_csv(image.entrypoint)}")
    if image.cmd:
        flags.append(f"--cmd={_csv(image.cmd)}")
    flags += [f"--env={e}" for e in image.env]
    if image.workdir:
        flags.append(f"--workdir={image.workdir}")
    if image.user:
        flags.append(f"--user={image.user}")
    if image.ports:
        flags.append(f"--exposed-ports={_csv(image.ports)}")
    flags += [f"--label={label}" for label in image.labels]
    return flags


def _assemble(missing: list[tuple[Image, str]], layers: Mapping[str, BuiltLayer], crane: Path) -> None:
    """Has crane build each image in a throwaway registry, then keeps it as an OCI layout."""
    work = cache_dir() / f".assemble-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with (
            log.step(_log, f"assembling {len(missing)} images") as progress,
            _serve(crane, work / "registry") as address,
        ):
            for image, key in missing:
                progress.update(image.reference, force=True)
                _assemble_one(image, key, [layers[n] for n in image.layers], crane, address, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _assemble_one(
    image: Image,
    key: str,
    layers: list[BuiltLayer],
    crane: Path,
    address: str,
    work: Path,
    progress: log.Progress,
) -> None:
    plain = f"{address}/build/{image.name}:plain"
    final = f"{address}/{image.path}"
    appended = [f"--new_layer={layer.file}" for layer in layers]
    _run(
        [str(crane), "append", "--insecure", "--oci-empty-base", *appended, f"--new_tag={plain}"],
        "crane append",
        progress,
    )
    _run(
        [str(crane), "mutate", "--insecure", plain, *mutate_flags(image), f"--tag={final}"],
        "crane mutate",
        progress,
    )
    target = _image_dir(image, key)
    staging = work / target.name
    _run([str(crane), "pull", "--insecure", "--format=oci", final, str(staging)], "crane pull", progress)
    digest = _capture([str(crane), "digest", "--insecure", final]).strip()
    # The layout's layer blobs become hard links to the cached layers: no second copy on disk.
    for layer in layers:
        blob = staging / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
        if not blob.exists():
            raise VnestError(
                f"crane changed layer {layer.name} of {image.reference} (no blob {layer.digest})"
            )
        tmp = blob.with_name(blob.name + ".link")
        try:
            os.link(layer.file, tmp)
            os.replace(tmp, blob)
        except OSError:
            tmp.unlink(missing_ok=True)
    info = {
        "reference": image.reference,
        "digest": digest,
        "key": key,
        "layers": [la.digest for la in layers],
    }
    (staging / IMAGE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


# ---- the registry --------------------------------------------------------------------------


def registry_command(crane: Path, address: str, disk: Path) -> list[str]:
    """The local registry: blobs on ``disk`` (which must exist) survive restarts, manifests live
    in memory, so every start needs a `push_all`."""
    return [str(crane), "registry", "serve", "--address", address, "--disk", str(disk)]


def registry_ready(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/v2/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _serve(crane: Path, disk: Path) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    disk.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        registry_command(crane, address, disk),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not registry_ready(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise VnestError(f"the build registry on {address} did not start")
            time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def push_waves(images: Iterable[BuiltImage]) -> list[list[BuiltImage]]:
    """The images in waves where no two images of a wave bring the same new layer, so that on an
    empty registry the shared Debian base and Kubernetes layers are sent once, not three times."""
    remaining = list(images)
    waves: list[list[BuiltImage]] = []
    sent: set[str] = set()
    while remaining:
        wave: list[BuiltImage] = []
        claimed: set[str] = set()
        for image in remaining:
            new = {layer.digest for layer in image.layers} - sent
            if not new & claimed:
                wave.append(image)
                claimed |= new
        waves.append(wave)
        sent |= claimed
        remaining = [b for b in remaining if b not in wave]
    return waves


def push_all(built: BuiltImages, registry: str) -> None:
    """Makes ``registry`` serve every image; sends only blobs it lacks, so a repeat costs HEADs."""
    crane = binaries.ensure().crane
    pushed = 0
    with (
        log.step(_log, f"pushing {len(built.images)} images to {registry}") as progress,
        ThreadPoolExecutor(4) as pool,
    ):
        for wave in push_waves(built.images):
            for _ in pool.map(lambda b: _push(crane, b, registry), wave):
                pass
            pushed += len(wave)
            progress.update(f"{pushed} pushed")


def _push(crane: Path, built: BuiltImage, registry: str) -> None:
    ref = f"{registry}/{built.image.path}"
    proc = subprocess.run(
        [str(crane), "push", "--insecure", str(built.layout), ref],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise VnestError(
            f"pushing {built.image.reference} to {registry} failed:\n{proc.stderr.strip()[-2000:]}",
            hint="is the local registry running? `vnest host up` starts it",
        )
    _log.debug("pushed", image=built.image.reference, to=ref)


# ---- running tools -------------------------------------------------------------------------


def _capture(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VnestError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _run(
    cmd: list[str],
    what: str,
    progress: log.Progress,
    *,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
) -> None:
    """Runs a tool: every line to the debug log, the latest as progress, the last 40 in the error."""
    _log.debug("running", cmd=" ".join(cmd))
    tail: deque[str] = deque(maxlen=40)

    def on_line(line: str) -> None:
        if line.strip():
            tail.append(line)
            _log.debug(line)
            progress.update(line)

    code = run_streaming(cmd, on_line, lambda: progress.update(tail[-1] if tail else what), env=env)
    if code != 0:
        raise VnestError(
            f"{what} failed ({Path(cmd[0]).name} exited {code}):\n" + "\n".join(tail),
            hint=hint or "run with --debug to see every line it printed",
        )
