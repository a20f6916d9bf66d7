"""KWOK's configuration for the local host: stages, and simulated logs, exec, attach, port-forward."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from vnest.naming import ANNOTATION_OWNER_SET_KIND

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# What `kubectl logs` of any pod on the local host returns (the e2e tests read it back).
SIMULATED_LOG = "vnest local host: simulated container log (KWOK)\n"
# KWOK's simulated exec runs a pod's command on this machine. The commands are the tenants'
# (and upstream's conformance specs', e.g. `mv /tmp/index.html /`), so they run as nobody, with
# no supplementary groups, in a scratch folder only nobody may write.
EXEC_UID = 65534


def exec_uid() -> int | None:
    """Whom KWOK's exec runs commands as: nobody when vnest runs as root (as the local host with real
    nodes must); else the user running it, since only root may run commands as another user."""
    return EXEC_UID if os.geteuid() == 0 else None


def render_config(
    *,
    stages: list[Path],
    folder: Path,
    node_port: int,
    tls_cert: Path,
    tls_key: Path,
    pod_cidr: str,
    exec_dir: Path,
) -> str:
    """Writes the files KWOK's resources point at and returns the multi-document config."""
    folder.mkdir(parents=True, exist_ok=True)
    logs_file = folder / "pod.log"
    # KWOK serves the file the way a kubelet serves container logs: in the CRI log format.
    logs_file.write_text(
        "".join(f"2026-01-01T00:00:00.000000000Z stdout F {line}\n" for line in SIMULATED_LOG.splitlines())
    )
    all_pods: dict[str, Any] = {}  # an ObjectSelector that matches every pod

    def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": f"vnest-{kind.lower()}"},
            "spec": {"selector": all_pods, **spec},
        }

    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": {
                "cidr": pod_cidr,
                "nodeIP": "127.0.0.1",
                "nodePort": node_port,
                "serverAddress": f"127.0.0.1:{node_port}",
                "tlsCertFile": str(tls_cert),
                "tlsPrivateKeyFile": str(tls_key),
                "manageAllNodes": False,
                "manageNodesWithAnnotationSelector": f"{FAKE_NODE_ANNOTATION}=fake",
                "nodeLeaseDurationSeconds": 40,
                "enableDebuggingHandlers": True,  # logs, exec, attach, port-forward
                # Values kwokctl uses: set here because a config file gets no defaults.
                "nodeLeaseParallelism": 16,
                "nodePlayStageParallelism": 16,
                "podPlayStageParallelism": 16,
                "podsOnNodeSyncParallelism": 16,
            },
        },
        resource("ClusterLogs", {"logs": [{"logsFile": str(logs_file), "follow": False}]}),
        resource("ClusterAttach", {"attaches": [{"logsFile": str(logs_file)}]}),
        # exec runs the command on this machine as nobody, in its scratch folder: enough to
        # see a round trip through the API server's streaming proxy.
        resource(
            "ClusterExec",
            {
                "execs": [
                    {
                        "local": {
                            "workDir": str(exec_dir),
                            **(
                                {"securityContext": {"runAsUser": uid, "runAsGroup": uid}}
                                if (uid := exec_uid()) is not None
                                else {}
                            ),
                        }
                    }
                ]
            },
        ),
        # Every forwarded port echoes what it receives.
        resource("ClusterPortForward", {"forwards": [{"command": ["cat"]}]}),
    ]
    text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    for stage in stages:
        text += "\n---\n" + stage.read_text()
        if stage.name == "pod-complete.yaml":
            text += "\n---\n" + yaml.safe_dump(virtual_job_pod_complete(yaml.safe_load(stage.read_text())))
    return text


def virtual_job_pod_complete(stage: dict[str, Any]) -> dict[str, Any]:
    """KWOK's pod-complete stage for the host copies of pods a virtual Job controls.

    KWOK finishes a Running pod whose owner is a Job; a synced pod's host copy has no such owner
    (ownership stays in the virtual cluster), so it would run forever and its Job never complete.
    This stage is upstream's, selecting by the annotation the syncer sets instead of the owner."""
    out = copy.deepcopy(stage)
    out["metadata"]["name"] = "vnest-virtual-job-pod-complete"
    expressions = out["spec"]["selector"]["matchExpressions"]
    owner = next(e for e in expressions if e["key"] == ".metadata.ownerReferences.[].kind")
    owner["key"] = f'.metadata.annotations["{ANNOTATION_OWNER_SET_KIND}"]'
    return out


def node_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        },
    }
