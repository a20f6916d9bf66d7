"""Renders the Helm chart of the `kubernetes` driver (chart/) into manifests.

The chart's values are the virtual cluster's config (the vcluster.yaml shape),
so rendering is: the config in, `helm template` with the pinned helm, the host
objects out. Rendering needs no cluster and no chart repository, which is what
lets the unit tests check every object and the driver apply exactly what it saw.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vnest import log
from vnest.errors import VnestError

_log = log.get("chart")

# The chart lives in the source tree next to the package (like build/), not
# inside it: it is the one Helm users would install, not a copy of it. vnest's image
# (where the Cluster API provider installs it) carries it at $VNEST_CHART_DIR.
CHART_DIR = Path(os.environ.get("VNEST_CHART_DIR") or Path(__file__).resolve().parents[1] / "chart")

# `helm template` of a local chart with no dependencies takes well under a
# second; the bound only keeps a wedged helm from hanging the caller.
_TIMEOUT = 120


@contextmanager
def values_file(values: dict[str, Any]) -> Iterator[Path]:
    """The config as a temporary values file for helm, removed afterwards.

    A values file rather than --set: --set would re-type strings such as "1.0"
    or "true", and a file carries nested lists and maps exactly.
    """
    with tempfile.NamedTemporaryFile("w", prefix="vnest-values-", suffix=".yaml") as f:
        yaml.safe_dump(values, f, sort_keys=False)
        f.flush()
        yield Path(f.name)


def render(
    name: str, namespace: str, values: dict[str, Any], helm: Path | None = None
) -> list[dict[str, Any]]:
    """Returns the host objects of virtual cluster `name` in host namespace `namespace`.

    `values` is the config in effect; helm merges it over chart/values.yaml.
    `helm` defaults to the pinned binary (built on first use).
    """
    if helm is None:
        from vnest import binaries  # imported late: building binaries is not needed to import this

        helm = binaries.helm()
    with values_file(values) as path:
        cmd = [str(helm), "template", name, str(CHART_DIR), "--namespace", namespace, "--values", str(path)]
        _log.debug("rendering the chart", cmd=" ".join(cmd))
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:
            raise VnestError(f"helm template did not finish within {_TIMEOUT}s") from e
    if proc.returncode != 0:
        reason = proc.stderr.strip().removeprefix("Error: ")
        # helm checks the values against chart/values.schema.json before rendering.
        hint = "the config does not match chart/values.schema.json" if "schema" in reason else None
        raise VnestError(f"rendering the chart for {namespace}/{name} failed: {reason}", hint=hint)
    # helm separates templates with `---` and leaves a document for each
    # template that renders to nothing (e.g. a disabled Service): drop those.
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(manifests: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    """The manifests of the given kinds, in their rendered order."""
    return [m for m in manifests if m.get("kind") in kinds]


def get(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one manifest of `kind` named `name`; KeyError when there is none."""
    for m in manifests:
        if m.get("kind") == kind and m.get("metadata", {}).get("name") == name:
            return m
    raise KeyError(f"no {kind} {name} in the rendered chart")
