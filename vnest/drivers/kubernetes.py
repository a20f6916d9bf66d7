"""The `kubernetes` driver: the control plane runs as the StatefulSet pod `NAME-0` from chart/.

`helm upgrade --install` applies the chart, so what runs is exactly what
`helm template` shows.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from vnest import binaries, kubeconfig, log, naming
from vnest.chart import CHART_DIR, values_file
from vnest.drivers.base import FAILED, PENDING, RUNNING, Driver, Target
from vnest.errors import VnestError
from vnest.kube.client import Obj

_log = log.get("driver.kubernetes")


class KubernetesDriver(Driver):
    name = "kubernetes"

    def _helm(self, t: Target, *args: str) -> str:
        cmd = [
            str(binaries.ensure().helm),
            f"--kubeconfig={kubeconfig.user_path()}",
            f"--kube-context={t.host_context}",
            f"--namespace={t.namespace}",
            *args,
        ]
        _log.debug("running", cmd=" ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise VnestError(f"helm {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    async def install(self, t: Target, manifests: list[Obj], values: dict[str, Any]) -> None:
        with values_file(values) as path:
            self._helm(t, "upgrade", "--install", t.name, str(CHART_DIR), f"--values={path}")

    async def _pod(self, t: Target) -> Obj | None:
        return await t.host.get_or_none("Pod", f"{naming.statefulset(t.name)}-0", t.namespace)

    async def wait_ready(self, t: Target, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self.status(t) != RUNNING or not _vnests(
            await t.host.get_or_none("Secret", naming.kubeconfig_secret(t.name), t.namespace), t.name
        ):
            if time.monotonic() > deadline:
                raise VnestError(
                    f"timed out after {timeout:.0f}s waiting for pod {t.name}-0 to be ready",
                    hint=f"kubectl describe pod {t.name}-0 -n {t.namespace}",
                )
            await asyncio.sleep(1)

    async def _scale(self, t: Target, replicas: int) -> None:
        await t.host.patch(
            "StatefulSet", naming.statefulset(t.name), {"spec": {"replicas": replicas}}, t.namespace
        )

    async def stop(self, t: Target) -> None:
        await self._scale(t, 0)

    async def start(self, t: Target) -> None:
        await self._scale(t, 1)

    async def uninstall(self, t: Target, keep_data: bool) -> None:
        try:
            self._helm(t, "uninstall", t.name, "--wait=false")
        except VnestError as e:
            if "not found" not in str(e):
                raise

    async def status(self, t: Target) -> str:
        pod = await self._pod(t)
        if pod is None:
            return PENDING
        status = pod.get("status", {})
        if status.get("phase") == "Failed":
            return FAILED
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        waiting = [
            cs.get("state", {}).get("waiting", {}).get("reason", "")
            for cs in status.get("containerStatuses", [])
        ]
        if any(r in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull") for r in waiting):
            return FAILED
        return RUNNING if status.get("phase") == "Running" and ready else PENDING


def _vnests(secret: Obj | None, name: str) -> bool:
    """The kubeconfig Secret exists and is the control plane's own (an impostor is not waited for)."""
    return secret is not None and naming.foreign_control_plane_object(secret, name, "kubeconfig") is None
