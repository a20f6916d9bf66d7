"""The host's stand-in for KubeVirt, for tests (not KubeVirt): the virt-launcher pod of a VMI.

Imitates what KubeVirt's TemplateService renders (pkg/virt-controller/services/template.go,
``renderLaunchManifest``; the volumes after rendervolumes.go): a pod named by ``generateName``
``virt-launcher-<vmi>-`` (the API server adds five random characters), labelled with the VMI's
labels plus ``kubevirt.io: virt-launcher``, ``kubevirt.io/created-by: <vmi uid>``,
``vm.kubevirt.io/name`` and ``vmi.kubevirt.io/id``; annotated ``kubevirt.io/domain: <vmi>`` plus
the VMI's annotations (kubectl's and KubeVirt's bookkeeping ones left out), the default container
and the migration transport; controlled by the VMI; a ``compute`` container first, with the VMI's
requests and limits; one pod volume per VMI volume (persistentVolumeClaim and dataVolume: the
claim; secret, configMap, downwardAPI; cloudInitNoCloud/ConfigDrive secret references:
``<volume>-udata``, ``-ndata``, ``-mdata`` secret volumes; serviceAccount: the pod's service
account with its token mounted; containerDisk: a ``volume<name>`` container beside the shared
``container-disks`` emptyDir) next to KubeVirt's own emptyDirs; the VMI's nodeSelector, affinity,
tolerations, topology spread, priority class, scheduler name, DNS, hostname and subdomain; the
``kubevirt.io/virtual-machine-unpaused`` readiness gate; restart policy Never.

Not imitated: the launcher's command line, probes, the memory overhead added to requests, the
``devices.kubevirt.io/*`` resources (KWOK nodes have none, a pod asking for them would never be
scheduled), init containers, hook sidecars, SELinux and seccomp settings, Multus annotations.
"""

from __future__ import annotations

import re
from typing import Any

from vnest.kube.client import Obj

from . import api

NON_ROOT_UID = 107  # KubeVirt's qemu user: launchers run as it unless the Root feature gate is on
PRIVATE_DIR = "/var/run/kubevirt-private"
SECRET_DIR = f"{PRIVATE_DIR}/secret"
CONFIGMAP_DIR = f"{PRIVATE_DIR}/config-map"
DOWNWARD_API_DIR = f"{PRIVATE_DIR}/downwardapi"
DISKS_DIR = f"{PRIVATE_DIR}/vmi-disks"
# KubeVirt's own emptyDirs, with where the compute container mounts them (None: not mounted there).
BASE_VOLUMES: list[tuple[str, str | None]] = [
    ("private", PRIVATE_DIR),
    ("public", "/var/run/kubevirt"),
    ("sockets", "/var/run/kubevirt/sockets"),
    ("virt-bin-share-dir", None),
    ("libvirt-runtime", "/var/run/libvirt"),
    ("ephemeral-disks", "/var/run/kubevirt-ephemeral-disks"),
    ("container-disks", "/var/run/kubevirt/container-disks"),
    ("hotplug-disks", "/var/run/kubevirt/hotplug-disks"),
]


def hostname(vmi: Obj) -> str:
    """dns.SanitizeHostname: spec.hostname, else the VMI's name, dots replaced, at most 63 characters."""
    name = (vmi.get("spec") or {}).get("hostname") or vmi["metadata"]["name"]
    return re.sub(r"\.", "-", str(name))[:63]


def _claim(volume_name: str, claim: str, read_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    source: dict[str, Any] = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return (
        {"name": volume_name, "persistentVolumeClaim": source},
        {"name": volume_name, "mountPath": f"{DISKS_DIR}/{volume_name}"},
    )


def _secret_ref(volume: str, suffix: str, secret: str, files: tuple[str, ...]) -> tuple[Obj, list[Obj]]:
    name = f"{volume}-{suffix}"
    mounts = [
        {"name": name, "mountPath": f"{SECRET_DIR}/{volume}/{f}", "subPath": f, "readOnly": True}
        for f in files
    ]
    return {"name": name, "secret": {"secretName": secret}}, mounts


def render_volumes(vmi: Obj) -> tuple[list[Obj], list[Obj], list[Obj], str]:
    """(pod volumes, compute mounts, containerDisk containers, service account) for the VMI's volumes."""
    volumes: list[Obj] = [{"name": n, "emptyDir": {}} for n, _ in BASE_VOLUMES]
    mounts: list[Obj] = [{"name": n, "mountPath": p} for n, p in BASE_VOLUMES if p]
    disk_containers: list[Obj] = []
    service_account = ""
    for index, vol in enumerate((vmi.get("spec") or {}).get("volumes") or []):
        name = vol["name"]
        if "persistentVolumeClaim" in vol:
            pvc = vol["persistentVolumeClaim"]
            v, m = _claim(name, pvc["claimName"], bool(pvc.get("readOnly")))
            volumes.append(v)
            mounts.append(m)
        elif "dataVolume" in vol:
            v, m = _claim(name, vol["dataVolume"]["name"])
            volumes.append(v)
            mounts.append(m)
        elif "secret" in vol:
            src = {"secretName": vol["secret"]["secretName"]}
            if "optional" in vol["secret"]:
                src["optional"] = vol["secret"]["optional"]
            volumes.append({"name": name, "secret": src})
            mounts.append({"name": name, "mountPath": f"{SECRET_DIR}/{name}", "readOnly": True})
        elif "configMap" in vol:
            src = {"name": vol["configMap"].get("name", "")}
            if "optional" in vol["configMap"]:
                src["optional"] = vol["configMap"]["optional"]
            volumes.append({"name": name, "configMap": src})
            mounts.append({"name": name, "mountPath": f"{CONFIGMAP_DIR}/{name}", "readOnly": True})
        elif "downwardAPI" in vol:
            volumes.append({"name": name, "downwardAPI": {"items": vol["downwardAPI"].get("fields") or []}})
            mounts.append({"name": name, "mountPath": f"{DOWNWARD_API_DIR}/{name}", "readOnly": True})
        elif "serviceAccount" in vol:
            # KubeVirt renders no volume for it: the pod runs as that account, with its token mounted.
            service_account = vol["serviceAccount"]["serviceAccountName"]
        elif "containerDisk" in vol:
            disk = vol["containerDisk"]
            disk_containers.append(
                {
                    "name": f"volume{name}",
                    "image": disk["image"],
                    "imagePullPolicy": disk.get("imagePullPolicy", "IfNotPresent"),
                    "volumeMounts": [
                        {
                            "name": "container-disks",
                            "mountPath": "/var/run/kubevirt-ephemeral-disks/disk-data",
                        }
                    ],
                    "resources": {"requests": {"cpu": "10m", "memory": "40M"}},
                    "env": [{"name": "DISK_INDEX", "value": str(index)}],
                }
            )
        for cloud_init in ("cloudInitNoCloud", "cloudInitConfigDrive"):
            source = vol.get(cloud_init)
            if not source:
                continue
            # cloudInitNoCloud's user data reference is `secretRef` in JSON; accept the Go name too.
            user = source.get("secretRef") or source.get("userDataSecretRef")
            refs = [
                ("udata", user, ("userdata", "userData")),
                ("ndata", source.get("networkDataSecretRef"), ("networkdata", "networkData")),
            ]
            for suffix, ref, files in refs:
                if ref and ref.get("name"):
                    v, ms = _secret_ref(name, suffix, ref["name"], files)
                    volumes.append(v)
                    mounts.extend(ms)
            meta_ref = source.get("metaDataSecretRef")
            if meta_ref and meta_ref.get("name"):
                volumes.append({"name": f"{name}-mdata", "secret": {"secretName": meta_ref["name"]}})
                mounts.append(
                    {"name": f"{name}-mdata", "mountPath": f"{SECRET_DIR}/{name}", "readOnly": True}
                )
    return volumes, mounts, disk_containers, service_account


def _resources(vmi: Obj) -> Obj:
    domain = (vmi.get("spec") or {}).get("domain") or {}
    res = domain.get("resources") or {}
    requests = dict(res.get("requests") or {})
    limits = dict(res.get("limits") or {})
    guest = (domain.get("memory") or {}).get("guest")
    if "memory" not in requests and guest:
        requests["memory"] = guest
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def pod_annotations(vmi: Obj) -> dict[str, str]:
    skipped = (
        "kubectl.kubernetes.io",
        "kubevirt.io/storage-observed-api-version",
        "kubevirt.io/latest-observed-api-version",
    )
    annotations = {
        k: v for k, v in (vmi["metadata"].get("annotations") or {}).items() if not k.startswith(skipped)
    }
    annotations[api.DOMAIN_ANNOTATION] = vmi["metadata"]["name"]
    annotations["kubectl.kubernetes.io/default-container"] = "compute"
    annotations["kubevirt.io/migrationTransportUnix"] = "true"
    annotations["descheduler.alpha.kubernetes.io/request-evict-only"] = ""
    return annotations


def pod_labels(vmi: Obj) -> dict[str, str]:
    name = vmi["metadata"]["name"]
    labels = dict(vmi["metadata"].get("labels") or {})
    labels[api.APP_LABEL] = "virt-launcher"
    labels[api.CREATED_BY_LABEL] = vmi["metadata"]["uid"]
    labels[api.VM_NAME_LABEL] = hostname(vmi)
    labels[api.VMI_ID_LABEL] = name if len(name) <= 63 else name[:63]
    return labels


def render(vmi: Obj, migration: Obj | None = None, avoid_node: str = "") -> Obj:
    """The launcher pod of the VMI; for a migration, its target pod (kept off `avoid_node`)."""
    spec = vmi.get("spec") or {}
    name = vmi["metadata"]["name"]
    volumes, mounts, disk_containers, service_account = render_volumes(vmi)
    grace = int(spec.get("terminationGracePeriodSeconds", 180)) + 15 + 15
    compute: Obj = {
        "name": "compute",
        "image": api.LAUNCHER_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/bin/virt-launcher-monitor"],
        "args": [
            "--name",
            name,
            "--uid",
            vmi["metadata"]["uid"],
            "--namespace",
            vmi["metadata"]["namespace"],
        ],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": _resources(vmi),
        "volumeMounts": mounts,
        "securityContext": {
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
        },
    }
    labels = pod_labels(vmi)
    if migration is not None:
        labels[api.MIGRATION_JOB_LABEL] = migration["metadata"]["uid"]
    pod_spec: Obj = {
        "hostname": hostname(vmi),
        "securityContext": {
            "fsGroup": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "runAsUser": NON_ROOT_UID,
            "runAsNonRoot": True,
        },
        "terminationGracePeriodSeconds": grace,
        "restartPolicy": "Never",
        "containers": [compute, *disk_containers],
        "volumes": volumes,
        "readinessGates": [{"conditionType": api.UNPAUSED_POD_CONDITION}],
        "enableServiceLinks": False,
        "automountServiceAccountToken": bool(service_account),
    }
    if service_account or spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = spec.get("serviceAccountName") or service_account
    for field in (
        "nodeSelector",
        "affinity",
        "tolerations",
        "topologySpreadConstraints",
        "priorityClassName",
        "schedulerName",
        "subdomain",
        "dnsConfig",
        "dnsPolicy",
    ):
        if spec.get(field):
            pod_spec[field] = spec[field]
    if avoid_node:
        # A migration's target pod keeps off the source node, as KubeVirt's migration controller does.
        affinity = pod_spec.setdefault("affinity", {})
        node_affinity = affinity.setdefault("nodeAffinity", {})
        required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        away = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [avoid_node]}
        terms = required.setdefault("nodeSelectorTerms", [])
        if terms:
            for term in terms:
                term.setdefault("matchExpressions", []).append(away)
        else:
            terms.append({"matchExpressions": [away]})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"virt-launcher-{name}-",
            "namespace": vmi["metadata"]["namespace"],
            "labels": labels,
            "annotations": pod_annotations(vmi),
            "ownerReferences": [api.owner_ref(vmi)],
        },
        "spec": pod_spec,
    }
