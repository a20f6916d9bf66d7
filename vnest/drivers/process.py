"""The `process` driver: the control plane runs as local processes beside the CLI.

Its host objects are the chart's own ServiceAccount, Role, RoleBinding, Service
and config Secret, applied as rendered, and the control plane reaches the host
with a token of that ServiceAccount: every test of this driver exercises the
permissions the kubernetes driver's pod gets.

State: $VNEST_HOME/clusters/<namespace>/<name>/ holds the config in effect,
the host kubeconfig, the datastore and PKI copy (data/), one log per
component (data/logs/), and the supervisor's pid and log (pids/, logs/).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import yaml

from vnest import binaries, kubeconfig, log, naming
from vnest.drivers.base import FAILED, PENDING, RUNNING, Driver, Target, kubernetes_version
from vnest.errors import UsageError, VnestError
from vnest.host.local import vnest_home
from vnest.kube.client import ApiError, Obj
from vnest.procs import ProcessDir, free_port, port_in_use

_log = log.get("driver.process")

SUPERVISOR = "controlplane"
# Objects of the chart that make sense without a pod to run in.
APPLIED_KINDS = (
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Service",
    "Secret",
    # policies.*: they hold for the pods the syncer makes, wherever the control plane runs.
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
)
POLICY_KINDS = ("ResourceQuota", "LimitRange", "NetworkPolicy")
TOKEN_SECONDS = 365 * 24 * 3600


class ClusterMeta(TypedDict, total=False):
    """cluster.json: what this driver keeps about a cluster between commands."""

    apiPort: int  # the API server's port on loopback, kept across restarts while it is free


def state_dir(name: str, namespace: str) -> Path:
    return vnest_home() / "clusters" / namespace / name


class ProcessDriver(Driver):
    name = "process"

    def _dir(self, t: Target) -> Path:
        return state_dir(t.name, t.namespace)

    def _procs(self, t: Target) -> ProcessDir:
        return ProcessDir(self._dir(t))

    def _meta(self, t: Target) -> ClusterMeta:
        try:
            meta: ClusterMeta = json.loads((self._dir(t) / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta

    def check(self, values: dict[str, Any]) -> None:
        """Local processes run the pinned binaries: the pinned Kubernetes, or the release before
        it (built beside it, so that clusters can be upgraded from it), or no version."""
        p = binaries.pins()
        served = (p["kubernetes"]["version"], p["kubernetes-previous"]["version"])
        wanted = kubernetes_version(values)
        if wanted not in served:
            raise UsageError(
                f"controlPlane.distro.k8s.version {wanted!r}: the process driver runs the pinned "
                f"Kubernetes binaries, so only {served[0]!r}, {served[1]!r} or no version is allowed",
                hint="the kubernetes driver runs other versions from their images",
            )

    async def install(self, t: Target, manifests: list[Obj], values: dict[str, Any]) -> None:
        folder = self._dir(t)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        (folder / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        for obj in manifests:
            if obj["kind"] not in APPLIED_KINDS or obj["metadata"]["name"] == naming.headless_service_name(
                t.name
            ):
                continue
            if obj["kind"] == "Secret" and obj["metadata"]["name"] == naming.config_secret(t.name):
                obj["metadata"].setdefault("annotations", {})[naming.ANNOTATION_DRIVER] = self.name
            await t.host.apply(obj, namespace=t.namespace)
        await self._drop_cluster_roles(t, keep=manifests)
        await self._drop_policies(t, keep=manifests)
        if self._procs(t).running(SUPERVISOR):  # --upgrade: take the new config
            await asyncio.to_thread(self._procs(t).stop, SUPERVISOR)  # waits for it to exit
        await self.start(t)

    async def _drop_cluster_roles(self, t: Target, keep: list[Obj]) -> None:
        """Deletes the chart's ClusterRoles and bindings not in `keep`, as helm does: on --upgrade
        a permission the new config dropped goes (and the host objects a ClusterRole owns with
        it: the replicated host Services of vnest/syncer/replicated.py); on uninstall, all."""
        kept = {(obj["kind"], obj["metadata"]["name"]) for obj in keep}
        names = (naming.cluster_role(t.name, t.namespace), naming.to_host_cluster_role(t.name, t.namespace))
        for name in names:
            for kind in ("ClusterRoleBinding", "ClusterRole"):
                if (kind, name) in kept:
                    continue
                obj = await t.host.get_or_none(kind, name)
                if obj is not None and obj["metadata"].get("labels", {}).get(naming.LABEL_CLUSTER) == t.name:
                    await t.host.delete(kind, name)

    async def _drop_policies(self, t: Target, keep: list[Obj]) -> None:
        """Deletes the policy objects (policies.*) the new config no longer has, as helm would."""
        kept = {(obj["kind"], obj["metadata"]["name"]) for obj in keep}
        selector = ",".join(f"{k}={v}" for k, v in naming.control_plane_labels(t.name, "policy").items())
        for kind in POLICY_KINDS:
            for obj in await t.host.list(kind, t.namespace, label_selector=selector):
                if (kind, obj["metadata"]["name"]) not in kept:
                    await t.host.delete_exact(kind, obj)

    async def _write_host_kubeconfig(self, t: Target) -> Path:
        """A kubeconfig for the host that authenticates as the chart's ServiceAccount."""
        resp = await t.host.request(
            "POST",
            f"/api/v1/namespaces/{t.namespace}/serviceaccounts/{naming.service_account(t.name)}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS},
            },
        )
        user = kubeconfig.load(kubeconfig.user_path())
        ctx = next((c["context"] for c in user["contexts"] if c["name"] == t.host_context), None)
        cluster = next((c["cluster"] for c in user["clusters"] if ctx and c["name"] == ctx["cluster"]), None)
        if cluster is None:
            raise VnestError(f"context {t.host_context!r} is not in {kubeconfig.user_path()}")
        config = kubeconfig.empty()
        config["clusters"] = [{"name": "host", "cluster": dict(cluster)}]
        config["users"] = [{"name": "host", "user": {"token": resp["status"]["token"]}}]
        config["contexts"] = [{"name": "host", "context": {"cluster": "host", "user": "host"}}]
        config["current-context"] = "host"
        path = self._dir(t) / "host.kubeconfig"
        kubeconfig.save(path, config)
        return path

    async def start(self, t: Target) -> None:
        folder = self._dir(t)
        if not (folder / "config.yaml").exists():
            raise VnestError(
                f"virtual cluster {t.name} runs with the process driver, and its state is not on this machine",
                hint=f"it lives in {folder} on the machine that created it",
            )
        meta = await self._keep_port(t)
        host_kubeconfig = await self._write_host_kubeconfig(t)
        host_dns = await host_dns_address(t)
        (folder / "data" / "status.json").unlink(missing_ok=True)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        bin_dir = binaries.ensure().for_kubernetes(kubernetes_version(config))
        self._procs(t).start(
            SUPERVISOR,
            [
                sys.executable,
                "-m",
                "vnest",
                "controlplane",
                "run",
                f"--name={t.name}",
                f"--namespace={t.namespace}",
                f"--config={folder / 'config.yaml'}",
                f"--data-dir={folder / 'data'}",
                f"--bin-dir={bin_dir}",
                "--listen-address=127.0.0.1",
                f"--api-port={meta['apiPort']}",
                f"--host-kubeconfig={host_kubeconfig}",
                "--advertise-address=127.0.0.1",
                f"--public-server=https://127.0.0.1:{meta['apiPort']}",
                *([f"--host-dns={host_dns}"] if host_dns else []),
            ],
        )

    async def _keep_port(self, t: Target) -> ClusterMeta:
        """A cluster started again (upgrade, or after its control plane died) keeps its port, so the
        kubeconfigs handed out stay good. The old group's last processes (a killed API server
        exits after its supervisor) may hold the port a moment; only a port still taken after
        that is given up for a free one."""
        meta = self._meta(t)
        port = meta.get("apiPort")
        deadline = time.monotonic() + 10
        while port and port_in_use(port) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not port or port_in_use(port):
            meta["apiPort"] = free_port()
            (self._dir(t) / "cluster.json").write_text(json.dumps(meta) + "\n")
        return meta

    def _status_file(self, t: Target) -> dict[str, Any]:
        """What the control plane last wrote (vnest.controlplane.run.ControlPlane.write_status)."""
        try:
            status: dict[str, Any] = json.loads((self._dir(t) / "data" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return status

    async def wait_ready(self, t: Target, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        procs = self._procs(t)
        last_phase = ""
        while True:
            phase = self._status_file(t).get("phase", "Starting")
            if phase != last_phase:
                _log.info(f"control plane: {phase}")
                last_phase = phase
            if phase == "Running":
                break
            if phase == "Failed" or procs.running(SUPERVISOR) is None:
                raise VnestError(
                    f"the control plane of {t.name} failed to start:\n{procs.tail(SUPERVISOR)}",
                    hint=f"logs: {procs.log_file(SUPERVISOR)} and {self._dir(t) / 'data' / 'logs'}",
                )
            if time.monotonic() > deadline:
                raise VnestError(f"timed out after {timeout:.0f}s waiting for the control plane of {t.name}")
            await asyncio.sleep(0.2)

    async def stop(self, t: Target) -> None:
        self._procs(t).stop(SUPERVISOR, timeout=30)

    async def uninstall(self, t: Target, keep_data: bool) -> None:
        await self.stop(t)
        await self._drop_cluster_roles(t, keep=[])
        folder = self._dir(t)
        if keep_data:
            for name in ("host.kubeconfig", "cluster.json"):
                (folder / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    async def status(self, t: Target) -> str:
        if not self._dir(t).exists():
            return FAILED
        if self._procs(t).running(SUPERVISOR) is None:
            return FAILED
        phase = self._status_file(t).get("phase")
        if phase == "Running":
            return RUNNING
        return FAILED if phase == "Failed" else PENDING


async def host_dns_address(t: Target) -> str | None:
    """Where this machine reaches the host cluster's DNS: the host's `kube-system/kube-dns`.

    The embedded local host serves it on loopback and says where in an annotation (it has no
    kube-proxy for the ClusterIP); on another host the ClusterIP is the best guess, right
    when this machine is one of its nodes. Asked with the user's credentials, since the
    chart's ServiceAccount may not read kube-system."""
    try:
        service = await t.host.get_or_none("Service", "kube-dns", "kube-system")
    except ApiError as e:
        _log.debug("cannot read the host's kube-dns Service", error=str(e))
        return None
    if service is None:
        return None
    local = service["metadata"].get("annotations", {}).get(naming.ANNOTATION_LOCAL_ADDRESS)
    ip = service.get("spec", {}).get("clusterIP")
    return local or (ip if ip and ip != "None" else None)
