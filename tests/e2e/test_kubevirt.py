"""integrations.kubeVirt against the real local host, whose KubeVirt is the tests' stand-in (tests/standins/kubevirt).

The host has KubeVirt's real API (CRDs generated from KubeVirt's published models); what acts on
it is the stand-in: a VM makes a VMI and its DataVolumes, a VMI a `virt-launcher` pod that KWOK
runs, KWOK stages drive the VMI to Running. So these tests prove what vnest does with KubeVirt's
objects (names, references, status, deletion, isolation), not what KubeVirt does with a VM.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from functools import partial

import pytest
import yaml
from aiohttp import ClientSession, WSMsgType

from vnest import naming
from vnest.procs import wait_until

from .vcluster import HOST, VirtualCluster

WAIT = 90
NS = "vms"


class Cluster(VirtualCluster):
    def host(self, kind: str, name: str) -> dict | None:
        out = self.env.kubectl(
            "--context", HOST, "get", kind, name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    def host_gone(self, kind: str, name: str) -> bool:
        """Whether the host copy of virtual object `name` (of namespace vms) is gone."""
        return self.host(kind, self.host_name(name)) is None

    def host_name(self, name: str, namespace: str = NS) -> str:
        return naming.host_name(name, namespace, self.name)

    def host_items(self, kind: str) -> list[dict]:
        out = self.env.kubectl("--context", HOST, "get", kind, "-n", self.namespace, "-o", "json")
        return json.loads(out.stdout)["items"]

    def events(self, name: str) -> list[dict]:
        items = json.loads(self.kubectl("get", "events", "-n", NS, "-o", "json"))["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]


@pytest.fixture
def make_cluster(host_env, kubevirt_host):
    made: list[Cluster] = []

    def make(name: str, values: dict) -> Cluster:
        path = host_env.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        host_env.vnest("create", name, "-n", f"{name}-host", "--no-connect", "-f", str(path))
        made.append(Cluster(host_env, name, f"{name}-host"))
        made[-1].kubectl("create", "namespace", NS)
        return made[-1]

    yield make
    for vc in made:
        host_env.vnest("delete", vc.name, "-n", vc.namespace, check=False)
    host_env.kubectl("config", "use-context", HOST)


KUBEVIRT_ON = {"integrations": {"kubeVirt": {"enabled": True}}}


def secret(name: str, **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def vm(name: str, *, run: str = "Always", volumes: list[dict] | None = None, **spec_extra: object) -> dict:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "runStrategy": run,
            "dataVolumeTemplates": [
                {
                    "metadata": {"name": f"{name}-root"},
                    "spec": {
                        "source": {"blank": {}},
                        "storage": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    },
                }
            ],
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name, "app": name}},
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [
                                {"name": "root", "disk": {"bus": "virtio"}},
                                {"name": "cloudinit", "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [{"name": "default", "masquerade": {}}],
                        },
                        "resources": {"requests": {"memory": "128Mi", "cpu": 1}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "accessCredentials": [
                        {
                            "sshPublicKey": {
                                "source": {"secret": {"secretName": "ssh-key"}},
                                "propagationMethod": {"noCloud": {}},
                            }
                        }
                    ],
                    "volumes": volumes
                    or [
                        {"name": "root", "dataVolume": {"name": f"{name}-root"}},
                        {"name": "cloudinit", "cloudInitNoCloud": {"secretRef": {"name": "cloud-init"}}},
                    ],
                    **spec_extra,
                },
            },
        },
    }


def apply_vm(vc: Cluster, name: str = "web") -> None:
    """A VM with a DataVolume template, a cloud-init Secret and an SSH key, and those Secrets."""
    vc.apply(secret("cloud-init", userdata="#cloud-config\npassword: fedora\n"))
    vc.apply(secret("ssh-key", key="ssh-ed25519 AAAA tenant@laptop"))
    vc.apply(vm(name))


def vmi_running(vc: Cluster, name: str) -> dict | None:
    vmi = vc.get("vmi", name, NS)
    status = (vmi or {}).get("status") or {}
    return (
        vmi
        if status.get("phase") == "Running" and status.get("nodeName") and status.get("interfaces")
        else None
    )


def launcher_pods(vc: Cluster, name: str) -> list[dict]:
    items = json.loads(
        vc.kubectl("get", "pods", "-n", NS, "-l", f"vm.kubevirt.io/name={name}", "-o", "json")
    )["items"]
    return items


def test_a_tenants_vm_runs_on_the_hosts_kubevirt_and_goes_with_everything_it_made(host_env, make_cluster):
    vc = make_cluster("kv-a", KUBEVIRT_ON)

    # KubeVirt's CRDs are the host's, served in the virtual cluster.
    crd = vc.json("get", "crd", "virtualmachines.kubevirt.io")
    assert crd["metadata"]["labels"]["vnest.io/from-host"] == "true"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1"]

    apply_vm(vc)

    # The host has the translated VM: every name in it is a host copy's.
    hvm = wait_until(lambda: vc.host("vm", vc.host_name("web")), WAIT, "the host copy of VM web")
    tspec = hvm["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in tspec["volumes"]}
    assert volumes["root"]["dataVolume"]["name"] == vc.host_name("web-root")
    assert volumes["cloudinit"]["cloudInitNoCloud"]["secretRef"]["name"] == vc.host_name("cloud-init")
    ssh = tspec["accessCredentials"][0]["sshPublicKey"]["source"]["secret"]["secretName"]
    assert ssh == vc.host_name("ssh-key")
    assert hvm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] == vc.host_name("web-root")
    labels = hvm["spec"]["template"]["metadata"]["labels"]
    assert labels[naming.LABEL_MANAGED_BY] == "kv-a" and labels["app"] == "web"
    # ... the Secrets it uses, with their data ...
    for name, key, value in (
        ("cloud-init", "userdata", "password: fedora"),
        ("ssh-key", "key", "tenant@laptop"),
    ):
        hsecret = wait_until(partial(vc.host, "secret", vc.host_name(name)), WAIT, f"the host copy of {name}")
        assert value in base64.b64decode(hsecret["data"][key]).decode()
    # ... and the DataVolume and its claim, which the host's CDI made from the VM's template.
    wait_until(lambda: vc.host("datavolume", vc.host_name("web-root")), WAIT, "the VM's DataVolume")
    wait_until(lambda: vc.host("pvc", vc.host_name("web-root")), WAIT, "the DataVolume's claim")

    # It runs: the VMI is Running in the virtual cluster with the host's node and IP, and its
    # launcher pod shows there as in a cluster running KubeVirt.
    vmi = wait_until(lambda: vmi_running(vc, "web"), WAIT, "VMI web Running in the virtual cluster")
    assert vmi["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"
    hvmi = vc.host("vmi", vc.host_name("web"))
    assert vmi["status"]["nodeName"] == hvmi["status"]["nodeName"]
    ip = vmi["status"]["interfaces"][0]["ipAddress"]
    pods = wait_until(
        lambda: [p for p in launcher_pods(vc, "web") if (p.get("status") or {}).get("phase") == "Running"],
        WAIT,
        "the launcher pod Running in the virtual cluster",
    )
    assert pods[0]["metadata"]["name"].startswith("virt-launcher-web-")
    assert pods[0]["status"]["podIP"] == ip and pods[0]["spec"]["nodeName"] == vmi["status"]["nodeName"]
    assert vc.get("node", vmi["status"]["nodeName"]) is not None
    wait_until(
        lambda: (vc.get("vm", "web", NS) or {}).get("status", {}).get("printableStatus") == "Running",
        WAIT,
        "VM web Running",
    )

    # Stopped (the tenant's runStrategy), everything that ran goes; started, it runs again.
    vc.kubectl("patch", "vm", "web", "-n", NS, "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    wait_until(lambda: vc.get("vmi", "web", NS) is None, WAIT, "VMI web gone")
    wait_until(lambda: not launcher_pods(vc, "web"), WAIT, "the launcher pod gone")
    assert vc.host("vmi", vc.host_name("web")) is None
    vc.kubectl("patch", "vm", "web", "-n", NS, "--type=merge", "-p", '{"spec":{"runStrategy":"Always"}}')
    wait_until(lambda: vmi_running(vc, "web"), WAIT, "VMI web Running again")

    # A stop on the host (the admin's virtctl, through the host's virt-api) shows in the tenant's VM.
    host_env.kubectl(
        "--context", HOST, "replace", "--raw",
        f"/apis/subresources.kubevirt.io/v1/namespaces/{vc.namespace}/virtualmachines/{vc.host_name('web')}/stop",
        "-f", str(_write(host_env, "stop.json", {})),
    )  # fmt: skip
    wait_until(
        lambda: (vc.get("vm", "web", NS) or {}).get("spec", {}).get("runStrategy") == "Halted",
        WAIT,
        "the host's stop in the virtual VM",
    )
    wait_until(lambda: vc.get("vmi", "web", NS) is None, WAIT, "VMI web gone after the host's stop")
    assert vc.host("vm", vc.host_name("web"))["spec"]["runStrategy"] == "Halted"  # not reverted

    # Deleting the VM removes everything it had on the host.
    vc.kubectl("delete", "vm", "web", "-n", NS)
    for kind, name in (("vm", "web"), ("datavolume", "web-root"), ("pvc", "web-root")):
        wait_until(partial(vc.host_gone, kind, name), WAIT, f"host {kind} {name} gone")
    for name in ("cloud-init", "ssh-key"):
        wait_until(partial(vc.host_gone, "secret", name), WAIT, f"host Secret {name} gone")
    assert not [
        p for p in vc.host_items("pods") if p["metadata"]["labels"].get("kubevirt.io") == "virt-launcher"
    ]


def _write(env, name: str, obj: dict) -> str:
    path = env.root / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_a_vm_never_gets_what_is_not_its_clusters(host_env, make_cluster):
    a = make_cluster("kv-iso-a", KUBEVIRT_ON)
    b = make_cluster("kv-iso-b", KUBEVIRT_ON)
    apply_vm(a)
    wait_until(lambda: vmi_running(a, "web"), WAIT, "tenant A's VM running")

    # Tenant B sees none of tenant A's VMs.
    assert json.loads(b.kubectl("get", "vm,vmi", "-A", "-o", "json"))["items"] == []

    # A Secret that exists only on the host (the admin's, in B's host namespace) is never B's:
    # B's VM names it, and the host copy names B's own (missing) copy instead.
    host_secret = secret("host-only", userdata="#cloud-config\nhost: secret\n")
    host_secret["metadata"]["namespace"] = b.namespace
    host_env.kubectl("--context", HOST, "apply", "-f", _write(host_env, "host-only.json", host_secret))
    b.apply(
        vm(
            "thief",
            volumes=[{"name": "cloudinit", "cloudInitNoCloud": {"secretRef": {"name": "host-only"}}}],
        )
    )
    hvm = wait_until(lambda: b.host("vm", b.host_name("thief")), WAIT, "the host copy of VM thief")
    volume = hvm["spec"]["template"]["spec"]["volumes"][0]
    assert volume["cloudInitNoCloud"]["secretRef"]["name"] == b.host_name("host-only")
    assert b.host("secret", b.host_name("host-only")) is None

    # Host paths and host devices need the privileged level: refused with an event at baseline.
    b.apply(vm("hostdisk", volumes=[{"name": "cloudinit", "hostDisk": {"path": "/etc", "type": "Disk"}}]))
    events = wait_until(
        lambda: [e for e in b.events("hostdisk") if e["reason"] == "SyncError"], WAIT, "SyncError"
    )
    assert "hostDisk" in events[0]["message"] and "privileged" in events[0]["message"]
    assert b.host("vm", b.host_name("hostdisk")) is None


def test_with_the_guard_off_a_host_path_reaches_the_host(host_env, make_cluster):
    vc = make_cluster("kv-priv", {**KUBEVIRT_ON, "policies": {"podSecurityStandard": "privileged"}})
    vc.apply(vm("hostdisk", volumes=[{"name": "cloudinit", "hostDisk": {"path": "/etc", "type": "Disk"}}]))
    hvm = wait_until(lambda: vc.host("vm", vc.host_name("hostdisk")), WAIT, "the host copy of VM hostdisk")
    assert hvm["spec"]["template"]["spec"]["volumes"][0]["hostDisk"]["path"] == "/etc"


def test_without_the_integration_nothing_of_kubevirt_is_served_or_synced(host_env, make_cluster):
    vc = make_cluster("kv-off", {})
    crds = vc.kubectl("get", "crd", "-o", "name")
    assert "kubevirt.io" not in crds
    path = _write(host_env, "vm-off.json", vm("web"))
    created = vc.env.vnest(
        "connect", vc.name, "-n", vc.namespace, "--", vc.env.kubectl_path, "apply", "-f", path, check=False
    )
    assert created.returncode != 0 and "VirtualMachine" in created.stderr
    for kind in (
        "virtualmachines.kubevirt.io",
        "virtualmachineinstances.kubevirt.io",
        "datavolumes.cdi.kubevirt.io",
    ):
        assert vc.host_items(kind) == []


def test_a_migration_moves_the_vm_and_a_deleted_vmi_is_made_again(host_env, make_cluster):
    migrations = {"virtualMachineInstanceMigrations": {"enabled": True}}
    vc = make_cluster("kv-mig", {"integrations": {"kubeVirt": {"enabled": True, "sync": migrations}}})
    apply_vm(vc)
    source = wait_until(lambda: vmi_running(vc, "web"), WAIT, "VMI web Running")["status"]["nodeName"]

    vc.apply(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": "move", "namespace": NS},
            "spec": {"vmiName": "web"},
        }
    )
    hmig = wait_until(lambda: vc.host("vmim", vc.host_name("move")), WAIT, "the host copy of the migration")
    assert hmig["spec"]["vmiName"] == vc.host_name("web")
    wait_until(
        lambda: (vc.get("vmim", "move", NS) or {}).get("status", {}).get("phase") == "Succeeded",
        WAIT,
        "the migration Succeeded in the virtual cluster",
    )
    moved = wait_until(
        lambda: (v := vmi_running(vc, "web")) and v["status"]["nodeName"] != source and v,
        WAIT,
        "VMI web on another node",
    )
    state = moved["status"].get("migrationState") or {}
    assert vc.name not in json.dumps(state)  # no host name comes back
    assert state.get("sourceNode") == source

    # A VMI the tenant deletes goes on the host too; its VM (runStrategy Always) makes a new one.
    uid = moved["metadata"]["uid"]
    vc.kubectl("delete", "vmi", "web", "-n", NS, "--wait=false")
    wait_until(
        lambda: (v := vmi_running(vc, "web")) and v["metadata"]["uid"] != uid,
        WAIT,
        "a new VMI web Running",
    )


SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"


def _virtual_ssl(vc: Cluster) -> tuple[str, ssl.SSLContext]:
    """The virtual API server's WebSocket base URL and a TLS context with the tenant's admin certificate."""
    config = yaml.safe_load(vc.env.vnest("connect", vc.name, "-n", vc.namespace, "--print").stdout)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    files = {}
    for field in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
        source = cluster if field.startswith("certificate-authority") else user
        files[field] = vc.env.root / f"{vc.name}-{field}.pem"
        files[field].write_bytes(base64.b64decode(source[field]))
    context = ssl.create_default_context(cafile=str(files["certificate-authority-data"]))
    context.load_cert_chain(files["client-certificate-data"], files["client-key-data"])
    return cluster["server"].replace("https://", "wss://"), context


async def _console(url: str, context: ssl.SSLContext, line: bytes) -> list[bytes]:
    received: list[bytes] = []
    async with (
        ClientSession() as session,
        session.ws_connect(url, ssl=context, protocols=("plain.kubevirt.io",)) as ws,
    ):
        received.append((await ws.receive(timeout=10)).data)  # the console's greeting
        await ws.send_bytes(line)
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.BINARY, message
        received.append(message.data)
    return received


def test_virtctl_calls_through_the_virtual_api_reach_only_the_tenants_own_vms(host_env, make_cluster):
    a = make_cluster("kv-sub-a", KUBEVIRT_ON)
    b = make_cluster("kv-sub-b", KUBEVIRT_ON)
    apply_vm(a)
    wait_until(lambda: vmi_running(a, "web"), WAIT, "VMI web Running")
    body = _write(host_env, "options.json", {})

    # virtctl stop / start are PUTs to subresources.kubevirt.io in the tenant's own API.
    a.kubectl("replace", "--raw", f"{SUBRESOURCES}/namespaces/{NS}/virtualmachines/web/stop", "-f", body)
    wait_until(lambda: a.get("vmi", "web", NS) is None, WAIT, "VMI web gone after virtctl stop")
    wait_until(
        lambda: (a.get("vm", "web", NS) or {}).get("spec", {}).get("runStrategy") == "Halted",
        WAIT,
        "the VM Halted",
    )
    a.kubectl("replace", "--raw", f"{SUBRESOURCES}/namespaces/{NS}/virtualmachines/web/start", "-f", body)
    wait_until(lambda: vmi_running(a, "web"), WAIT, "VMI web Running after virtctl start")

    # virtctl console: a WebSocket through the virtual API server, the syncer and the host's virt-api.
    base, context = _virtual_ssl(a)
    url = f"{base}{SUBRESOURCES}/namespaces/{NS}/virtualmachineinstances/web/console"
    greeting, echo = asyncio.run(_console(url, context, b"hello from the tenant\r\n"))
    assert greeting.startswith(b"stand-in console of ") and a.host_name("web").encode() in greeting
    assert echo == b"hello from the tenant\r\n"

    # Tenant B cannot reach A's VM: in B's API the VM does not exist, whatever B's RBAC.
    for action in ("stop", "start", "restart"):
        denied = b.env.vnest(
            "connect", b.name, "-n", b.namespace, "--", b.env.kubectl_path,
            "replace", "--raw", f"{SUBRESOURCES}/namespaces/{NS}/virtualmachines/web/{action}", "-f", body,
            check=False,
        )  # fmt: skip
        assert denied.returncode != 0 and "NotFound" in denied.stderr, denied.stderr
    assert vmi_running(a, "web") is not None

    # Inside A, the tenant's own RBAC decides (a user with no role gets 403, as from virt-api).
    forbidden = a.env.vnest(
        "connect", a.name, "-n", a.namespace, "--", a.env.kubectl_path, "--as=nobody",
        "replace", "--raw", f"{SUBRESOURCES}/namespaces/{NS}/virtualmachines/web/stop", "-f", body,
        check=False,
    )  # fmt: skip
    assert forbidden.returncode != 0 and "Forbidden" in forbidden.stderr, forbidden.stderr
    assert vmi_running(a, "web") is not None
