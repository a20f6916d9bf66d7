"""The `kubernetes` driver: the control plane runs as the StatefulSet pod `NAME-0` from chart/.

`helm upgrade --install` applies the chart, so what runs is exactly what
`helm template` shows.

The control plane publishes a kubeconfig for its pod's own loopback; this machine reaches it
through a background proxy, as `vcluster connect` does: a port-forward to the cluster's Service
on a loopback port of this machine (vnest.drivers.portforward: a stream of its own per
connection), kept running until the cluster is deleted or the local host goes down.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from vnest import binaries, kubeconfig, log, naming
from vnest.chart import CHART_DIR, values_file
from vnest.drivers.base import FAILED, PENDING, RUNNING, Driver, Target
from vnest.errors import VnestError
from vnest.kube.client import Obj
from vnest.procs import ProcessDir, free_port, port_in_use

_log = log.get("driver.kubernetes")

PROXY = "proxy"  # the background port-forward's process name

SERVICE_PORT = 443  # the chart's Service port for the API server


def proxy_dir(name: str, namespace: str) -> Path:
    """The cluster's folder on this machine: the one the process driver keeps its state in."""
    from vnest.drivers.process import state_dir

    return state_dir(name, namespace)


class KubernetesDriver(Driver):
    name = "kubernetes"

    def _helm(self, t: Target, *args: str) -> str:
        # In a pod (the Cluster API provider's), helm takes the pod's account as kubectl would.
        where = (
            []
            if kubeconfig.in_cluster()
            else [f"--kubeconfig={kubeconfig.user_path()}", f"--kube-context={t.host_context}"]
        )
        cmd = [str(binaries.helm()), *where, f"--namespace={t.namespace}", *args]
        _log.debug("running", cmd=" ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise VnestError(f"helm {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    async def install(self, t: Target, manifests: list[Obj], values: dict[str, Any]) -> None:
        with values_file(values) as path:
            # In a thread: helm takes seconds, and the Cluster API provider installs many at once.
            await asyncio.to_thread(
                self._helm, t, "upgrade", "--install", t.name, str(CHART_DIR), f"--values={path}"
            )

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

    async def endpoint(self, t: Target, published: str) -> str:
        """A loopback URL forwarded to the cluster's Service, starting the proxy if it is not running;
        in a pod of the host, the Service itself."""
        if kubeconfig.in_cluster():
            return f"https://{naming.service_name(t.name)}.{t.namespace}.svc:{SERVICE_PORT}"
        folder = proxy_dir(t.name, t.namespace)
        procs = ProcessDir(folder)
        record = folder / "proxy.json"
        if procs.running(PROXY) and record.exists():
            port = int(json.loads(record.read_text())["port"])
            if await _answers(port):
                return _with_port(published, port)
        # Not running, or holding a forward to a pod that is gone: start it over.
        procs.stop(PROXY)
        if await self.status(t) != RUNNING:
            raise VnestError(
                f"pod {t.name}-0 of virtual cluster {t.name} is not running and ready: nothing to connect to",
                hint=f"vnest list; kubectl describe pod {t.name}-0 -n {t.namespace}",
            )
        port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"port": port}) + "\n")
        procs.start(
            PROXY,
            [
                sys.executable,
                "-m",
                "vnest",
                "port-forward",
                f"--kubeconfig={kubeconfig.user_path()}",
                f"--context={t.host_context}",
                f"--namespace={t.namespace}",
                f"--pod={naming.statefulset(t.name)}-0",
                f"--port={await self._api_port(t)}",
                f"--local-port={port}",
            ],
        )
        deadline = time.monotonic() + 60
        while not (port_in_use(port) and await _answers(port)):
            if procs.running(PROXY) is None or time.monotonic() > deadline:
                raise VnestError(
                    f"the port-forward to virtual cluster {t.name} did not come up:\n{procs.tail(PROXY)}",
                    hint=f"full log: {procs.log_file(PROXY)}",
                )
            await asyncio.sleep(0.1)
        _log.debug("background proxy started", port=port, cluster=t.name)
        return _with_port(published, port)

    async def _api_port(self, t: Target) -> int:
        """The pod's port behind the Service's: the one the port-forward streams reach."""
        service = await t.host.get("Service", naming.service_name(t.name), t.namespace)
        for p in service["spec"]["ports"]:
            if p["port"] == SERVICE_PORT and isinstance(p.get("targetPort"), int):
                return int(p["targetPort"])
        raise VnestError(
            f"Service {naming.service_name(t.name)} has no numbered target for port {SERVICE_PORT}"
        )

    async def uninstall(self, t: Target, keep_data: bool) -> None:
        folder = proxy_dir(t.name, t.namespace)
        ProcessDir(folder).stop(PROXY)
        shutil.rmtree(folder, ignore_errors=True)
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
        if status.get("phase") != "Running" or not ready:
            return PENDING
        return RUNNING if await self._pod_is_current(t, pod) else PENDING

    async def _pod_is_current(self, t: Target, pod: Obj) -> bool:
        """Whether the pod runs the StatefulSet's current spec: after an upgrade the old pod
        answers until the controller replaces it, and must not pass for the new release."""
        sts = await t.host.get_or_none("StatefulSet", naming.statefulset(t.name), t.namespace)
        if sts is None:
            return True
        sts_status = sts.get("status", {})
        if int(sts_status.get("observedGeneration", 0)) < int(sts["metadata"].get("generation", 0)):
            return False
        update = sts_status.get("updateRevision")
        return not update or pod["metadata"].get("labels", {}).get("controller-revision-hash") == update


async def _answers(port: int) -> bool:
    """Whether the API server answers through the forward (any HTTP status will do)."""
    try:
        async with httpx.AsyncClient(verify=False, timeout=3) as client:
            await client.get(f"https://127.0.0.1:{port}/readyz")
        return True
    except httpx.HTTPError:
        return False


def _with_port(published: str, port: int) -> str:
    """The published URL (its host is in the API server's certificate) on the local port."""
    return f"https://{urlsplit(published).hostname}:{port}"


def _vnests(secret: Obj | None, name: str) -> bool:
    """The kubeconfig Secret exists and is the control plane's own (an impostor is not waited for)."""
    return secret is not None and naming.foreign_control_plane_object(secret, name, "kubeconfig") is None
