"""The host's stand-in for KubeVirt, for tests (not KubeVirt): virt-controller's VM, VMI and migration controllers, and CDI's.

One asyncio process, cluster-wide: informers (vnest's own, list then watch) on VirtualMachines,
VirtualMachineInstances, migrations, DataVolumes, launcher pods and claims wake a loop that
reconciles every object from the caches (level-triggered, and again every few seconds). Writes
carry the cached resourceVersion, so a write from a stale cache conflicts and waits for the next
pass instead of undoing a newer change (KWOK's stages change VMIs too).

What each part imitates:

- VirtualMachine (pkg/virt-controller/watch/vm/vm.go): the VM controller's finalizer on the VM;
  ``spec.dataVolumeTemplates`` made into DataVolumes owned by the VM, and no VMI until they are
  ready (``handleDataVolumes``); ``syncRunStrategy`` for Always, RerunOnFailure, Manual, Halted and
  Once (legacy ``spec.running``: Always or Halted), including ``status.stateChangeRequests`` (what
  virt-api's stop/restart send); the VMI made as ``SetupVMIFromVM`` does (the VM's name, the
  template's labels, annotations and spec, controlled by the VM, the VM controller's finalizer, the
  ``kubevirt.io/vm-generation`` annotation); ``updateStatus``: ``created``, ``ready``,
  ``runStrategy``, the state-change requests trimmed, the Ready condition and the VMI's other
  conditions, ``printableStatus`` in KubeVirt's order of precedence (Terminating, Stopping,
  Migrating, Paused, Running, ErrorUnschedulable, Provisioning, WaitingForVolumeBinding, Starting,
  Stopped), observed and desired generation; written through the status subresource when the CRD
  has one. A deleted VM deletes its VMI before its finalizer goes.
- VirtualMachineInstance (pkg/virt-controller/watch/vmi/vmi.go and lifecycle.go): at first sight
  what virt-api's VMI mutating webhook does at creation (the ``foregroundDeleteVirtualMachine``
  finalizer, phase Pending); the launcher pod (launcher.py) once the VMI's DataVolumes are done
  and its claims exist; phases Scheduling (pod made), Scheduled (pod Running and Ready: ``nodeName`` and
  the ``kubevirt.io/nodeName`` label, ``interfaces`` from the pod's IPs, ``activePods``,
  ``launcherContainerImageVersion``, ``migrationTransport``), Failed when the pod is gone or failed
  (a pod's failure is virt-handler's finding in KubeVirt); the Ready condition synced from the pod;
  the pod's ``kubevirt.io/virtual-machine-unpaused`` condition from the VMI's Paused condition; a
  deleted VMI's pods deleted (a finished one's too: its launcher would exit), and the finalizer
  removed once the VMI is final and its pods are gone. Scheduled to Running, and Succeeded on
  deletion, are virt-handler's, played by KWOK stages
  (stages.yaml).
- VirtualMachineInstanceMigration (pkg/virt-controller/watch/migration): a target launcher pod kept
  off the source node; once it runs, the VMI moves to it (``migrationState`` completed, new
  ``nodeName``, interfaces and active pods), the source pod is deleted and the migration Succeeds.
- DataVolume: cdi.py.

Not imitated: instance types and preferences, ControllerRevisions, start-failure backoff, hotplug,
live updates, snapshots, pools, replica sets, evictions, the migration's intermediate phases and
policies, events.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import signal
from pathlib import Path
from typing import Any

from vnest import log
from vnest.kube.client import ApiError, KubeClient, Obj, Resource, resource_of
from vnest.syncer.engine.informer import Handlers, Informer

from . import api, cdi, launcher

_log = log.get("kubevirt-standin")

RESYNC = 5.0  # seconds between passes when nothing changes
RETRY = 0.5  # seconds before another pass after a failed write
BACKOFF_MAX = 10.0  # seconds: the longest an object that keeps failing waits between tries
PROVISIONING_DONE = ("Succeeded", "Failed", "WaitForFirstConsumer", "PendingPopulation")


JSON_PATCH = "application/json-patch+json"


class Controller:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.dirty = asyncio.Event()
        self.has_status: dict[str, bool] = {}
        pods = Resource("v1", "pods")
        claims = Resource("v1", "persistentvolumeclaims")
        self.informers = {
            "VirtualMachine": Informer(client, api.KINDS["VirtualMachine"], "VirtualMachine"),
            "VirtualMachineInstance": Informer(
                client, api.KINDS["VirtualMachineInstance"], "VirtualMachineInstance"
            ),
            "VirtualMachineInstanceMigration": Informer(
                client, api.KINDS["VirtualMachineInstanceMigration"], "VirtualMachineInstanceMigration"
            ),
            "DataVolume": Informer(client, api.KINDS["DataVolume"], "DataVolume"),
            "Pod": Informer(client, pods, "Pod", label_selector=f"{api.APP_LABEL}=virt-launcher"),
            "PersistentVolumeClaim": Informer(client, claims, "PersistentVolumeClaim"),
        }
        wake = Handlers.each(lambda _obj: self.dirty.set())
        for informer in self.informers.values():
            informer.add_handlers(wake)
        # Pods asked for but not yet seen by the pod informer (generateName: a second create would
        # make a second pod), keyed by the VMI's (or the migration's) uid.
        self.pods_requested: set[str] = set()
        self.backoff: dict[str, tuple[float, float]] = {}  # kind/namespace/name: (delay, not before)

    # ---- caches -----------------------------------------------------------------------------------

    def cached(self, kind: str) -> list[Obj]:
        return list(self.informers[kind].store.values())

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.informers[kind].get(f"{namespace}/{name}")

    def pods_of(self, vmi: Obj) -> list[Obj]:
        uid = vmi["metadata"]["uid"]
        return [
            p
            for p in self.cached("Pod")
            if p["metadata"].get("labels", {}).get(api.CREATED_BY_LABEL) == uid
            and p["metadata"].get("namespace") == vmi["metadata"]["namespace"]
        ]

    def active_pod(self, vmi: Obj, pods: list[Obj]) -> Obj | None:
        """The pod the VMI runs in: a completed migration's target, else the source (or only) pod."""
        if not pods:
            return None
        migration = api.status(vmi).get("migrationState") or {}
        wanted = ""
        if migration.get("completed") and not migration.get("failed"):
            wanted = migration.get("targetPod", "")
        elif migration.get("sourcePod"):
            wanted = migration["sourcePod"]
        for pod in pods:
            if wanted and pod["metadata"]["name"] == wanted:
                return pod
        plain = [p for p in pods if api.MIGRATION_JOB_LABEL not in p["metadata"].get("labels", {})]
        candidates = plain or pods
        return sorted(candidates, key=lambda p: p["metadata"].get("creationTimestamp", ""))[-1]

    # ---- writes -------------------------------------------------------------------------------------

    async def write_status(self, obj: Obj, new_status: dict[str, Any]) -> Obj | None:
        """PUTs the object with its new status at the cached resourceVersion, through the status
        subresource when its CRD has one (the VM and migration CRDs do in KubeVirt, the VMI's not)."""
        if new_status == (obj.get("status") or {}):
            return obj
        updated = copy.deepcopy(obj)
        updated["status"] = new_status
        sub = "status" if self.has_status.get(obj["kind"]) else ""
        result: Obj = await self.client.replace(updated, subresource=sub)
        return result

    async def json_patch(self, obj: Obj, ops: list[dict[str, Any]], subresource: str = "") -> Obj:
        meta = obj["metadata"]
        path = resource_of(obj["kind"]).path(meta.get("namespace"), meta["name"], subresource)
        return await self.client.request(
            "PATCH",
            path,
            body=ops,
            content_type=JSON_PATCH,
        )

    async def set_finalizers(self, obj: Obj, finalizers: list[str]) -> None:
        old = obj["metadata"].get("finalizers")
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/finalizers", "value": old}]
        if old is None:
            ops = [{"op": "add", "path": "/metadata/finalizers", "value": finalizers}]
        else:
            ops.append({"op": "replace", "path": "/metadata/finalizers", "value": finalizers})
        await self.json_patch(obj, ops)

    async def create(self, obj: Obj) -> Obj | None:
        """Creates the object; None when one of its name exists already (a cache behind)."""
        try:
            return await self.client.create(obj)
        except ApiError as e:
            if e.conflict:
                return None
            raise

    async def delete(self, obj: Obj) -> None:
        await self.client.delete_exact(obj["kind"], obj)

    # ---- the loop -----------------------------------------------------------------------------------

    async def detect_status_subresources(self) -> None:
        for kind, crd_name in api.CRD_NAMES.items():
            crd = await self.client.request("GET", api.CRD.path(name=crd_name))
            version = api.KINDS[kind].group_version.split("/")[1]
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    self.has_status[kind] = bool((v.get("subresources") or {}).get("status") is not None)
        _log.info("status subresources", **{k: v for k, v in self.has_status.items()})

    async def run(self, stop: asyncio.Event, ready_file: Path | None = None) -> None:
        await self.detect_status_subresources()
        tasks = [asyncio.create_task(i.run()) for i in self.informers.values()]
        try:
            for informer in self.informers.values():
                await informer.synced.wait()
            _log.info("caches synced")
            if ready_file is not None:
                ready_file.write_text(json.dumps({"statusSubresources": self.has_status}) + "\n")
            while not stop.is_set():
                self.dirty.clear()
                failed = await self.sync_all()
                waiter = asyncio.create_task(self.dirty.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=RETRY if failed else RESYNC, return_when="FIRST_COMPLETED"
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sync_all(self) -> bool:
        """One pass over every object; True when something failed (and another pass is due soon).

        An object whose sync fails waits before its next try, twice as long each time (up to
        BACKOFF_MAX), as a work queue's rate limiter would make it."""
        failed = False
        now = asyncio.get_running_loop().time()
        steps: list[tuple[str, Any]] = [
            ("DataVolume", self.sync_datavolume),
            ("VirtualMachine", self.sync_vm),
            ("VirtualMachineInstance", self.sync_vmi),
            ("VirtualMachineInstanceMigration", self.sync_migration),
        ]
        for kind, step in steps:
            for obj in self.cached(kind):
                key = f"{kind}/{api.key(obj)}"
                delay, not_before = self.backoff.get(key, (0.0, 0.0))
                if now < not_before:
                    failed = True
                    continue
                try:
                    await step(obj)
                    self.backoff.pop(key, None)
                    continue
                except ApiError as e:
                    level = _log.debug if e.status in (404, 409, 422) else _log.warning
                    level("sync failed; retrying", kind=kind, object=api.key(obj), error=e.detail[:300])
                except Exception:
                    _log.error("sync crashed; retrying", kind=kind, object=api.key(obj), exc_info=True)
                failed = True
                delay = min(max(delay * 2, RETRY / 2), BACKOFF_MAX)
                self.backoff[key] = (delay, now + delay)
        return failed

    # ---- CDI ----------------------------------------------------------------------------------------

    async def sync_datavolume(self, dv: Obj) -> None:
        if api.deleting(dv):
            return
        meta = dv["metadata"]
        claim = self.get("PersistentVolumeClaim", meta["namespace"], meta["name"])
        if claim is None:
            made = await self.create(cdi.claim_for(dv))
            if made is not None:
                _log.info("made the DataVolume's claim", datavolume=api.key(dv))
            claim = made
        await self.write_status(dv, cdi.status_for(dv, claim))

    # ---- VirtualMachine -----------------------------------------------------------------------------

    def vmi_of(self, vm: Obj) -> Obj | None:
        vmi = self.get("VirtualMachineInstance", vm["metadata"]["namespace"], vm["metadata"]["name"])
        return vmi if vmi is not None and api.controlled_by(vmi, vm) else None

    async def sync_vm(self, vm: Obj) -> None:
        vmi = self.vmi_of(vm)
        finalizers = vm["metadata"].get("finalizers") or []
        stop_expected = start_expected = False
        if api.deleting(vm):
            if vmi is None or "orphan" in finalizers:
                if api.VM_CONTROLLER_FINALIZER in finalizers:
                    await self.set_finalizers(vm, [f for f in finalizers if f != api.VM_CONTROLLER_FINALIZER])
                return
            if not api.deleting(vmi):
                await self.delete(vmi)
                stop_expected = True
            await self.update_vm_status(vm, vmi, stop_expected, start_expected)
            return
        if api.VM_CONTROLLER_FINALIZER not in finalizers:
            await self.set_finalizers(vm, [*finalizers, api.VM_CONTROLLER_FINALIZER])
            return  # the next pass works from the updated VM
        strategy = api.run_strategy(vm)
        ready = await self.handle_data_volumes(vm)
        if ready or strategy == "Halted":
            vmi, stop_expected, start_expected = await self.sync_run_strategy(vm, vmi, strategy)
        await self.update_vm_status(vm, vmi, stop_expected, start_expected)

    async def handle_data_volumes(self, vm: Obj) -> bool:
        """Makes the VM's missing DataVolumes; True once all of them are done (vm.go handleDataVolumes)."""
        ready = True
        namespace = vm["metadata"]["namespace"]
        for template in (vm.get("spec") or {}).get("dataVolumeTemplates") or []:
            tmeta = template.get("metadata") or {}
            dv = self.get("DataVolume", namespace, tmeta["name"])
            if dv is None:
                ready = False
                made = await self.create(
                    {
                        "apiVersion": template.get("apiVersion", "cdi.kubevirt.io/v1beta1"),
                        "kind": "DataVolume",
                        "metadata": {
                            "name": tmeta["name"],
                            "namespace": namespace,
                            "labels": tmeta.get("labels") or {},
                            "annotations": tmeta.get("annotations") or {},
                            "ownerReferences": [api.owner_ref(vm)],
                        },
                        "spec": copy.deepcopy(template.get("spec") or {}),
                    }
                )
                if made is not None:
                    _log.info(
                        "made a DataVolume of the VM's templates", vm=api.key(vm), datavolume=tmeta["name"]
                    )
            elif api.phase(dv) not in cdi.DONE_PHASES:
                ready = False
        return ready

    async def sync_run_strategy(
        self, vm: Obj, vmi: Obj | None, strategy: str
    ) -> tuple[Obj | None, bool, bool]:
        """vm.go syncRunStrategy; returns the VMI to report on, and whether a stop or start is under way."""
        stop_request = _has_stop_request(vm, vmi)
        if strategy == "Always":
            if vmi is not None:
                if stop_request or api.is_final(vmi):
                    return vmi, await self.stop_vmi(vmi), False
                return vmi, False, False
            return await self.start_vmi(vm), False, True
        if strategy == "RerunOnFailure":
            if vmi is not None:
                failed = api.phase(vmi) == "Failed"
                if not api.deleting(vmi) and (stop_request or api.is_final(vmi)):
                    stopped = await self.stop_vmi(vmi)
                    if failed:
                        await self.add_start_request(vm)
                    return vmi, stopped, False
                return vmi, False, False
            if not _has_start_request(vm) and api.status(vm).get("runStrategy") == strategy:
                return None, False, False
            return await self.start_vmi(vm), False, True
        if strategy == "Manual":
            if vmi is not None:
                if stop_request:
                    return vmi, await self.stop_vmi(vmi), False
                return vmi, False, False
            if _has_start_request(vm):
                return await self.start_vmi(vm), False, True
            return None, False, False
        if strategy == "Halted":
            if vmi is None:
                if _has_start_request(vm):
                    # A paused start of a halted VM: virt-api asked; the controller sets it to run.
                    running = copy.deepcopy(vm)
                    if "runStrategy" in running["spec"]:
                        running["spec"]["runStrategy"] = "Always"
                    else:
                        running["spec"]["running"] = True
                    await self.client.replace(running)
                return None, False, False
            return vmi, await self.stop_vmi(vmi), False
        if strategy == "Once":
            if vmi is None:
                return await self.start_vmi(vm), False, True
            return vmi, False, False
        _log.warning("unknown run strategy", vm=api.key(vm), runStrategy=strategy)
        return vmi, False, False

    async def stop_vmi(self, vmi: Obj) -> bool:
        if api.deleting(vmi):
            return False
        await self.delete(vmi)
        _log.info("stopped the VM by deleting its VMI", vmi=api.key(vmi), phase=api.phase(vmi))
        return True

    async def start_vmi(self, vm: Obj) -> Obj | None:
        template = (vm.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations[api.VM_GENERATION_ANNOTATION] = str(vm["metadata"].get("generation", 1))
        spec = copy.deepcopy(template.get("spec") or {})
        requests = api.status(vm).get("stateChangeRequests") or []
        if (
            requests
            and requests[0].get("action") == "Start"
            and (requests[0].get("data") or {}).get("paused") == "true"
        ):
            spec["startStrategy"] = "Paused"
        vmi: Obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": vm["metadata"]["name"],
                "namespace": vm["metadata"]["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [api.owner_ref(vm)],
                "finalizers": [api.VM_CONTROLLER_FINALIZER],
            },
            "spec": spec,
        }
        made = await self.create(vmi)
        if made is not None:
            _log.info("started the VM by making its VMI", vm=api.key(vm))
        return made

    async def add_start_request(self, vm: Obj) -> None:
        """vm.go addStartRequest: a failed VMI of a RerunOnFailure VM is started again."""
        requests = [*(api.status(vm).get("stateChangeRequests") or []), {"action": "Start"}]
        if vm.get("status"):
            op: dict[str, Any] = {"op": "add", "path": "/status/stateChangeRequests", "value": requests}
        else:
            op = {"op": "add", "path": "/status", "value": {"stateChangeRequests": requests}}
        sub = "status" if self.has_status.get("VirtualMachine") else ""
        await self.json_patch(vm, [op], sub)

    async def update_vm_status(
        self, vm: Obj, vmi: Obj | None, stop_expected: bool, start_expected: bool
    ) -> None:
        old = api.status(vm)
        new = copy.deepcopy(old)
        created = vmi is not None
        _flag(new, "created", created)
        _flag(new, "ready", created and api.condition_true(vmi, "Ready"))
        strategy = api.run_strategy(vm)
        if new.get("runStrategy") or created:
            new["runStrategy"] = strategy
        requests = list(new.get("stateChangeRequests") or [])
        if requests and _trim_first_request(requests[0], vmi):
            requests = requests[1:]
        if requests:
            new["stateChangeRequests"] = requests
        else:
            new.pop("stateChangeRequests", None)
        new["conditions"] = _vm_conditions(old.get("conditions") or [], vmi)
        if vmi is not None and api.VM_GENERATION_ANNOTATION in (vmi["metadata"].get("annotations") or {}):
            new["observedGeneration"] = int(vmi["metadata"]["annotations"][api.VM_GENERATION_ANNOTATION])
            new["desiredGeneration"] = vm["metadata"].get("generation", 1)
        new["printableStatus"] = self.printable_status(vm, vmi, stop_expected, start_expected)
        await self.write_status(vm, new)
        if (
            vmi is not None
            and api.is_final(vmi)
            and api.VM_CONTROLLER_FINALIZER in (vmi["metadata"].get("finalizers") or [])
        ):
            # The VMI's outcome is on the VM now: the VM controller lets the VMI go.
            await self.set_finalizers(
                vmi, [f for f in vmi["metadata"]["finalizers"] if f != api.VM_CONTROLLER_FINALIZER]
            )

    def printable_status(self, vm: Obj, vmi: Obj | None, stop_expected: bool, start_expected: bool) -> str:
        """vm.go setPrintableStatus: the first that holds, in KubeVirt's order."""
        if api.deleting(vm):
            return "Terminating"
        if vmi is not None and not api.is_final(vmi) and (api.deleting(vmi) or stop_expected):
            return "Stopping"
        migration = api.status(vmi).get("migrationState") if vmi else None
        if migration and not migration.get("completed"):
            return "Migrating"
        if vmi is not None and api.phase(vmi) == "Running":
            return "Paused" if api.condition_true(vmi, "Paused") else "Running"
        scheduled = api.condition(vmi, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            return "ErrorUnschedulable"
        namespace = vm["metadata"]["namespace"]
        volumes = ((vm.get("spec") or {}).get("template") or {}).get("spec", {}).get("volumes") or []
        for volume in volumes:
            if "dataVolume" in volume:
                dv = self.get("DataVolume", namespace, volume["dataVolume"]["name"])
                if dv is not None and api.phase(dv) not in PROVISIONING_DONE:
                    return "Provisioning"
        if _set_to_start(vm, vmi):
            for volume in volumes:
                claim_name = _claim_name(volume)
                claim = self.get("PersistentVolumeClaim", namespace, claim_name) if claim_name else None
                if claim is not None and api.phase(claim) != "Bound":
                    return "WaitingForVolumeBinding"
        if vmi is None:
            return "Starting" if start_expected else "Stopped"
        if api.phase(vmi) in ("", "Pending", "Scheduling", "Scheduled"):
            return "Starting"
        if api.is_final(vmi):
            return "Stopped"
        return "Unknown"

    # ---- VirtualMachineInstance ---------------------------------------------------------------------

    async def sync_vmi(self, vmi: Obj) -> None:
        meta = vmi["metadata"]
        if not api.deleting(vmi) and not api.phase(vmi):
            # What virt-api's VMI mutating webhook does at creation (vmi-mutator.go): the
            # foreground finalizer, and phase Pending "to avoid blank status".
            await self.accept_vmi(vmi)
            return
        pods = self.pods_of(vmi)
        if pods:
            self.pods_requested.discard(meta["uid"])
        pod = self.active_pod(vmi, pods)
        if api.deleting(vmi) or api.is_final(vmi):
            # A deleted VMI's pods go (lifecycle.go deleteAllMatchingPods); a finished one's launcher
            # exits, which on KWOK means deleting its pod.
            for p in pods:
                if not api.deleting(p):
                    await self.delete(p)
        elif api.is_unprocessed(vmi) and pod is None and meta["uid"] not in self.pods_requested:
            missing = self.missing_volumes(vmi)
            if not missing:
                made = await self.client.create(launcher.render(vmi))
                self.pods_requested.add(meta["uid"])
                _log.info("made the launcher pod", vmi=api.key(vmi), pod=made["metadata"]["name"])
                pod = made
                pods = [made]
            else:
                _log.debug("waiting for volumes", vmi=api.key(vmi), missing=",".join(missing))
        await self.update_vmi_status(vmi, pod, pods)

    async def accept_vmi(self, vmi: Obj) -> None:
        updated = copy.deepcopy(vmi)
        finalizers = updated["metadata"].setdefault("finalizers", [])
        if api.VMI_FINALIZER not in finalizers:
            finalizers.append(api.VMI_FINALIZER)
        status = updated.setdefault("status", {})
        if not status.get("phase"):
            status["phase"] = "Pending"
            _stamp(status, "Pending")
        result = await self.client.replace(updated)
        if self.has_status.get("VirtualMachineInstance"):  # KubeVirt's VMI CRD has none
            result["status"] = status
            await self.client.replace(result, subresource="status")
        _log.info("VMI phase", vmi=api.key(vmi), phase="Pending")

    def missing_volumes(self, vmi: Obj) -> list[str]:
        """The DataVolumes not done and the claims not there that the launcher pod would need."""
        namespace = vmi["metadata"]["namespace"]
        missing = []
        for volume in (vmi.get("spec") or {}).get("volumes") or []:
            if "dataVolume" in volume:
                dv = self.get("DataVolume", namespace, volume["dataVolume"]["name"])
                if dv is not None and api.phase(dv) not in cdi.DONE_PHASES:
                    missing.append(f"datavolume/{volume['dataVolume']['name']}")
                    continue
            claim_name = _claim_name(volume)
            if claim_name and self.get("PersistentVolumeClaim", namespace, claim_name) is None:
                missing.append(f"persistentvolumeclaim/{claim_name}")
        return missing

    async def update_vmi_status(self, vmi: Obj, pod: Obj | None, pods: list[Obj]) -> None:
        """lifecycle.go updateStatus."""
        old = api.status(vmi)
        new = copy.deepcopy(old)
        updated = copy.deepcopy(vmi)
        labels = updated["metadata"].setdefault("labels", {})
        phase = api.phase(vmi)
        pod_ready = pod is not None and _pod_ready(pod)
        pod_down = pod is not None and (api.deleting(pod) or api.phase(pod) in ("Failed", "Succeeded"))
        active = {p["metadata"]["uid"]: p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")}
        if active:
            new["activePods"] = active
        else:
            new.pop("activePods", None)
        if pod is not None:
            new["launcherContainerImageVersion"] = _compute_image(pod)
        new["conditions"] = _ready_from_pod(new.get("conditions") or [], vmi, pod, pod_down)
        if phase in ("", "Pending"):
            if pod is not None:
                new["phase"] = "Scheduling"
            elif api.deleting(vmi):
                new["phase"] = "Failed"
            else:
                new["phase"] = "Pending"
                missing = self.missing_volumes(vmi)
                claims = [m.split("/", 1)[1] for m in missing if m.startswith("persistentvolumeclaim/")]
                if claims:
                    new["conditions"] = api.set_condition(
                        new["conditions"],
                        {
                            "type": "Synchronized",
                            "status": "False",
                            "reason": "FailedPvcNotFound",
                            "message": f"failed to render launch manifest: didn't find PVC {claims[0]}",
                            "lastProbeTime": None,
                            "lastTransitionTime": api.now(),
                        },
                    )
        elif phase == "Scheduling":
            if pod is None:
                new["phase"] = "Failed"
            else:
                new["conditions"] = _pod_scheduled_condition(new["conditions"], pod)
                if pod_ready and not api.deleting(vmi):
                    new["phase"] = "Scheduled"
                    new["nodeName"] = pod["spec"]["nodeName"]
                    labels[api.NODE_NAME_LABEL] = pod["spec"]["nodeName"]
                    new["migrationTransport"] = "Unix"
                    new["interfaces"] = _interfaces(vmi, pod)
                    new["qosClass"] = (pod.get("status") or {}).get("qosClass")
                elif pod_down:
                    new["phase"] = "Failed"
        elif phase in ("Scheduled", "Running"):
            going = api.deleting(vmi)  # virt-handler (a KWOK stage) reports the shutdown: Succeeded
            if (pod is None or pod_down) and not going:
                new["phase"] = "Failed"
            elif pod is not None and phase == "Running" and not going:
                new["interfaces"] = _interfaces(vmi, pod)
                await self.sync_paused_to_pod(vmi, pod)
        elif api.is_final(vmi) and not pods:
            finalizers = [f for f in updated["metadata"].get("finalizers") or [] if f != api.VMI_FINALIZER]
            if not self.owner_vm_exists(vmi):
                finalizers = [f for f in finalizers if f != api.VM_CONTROLLER_FINALIZER]
            updated["metadata"]["finalizers"] = finalizers
            new.pop("launcherContainerImageVersion", None)
        if new.get("qosClass") is None:
            new.pop("qosClass", None)
        if new.get("phase") != old.get("phase") and new.get("phase"):
            stamps = list(new.get("phaseTransitionTimestamps") or [])
            stamps.append({"phase": new["phase"], "phaseTransitionTimestamp": api.now()})
            new["phaseTransitionTimestamps"] = stamps
        if not labels:
            updated["metadata"].pop("labels", None)
        if new == old and updated["metadata"] == vmi["metadata"]:
            return
        updated["status"] = new
        sub = "status" if self.has_status.get("VirtualMachineInstance") else ""
        if sub and updated["metadata"] != vmi["metadata"]:
            updated = await self.client.replace(updated)
            updated["status"] = new
        await self.client.replace(updated, subresource=sub)
        if new.get("phase") != old.get("phase"):
            _log.info("VMI phase", vmi=api.key(vmi), phase=new.get("phase"), node=new.get("nodeName", ""))

    def owner_vm_exists(self, vmi: Obj) -> bool:
        for ref in vmi["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "VirtualMachine":
                vm = self.get("VirtualMachine", vmi["metadata"]["namespace"], ref["name"])
                return vm is not None and vm["metadata"]["uid"] == ref.get("uid")
        return False

    async def sync_paused_to_pod(self, vmi: Obj, pod: Obj) -> None:
        """lifecycle.go syncPausedConditionToPod: the launcher's readiness gate follows Paused."""
        paused = api.condition_true(vmi, "Paused")
        want = "False" if paused else "True"
        current = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == api.UNPAUSED_POD_CONDITION
            ),
            None,
        )
        if current is not None and current.get("status") == want:
            return
        condition: dict[str, Any] = {
            "type": api.UNPAUSED_POD_CONDITION,
            "status": want,
            "lastProbeTime": None,
            "lastTransitionTime": api.now(),
        }
        if paused:
            condition.update(reason="Paused", message="the virtual machine is paused")
        meta = pod["metadata"]
        await self.client.request(
            "PATCH",
            Resource("v1", "pods").path(meta["namespace"], meta["name"], "status"),
            body={"status": {"conditions": [condition]}},
            content_type="application/strategic-merge-patch+json",
        )

    # ---- migrations ---------------------------------------------------------------------------------

    async def sync_migration(self, migration: Obj) -> None:
        phase = api.phase(migration)
        if api.deleting(migration) or phase in api.FINAL_PHASES:
            return
        meta = migration["metadata"]
        vmi = self.get(
            "VirtualMachineInstance", meta["namespace"], (migration.get("spec") or {}).get("vmiName", "")
        )
        new = copy.deepcopy(api.status(migration))
        if vmi is None or api.deleting(vmi) or api.is_final(vmi):
            await self.finish_migration(migration, new, "Failed")
            return
        if phase == "":
            new["phase"] = "Pending"
            _stamp(new, "Pending")
            await self.write_status(migration, new)
            return
        target = next(
            (
                p
                for p in self.pods_of(vmi)
                if p["metadata"].get("labels", {}).get(api.MIGRATION_JOB_LABEL) == meta["uid"]
            ),
            None,
        )
        if target is not None:
            self.pods_requested.discard(meta["uid"])
        if phase == "Pending":
            if api.phase(vmi) != "Running":
                return
            source = self.active_pod(vmi, self.pods_of(vmi))
            source_node = api.status(vmi).get("nodeName", "")
            if target is None and meta["uid"] in self.pods_requested:
                return  # made, not seen yet
            if target is None:
                nodes = await self.client.list("Node")
                others = [n["metadata"]["name"] for n in nodes if n["metadata"]["name"] != source_node]
                pod = launcher.render(vmi, migration, avoid_node=source_node if others else "")
                target = await self.client.create(pod)
                self.pods_requested.add(meta["uid"])
                _log.info("made the migration's target pod", vmi=api.key(vmi), pod=target["metadata"]["name"])
            state = {
                "migrationUid": meta["uid"],
                "sourceNode": source_node,
                "sourcePod": source["metadata"]["name"] if source else "",
                "targetPod": target["metadata"]["name"],
                "startTimestamp": api.now(),
                "mode": "PreCopy",
                "completed": False,
                "failed": False,
            }
            vmi_status = copy.deepcopy(api.status(vmi))
            vmi_status["migrationState"] = state
            await self.write_vmi(vmi, vmi_status)
            new["phase"] = "Scheduling"
            _stamp(new, "Scheduling")
            await self.write_status(migration, new)
            return
        if target is None and meta["uid"] in self.pods_requested:
            return  # made, not seen yet
        if target is None or api.deleting(target) or api.phase(target) in ("Failed", "Succeeded"):
            await self.finish_migration(migration, new, "Failed", vmi)
            return
        if not _pod_ready(target):
            return
        # The target runs: the VMI moves to it, the source pod goes.
        vmi_status = copy.deepcopy(api.status(vmi))
        state = dict(vmi_status.get("migrationState") or {})
        node = target["spec"]["nodeName"]
        state.update(
            targetNode=node,
            targetPod=target["metadata"]["name"],
            targetNodeAddress=(target.get("status") or {}).get("podIP", ""),
            endTimestamp=api.now(),
            completed=True,
            failed=False,
        )
        vmi_status.update(migrationState=state, nodeName=node, interfaces=_interfaces(vmi, target))
        vmi_status.setdefault("activePods", {})[target["metadata"]["uid"]] = node
        labels = {**(vmi["metadata"].get("labels") or {}), api.NODE_NAME_LABEL: node}
        await self.write_vmi(vmi, vmi_status, labels)
        for pod in self.pods_of(vmi):
            if pod["metadata"]["uid"] != target["metadata"]["uid"] and not api.deleting(pod):
                await self.delete(pod)
        new["migrationState"] = state
        await self.finish_migration(migration, new, "Succeeded")
        _log.info("migrated", vmi=api.key(vmi), source=state.get("sourceNode", ""), target=node)

    async def finish_migration(
        self, migration: Obj, new: dict[str, Any], phase: str, vmi: Obj | None = None
    ) -> None:
        if phase == "Failed" and vmi is not None:
            vmi_status = copy.deepcopy(api.status(vmi))
            state = dict(vmi_status.get("migrationState") or {})
            if state.get("migrationUid") == migration["metadata"]["uid"]:
                state.update(completed=True, failed=True, endTimestamp=api.now())
                vmi_status["migrationState"] = state
                await self.write_vmi(vmi, vmi_status)
        new["phase"] = phase
        _stamp(new, phase)
        await self.write_status(migration, new)

    async def write_vmi(
        self, vmi: Obj, new_status: dict[str, Any], labels: dict[str, str] | None = None
    ) -> None:
        updated = copy.deepcopy(vmi)
        updated["status"] = new_status
        if labels is not None:
            updated["metadata"]["labels"] = labels
        await self.client.replace(updated)


# ---- helpers ------------------------------------------------------------------------------------------


def _flag(status: dict[str, Any], name: str, value: bool) -> None:
    # KubeVirt's `created` and `ready` are omitempty booleans: absent when false.
    if value:
        status[name] = True
    else:
        status.pop(name, None)


def _has_start_request(vm: Obj) -> bool:
    requests = api.status(vm).get("stateChangeRequests") or []
    return bool(requests) and requests[0].get("action") == "Start"


def _has_stop_request(vm: Obj, vmi: Obj | None) -> bool:
    requests = api.status(vm).get("stateChangeRequests") or []
    return (
        vmi is not None
        and bool(requests)
        and requests[0].get("action") == "Stop"
        and requests[0].get("uid") == vmi["metadata"]["uid"]
    )


def _trim_first_request(request: dict[str, Any], vmi: Obj | None) -> bool:
    """vm.go isTrimFirstChangeRequestNeeded."""
    if request.get("action") == "Stop":
        return vmi is None or not request.get("uid") or request["uid"] != vmi["metadata"]["uid"]
    if request.get("action") == "Start":
        return vmi is not None and not api.deleting(vmi) and not api.is_final(vmi)
    return False


def _set_to_start(vm: Obj, vmi: Obj | None) -> bool:
    """vm.go isSetToStart."""
    strategy = api.run_strategy(vm)
    if strategy == "Always":
        return True
    if strategy == "Manual":
        return not _has_stop_request(vm, vmi) if vmi is not None else _has_start_request(vm)
    if strategy == "RerunOnFailure":
        return api.phase(vmi) != "Succeeded" if vmi is not None else True
    if strategy == "Once":
        return vmi is None
    return False


def _claim_name(volume: dict[str, Any]) -> str:
    if "persistentVolumeClaim" in volume:
        return str(volume["persistentVolumeClaim"].get("claimName", ""))
    if "dataVolume" in volume:
        return str(volume["dataVolume"].get("name", ""))
    return ""


def _vm_conditions(old: list[dict[str, Any]], vmi: Obj | None) -> list[dict[str, Any]]:
    """vm.go syncConditions: Ready from the VMI (or why there is none), the VMI's other conditions copied."""
    vm_only = ("Failure", "RestartRequired")
    if vmi is None:
        ready: dict[str, Any] = {"status": "False", "reason": "VMINotExists", "message": "VMI does not exist"}
    else:
        vmi_ready = api.condition(vmi, "Ready")
        if vmi_ready is None:
            ready = {
                "status": "False",
                "reason": "VMIConditionMissing",
                "message": "VMI is missing the Ready condition",
            }
        else:
            ready = {
                k: vmi_ready[k]
                for k in ("status", "reason", "message", "lastTransitionTime")
                if vmi_ready.get(k)
            }
    previous = next((c for c in old if c.get("type") == "Ready"), None)
    if previous is not None and all(previous.get(k) == ready.get(k) for k in ("status", "reason", "message")):
        ready_condition = previous
    else:
        ready_condition = {"type": "Ready", "lastProbeTime": None, "lastTransitionTime": api.now(), **ready}
    conditions = [ready_condition, *[c for c in old if c.get("type") in vm_only]]
    if vmi is not None:
        conditions += [
            dict(c)
            for c in api.status(vmi).get("conditions") or []
            if c.get("type") not in ("Ready", *vm_only)
        ]
    return conditions


def _pod_ready(pod: Obj) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def _compute_image(pod: Obj) -> str:
    for container in pod["spec"].get("containers") or []:
        if container.get("name") == "compute":
            return str(container.get("image", ""))
    return ""


def _ready_from_pod(
    conditions: list[dict[str, Any]], vmi: Obj, pod: Obj | None, pod_down: bool
) -> list[dict[str, Any]]:
    """lifecycle.go syncReadyConditionFromPod."""
    if pod is None:
        ready = {
            "status": "False",
            "reason": "PodNotExists",
            "message": "virt-launcher pod has not yet been scheduled",
        }
    elif pod_down:
        ready = {"status": "False", "reason": "PodTerminating", "message": "virt-launcher pod is terminating"}
    elif api.phase(vmi) != "Running":
        ready = {
            "status": "False",
            "reason": "GuestNotRunning",
            "message": "Guest VM is not reported as running",
        }
    else:
        pod_condition = next(
            (c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
        )
        if pod_condition is None:
            ready = {
                "status": "False",
                "reason": "PodConditionMissing",
                "message": "virt-launcher pod is missing the Ready condition",
            }
        else:
            ready = {"status": pod_condition.get("status", "False")}
            for field in ("reason", "message"):
                if pod_condition.get(field):
                    ready[field] = pod_condition[field]
    current = api.condition(vmi, "Ready")
    if current is not None and all(current.get(k) == ready.get(k) for k in ("status", "reason", "message")):
        return conditions
    return api.set_condition(
        conditions, {"type": "Ready", **ready, "lastProbeTime": None, "lastTransitionTime": api.now()}
    )


def _pod_scheduled_condition(conditions: list[dict[str, Any]], pod: Obj) -> list[dict[str, Any]]:
    """A pod the scheduler cannot place: the VMI's PodScheduled condition False (the VM unschedulable)."""
    scheduled = next(
        (c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"),
        None,
    )
    if scheduled is not None and scheduled.get("status") == "False":
        return api.set_condition(conditions, {**scheduled, "lastProbeTime": None})
    return [c for c in conditions if c.get("type") != "PodScheduled"]


def _interfaces(vmi: Obj, pod: Obj) -> list[dict[str, Any]]:
    """The pod network's interface, as virt-controller reports it from the launcher pod's IPs."""
    spec = vmi.get("spec") or {}
    pod_network = next((n["name"] for n in spec.get("networks") or [] if "pod" in n), None)
    names = [i["name"] for i in (spec.get("domain") or {}).get("devices", {}).get("interfaces") or []]
    name = pod_network or (names[0] if names else "default")
    st = pod.get("status") or {}
    ips = [p["ip"] for p in st.get("podIPs") or [] if p.get("ip")] or (
        [st["podIP"]] if st.get("podIP") else []
    )
    interface: dict[str, Any] = {
        "name": name,
        "podInterfaceName": "eth0",
        "infoSource": "domain",
        "queueCount": 1,
    }
    if ips:
        interface["ipAddress"] = ips[0]
        interface["ipAddresses"] = ips
    return [interface]


def _stamp(status: dict[str, Any], phase: str) -> None:
    stamps = list(status.get("phaseTransitionTimestamps") or [])
    stamps.append({"phase": phase, "phaseTransitionTimestamp": api.now()})
    status["phaseTransitionTimestamps"] = stamps


async def serve(kubeconfig: Path, ready_file: Path | None = None) -> None:
    api.register_kinds()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        with contextlib.suppress(asyncio.CancelledError):
            await Controller(client).run(stop, ready_file)
