"""The host's stand-in for KubeVirt (tests/standins/kubevirt), against the session's real local host.

Not KubeVirt: its imitation for tests, on KubeVirt's real CRDs. These tests hold it to what KubeVirt
does, so that vnest's KubeVirt integration can later be tested against it: a VirtualMachine with a
DataVolume template, a cloud-init Secret and runStrategy Always runs (DataVolume Succeeded, its
claim bound, the VMI Pending, Scheduling, Scheduled, Running in a launcher pod as KubeVirt renders
it); virt-api's subresources answer through the host API server (stop, start, restart, migrate,
pause, unpause, the console, VNC and port-forward WebSockets) and refuse whom RBAC refuses;
deleting the VM removes everything it made.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import ClientSession, WSMsgType

from tests.standins.kubevirt import StandIn
from vnest import binaries
from vnest.procs import wait_until

SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"
WAIT = 60.0


@pytest.fixture
def ns(kubevirt_host: StandIn) -> Iterator[str]:
    name = f"kv-{uuid.uuid4().hex[:8]}"
    kubectl(kubevirt_host, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(kubevirt_host, "delete", "namespace", name, "--wait=false", check=False)


def kubectl(
    standin: StandIn, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(binaries.ensure().kubectl), "--kubeconfig", str(standin.kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def get(standin: StandIn, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    out = kubectl(standin, "get", kind, name, "-n", ns, "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def put(
    standin: StandIn, ns: str, path: str, *extra: str, body: str = "{}"
) -> subprocess.CompletedProcess[str]:
    """A PUT to virt-api's subresource through the host API server (kubectl's raw replace)."""
    return kubectl(
        standin,
        "replace",
        "--raw",
        f"{SUBRESOURCES}/namespaces/{ns}/{path}",
        "-f",
        "-",
        *extra,
        input=body,
        check=False,
    )


def vm_manifest(ns: str, name: str = "vm1") -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-cloud-init", "namespace": ns},
            "stringData": {"userdata": "#cloud-config\npassword: stand-in\nchpasswd: {expire: false}\n"},
        },
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "runStrategy": "Always",
                "dataVolumeTemplates": [
                    {
                        "metadata": {"name": f"{name}-root"},
                        "spec": {
                            "source": {"blank": {}},
                            "storage": {"resources": {"requests": {"storage": "2Gi"}}},
                        },
                    }
                ],
                "template": {
                    "metadata": {
                        "labels": {"app": name, "kubevirt.io/vm": name},
                        "annotations": {"example.com/note": "hi"},
                    },
                    "spec": {
                        "domain": {
                            "devices": {
                                "disks": [
                                    {"name": "root", "disk": {"bus": "virtio"}},
                                    {"name": "cloud-init", "disk": {"bus": "virtio"}},
                                ],
                                "interfaces": [{"name": "default", "masquerade": {}}],
                            },
                            "resources": {"requests": {"memory": "128Mi", "cpu": "100m"}},
                        },
                        "networks": [{"name": "default", "pod": {}}],
                        "volumes": [
                            {"name": "root", "dataVolume": {"name": f"{name}-root"}},
                            {
                                "name": "cloud-init",
                                "cloudInitNoCloud": {"secretRef": {"name": f"{name}-cloud-init"}},
                            },
                        ],
                    },
                },
            },
        },
    ]


def create_vm(standin: StandIn, ns: str, name: str = "vm1") -> None:
    kubectl(
        standin,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": vm_manifest(ns, name)}),
    )


def running_vmi(standin: StandIn, ns: str, name: str = "vm1") -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        vmi = get(standin, "vmi", name, ns)
        vm = get(standin, "vm", name, ns)
        ready = vm and vm.get("status", {}).get("printableStatus") == "Running"
        return vmi if ready and vmi and vmi.get("status", {}).get("phase") == "Running" else None

    return wait_until(running, WAIT, f"VMI {ns}/{name} Running", interval=0.2)


def launcher_pods(standin: StandIn, ns: str, vmi: dict[str, Any]) -> list[dict[str, Any]]:
    selector = f"kubevirt.io=virt-launcher,kubevirt.io/created-by={vmi['metadata']['uid']}"
    items: list[dict[str, Any]] = json.loads(
        kubectl(standin, "get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def printable(standin: StandIn, ns: str, name: str = "vm1") -> str:
    vm = get(standin, "vm", name, ns)
    return str((vm or {}).get("status", {}).get("printableStatus", ""))


def test_a_vm_with_a_datavolume_and_cloud_init_runs_in_a_launcher_pod(kubevirt_host, ns):
    create_vm(kubevirt_host, ns)
    vmi = running_vmi(kubevirt_host, ns)

    dv = get(kubevirt_host, "datavolume", "vm1-root", ns)
    assert dv is not None
    assert dv["status"]["phase"] == "Succeeded" and dv["status"]["progress"] == "100.0%"
    assert {c["type"]: c["status"] for c in dv["status"]["conditions"]} == {
        "Bound": "True",
        "Ready": "True",
        "Running": "False",
    }
    assert dv["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"
    claim = get(kubevirt_host, "pvc", "vm1-root", ns)
    assert claim is not None and claim["status"]["phase"] == "Bound"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["metadata"]["ownerReferences"][0]["kind"] == "DataVolume"
    volume = kubectl(kubevirt_host, "get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout
    assert json.loads(volume)["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]

    # The VMI went through KubeVirt's phases, KWOK's stage (virt-handler) making it Running.
    phases = [t["phase"] for t in vmi["status"]["phaseTransitionTimestamps"]]
    assert phases == ["Pending", "Scheduling", "Scheduled", "Running"]
    assert {c["type"]: c["status"] for c in vmi["status"]["conditions"]}["Ready"] == "True"
    assert set(vmi["metadata"]["finalizers"]) == {
        "foregroundDeleteVirtualMachine",
        "kubevirt.io/virtualMachineControllerFinalize",
    }
    owner = vmi["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "VirtualMachine",
        "vm1",
        True,
        True,
    )
    assert (
        vmi["metadata"]["labels"]["app"] == "vm1"
        and vmi["metadata"]["annotations"]["example.com/note"] == "hi"
    )

    [pod] = launcher_pods(kubevirt_host, ns, vmi)
    assert (
        pod["metadata"]["name"].startswith("virt-launcher-vm1-")
        and len(pod["metadata"]["name"]) == len("virt-launcher-vm1-") + 5
    )
    assert pod["status"]["phase"] == "Running"
    labels = pod["metadata"]["labels"]
    assert (
        labels["kubevirt.io"] == "virt-launcher"
        and labels["kubevirt.io/created-by"] == vmi["metadata"]["uid"]
    )
    assert labels["vm.kubevirt.io/name"] == "vm1" and labels["app"] == "vm1"
    assert pod["metadata"]["annotations"]["kubevirt.io/domain"] == "vm1"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "VirtualMachineInstance",
        vmi["metadata"]["uid"],
        True,
    )
    assert pod["spec"]["containers"][0]["name"] == "compute"
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["root"]["persistentVolumeClaim"]["claimName"] == "vm1-root"
    assert volumes["cloud-init-udata"]["secret"]["secretName"] == "vm1-cloud-init"

    # What virt-controller reports once the pod runs: node, IPs, active pods, launcher image.
    status = vmi["status"]
    assert status["nodeName"] == pod["spec"]["nodeName"] == vmi["metadata"]["labels"]["kubevirt.io/nodeName"]
    [interface] = status["interfaces"]
    assert interface["name"] == "default" and interface["ipAddress"] == pod["status"]["podIP"]
    assert interface["ipAddresses"] == [ip["ip"] for ip in pod["status"]["podIPs"]]
    assert status["activePods"] == {pod["metadata"]["uid"]: pod["spec"]["nodeName"]}
    assert status["launcherContainerImageVersion"] == pod["spec"]["containers"][0]["image"]
    vm = get(kubevirt_host, "vm", "vm1", ns)
    assert vm is not None
    assert (
        vm["status"]["ready"] is True
        and vm["status"]["created"] is True
        and vm["status"]["runStrategy"] == "Always"
    )
    assert {c["type"]: c["status"] for c in vm["status"]["conditions"]}["Ready"] == "True"


def test_stop_and_start_through_the_host_api_server(kubevirt_host, ns):
    discovery = json.loads(kubectl(kubevirt_host, "get", "--raw", SUBRESOURCES).stdout)
    names = {r["name"] for r in discovery["resources"]}
    assert {"virtualmachines/start", "virtualmachines/stop", "virtualmachineinstances/console"} <= names

    create_vm(kubevirt_host, ns)
    first = running_vmi(kubevirt_host, ns)
    [pod] = launcher_pods(kubevirt_host, ns, first)

    assert put(kubevirt_host, ns, "virtualmachines/vm1/stop").returncode == 0
    wait_until(lambda: get(kubevirt_host, "vmi", "vm1", ns) is None, WAIT, "the VMI to go", interval=0.2)
    wait_until(lambda: printable(kubevirt_host, ns) == "Stopped", WAIT, "the VM Stopped", interval=0.2)
    wait_until(
        lambda: get(kubevirt_host, "pod", pod["metadata"]["name"], ns) is None, WAIT, "the launcher pod to go"
    )
    vm = get(kubevirt_host, "vm", "vm1", ns)
    assert vm is not None and vm["spec"]["runStrategy"] == "Halted" and not vm["status"].get("ready")
    again = put(kubevirt_host, ns, "virtualmachines/vm1/stop")
    assert again.returncode != 0 and "Conflict" in again.stderr and "VM is not running" in again.stderr
    missing = put(kubevirt_host, ns, "virtualmachines/nope/stop")
    assert missing.returncode != 0 and "NotFound" in missing.stderr

    assert put(kubevirt_host, ns, "virtualmachines/vm1/start").returncode == 0
    second = running_vmi(kubevirt_host, ns)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    vm = get(kubevirt_host, "vm", "vm1", ns)
    assert vm is not None and vm["spec"]["runStrategy"] == "Always"
    started = put(kubevirt_host, ns, "virtualmachines/vm1/start")
    assert started.returncode != 0 and "VM is already running" in started.stderr


def test_restart_pause_and_migrate(kubevirt_host, ns):
    create_vm(kubevirt_host, ns)
    first = running_vmi(kubevirt_host, ns)

    assert put(kubevirt_host, ns, "virtualmachines/vm1/restart").returncode == 0
    wait_until(
        lambda: (
            (v := get(kubevirt_host, "vmi", "vm1", ns)) and v["metadata"]["uid"] != first["metadata"]["uid"]
        ),
        WAIT,
        "a new VMI",
    )
    vmi = running_vmi(kubevirt_host, ns)
    vm = get(kubevirt_host, "vm", "vm1", ns)
    assert vm is not None and not vm["status"].get("stateChangeRequests")

    assert put(kubevirt_host, ns, "virtualmachineinstances/vm1/pause").returncode == 0
    wait_until(lambda: printable(kubevirt_host, ns) == "Paused", WAIT, "the VM Paused", interval=0.2)
    paused = get(kubevirt_host, "vmi", "vm1", ns)
    assert paused is not None and any(
        c["type"] == "Paused" and c["status"] == "True" for c in paused["status"]["conditions"]
    )
    assert "VMI is already paused" in put(kubevirt_host, ns, "virtualmachineinstances/vm1/pause").stderr
    assert put(kubevirt_host, ns, "virtualmachineinstances/vm1/unpause").returncode == 0
    wait_until(lambda: printable(kubevirt_host, ns) == "Running", WAIT, "the VM Running again", interval=0.2)

    source = vmi["status"]["nodeName"]
    assert put(kubevirt_host, ns, "virtualmachines/vm1/migrate").returncode == 0

    def migrated() -> dict[str, Any] | None:
        found = json.loads(kubectl(kubevirt_host, "get", "vmim", "-n", ns, "-o", "json").stdout)["items"]
        return found[0] if found and found[0].get("status", {}).get("phase") == "Succeeded" else None

    migration = wait_until(migrated, WAIT, "the migration to succeed", interval=0.2)
    assert (
        migration["metadata"]["generateName"] == "kubevirt-migrate-vm-"
        and migration["spec"]["vmiName"] == "vm1"
    )
    moved = get(kubevirt_host, "vmi", "vm1", ns)
    assert moved is not None
    state = moved["status"]["migrationState"]
    assert state["completed"] and not state["failed"] and state["sourceNode"] == source
    nodes = json.loads(kubectl(kubevirt_host, "get", "nodes", "-o", "json").stdout)["items"]
    if len(nodes) > 1:
        assert state["targetNode"] != source

    def one_pod() -> list[dict[str, Any]] | None:
        pods = launcher_pods(kubevirt_host, ns, moved)
        return pods if len(pods) == 1 else None

    [pod] = wait_until(one_pod, WAIT, "the source pod to go")
    assert pod["metadata"]["name"] == state["targetPod"] and pod["spec"]["nodeName"] == state["targetNode"]
    assert moved["status"]["nodeName"] == state["targetNode"]
    assert moved["status"]["interfaces"][0]["ipAddress"] == pod["status"]["podIP"]


def small_vm(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    """A VM booting from a container disk: no DataVolume to wait for."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            **spec,
            "template": {
                "spec": {
                    "domain": {
                        "devices": {"disks": [{"name": "disk", "disk": {"bus": "virtio"}}]},
                        "memory": {"guest": "64Mi"},
                    },
                    "volumes": [
                        {"name": "disk", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}
                    ],
                }
            },
        },
    }


def stopped(standin: StandIn, ns: str, name: str) -> Callable[[], bool]:
    return lambda: printable(standin, ns, name) == "Stopped"


def vmi_uid(standin: StandIn, ns: str, name: str) -> str:
    vmi = get(standin, "vmi", name, ns)
    return str(vmi["metadata"]["uid"]) if vmi else ""


def test_run_strategies_and_a_launcher_that_dies(kubevirt_host, ns):
    vms = [
        small_vm(ns, "manual", runStrategy="Manual"),
        small_vm(ns, "legacy", running=False),
        small_vm(ns, "rerun", runStrategy="RerunOnFailure"),
    ]
    kubectl(
        kubevirt_host,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": vms}),
    )
    rerun = running_vmi(kubevirt_host, ns, "rerun")
    [pod] = launcher_pods(kubevirt_host, ns, rerun)
    assert pod["spec"]["containers"][1]["name"] == "volumedisk"
    assert pod["spec"]["containers"][1]["image"] == "quay.io/containerdisks/fedora:latest"
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"memory": "64Mi"}
    for name in ("manual", "legacy"):
        wait_until(stopped(kubevirt_host, ns, name), WAIT, f"{name} Stopped", interval=0.2)
        assert get(kubevirt_host, "vmi", name, ns) is None

    # Manual: start and stop are state change requests the controller acts on.
    assert put(kubevirt_host, ns, "virtualmachines/manual/start").returncode == 0
    manual = running_vmi(kubevirt_host, ns, "manual")
    vm = get(kubevirt_host, "vm", "manual", ns)
    assert (
        vm is not None
        and vm["spec"]["runStrategy"] == "Manual"
        and not vm["status"].get("stateChangeRequests")
    )
    # Its launcher dies: the VMI fails, and a Manual VM stays down.
    [pod] = launcher_pods(kubevirt_host, ns, manual)
    kubectl(kubevirt_host, "delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    wait_until(
        lambda: (v := get(kubevirt_host, "vmi", "manual", ns)) and v["status"]["phase"] == "Failed",
        WAIT,
        "a Failed VMI",
    )
    wait_until(
        lambda: printable(kubevirt_host, ns, "manual") == "Stopped", WAIT, "manual Stopped", interval=0.2
    )
    assert vmi_uid(kubevirt_host, ns, "manual") == manual["metadata"]["uid"]
    assert put(kubevirt_host, ns, "virtualmachines/manual/start").returncode == 0
    wait_until(
        lambda: vmi_uid(kubevirt_host, ns, "manual") not in ("", manual["metadata"]["uid"]), WAIT, "a new VMI"
    )
    running_vmi(kubevirt_host, ns, "manual")
    assert put(kubevirt_host, ns, "virtualmachines/manual/stop").returncode == 0
    wait_until(
        lambda: get(kubevirt_host, "vmi", "manual", ns) is None, WAIT, "manual's VMI to go", interval=0.2
    )

    # Legacy spec.running: start and stop flip it.
    assert put(kubevirt_host, ns, "virtualmachines/legacy/start").returncode == 0
    running_vmi(kubevirt_host, ns, "legacy")
    vm = get(kubevirt_host, "vm", "legacy", ns)
    assert vm is not None and vm["spec"]["running"] is True and "runStrategy" not in vm["spec"]
    assert "VM is already running" in put(kubevirt_host, ns, "virtualmachines/rerun/start").stderr

    # RerunOnFailure: a failed VMI is replaced.
    [pod] = launcher_pods(kubevirt_host, ns, rerun)
    kubectl(kubevirt_host, "delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    wait_until(
        lambda: vmi_uid(kubevirt_host, ns, "rerun") not in ("", rerun["metadata"]["uid"]), WAIT, "a new VMI"
    )
    running_vmi(kubevirt_host, ns, "rerun")


def test_whom_rbac_refuses_is_refused(kubevirt_host, ns):
    create_vm(kubevirt_host, ns)
    running_vmi(kubevirt_host, ns)

    # The host API server authorizes the aggregated request first: 403 for a user without RBAC.
    refused = put(kubevirt_host, ns, "virtualmachines/vm1/stop", "--as=nobody")
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    assert (
        'cannot update resource "virtualmachines/stop" in API group "subresources.kubevirt.io"'
        in refused.stderr
    )

    # Granted stop only (as KubeVirt's kubevirt.io:edit role grants it): stop works, start does not.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "vm-stopper", "namespace": ns},
        "rules": [
            {
                "apiGroups": ["subresources.kubevirt.io"],
                "resources": ["virtualmachines/stop"],
                "verbs": ["update"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "vm-stopper", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm-stopper"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    kubectl(
        kubevirt_host,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}),
    )
    assert put(kubevirt_host, ns, "virtualmachines/vm1/stop", "--as=alice").returncode == 0
    wait_until(lambda: printable(kubevirt_host, ns) == "Stopped", WAIT, "the VM Stopped", interval=0.2)
    assert "Forbidden" in put(kubevirt_host, ns, "virtualmachines/vm1/start", "--as=alice").stderr

    # virt-api's own SubjectAccessReview, asked directly: a refusal is 401 as KubeVirt answers it.
    ca = kubevirt_host.workdir / "pki" / "ca.crt"
    url = f"https://127.0.0.1:{kubevirt_host.port}{SUBRESOURCES}/namespaces/{ns}/virtualmachines/vm1/start"
    verify = ssl.create_default_context(cafile=str(ca))
    answer = httpx.put(
        url,
        content=b"{}",
        headers={"X-Remote-User": "nobody", "X-Remote-Group": "system:authenticated"},
        verify=verify,
    )
    assert answer.status_code == 401
    if kubevirt_host.front_proxy:
        # The host's aggregator presents a front-proxy certificate: a call without one is unauthenticated.
        assert answer.text == "request is not authenticated"
    else:
        # No front-proxy CA on this host: the user the headers name is reviewed, and allowed when RBAC allows.
        admin = httpx.put(
            url,
            content=b"{}",
            headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
            verify=verify,
        )
        assert admin.status_code == 202
        running_vmi(kubevirt_host, ns)


def _host_ssl(standin: StandIn) -> tuple[str, ssl.SSLContext]:
    config = yaml.safe_load(standin.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    pki = standin.kubeconfig.parent / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return server.replace("https://", "wss://"), context


async def _exchange(url: str, context: ssl.SSLContext, sends: list[bytes]) -> tuple[str, list[bytes]]:
    """Opens a WebSocket through the host API server; returns the subprotocol and what came back."""
    received: list[bytes] = []
    async with (
        ClientSession() as session,
        session.ws_connect(url, ssl=context, protocols=("plain.kubevirt.io",)) as ws,
    ):
        protocol = ws.protocol or ""
        for data in sends:
            if data:
                await ws.send_bytes(data)
            message = await ws.receive(timeout=10)
            assert message.type == WSMsgType.BINARY, message
            received.append(message.data)
    return protocol, received


def test_console_vnc_and_portforward_over_websocket_through_the_host_api_server(kubevirt_host, ns):
    create_vm(kubevirt_host, ns)
    running_vmi(kubevirt_host, ns)
    base, context = _host_ssl(kubevirt_host)
    vmi_path = f"{base}{SUBRESOURCES}/namespaces/{ns}/virtualmachineinstances/vm1"

    protocol, got = asyncio.run(_exchange(f"{vmi_path}/console", context, [b"", b"hello console\r\n"]))
    assert protocol == "plain.kubevirt.io"
    assert got == [f"stand-in console of {ns}/vm1\r\n".encode(), b"hello console\r\n"]
    _, got = asyncio.run(_exchange(f"{vmi_path}/vnc", context, [b"", b"RFB 003.008\n"]))
    assert got == [b"RFB 003.008\n", b"RFB 003.008\n"]
    _, got = asyncio.run(_exchange(f"{vmi_path}/portforward/22", context, [b"SSH-2.0-test\r\n"]))
    assert got == [b"SSH-2.0-test\r\n"]

    refused = subprocess.run(
        [
            str(binaries.ensure().kubectl),
            "--kubeconfig",
            str(kubevirt_host.kubeconfig),
            "get",
            "--raw",
            f"{SUBRESOURCES}/namespaces/{ns}/virtualmachineinstances/nope/console",
        ],
        capture_output=True,
        text=True,
    )
    assert "NotFound" in refused.stderr


def test_deleting_the_vm_removes_its_vmi_pod_datavolume_and_claim(kubevirt_host, ns):
    create_vm(kubevirt_host, ns)
    vmi = running_vmi(kubevirt_host, ns)
    [pod] = launcher_pods(kubevirt_host, ns, vmi)
    claim = get(kubevirt_host, "pvc", "vm1-root", ns)
    assert claim is not None

    kubectl(kubevirt_host, "delete", "vm", "vm1", "-n", ns, "--wait=false")

    def gone() -> bool:
        left = [
            ("vm", "vm1"),
            ("vmi", "vm1"),
            ("pod", pod["metadata"]["name"]),
            ("datavolume", "vm1-root"),
            ("pvc", "vm1-root"),
        ]
        return all(get(kubevirt_host, kind, name, ns) is None for kind, name in left)

    wait_until(gone, WAIT, "the VM and all it made to go", interval=0.3)
    volume = claim["spec"]["volumeName"]
    wait_until(
        lambda: (
            not kubectl(kubevirt_host, "get", "pv", volume, "--ignore-not-found", "-o", "name").stdout.strip()
        ),
        WAIT,
        "the claim's volume to go",
    )


def test_the_stand_in_says_what_it_is():
    # Every module of the stand-in says it is the host's stand-in for tests, not KubeVirt.
    folder = Path(__file__).resolve().parents[1] / "standins" / "kubevirt"
    for module in sorted(folder.glob("*.py")):
        doc = module.read_text().split('"""')[1]
        assert "stand-in" in doc and "for tests" in doc and "not" in doc, module.name


def test_virt_api_behind_an_aggregator_with_a_front_proxy_certificate(host_env):
    """The local host's API server has no front-proxy client certificate (its aggregator calls
    virt-api with none); a virtual cluster's API server has one, so virt-api's stand-in is held
    there to what virt-api requires: the aggregator's certificate, then the SubjectAccessReview."""
    name = f"kvfp-{uuid.uuid4().hex[:6]}"
    host_ns = f"{name}-host"
    host_env.vnest("create", name, "-n", host_ns, "--no-connect")
    standin = None
    try:
        config = host_env.root / f"{name}.kubeconfig"
        host_env.vnest("connect", name, "-n", host_ns, "--kube-config", str(config))
        standin = StandIn(config, Path(tempfile.mkdtemp(prefix="kubevirt-standin-")))
        standin.start_virt_api()
        standin.register()
        assert standin.front_proxy

        # Through the aggregator: its certificate authenticates, the review allows the admin, and the
        # VM is looked up (this cluster has none).
        path = f"{SUBRESOURCES}/namespaces/default/virtualmachines/vm1/stop"
        through = kubectl(standin, "replace", "--raw", path, "-f", "-", input="{}", check=False)
        assert 'virtualmachine.kubevirt.io "vm1" not found' in through.stderr
        refused = kubectl(
            standin, "replace", "--raw", path, "-f", "-", "--as=nobody", input="{}", check=False
        )
        assert "Forbidden" in refused.stderr

        # Straight to virt-api, headers without the aggregator's certificate: not authenticated.
        verify = ssl.create_default_context(cafile=str(standin.workdir / "pki" / "ca.crt"))
        answer = httpx.put(
            f"https://127.0.0.1:{standin.port}{path}",
            content=b"{}",
            headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
            verify=verify,
        )
        assert (answer.status_code, answer.text) == (401, "request is not authenticated")
    finally:
        if standin is not None:
            standin.stop()
        host_env.vnest("delete", name, "-n", host_ns, "--delete-namespace", check=False)
