"""The lifecycle of virtual clusters: create, list, connect, disconnect, delete, pause, resume, describe.

Everything vnest knows about a virtual cluster it reads from the host: the
config Secret `vc-config-NAME` (labelled vnest.io/component=config) says that
it exists, with which driver and version, and whether it is paused. Local
files only hold what the process driver needs to run its processes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vnest import __version__, chart, drivers, kubeconfig, log, naming
from vnest.drivers.base import PAUSED, Driver, Target, kubernetes_version
from vnest.errors import UsageError, VnestError
from vnest.kube.client import ApiError, KubeClient, Obj

_log = log.get("lifecycle")

# The host namespace label of the Pod Security admission (pod-security.kubernetes.io/enforce).
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
# Host kinds that carry a cluster's labels and go when it is deleted.
CONTROL_PLANE_KINDS = (
    "StatefulSet",
    "Service",
    "Secret",
    "ConfigMap",
    "RoleBinding",
    "Role",
    "ServiceAccount",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
)


# ---- contexts ----------------------------------------------------------------


def parent_of(context: str) -> str | None:
    """The parent context recorded in a vnest context's name: vnest_<name>_<ns>_<parent>."""
    if not context.startswith("vnest_"):
        return None
    parts = context.split("_", 3)  # names and namespaces are DNS labels: no '_' in them
    return parts[3] if len(parts) == 4 else None


def current_context() -> str:
    return kubeconfig.load(kubeconfig.user_path()).get("current-context") or ""


def host_context(explicit: str | None = None) -> str:
    context = explicit or current_context()
    if not context:
        raise VnestError(
            f"no current kube context in {kubeconfig.user_path()}",
            hint="run `vnest host up` for a local host cluster, or `kubectl config use-context` for yours",
        )
    return parent_of(context) or context


# Helm's limit on release names, which the kubernetes driver's release is named after.
MAX_CLUSTER_NAME = 53


def _validate_names(name: str, namespace: str) -> None:
    if len(name) > MAX_CLUSTER_NAME:
        raise UsageError(
            f"NAME {name!r} is {len(name)} characters long; at most {MAX_CLUSTER_NAME} are allowed"
        )
    for what, value in (("NAME", name), ("--namespace", namespace)):
        if not naming.is_dns_label(value):
            raise UsageError(
                f"{what} {value!r} is not a valid name: use a DNS label (lowercase letters, digits "
                "and '-', starting and ending with a letter or digit, at most 63 characters)"
            )


@dataclass
class Session:
    """A host connection for one command."""

    host: KubeClient
    context: str

    @classmethod
    def open(cls, context: str | None = None) -> Session:
        ctx = host_context(context)
        return cls(KubeClient.from_kubeconfig(kubeconfig.user_path(), ctx), ctx)

    def target(self, name: str, namespace: str) -> Target:
        return Target(name, namespace, self.host, self.context)

    async def config_secret(self, name: str, namespace: str) -> Obj | None:
        return await self.control_plane_secret(naming.config_secret(name), name, namespace, "config")

    async def control_plane_secret(
        self, secret: str, name: str, namespace: str, component: str
    ) -> Obj | None:
        """One of the control plane's Secrets; an object of that name without vnest's labels is refused."""
        obj = await self.host.get_or_none("Secret", secret, namespace)
        if (problem := naming.foreign_control_plane_object(obj, name, component)) is not None:
            raise VnestError(problem)
        return obj

    async def require(self, name: str, namespace: str) -> Obj:
        secret = await self.config_secret(name, namespace)
        if secret is None:
            raise VnestError(f"virtual cluster {name!r} not found in namespace {namespace!r}")
        return secret


def _default_driver(context: str) -> str:
    """kubernetes, as vCluster installs its chart; process only where a pod cannot run: on the
    local host with KWOK's simulated nodes."""
    from vnest.host.local import CONTEXT as LOCAL_HOST_CONTEXT
    from vnest.host.local import LocalHost

    if context != LOCAL_HOST_CONTEXT:
        return "kubernetes"
    state = LocalHost().state()
    return "kubernetes" if state is not None and state.runtime == "containerd" else "process"


def driver_of(secret: Obj) -> str:
    """The driver a virtual cluster runs with, from its config Secret."""
    return str(secret["metadata"].get("annotations", {}).get(naming.ANNOTATION_DRIVER, "kubernetes"))


def is_paused(secret: Obj) -> bool:
    return bool(secret["metadata"].get("annotations", {}).get(naming.ANNOTATION_PAUSED) == "true")


async def _virtual_client(
    s: Session, t: Target, driver: Driver, published: dict[str, Any] | None = None
) -> KubeClient:
    """A client of the virtual API, at the address where this machine reaches it (the driver's);
    from the `published` kubeconfig when the caller has it already."""
    if published is None:
        published = await published_kubeconfig(s, t.name, t.namespace)
    if published is None:
        raise VnestError(f"virtual cluster {t.name!r} in {t.namespace!r} has published no kubeconfig yet")
    config = copy.deepcopy(published)
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = await driver.endpoint(t, cluster["server"])
    return KubeClient.from_dict(config, timeout=5)


async def _wait_system_namespaces(s: Session, t: Target, driver: Driver, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with await _virtual_client(s, t, driver) as virtual:
        while True:
            try:
                found = {ns["metadata"]["name"] for ns in await virtual.list("Namespace")}
                if found >= SYSTEM_NAMESPACES:
                    return
            except ApiError:
                pass
            if time.monotonic() > deadline:
                raise VnestError(f"timed out waiting for the virtual API of {t.name} to list its namespaces")
            await asyncio.sleep(0.2)


async def answers(s: Session, t: Target, driver: Driver, published: dict[str, Any]) -> bool:
    """Whether the virtual API is up and has made its system namespaces (one try, no waiting)."""
    try:
        async with await _virtual_client(s, t, driver, published) as virtual:
            found = {ns["metadata"]["name"] for ns in await virtual.list("Namespace")}
    except (ApiError, VnestError):
        return False
    return found >= SYSTEM_NAMESPACES


async def published_kubeconfig(s: Session, name: str, namespace: str) -> dict[str, Any] | None:
    """The admin kubeconfig the control plane published (its server as the control plane sees it)."""
    secret = await s.control_plane_secret(naming.kubeconfig_secret(name), name, namespace, "kubeconfig")
    if secret is None:
        return None
    config: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["config"]))
    return config


async def remove(s: Session, name: str, namespace: str, driver_name: str) -> None:
    """Deletes a virtual cluster and every host object it owned, data included."""
    await _remove(s, s.target(name, namespace), driver_name, keep_data=False)


# ---- create --------------------------------------------------------------------


async def create(
    name: str,
    namespace: str,
    files: list[Path],
    sets: list[str],
    driver_name: str | None,
    connect_after: bool,
    upgrade: bool,
    wait: bool,
    timeout: float,
) -> None:
    _validate_names(name, namespace)
    # Imported here, not with this module, and after the names are checked: the config models take
    # about 0.1 s to build and the local host module brings TLS and DNS libraries; connect, list and
    # a mistyped NAME need neither.
    from vnest.config import load_config, to_values

    values = to_values(load_config(files, sets))  # bad config: exit 2 before touching the host
    s = Session.open()
    async with s.host:
        await install(s, name, namespace, values, driver_name, upgrade, wait, timeout)
        _log.done(
            f"virtual cluster {name} is up and running" if wait else f"virtual cluster {name} installed"
        )
    if connect_after and wait:
        await connect(name, namespace)


async def install(
    s: Session,
    name: str,
    namespace: str,
    values: dict[str, Any],
    driver_name: str | None,
    upgrade: bool,
    wait: bool,
    timeout: float,
) -> Driver:
    """Creates virtual cluster `name` from checked config values, or with `upgrade` applies them to
    the one that exists. A create that fails leaves nothing behind on the host. `vnest create` and
    the Cluster API provider both come here."""
    _validate_names(name, namespace)
    existing = await s.config_secret(name, namespace)
    driver_name = driver_name or (driver_of(existing) if existing else _default_driver(s.context))
    driver = drivers.get(driver_name)
    target = s.target(name, namespace)
    if existing is not None and not upgrade:
        raise VnestError(
            f"virtual cluster {name!r} already exists in namespace {namespace!r}",
            hint="use --upgrade to apply a new config to it, or pick another NAME",
        )
    if existing is None:
        await _require_namespace_free(s, name, namespace)
    if existing is not None and driver_of(existing) != driver_name:
        raise UsageError(
            f"virtual cluster {name!r} runs with the {driver_of(existing)} driver; "
            f"--driver {driver_name} cannot upgrade it"
        )
    driver.check(values)
    if existing is not None:
        _check_version_change(existing, kubernetes_version(values))
    # helm runs in a thread: the provider installs many clusters at once on one event loop.
    manifests = await asyncio.to_thread(chart.render, name, namespace, values)
    created_namespace = await _ensure_namespace(s.host, namespace)
    labels_before = await _label_pod_security(s.host, namespace, values["policies"]["podSecurityStandard"])
    _log.info(
        f"{'upgrading' if existing else 'creating'} virtual cluster {name}",
        namespace=namespace,
        driver=driver_name,
    )
    try:
        await driver.install(target, manifests, values)
        if wait:
            with log.step(_log, "waiting for the virtual cluster to come up"):
                await driver.wait_ready(target, timeout)
                await _wait_system_namespaces(s, target, driver, timeout)
    except BaseException:
        if existing is None:
            _log.info("cleaning up after the failed create")
            await _remove(s, target, driver_name, keep_data=False)
            if created_namespace:
                await s.host.delete("Namespace", namespace)
            else:
                await _patch_namespace_labels(s.host, namespace, labels_before)
        raise
    return driver


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _check_version_change(existing: Obj, wanted: str) -> None:
    """Kubernetes upgrades a control plane one minor release at a time, and never down: its
    datastore holds objects in the newer release's storage versions."""
    running = existing["metadata"].get("annotations", {}).get(naming.ANNOTATION_KUBERNETES_VERSION, "")
    if not running or running == wanted:
        return
    before, after = _release(running), _release(wanted)
    if after < before:
        raise UsageError(
            f"controlPlane.distro.k8s.version {wanted!r}: the virtual cluster runs {running}, and a "
            "control plane is never downgraded",
            hint=f"keep {running} or a newer release",
        )
    if after[:2] > (before[0], before[1] + 1):
        raise UsageError(
            f"controlPlane.distro.k8s.version {wanted!r}: the virtual cluster runs {running}; a control "
            "plane is upgraded one minor release at a time",
            hint=f"upgrade to {before[0]}.{before[1] + 1} first",
        )


async def _ensure_namespace(host: KubeClient, namespace: str) -> bool:
    if await host.get_or_none("Namespace", namespace) is not None:
        return False
    await host.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return True


async def _require_namespace_free(s: Session, name: str, namespace: str) -> None:
    """One virtual cluster per host namespace, as vCluster since 0.25: tenants sharing a namespace
    would share its quota, network policies and Pod Security label, and could reach each other's
    Secrets through the host namespace's RBAC."""
    secrets = await s.host.list("Secret", namespace, label_selector=f"{naming.LABEL_COMPONENT}=config")
    others = sorted(
        {
            c
            for sec in secrets
            if (c := sec["metadata"].get("labels", {}).get(naming.LABEL_CLUSTER)) and c != name
        }
    )
    if others:
        raise VnestError(
            f"namespace {namespace!r} already holds virtual cluster {others[0]!r}; "
            "vnest runs one virtual cluster per host namespace",
            hint=f"pick another namespace with -n, or `vnest delete {others[0]} -n {namespace}` first",
        )


async def _label_pod_security(host: KubeClient, namespace: str, level: str) -> dict[str, str | None]:
    """The host's own PodSecurity admission enforces the cluster's level too, behind the syncer's check.

    Returns the labels as they were (None: absent), for a failed create to put back.
    """
    wanted = {POD_SECURITY_ENFORCE: level, f"{POD_SECURITY_ENFORCE}-version": "latest"}
    current = (await host.get("Namespace", namespace))["metadata"].get("labels") or {}
    await _patch_namespace_labels(host, namespace, dict(wanted))
    return {k: current.get(k) for k in wanted}


async def _patch_namespace_labels(host: KubeClient, namespace: str, labels: dict[str, str | None]) -> None:
    await host.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        body={"metadata": {"labels": labels}},  # a null removes the label (merge patch)
        content_type="application/merge-patch+json",
    )


# ---- connect / disconnect -----------------------------------------------------


async def kubeconfig_for(name: str, namespace: str, server: str | None = None) -> tuple[str, dict[str, Any]]:
    s = Session.open()
    async with s.host:
        driver = drivers.get(driver_of(await s.require(name, namespace)))
        vc = await published_kubeconfig(s, name, namespace)
        if vc is None:
            raise VnestError(
                f"virtual cluster {name!r} in {namespace!r} has published no kubeconfig yet (is it running?)"
            )
        cluster = dict(vc["clusters"][0]["cluster"])
        cluster["server"] = server or await driver.endpoint(s.target(name, namespace), cluster["server"])
    ctx = naming.kube_context(name, namespace, s.context)
    config = kubeconfig.empty()
    config["clusters"] = [{"name": ctx, "cluster": cluster}]
    config["users"] = [{"name": ctx, "user": vc["users"][0]["user"]}]
    config["contexts"] = [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}]
    config["current-context"] = ctx
    return ctx, config


async def connect(
    name: str,
    namespace: str,
    print_only: bool = False,
    out_file: Path | None = None,
    command: list[str] | None = None,
    server: str | None = None,
) -> int:
    ctx, config = await kubeconfig_for(name, namespace, server)
    if command:
        with tempfile.TemporaryDirectory(prefix="vnest-connect-") as tmp:
            path = Path(tmp) / "kubeconfig"
            kubeconfig.save(path, config)
            env = dict(os.environ, KUBECONFIG=str(path))
            try:
                child = subprocess.Popen(command, env=env)
            except FileNotFoundError:
                raise VnestError(f"command not found: {command[0]}") from None
            # A TERM for `vnest connect -- CMD` is meant for CMD: pass it on, and let CMD's end
            # end this command, so the kubeconfig's folder is removed (a TERM would skip that).
            previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
            try:
                code = child.wait()
            finally:
                signal.signal(signal.SIGTERM, previous)
            return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says
    if print_only:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    if out_file:
        kubeconfig.save(out_file, config)
        _log.done(f"wrote the kubeconfig of {name} to {out_file}", context=ctx)
        return 0
    path = kubeconfig.user_path()
    user = kubeconfig.load(path)
    kubeconfig.merge_into(user, config)
    user["current-context"] = ctx
    kubeconfig.save(path, user)
    _log.done(f"switched active kube context to {ctx}")
    _log.info("use `vnest disconnect` to return to your previous kube context")
    return 0


def disconnect() -> None:
    path = kubeconfig.user_path()
    user = kubeconfig.load(path)
    current = user.get("current-context") or ""
    parent = parent_of(current)
    if parent is None:
        raise VnestError(f"the current kube context {current!r} is not a vnest virtual cluster")
    if not any(c["name"] == parent for c in user["contexts"]):
        raise VnestError(f"the parent context {parent!r} of {current!r} is no longer in {path}")
    user["current-context"] = parent
    kubeconfig.save(path, user)
    _log.done(f"disconnected and switched back to the original context: {parent}")


# ---- list / describe ------------------------------------------------------------


def _age(created: str) -> str:
    then = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _summary(s: Session, secret: Obj, current: str) -> dict[str, Any]:
    meta = secret["metadata"]
    name = meta["labels"][naming.LABEL_CLUSTER]
    namespace = meta["namespace"]
    annotations = meta.get("annotations", {})
    driver_name = driver_of(secret)
    status = PAUSED if is_paused(secret) else await drivers.get(driver_name).status(s.target(name, namespace))
    return {
        "name": name,
        "namespace": namespace,
        "status": status,
        "version": annotations.get(naming.ANNOTATION_KUBERNETES_VERSION, ""),
        "connected": current.startswith(f"vnest_{name}_{namespace}_"),
        "created": meta["creationTimestamp"],
        "driver": driver_name,
    }


async def list_clusters(namespace: str | None) -> list[dict[str, Any]]:
    s = Session.open()
    current = current_context()
    async with s.host:
        secrets = await s.host.list("Secret", namespace, label_selector=f"{naming.LABEL_COMPONENT}=config")
        rows = [
            await _summary(s, sec, current)
            for sec in secrets
            if naming.LABEL_CLUSTER in sec["metadata"].get("labels", {})
        ]
    return sorted(rows, key=lambda r: (r["namespace"], r["name"]))


def table(rows: list[dict[str, Any]]) -> str:
    header = ["NAME", "NAMESPACE", "STATUS", "VERSION", "CONNECTED", "AGE"]
    body = [
        [r["name"], r["namespace"], r["status"], r["version"], str(r["connected"]), _age(r["created"])]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in [header, *body]
    )


async def describe(name: str, namespace: str) -> dict[str, Any]:
    s = Session.open()
    current = current_context()
    async with s.host:
        secret = await s.require(name, namespace)
        summary = await _summary(s, secret, current)
        config = yaml.safe_load(base64.b64decode(secret["data"]["config.yaml"]))
        service = await s.host.get_or_none("Service", naming.service_name(name), namespace)
        from vnest.syncer import registry  # the syncer's modules only when a command needs them

        counts: dict[str, int | None] = {}
        for kind in registry.host_kinds():
            try:
                counts[kind] = len(
                    await s.host.list(kind, namespace, label_selector=f"{naming.LABEL_MANAGED_BY}={name}")
                )
            except ApiError:
                counts[kind] = None
        health: dict[str, Any] = {"status": summary["status"]}
        endpoint = None
        try:
            driver = drivers.get(driver_of(secret))
            async with await _virtual_client(s, s.target(name, namespace), driver) as virtual:
                endpoint = virtual.server
                health["apiServer"] = (await virtual.text("/readyz")).strip()
        except Exception as e:
            health["apiServer"] = f"unreachable: {e}"
    return {
        **summary,
        "versions": {
            "kubernetes": summary["version"],
            "vnest": secret["metadata"]
            .get("annotations", {})
            .get(naming.ANNOTATION_VNEST_VERSION, __version__),
        },
        "endpoints": {
            "apiServer": endpoint,
            "dns": _local_endpoint(name, namespace, "dnsPort") if summary["driver"] == "process" else None,
            "metrics": _local_endpoint(name, namespace, "metricsPort", "http://{}/metrics")
            if summary["driver"] == "process"
            else None,
            "hostService": (service or {}).get("spec", {}).get("clusterIP"),
            "kubeContext": naming.kube_context(name, namespace, s.context),
        },
        "health": health,
        "syncedObjects": counts,
        "config": config,
    }


def _local_endpoint(name: str, namespace: str, key: str, form: str = "{}") -> str | None:
    """Where a process-driver cluster's embedded DNS or metrics endpoint listens, as its control
    plane reported."""
    from vnest.drivers.process import state_dir

    try:
        status = json.loads((state_dir(name, namespace) / "data" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return form.format(f"127.0.0.1:{status[key]}") if status.get(key) else None


# ---- delete / pause / resume -----------------------------------------------------


async def _remove(s: Session, t: Target, driver_name: str, keep_data: bool) -> None:
    from vnest.syncer import registry  # the syncer's modules only when a command needs them

    await drivers.get(driver_name).uninstall(t, keep_data)
    for kind, label in [(k, naming.LABEL_CLUSTER) for k in CONTROL_PLANE_KINDS] + [
        (k, naming.LABEL_MANAGED_BY) for k in registry.host_kinds()
    ]:
        try:
            objs = await s.host.list(kind, t.namespace, label_selector=f"{label}={t.name}")
        except ApiError as e:
            if e.not_found:
                continue
            raise
        for obj in objs:
            await s.host.delete(kind, obj["metadata"]["name"], t.namespace)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        role = await s.host.get_or_none(kind, naming.cluster_role(t.name, t.namespace))
        if role is not None and role["metadata"].get("labels", {}).get(naming.LABEL_CLUSTER) == t.name:
            await s.host.delete(kind, role["metadata"]["name"])
    if not keep_data:
        pvcs = await s.host.list(
            "PersistentVolumeClaim", t.namespace, label_selector=f"{naming.LABEL_CLUSTER}={t.name}"
        )
        for pvc in pvcs:
            await s.host.delete("PersistentVolumeClaim", pvc["metadata"]["name"], t.namespace)


async def delete(name: str, namespace: str, delete_namespace: bool, keep_data: bool) -> None:
    s = Session.open()
    async with s.host:
        secret = await s.require(name, namespace)
        with log.step(_log, f"deleting virtual cluster {name}"):
            await _remove(s, s.target(name, namespace), driver_of(secret), keep_data)
            if delete_namespace:
                await s.host.delete("Namespace", namespace)
    _forget_contexts(name, namespace)


def _forget_contexts(name: str, namespace: str) -> None:
    path = kubeconfig.user_path()
    if not path.exists():
        return
    user = kubeconfig.load(path)
    prefix = f"vnest_{name}_{namespace}_"
    current = user.get("current-context") or ""
    for ctx in [c["name"] for c in user["contexts"] if c["name"].startswith(prefix)]:
        kubeconfig.remove_context(user, ctx)
    if current.startswith(prefix):
        user["current-context"] = parent_of(current) or ""
        _log.info(f"switched back to {user['current-context']!r}")
    kubeconfig.save(path, user)


async def pause(name: str, namespace: str) -> None:
    s = Session.open()
    async with s.host:
        secret = await s.require(name, namespace)
        if is_paused(secret):
            _log.info(f"virtual cluster {name} is already paused")
            return
        t = s.target(name, namespace)
        await drivers.get(driver_of(secret)).stop(t)
        # Its workloads stop too; their virtual objects stay and come back on resume.
        for pod in await s.host.list("Pod", namespace, label_selector=f"{naming.LABEL_MANAGED_BY}={name}"):
            await s.host.delete("Pod", pod["metadata"]["name"], namespace)
        await s.host.patch(
            "Secret",
            naming.config_secret(name),
            {"metadata": {"annotations": {naming.ANNOTATION_PAUSED: "true"}}},
            namespace,
        )
    _log.done(f"paused virtual cluster {name}")


async def resume(name: str, namespace: str, timeout: float) -> None:
    s = Session.open()
    async with s.host:
        secret = await s.require(name, namespace)
        t = s.target(name, namespace)
        driver = drivers.get(driver_of(secret))
        if not is_paused(secret) and await driver.status(t) != "Failed":
            _log.info(f"virtual cluster {name} is not paused")
            return
        await driver.start(t)
        with log.step(_log, "waiting for the virtual cluster to come up"):
            await driver.wait_ready(t, timeout)
            await _wait_system_namespaces(s, t, driver, timeout)
        await s.host.patch(
            "Secret",
            naming.config_secret(name),
            {"metadata": {"annotations": {naming.ANNOTATION_PAUSED: None}}},
            namespace,
        )
    _log.done(f"resumed virtual cluster {name}")
