"""What e2e tests do with a virtual cluster they made: kubectl in it, its objects, its state."""

from __future__ import annotations

import json
from pathlib import Path

HOST = "vnest-host"  # the local host's context


class VirtualCluster:
    def __init__(self, env, name: str, namespace: str) -> None:
        self.env, self.name, self.namespace = env, name, namespace

    def connect_argv(self) -> list[str]:
        """`vnest connect NAME -- kubectl`: the start of a command line that runs kubectl in it."""
        from tests.conftest import VNEST

        return [*VNEST, "connect", self.name, "-n", self.namespace, "--", self.env.kubectl_path]

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.env.vnest(
            "connect", self.name, "-n", self.namespace, "--", self.env.kubectl_path, *args, check=check
        ).stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """A virtual object, or None when there is none."""
        scope = ["-n", namespace] if namespace else []
        out = self.kubectl("get", kind, name, *scope, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def get_existing(self, kind: str, name: str, namespace: str | None = None) -> dict:
        """A virtual object that must be there."""
        obj = self.get(kind, name, namespace)
        assert obj is not None, f"no {kind} {name} in virtual cluster {self.name}"
        return obj

    def apply(self, obj: dict) -> None:
        path = self.env.root / f"{self.name}-{obj['kind']}-{obj['metadata']['name']}.json"
        path.write_text(json.dumps(obj))
        self.kubectl("apply", "-f", str(path))

    def state(self) -> Path:
        """The process driver's folder of this cluster."""
        return Path(self.env.vars["VNEST_HOME"]) / "clusters" / self.namespace / self.name
