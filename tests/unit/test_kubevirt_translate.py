"""What a tenant's VM becomes on the host: names translated, host doors refused (vnest.integrations.kubevirt.translate)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vnest.integrations.kubevirt import translate
from vnest.integrations.kubevirt.translate import Refused, Rules

VC = "tenant"
HOST_NS = "vc-tenant"


def host(name: str, ns: str) -> str:
    return f"{name}-x-{ns}-x-{VC}"


def rules(privileged: bool = False, node_selector: dict[str, str] | None = None) -> Rules:
    def confine(spec: dict) -> None:
        spec["confined"] = True

    def point_dns(spec: dict) -> None:
        spec["dnsPolicy"] = "None"

    def remap(item: dict) -> None:
        item["fieldRef"]["fieldPath"] = "remapped"

    return Rules(
        namespace="team",
        host_namespace=HOST_NS,
        host_name_in=host,
        storage_class=lambda c: f"host-{c}" if c else c,
        privileged=privileged,
        node_selector=node_selector or {},
        priority_class=lambda c: f"vnest-{c}" if c else None,
        confine=confine,
        point_dns=point_dns,
        remap_field=remap,
    )


SPEC: dict[str, Any] = {
    "domain": {
        "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
        "memory": {"guest": "128Mi"},
    },
    "accessCredentials": [
        {
            "sshPublicKey": {
                "source": {"secret": {"secretName": "ssh-key"}},
                "propagationMethod": {"noCloud": {}},
            }
        },
        {
            "userPassword": {
                "source": {"secret": {"secretName": "passwords"}},
                "propagationMethod": {"qemuGuestAgent": {}},
            }
        },
    ],
    "volumes": [
        {"name": "root", "dataVolume": {"name": "root-dv"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "scratch", "ephemeral": {"persistentVolumeClaim": {"claimName": "golden"}}},
        {
            "name": "init",
            "cloudInitNoCloud": {"secretRef": {"name": "userdata"}, "networkDataSecretRef": {"name": "net"}},
        },
        {"name": "drive", "cloudInitConfigDrive": {"userDataSecretRef": {"name": "drive-userdata"}}},
        {"name": "app", "configMap": {"name": "app-config"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "win", "sysprep": {"configMap": {"name": "unattend"}}},
        {"name": "dump", "memoryDump": {"claimName": "dumps"}},
        {"name": "disk", "containerDisk": {"image": "quay.io/containerdisks/fedora"}},
        {
            "name": "meta",
            "downwardAPI": {"fields": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]},
        },
    ],
    "networks": [{"name": "default", "pod": {}}],
    "schedulerName": "tenant-scheduler",
    "priorityClassName": "high",
    "nodeSelector": {"disk": "ssd"},
}


def test_every_name_a_vm_uses_becomes_its_host_copy():
    out = translate.vmi_spec(SPEC, rules())
    volumes = {v["name"]: v for v in out["volumes"]}
    assert volumes["root"]["dataVolume"]["name"] == host("root-dv", "team")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == host("data", "team")
    assert volumes["scratch"]["ephemeral"]["persistentVolumeClaim"]["claimName"] == host("golden", "team")
    assert volumes["init"]["cloudInitNoCloud"] == {
        "secretRef": {"name": host("userdata", "team")},
        "networkDataSecretRef": {"name": host("net", "team")},
    }
    assert volumes["drive"]["cloudInitConfigDrive"]["userDataSecretRef"]["name"] == host(
        "drive-userdata", "team"
    )
    assert volumes["app"]["configMap"]["name"] == host("app-config", "team")
    assert volumes["creds"]["secret"]["secretName"] == host("creds", "team")
    assert volumes["win"]["sysprep"]["configMap"]["name"] == host("unattend", "team")
    assert volumes["dump"]["memoryDump"]["claimName"] == host("dumps", "team")
    assert volumes["disk"] == SPEC["volumes"][9]  # names nothing
    assert volumes["meta"]["downwardAPI"]["fields"][0]["fieldRef"]["fieldPath"] == "remapped"
    ssh, password = out["accessCredentials"]
    assert ssh["sshPublicKey"]["source"]["secret"]["secretName"] == host("ssh-key", "team")
    assert password["userPassword"]["source"]["secret"]["secretName"] == host("passwords", "team")
    assert SPEC["volumes"][0]["dataVolume"]["name"] == "root-dv"  # the tenant's spec is left alone


def test_scheduling_is_the_hosts_as_for_pods():
    out = translate.vmi_spec(SPEC, rules(node_selector={"pool": "tenants"}))
    assert "schedulerName" not in out
    assert out["priorityClassName"] == "vnest-high"
    assert out["nodeSelector"] == {"disk": "ssd", "pool": "tenants"}
    assert out["confined"] is True and out["dnsPolicy"] == "None"


def test_references_are_what_the_secret_configmap_and_claim_syncers_copy():
    refs = translate.references(SPEC).by_kind
    assert refs["Secret"] == {"ssh-key", "passwords", "userdata", "net", "drive-userdata", "creds"}
    assert refs["ConfigMap"] == {"app-config", "unattend"}
    assert refs["PersistentVolumeClaim"] == {"root-dv", "data", "golden", "dumps"}
    vm = {
        "spec": {
            "template": {"spec": SPEC},
            "dataVolumeTemplates": [{"metadata": {"name": "root-dv"}, "spec": {}}],
        }
    }
    assert "root-dv" not in translate.vm_references(vm).by_kind["PersistentVolumeClaim"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda s: s["volumes"].append({"name": "h", "hostDisk": {"path": "/etc", "type": "Disk"}}),
            "hostDisk",
        ),
        (
            lambda s: s["domain"]["devices"].update(
                hostDevices=[{"name": "nic", "deviceName": "intel.com/sriov"}]
            ),
            "hostDevices",
        ),
        (
            lambda s: s["domain"]["devices"].update(gpus=[{"name": "gpu", "deviceName": "nvidia.com/A100"}]),
            "gpus",
        ),
    ],
)
def test_host_paths_and_devices_need_the_privileged_level(change, field):
    spec = copy.deepcopy(SPEC)
    change(spec)
    assert translate.vmi_spec(spec, rules(privileged=True))  # guard off: the host would get it
    with pytest.raises(Refused, match=field):
        translate.vmi_spec(spec, rules(privileged=False))


@pytest.mark.parametrize(
    ("volume", "field"),
    [
        ({"name": "sa", "serviceAccount": {"serviceAccountName": "default"}}, "serviceAccount"),
        ({"name": "x", "someFutureVolume": {"path": "/"}}, "someFutureVolume"),
    ],
)
def test_volume_types_that_reach_the_host_are_refused_at_every_level(volume, field):
    spec = copy.deepcopy(SPEC)
    spec["volumes"].append(volume)
    with pytest.raises(Refused, match=field):
        translate.vmi_spec(spec, rules(privileged=True))


def test_multus_networks_are_refused():
    spec = copy.deepcopy(SPEC)
    spec["networks"].append({"name": "storage", "multus": {"networkName": "kube-system/host-storage-net"}})
    with pytest.raises(Refused, match=r"networks\[1\]\.multus"):
        translate.vmi_spec(spec, rules(privileged=True))


def test_template_annotations_that_steer_kubevirt_or_the_host_are_dropped():
    meta = {
        "annotations": {
            "hooks.kubevirt.io/hookSidecars": '[{"image": "evil"}]',
            "k8s.v1.cni.cncf.io/networks": "host-net",
            "kubevirt.io/keep-launcher-alive-after-failure": "true",
            "vnest.io/object-name": "forged",
            "team.example.com/owner": "alice",
            "plain": "kept",
        }
    }
    assert translate.template_annotations(meta) == {"team.example.com/owner": "alice", "plain": "kept"}


def test_data_volumes_clone_only_this_clusters_claims():
    spec = {
        "source": {"pvc": {"namespace": "golden", "name": "fedora"}},
        "storage": {
            "storageClassName": "fast",
            "resources": {"requests": {"storage": "1Gi"}},
            "selector": {},
        },
    }
    out = translate.data_volume_spec(spec, rules())
    assert out["source"]["pvc"] == {"namespace": HOST_NS, "name": host("fedora", "golden")}
    assert out["storage"]["storageClassName"] == "host-fast" and "selector" not in out["storage"]
    with pytest.raises(Refused, match="sourceRef"):
        translate.data_volume_spec(
            {"sourceRef": {"kind": "DataSource", "name": "rhel9", "namespace": "os-images"}}, rules()
        )
    with pytest.raises(Refused, match="volumeName"):
        translate.data_volume_spec({"storage": {"volumeName": "someone-elses-pv"}}, rules())


def test_instancetype_matchers():
    assert translate.matcher(
        {"kind": "VirtualMachineInstancetype", "name": "small", "revisionName": "x"},
        "VirtualMachineInstancetype",
        rules(),
    ) == {
        "kind": "VirtualMachineInstancetype",
        "name": host("small", "team"),
    }
    # The host's cluster-wide catalogue is named as it is; a forged revision never goes.
    assert translate.matcher(
        {"name": "u1.medium", "revisionName": "vc-0-abc"}, "VirtualMachineInstancetype", rules()
    ) == {"name": "u1.medium"}


def test_host_names_in_a_status_are_the_tenants_again():
    status = {
        "conditions": [
            {"message": f"DataVolume {host('root-dv', 'team')} is not ready; claim {host('data', 'team')}"}
        ],
        "volumeStatus": [{"persistentVolumeClaimInfo": {"claimName": host("data", "team")}}],
        "migrationState": {"sourcePod": f"virt-launcher-{host('web', 'team')}-q2x9z"},
        # another cluster's (or namespace's) names are not this cluster's to rewrite
        "other": [f"x-x-team-x-{VC}-other", f"y-x-prod-x-{VC}"],
    }
    back = translate.names_back(status, "team", VC)
    assert isinstance(back, dict)
    assert back["conditions"][0]["message"] == "DataVolume root-dv is not ready; claim data"
    assert back["volumeStatus"][0]["persistentVolumeClaimInfo"]["claimName"] == "data"
    assert back["migrationState"]["sourcePod"] == "virt-launcher-web-q2x9z"
    assert back["other"] == status["other"]
