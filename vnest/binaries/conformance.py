"""Kubernetes' conformance tools, built on demand: e2e.test and ginkgo from the pinned module.

`build/go/conformance` requires the pinned `k8s.io/kubernetes` (with the same staging
`replace` block as `build/go/kube`) and ginkgo at the version that module requires. Its
`e2e` package is upstream's e2e.test (every spec of `k8s.io/kubernetes/test/e2e`, the
`[Conformance]` ones among them) with a per-spec timeout and a progress file (see its doc.go).

Nothing else needs these, so `ensure()` of the main binaries never builds them: they live in a
cache folder of their own, `<cache>/conformance/<key>/`, keyed like the main one (the pins file,
this module's Go files and the recipe), and `ensure_conformance()` builds them the first time a
conformance run asks.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vnest import log
from vnest.binaries import build
from vnest.errors import VnestError

_log = log.get("binaries")

# Bump when the recipe below changes in a way that changes the outputs.
RECIPE_VERSION = "1"
MODULE = build.CONFORMANCE_MODULE
E2E_PACKAGE = "./e2e"
GINKGO_PACKAGE = "github.com/onsi/ginkgo/v2/ginkgo"
GINKGO_MODULE = "github.com/onsi/ginkgo/v2"


@dataclass(frozen=True)
class Conformance:
    """Paths to e2e.test and ginkgo in one cache folder."""

    dir: Path

    @property
    def e2e_test(self) -> Path:
        return self.dir / "e2e.test"

    @property
    def ginkgo(self) -> Path:
        return self.dir / "ginkgo"

    @property
    def versions(self) -> dict[str, str]:
        versions: dict[str, str] = json.loads((self.dir / build.MANIFEST).read_text())["versions"]
        return versions


def conformance_key() -> str:
    return build._hash(
        f"conformance-{RECIPE_VERSION}", [build.VERSIONS_FILE, *build._go_sources(build.GO_DIR / MODULE)]
    )


def conformance_dir() -> Path:
    """Where e2e.test and ginkgo for the current pins live (built or not)."""
    return build._cache_root() / "conformance" / conformance_key()


def ensure_conformance() -> Conformance:
    """e2e.test and ginkgo for the current pins, built first when missing (with progress)."""
    target = conformance_dir()
    if (target / build.MANIFEST).is_file():
        return Conformance(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel callers build once
        if not (target / build.MANIFEST).is_file():
            _build(target)
    return Conformance(target)


def _go_list(*args: str) -> str:
    """`go list ARGS` in the conformance module: its output, or an error naming the call."""
    out = subprocess.run(
        [build._go(), "list", *args],
        cwd=build.GO_DIR / MODULE,
        env=build._go_env(),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise VnestError(f"go list {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def _test_imports() -> list[str]:
    """The packages e2e.test imports (upstream's test sources and framework)."""
    out = _go_list("-f", '{{join .TestImports "\\n"}}', E2E_PACKAGE)
    return sorted({p for p in out.split() if "." in p.split("/")[0]})


def _ginkgo_version() -> str:
    return _go_list("-m", "-f", "{{.Version}}", GINKGO_MODULE).strip()


def _build(target: Path) -> None:
    p = build.pins()
    version = p["kubernetes"]["version"]
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _log.info(
            "building Kubernetes' e2e.test and ginkgo for conformance runs; this takes a while the first time",
            into=str(target),
        )
        # `go test -c` lists nothing as it compiles, so the packages the test imports are compiled
        # first by `go build -v` (which lists them, for progress; same flags, so the test build
        # finds them in Go's build cache), then the test binary is linked.
        build._run_go(
            ["build", "-v", "-trimpath", *_test_imports()], MODULE, "compiling Kubernetes' e2e packages"
        )
        ldflags = " ".join(("-s", "-w", *build._kube_version_flags(version)))
        build._run_go(
            ["test", "-c", "-trimpath", "-ldflags", ldflags, "-o", str(staging / "e2e.test"), E2E_PACKAGE],
            MODULE,
            "linking e2e.test",
        )
        build._run_go(
            ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "ginkgo"), GINKGO_PACKAGE],
            MODULE,
            "building ginkgo",
        )
        manifest = {
            "key": target.name,
            "recipe": RECIPE_VERSION,
            "versions": {"kubernetes": version, "ginkgo": _ginkgo_version()},
        }
        (staging / build.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    _log.done("conformance tools ready", dir=str(target), size=f"{size / 2**20:.0f}MiB")
