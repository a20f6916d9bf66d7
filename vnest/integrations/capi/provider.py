"""The Cluster API provider: one virtual cluster per VNestCluster, made by vnest's lifecycle code.

A reconcile of a VNestCluster, in order (client-go's controller shape, on the syncer's engine):
1. being deleted: the virtual cluster and every host object it owned go, then the finalizer;
2. no Cluster owns it yet (the core controller sets that reference): wait;
3. paused (its own `cluster.x-k8s.io/paused` annotation, or its Cluster's `spec.paused`):
   report `Paused` and touch nothing;
4. the config (`spec.values` and `spec.version`) is checked exactly as `vnest create -f` checks
   a file; a bad one is a `Ready=False, InvalidValues` condition that names the key, and nothing
   is made on the host;
5. a config that differs from the one in effect (a digest in `status.appliedConfig`) is
   installed: a create the first time, an in-place upgrade after, keeping the virtual objects;
6. then health: once the virtual API answers, the `<cluster>-kubeconfig` Secret is written,
   `spec.controlPlaneEndpoint` filled in, and `status.initialization` set; the provider looks
   again every HEALTH_SECONDS, and a control plane that died is reported
   (`Available=False, ControlPlaneDown`) and started again.
Reconciles never wait for a control plane: they come back after a short delay instead, so
ten clusters applied at once come up side by side.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import yaml

from vnest import drivers, kubeconfig, lifecycle, log, naming
from vnest.drivers.base import FAILED, RUNNING
from vnest.errors import UsageError, VnestError
from vnest.integrations.capi import api
from vnest.kube.client import ApiError, KubeClient, Obj, resource_of
from vnest.kube.objects import owner_reference
from vnest.syncer.engine.controller import Controller
from vnest.syncer.engine.informer import Handlers, Informer
from vnest.syncer.mappings import key_of

_log = log.get("capi.provider")

HEALTH_SECONDS = 10.0  # how often a running virtual cluster is looked at
PENDING_SECONDS = 0.5  # how soon a cluster on its way up is looked at again
KUBERNETES_SERVICE_PORT = 443  # the chart's Service port for the API server


class VNestClusterController(Controller):
    kind = api.KIND
    workers = 16  # installs block on helm or a process start; clusters applied together go in parallel

    def __init__(self, host: KubeClient, host_context: str, driver: str | None = None) -> None:
        super().__init__()
        api.register_kinds()
        self.host = host
        self.session = lifecycle.Session(host, host_context)
        self.driver = driver
        self.objects = Informer(host, resource_of(api.KIND), api.KIND, name="VNestClusters")
        self.clusters = Informer(host, resource_of("Cluster"), "Cluster", name="Clusters")
        # The config each cluster was last installed with, as this process knows it: the cache may
        # not have seen the status write yet, and must not make the next reconcile install again.
        self.applied: dict[str, str] = {}

    def setup(self) -> None:
        self.objects.add_handlers(Handlers.each(self.enqueue))
        self.clusters.add_handlers(Handlers.each(self._cluster_changed))

    def _cluster_changed(self, cluster: Obj) -> None:
        """A Cluster's pause or deletion concerns the VNestClusters it refers to."""
        namespace = cluster["metadata"]["namespace"]
        for ref in ("infrastructureRef", "controlPlaneRef"):
            found = cluster.get("spec", {}).get(ref) or {}
            if found.get("kind") == api.KIND and found.get("apiGroup", api.GROUP) == api.GROUP:
                self.queue.add(f"{namespace}/{found['name']}")

    def resync(self) -> None:
        for key in list(self.objects.store):
            self.queue.add(key)

    async def start(self) -> None:
        """Runs until cancelled."""
        await self.run_with([self.objects, self.clusters], "watching VNestClusters", host=self.host.server)

    # ---- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.objects.get(key)
        if cached is None:
            return
        obj = copy.deepcopy(cached)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            await self._delete(obj)
            return
        status = cast(api.Status, copy.deepcopy(obj.get("status") or {}))
        status.setdefault("conditions", [])
        generation = int(meta.get("generation", 1))
        cluster = self._owner(obj)

        def condition(type_: str, ok: bool, reason: str, message: str = "") -> None:
            status["conditions"] = api.set_condition(
                status["conditions"], type_, ok, reason, message, generation
            )

        if cluster is None:
            condition(
                api.READY, False, api.REASON_WAITING_FOR_CLUSTER, "no Cluster owns this VNestCluster yet"
            )
            await self._write_status(obj, status)
            return
        paused = meta.get("annotations", {}).get(api.ANNOTATION_PAUSED) is not None or bool(
            cluster.get("spec", {}).get("paused")
        )
        condition(api.PAUSED, paused, api.REASON_PAUSED if paused else api.REASON_NOT_PAUSED)
        if paused:
            await self._write_status(obj, status)
            return
        if api.FINALIZER not in meta.get("finalizers", []) or api.ANNOTATION_BLOCK_MOVE not in meta.get(
            "annotations", {}
        ):
            await self._patch_finalizers(
                obj,
                [*(f for f in meta.get("finalizers", []) if f != api.FINALIZER), api.FINALIZER],
                {api.ANNOTATION_BLOCK_MOVE: "the virtual cluster runs in this management cluster"},
            )
            return  # the update comes back as an event

        name, namespace = meta["name"], meta["namespace"]
        try:
            values = config_values(obj)
        except UsageError as e:
            condition(api.READY, False, api.REASON_INVALID, str(e))
            await self._write_status(obj, status)
            return
        digest = config_digest(values)
        secret = await self.session.config_secret(name, namespace)
        if secret is None or self.applied.get(key, status.get("appliedConfig")) != digest:
            upgrading = secret is not None
            try:
                await lifecycle.install(
                    self.session, name, namespace, values, self.driver, upgrading, wait=False, timeout=0
                )
            except UsageError as e:  # what only the install can tell (a driver's limits, the namespace)
                condition(api.READY, False, api.REASON_INVALID, str(e))
                await self._write_status(obj, status)
                return
            _log.info(f"{'upgraded' if upgrading else 'created'} virtual cluster", cluster=key)
            self.applied[key] = status["appliedConfig"] = digest
            condition(
                api.READY,
                False,
                api.REASON_UPGRADING if upgrading else api.REASON_PROVISIONING,
                "applying the new config" if upgrading else "the control plane is starting",
            )
            await self._write_status(obj, status)
            self.queue.add_after(key, PENDING_SECONDS)
            return
        status["appliedConfig"] = digest
        await self._health(obj, status, cluster, secret, condition)

    async def _health(self, obj: Obj, status: api.Status, cluster: Obj, secret: Obj, condition: Any) -> None:
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        key = key_of(obj)
        driver_name = lifecycle.driver_of(secret)
        driver = drivers.get(driver_name)
        target = self.session.target(name, namespace)
        state = await driver.status(target)
        initialized = bool(status.get("initialization", {}).get("controlPlaneInitialized"))
        published = await lifecycle.published_kubeconfig(self.session, name, namespace)
        if (
            state == RUNNING
            and published
            and await lifecycle.answers(self.session, target, driver, published)
        ):
            endpoint = self._endpoint(obj, driver_name, published)
            current = obj.get("spec", {}).get("controlPlaneEndpoint") or {}
            if (current.get("host"), current.get("port")) != (endpoint["host"], endpoint["port"]):
                await self.host.patch(api.KIND, name, {"spec": {"controlPlaneEndpoint": endpoint}}, namespace)
            await self._write_kubeconfig(obj, cluster["metadata"]["name"], published, endpoint)
            status["initialization"] = {"provisioned": True, "controlPlaneInitialized": True}
            status["version"] = str(
                secret["metadata"].get("annotations", {}).get(naming.ANNOTATION_KUBERNETES_VERSION, "")
            )
            status["replicas"] = status["readyReplicas"] = status["availableReplicas"] = 1
            status["upToDateReplicas"] = 1
            condition(api.AVAILABLE, True, api.REASON_RUNNING, "the virtual API server answers")
            condition(api.READY, True, api.REASON_RUNNING, "")
            self.queue.add_after(key, HEALTH_SECONDS)
        elif initialized and state == FAILED:
            condition(
                api.AVAILABLE, False, api.REASON_DOWN, "the control plane is not running; starting it again"
            )
            condition(
                api.READY, False, api.REASON_DOWN, "the control plane is not running; starting it again"
            )
            status["readyReplicas"] = status["availableReplicas"] = 0
            _log.warning("control plane down; starting it again", cluster=key)
            await driver.start(target)
            self.queue.add_after(key, PENDING_SECONDS)
        else:
            if initialized:
                condition(api.AVAILABLE, False, api.REASON_DOWN, "the virtual API server does not answer")
            self.queue.add_after(key, PENDING_SECONDS)
        status["observedGeneration"] = int(meta.get("generation", 1))
        await self._write_status(obj, status)

    def _owner(self, obj: Obj) -> Obj | None:
        for ref in obj["metadata"].get("ownerReferences", []):
            if ref.get("kind") == "Cluster" and ref.get("apiVersion", "").startswith("cluster.x-k8s.io/"):
                return self.clusters.get(f"{obj['metadata']['namespace']}/{ref['name']}")
        return None

    def _endpoint(self, obj: Obj, driver_name: str, published: dict[str, Any]) -> api.Endpoint:
        """The user's endpoint if set; else where the management cluster reaches the virtual API:
        the published loopback address for local processes, the cluster's Service for a pod."""
        given = obj.get("spec", {}).get("controlPlaneEndpoint") or {}
        if given.get("host"):
            return {"host": str(given["host"]), "port": int(given.get("port") or KUBERNETES_SERVICE_PORT)}
        meta = obj["metadata"]
        if driver_name == "process":
            server = urlsplit(published["clusters"][0]["cluster"]["server"])
            return {"host": server.hostname or "127.0.0.1", "port": server.port or 443}
        return {
            "host": f"{naming.service_name(meta['name'])}.{meta['namespace']}.svc",
            "port": KUBERNETES_SERVICE_PORT,
        }

    async def _write_kubeconfig(
        self, obj: Obj, cluster_name: str, published: dict[str, Any], endpoint: api.Endpoint
    ) -> None:
        """`<cluster>-kubeconfig`, key `value`: what `clusterctl get kubeconfig` prints and the core
        controller connects with; owned by the VNestCluster, so it goes with it."""
        context = f"{cluster_name}-admin@{cluster_name}"
        cluster = dict(published["clusters"][0]["cluster"])
        cluster["server"] = f"https://{endpoint['host']}:{endpoint['port']}"
        config = kubeconfig.empty()
        config["clusters"] = [{"name": cluster_name, "cluster": cluster}]
        config["users"] = [{"name": f"{cluster_name}-admin", "user": published["users"][0]["user"]}]
        config["contexts"] = [
            {"name": context, "context": {"cluster": cluster_name, "user": f"{cluster_name}-admin"}}
        ]
        config["current-context"] = context
        value = base64.b64encode(yaml.safe_dump(config, sort_keys=False).encode()).decode()
        name = f"{cluster_name}-kubeconfig"
        namespace = obj["metadata"]["namespace"]
        current = await self.host.get_or_none("Secret", name, namespace)
        if current is not None and current.get("data", {}).get("value") == value:
            return
        owner = {**owner_reference(obj), "controller": True, "blockOwnerDeletion": True}
        secret: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": api.KUBECONFIG_SECRET_TYPE,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {api.LABEL_CLUSTER_NAME: cluster_name},
                "ownerReferences": [owner],
            },
            "data": {"value": value},
        }
        await self.host.apply(secret)

    async def _write_status(self, obj: Obj, status: api.Status) -> None:
        if obj.get("status") == status:
            return
        meta = obj["metadata"]
        await self.host.patch(api.KIND, meta["name"], {"status": status}, meta["namespace"], "status")

    async def _patch_finalizers(
        self, obj: Obj, finalizers: list[str], annotations: dict[str, str] | None = None
    ) -> None:
        meta = obj["metadata"]
        # At the resourceVersion read: a finalizer list changed meanwhile is a conflict and a retry.
        patch: Obj = {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}
        if annotations:
            patch["annotations"] = annotations
        await self.host.patch(api.KIND, meta["name"], {"metadata": patch}, meta["namespace"])

    async def _delete(self, obj: Obj) -> None:
        meta = obj["metadata"]
        if api.FINALIZER not in meta.get("finalizers", []):
            return
        name, namespace = meta["name"], meta["namespace"]
        secret = await self.session.config_secret(name, namespace)
        if secret is not None:
            with log.step(_log, f"deleting virtual cluster {namespace}/{name}"):
                await lifecycle.remove(self.session, name, namespace, lifecycle.driver_of(secret))
        self.applied.pop(key_of(obj), None)
        await self._patch_finalizers(obj, [f for f in meta["finalizers"] if f != api.FINALIZER])


def config_values(obj: Obj) -> dict[str, Any]:
    """The checked config of a VNestCluster: `spec.values` with `spec.version` over it."""
    from vnest.config import load_config_text, to_values

    spec = obj.get("spec", {})
    meta = obj["metadata"]
    where = f"spec.values of {api.KIND} {meta['namespace']}/{meta['name']}"
    sets = [f"controlPlane.distro.k8s.version={spec['version']}"] if spec.get("version") else []
    values = to_values(load_config_text(spec.get("values") or "", where, sets))
    # A user's endpoint (a load balancer's name, say) must be in the API server's certificate,
    # or clusterctl's kubeconfig fails its TLS check; the provider's own are there already.
    host = str((spec.get("controlPlaneEndpoint") or {}).get("host") or "")
    service = naming.service_name(meta["name"])
    own = {"127.0.0.1", "localhost", f"{service}.{meta['namespace']}.svc"}
    sans = values.setdefault("controlPlane", {}).setdefault("proxy", {}).setdefault("extraSANs", [])
    if host and host not in own and host not in sans:
        sans.append(host)
    return values


def config_digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


async def serve(kubeconfig_path: Path | None, context: str | None, driver: str | None) -> None:
    """`vnest capi provider`: the controller until stopped (in a pod: the in-cluster account)."""
    if kubeconfig_path is not None:
        # The process driver writes its control planes' host kubeconfigs from this file.
        os.environ["KUBECONFIG"] = str(kubeconfig_path)
    host = KubeClient.from_kubeconfig(kubeconfig_path, context)
    try:
        controller = VNestClusterController(host, host.context or "", driver)
        await controller.start()
    except ApiError as e:
        raise VnestError(f"the provider cannot watch its kinds: {e}") from e
    finally:
        await host.close()
