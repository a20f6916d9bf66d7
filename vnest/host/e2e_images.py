"""The images upstream's conformance specs pull, built like the local host's own (vnest.host.images).

Kubernetes' e2e.test names its images in ``test/utils/image/manifest.go`` of the pinned module:
``registry.k8s.io/e2e-test-images/agnhost:2.63.0`` and so on. Real nodes pull every
``registry.k8s.io`` and ``docker.io`` image from the local registry (their containerd's mirror), so
these images only have to sit at the mirror's path for that name (``e2e-test-images/agnhost:2.63.0``)
and e2e.test needs no ``--kube-test-repo-list``.

Only the images of the ``[Conformance]`` specs are built (``CONFORMANCE_IMAGES`` says which specs use
each), and only when asked: ``ensure_e2e_images()`` builds them, ``push_to_local_host()`` also puts
them into a running local host's registry, and ``VNEST_E2E_IMAGES=1`` makes ``vnest host up`` build
and push them with its own (vnest.host.images.ensure_built), so that a restarted host serves them too.

- agnhost (and its 2.55, which the rollout specs switch to) is upstream's Go program, built static
  from the pinned module, on a Debian root filesystem with what upstream's Alpine one brings for the
  specs (dig, curl, nc, ss) and the pinned CoreDNS at ``/coredns``; entrypoint and files as
  upstream's Dockerfile (``/agnhost``, ``pause``, ``/agnhost-2``, porter's certificate, ``/uploads``,
  the user ``user-defined-in-image`` and group ``group-defined-in-image``).
- nautilus and kitten are agnhost serving a picture and ``data.json`` (``test-webserver``), from the
  module's ``test/images/*/html``.
- busybox is the host's busybox layer (Debian's busybox-static); nginx is the host's nginx image
  (Debian's nginx, port 80 in the foreground); glibc-dns-testing is the agnhost root filesystem
  (glibc's resolver, dig) without agnhost.
- nonewprivs is upstream's ``nnp`` (set-uid root, prints the effective uid) on busybox.
- sample-apiserver is ``k8s.io/sample-apiserver`` at the pinned staging version; etcd is the pinned
  etcd at ``/usr/local/bin/etcd``.

The Go programs are built in a module made for the build (beside the cache, removed after): it
requires the pinned ``k8s.io/kubernetes`` with the conformance module's ``replace`` block and
``go.sum``, and ``go mod tidy`` adds the one module agnhost needs beyond e2e.test's. It lives outside
``build/go`` because every file there is part of the key of vnest's own binaries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vnest import binaries, log
from vnest.binaries import build
from vnest.errors import VnestError
from vnest.host import images
from vnest.host.images import Image, _LayerSpec

_log = log.get("images")

# Bump when a recipe below changes in a way its hashed inputs do not show.
RECIPE_VERSION = "1"

E2E_REGISTRY = "registry.k8s.io/e2e-test-images"  # manifest.go's PromoterE2eRegistry
GC_REGISTRY = "registry.k8s.io"  # its GcRegistry and GcEtcdRegistry


@dataclass(frozen=True)
class UpstreamImage:
    """One image of manifest.go: its ImageID, where e2e.test pulls it and which specs do."""

    image_id: str  # the constant in test/utils/image/manifest.go
    registry: str
    name: str
    tag: str
    specs: int  # [Conformance] specs (neither [Serial] nor [Disruptive]) that pull it
    serial_specs: int = 0  # [Conformance] specs marked [Serial] that pull it

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.name}:{self.tag}"


# The images the [Conformance] specs of e2e.test v1.36.3 pull, with how many specs pull each,
# found by following every spec's body, its containers' setup nodes and the functions they call
# (an SSA walk of k8s.io/kubernetes/test/e2e/...) to the ImageIDs they name, and the templates
# of testing-manifests. 417 specs are neither [Serial] nor [Disruptive]; 311 of them start a pod,
# 295 with an image besides pause.
CONFORMANCE_IMAGES = (
    UpstreamImage("Agnhost", E2E_REGISTRY, "agnhost", "2.63.0", 198, 9),
    UpstreamImage("BusyBox", E2E_REGISTRY, "busybox", "1.37.0-1", 96),
    UpstreamImage("Pause", GC_REGISTRY, "pause", images.PAUSE_VERSION, 41, 12),
    UpstreamImage("AgnhostPrev", E2E_REGISTRY, "agnhost", "2.55", 12, 1),
    UpstreamImage("Nginx", E2E_REGISTRY, "nginx", "1.15-4", 9, 3),
    UpstreamImage("GlibcDnsTesting", E2E_REGISTRY, "glibc-dns-testing", "2.0.0", 7),
    UpstreamImage("Nautilus", E2E_REGISTRY, "nautilus", "1.8", 2),
    UpstreamImage("Kitten", E2E_REGISTRY, "kitten", "1.8", 1),
    UpstreamImage("Nonewprivs", E2E_REGISTRY, "nonewprivs", "1.4", 1),
    UpstreamImage("APIServer", E2E_REGISTRY, "sample-apiserver", "1.29.2", 1),
    UpstreamImage("Etcd", GC_REGISTRY, "etcd", "3.6.8-0", 1),
)
# Served already by every local host with real nodes (vnest.host.images).
ALREADY_SERVED = ("Pause",)

# What upstream's Alpine agnhost installs that the specs use: dig (DNS specs), curl and nc (the
# network specs' probes), ss (NodePort specs); bash and ipcs come with every Debian.
AGNHOST_PACKAGES = ("bind9-dnsutils", "ca-certificates", "curl", "iproute2", "netcat-openbsd")
AGNHOST_PORTS = ("80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp")
# The user and group of upstream's image (its supplemental-groups specs look for them).
_AGNHOST_ACCOUNTS = (
    "echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >> \"$1/etc/passwd\"",
    "echo 'user-defined-in-image:x:1000:' >> \"$1/etc/group\"",
    "echo 'group-defined-in-image:x:50000:user-defined-in-image' >> \"$1/etc/group\"",
)
_E2E_BASE_HOOKS = (
    'rm -f "$1/etc/resolv.conf" "$1/etc/hostname" "$1/etc/apt/apt.conf.d/99mmdebstrap"',
    'rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin',
    *_AGNHOST_ACCOUNTS,
    'mkdir -p "$1/uploads"',  # netexec's
)

# The Go programs, built static from the pinned modules: output name -> package.
GO_PROGRAMS = {
    "agnhost": "k8s.io/kubernetes/test/images/agnhost",
    "nnp": "k8s.io/kubernetes/test/images/nonewprivs",
    "sample-apiserver": "k8s.io/sample-apiserver",
}
_GO_LDFLAGS = "-s -w"
# As upstream's Makefile stamps it (`agnhost --version`).
_AGNHOST_VERSION = "2.63.0"
_TOOLS_GO = "//go:build tools\n\npackage tools\n\nimport (\n{}\n)\n"


def _label(image: UpstreamImage) -> tuple[str, ...]:
    # Tells agnhost 2.55 from 2.63.0 (the same content): containerd 1.6 reports a container's
    # image as the first tag of its image, and the rollout specs compare the two.
    return (f"org.opencontainers.image.version={image.tag}",)


def upstream(image_id: str) -> UpstreamImage:
    for image in CONFORMANCE_IMAGES:
        if image.image_id == image_id:
            return image
    raise KeyError(image_id)


def catalogue() -> list[Image]:
    """The images vnest builds for the conformance specs (not those the host serves anyway)."""
    agnhost_layers = ("e2e-base", "coredns", "agnhost")

    def agnhost(u: UpstreamImage, extra: tuple[str, ...] = (), cmd: tuple[str, ...] = ("pause",)) -> Image:
        return Image(
            u.reference,
            agnhost_layers + extra,
            entrypoint=("/agnhost",),
            cmd=cmd,
            ports=AGNHOST_PORTS,
            labels=_label(u),
        )

    u = upstream
    return [
        agnhost(u("Agnhost")),
        agnhost(u("AgnhostPrev")),
        Image(u("BusyBox").reference, ("busybox",), cmd=("sh",), labels=_label(u("BusyBox"))),
        Image(
            u("Nginx").reference,
            ("base",),
            cmd=("nginx", "-g", "daemon off;"),
            ports=("80/tcp",),
            labels=_label(u("Nginx")),
        ),
        Image(
            u("GlibcDnsTesting").reference,
            ("e2e-base", "coredns"),
            cmd=("bash",),
            labels=_label(u("GlibcDnsTesting")),
        ),
        agnhost(u("Nautilus"), ("nautilus",), ("test-webserver",)),
        agnhost(u("Kitten"), ("kitten",), ("test-webserver",)),
        Image(
            u("Nonewprivs").reference, ("busybox", "nonewprivs"), cmd=("nnp",), labels=_label(u("Nonewprivs"))
        ),
        Image(
            u("APIServer").reference,
            ("sample-apiserver",),
            entrypoint=("/sample-apiserver",),
            labels=_label(u("APIServer")),
        ),
        Image(
            u("Etcd").reference,
            ("e2e-etcd",),
            labels=_label(u("Etcd")),
        ),
    ]


def references() -> list[str]:
    """Every image the conformance specs pull that a local host with real nodes then serves."""
    return [i.reference for i in CONFORMANCE_IMAGES]


# ---- layers --------------------------------------------------------------------------------


def _conformance_module_files() -> dict[str, str]:
    folder = build.GO_DIR / build.CONFORMANCE_MODULE
    return {name: (folder / name).read_text() for name in ("go.mod", "go.sum")}


def go_inputs() -> dict[str, object]:
    """What decides the Go programs: the pinned Kubernetes, the module graph e2e.test is built from
    (its go.mod and go.sum), the packages and the flags."""
    files = _conformance_module_files()
    return {
        "recipe": RECIPE_VERSION,
        "kubernetes": binaries.pins()["kubernetes"]["version"],
        "go.mod": hashlib.sha256(files["go.mod"].encode()).hexdigest(),
        "go.sum": hashlib.sha256(files["go.sum"].encode()).hexdigest(),
        "programs": GO_PROGRAMS,
        "ldflags": {name: _ldflags(name) for name in GO_PROGRAMS},
    }


def _ldflags(program: str) -> str:
    if program == "agnhost":
        return f"{_GO_LDFLAGS} -X main.Version={_AGNHOST_VERSION}"
    return _GO_LDFLAGS


def layer_specs(bins: binaries.Binaries) -> list[images._LayerSpec]:
    """The layers of the conformance images; they also use the host's base, busybox and coredns."""
    go = go_inputs()
    kube = binaries.pins()["kubernetes"]["version"]
    return [
        *(s for s in images._layer_specs(bins) if s.name in ("base", "busybox", "coredns")),
        _LayerSpec(
            "e2e-base",
            {
                "recipe": RECIPE_VERSION,
                "suite": images.DEBIAN_SUITE,
                "packages": AGNHOST_PACKAGES,
                "options": images._BASE_OPTIONS,
                "hooks": _E2E_BASE_HOOKS,
            },
            _build_e2e_base,
        ),
        _LayerSpec("agnhost", {"go": go, "files": "porter"}, _build_agnhost),
        *(_html_layer(name, kube) for name in ("nautilus", "kitten")),
        _LayerSpec("nonewprivs", {"go": go, "mode": "4755"}, _build_nonewprivs),
        _LayerSpec("sample-apiserver", {"go": go}, _build_sample_apiserver),
        _LayerSpec(
            "e2e-etcd",
            {"recipe": RECIPE_VERSION, "etcd": images._file_id(bins.dir / "etcd")},
            lambda staging, progress: _build_etcd(staging, bins),
        ),
    ]


def _build_e2e_base(staging: Path, progress: log.Progress) -> None:
    args = [*images._BASE_OPTIONS, f"--include={','.join(AGNHOST_PACKAGES)}"]
    if images._MERGED_USR_HOOKS.is_dir():
        args.append(f"--hook-dir={images._MERGED_USR_HOOKS}")
    args += [f"--customize-hook={hook}" for hook in _E2E_BASE_HOOKS]
    images._mmdebstrap(args, staging / images.LAYER_FILE, staging, progress)


def _tmp(rootfs: Path) -> None:
    (rootfs / "tmp").mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)


def _build_agnhost(staging: Path, progress: log.Progress) -> None:
    programs = go_programs(progress)
    module = images._kubernetes_module()
    check_manifest((module / "test/utils/image/manifest.go").read_text())
    rootfs = staging / "rootfs"
    images._copy_binary(programs / "agnhost", rootfs / "agnhost")
    # The entrypoint-tester specs run the same program under a second name.
    (rootfs / "agnhost-2").symlink_to("agnhost")
    for name in ("localhost.crt", "localhost.key"):  # porter's, as upstream's Dockerfile adds them
        shutil.copyfile(module / "test/images/agnhost/porter" / name, rootfs / name)


def _html_layer(name: str, kube: str) -> _LayerSpec:
    def build_it(staging: Path, progress: log.Progress) -> None:
        _build_html(name, staging)

    return _LayerSpec(
        name, {"recipe": RECIPE_VERSION, "kubernetes": kube, "files": f"test/images/{name}/html"}, build_it
    )


def _build_html(name: str, staging: Path) -> None:
    html = images._kubernetes_module() / "test/images" / name / "html"
    rootfs = staging / "rootfs"
    rootfs.mkdir()
    for path in sorted(html.iterdir()):
        shutil.copyfile(path, rootfs / path.name)
        (rootfs / path.name).chmod(0o644)


def _build_nonewprivs(staging: Path, progress: log.Progress) -> None:
    nnp = staging / "rootfs" / "usr" / "local" / "bin" / "nnp"
    images._copy_binary(go_programs(progress) / "nnp", nnp)
    nnp.chmod(0o4755)  # upstream's `chmod +s`: the specs check that no_new_privs stops it


def _build_sample_apiserver(staging: Path, progress: log.Progress) -> None:
    rootfs = staging / "rootfs"
    images._copy_binary(go_programs(progress) / "sample-apiserver", rootfs / "sample-apiserver")
    _tmp(rootfs)


def _build_etcd(staging: Path, bins: binaries.Binaries) -> None:
    rootfs = staging / "rootfs"
    images._copy_binary(bins.dir / "etcd", rootfs / "usr" / "local" / "bin" / "etcd")
    _tmp(rootfs)


# ---- the Go programs -----------------------------------------------------------------------


def go_mod(conformance_go_mod: str, kubernetes: str) -> str:
    """The build module's go.mod: the pinned Kubernetes with the conformance module's replaces."""
    go = re.search(r"^go (\S+)", conformance_go_mod, re.M)
    replace = re.search(r"^replace \(\n.*?^\)\n", conformance_go_mod, re.M | re.S)
    if go is None or replace is None:
        raise VnestError("the conformance module's go.mod has no go line or replace block")
    return (
        f"module vnest.dev/build/e2e-images\n\ngo {go.group(1)}\n\n"
        f"require k8s.io/kubernetes {kubernetes}\n\n{replace.group(0)}"
    )


def tools_go() -> str:
    return _TOOLS_GO.format("\n".join(f'\t_ "{p}"' for p in GO_PROGRAMS.values()))


def go_programs_dir() -> Path:
    key = images.key_of("e2e-go", go_inputs())
    return images.cache_dir() / f"e2e-go-{key}"


def go_programs(progress: log.Progress) -> Path:
    """The folder of the built Go programs (agnhost, nnp, sample-apiserver), built once."""
    target = go_programs_dir()
    if all((target / name).is_file() for name in GO_PROGRAMS):
        return target
    work = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    module = work / "module"
    module.mkdir(parents=True)
    try:
        files = _conformance_module_files()
        kube = binaries.pins()["kubernetes"]["version"]
        (module / "go.mod").write_text(go_mod(files["go.mod"], kube))
        (module / "go.sum").write_text(files["go.sum"])
        (module / "tools.go").write_text(tools_go())
        go = build._go()
        env = {**build._go_env(), "GOFLAGS": "-buildvcs=false"}
        # tidy adds what agnhost needs beyond e2e.test's graph (minimal version selection from the
        # pinned module's own requirements: the same versions every time).
        images._run(
            [go, "-C", str(module), "mod", "tidy"], "go mod tidy for the e2e images", progress, env=env
        )
        out = work / "out"
        out.mkdir()
        for name, package in GO_PROGRAMS.items():
            progress.update(f"go build {name}", force=True)
            images._run(
                [
                    go,
                    "-C",
                    str(module),
                    "build",
                    "-trimpath",
                    "-ldflags",
                    _ldflags(name),
                    "-o",
                    str(out / name),
                    package,
                ],
                f"building {name}",
                progress,
                env={**build._go_env()},
            )
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ---- the pinned module's manifest ----------------------------------------------------------

_CONFIG = re.compile(r'configs\[(\w+)\]\s*=\s*Config\{list\.(\w+),\s*"([^"]+)",\s*"([^"]+)"\}')
_REGISTRY = re.compile(r'^\s*(\w+Registry):\s*"([^"]+)",', re.M)


def parse_manifest(text: str) -> dict[str, str]:
    """ImageID -> the reference e2e.test pulls, from test/utils/image/manifest.go."""
    start = text.find("initRegistry = RegistryList{")
    registries = dict(_REGISTRY.findall(text[start : text.find("}", start)])) if start >= 0 else {}
    out = {}
    for image_id, registry, name, tag in _CONFIG.findall(text):
        if registry in registries:
            out[image_id] = f"{registries[registry]}/{name}:{tag}"
    return out


def manifest_mismatches(manifest: Mapping[str, str]) -> list[str]:
    """Where vnest's list of the conformance images disagrees with the module's manifest."""
    return [
        f"{u.image_id}: vnest builds {u.reference}, e2e.test pulls {manifest.get(u.image_id)}"
        for u in CONFORMANCE_IMAGES
        if manifest.get(u.image_id) != u.reference
    ]


def check_manifest(text: str) -> None:
    if wrong := manifest_mismatches(parse_manifest(text)):
        raise VnestError(
            "the pinned Kubernetes' e2e images are not the ones vnest builds:\n" + "\n".join(wrong),
            hint="update CONFORMANCE_IMAGES in vnest/host/e2e_images.py",
        )


# ---- building and serving ------------------------------------------------------------------


def ensure_e2e_images() -> images.BuiltImages:
    """The conformance specs' images, built first where the cache lacks them."""
    bins = binaries.ensure()
    return images.ensure_images(catalogue(), layer_specs(bins))


def push_e2e_images(registry: str) -> images.BuiltImages:
    """Builds what is missing and makes ``registry`` (host:port) serve the images."""
    built = ensure_e2e_images()
    images.push_all(built, registry)
    return built


def local_host_registry() -> str:
    """The running local host's registry, on loopback."""
    from vnest.host.local import LocalHost

    state = LocalHost().state()
    if state is None or state.runtime != "containerd":
        raise VnestError(
            "no local host with real nodes is running",
            hint="`vnest host up --runtime containerd` first (with VNEST_E2E_IMAGES=1 it pushes these images itself)",
        )
    return f"127.0.0.1:{state.ports.registry}"


def push_to_local_host() -> images.BuiltImages:
    """Makes the running local host's registry serve the conformance images (until it restarts,
    since the registry keeps manifests in memory: ``VNEST_E2E_IMAGES=1`` keeps them across
    restarts)."""
    return push_e2e_images(local_host_registry())


def main(argv: list[str]) -> int:
    """``python -m vnest.host.e2e_images [--push]``: builds the images, and pushes them to the
    running local host with --push."""
    built = push_to_local_host() if "--push" in argv else ensure_e2e_images()
    for image in built.images:
        print(f"{image.image.reference}\t{image.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
