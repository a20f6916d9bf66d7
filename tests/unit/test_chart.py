"""The chart of the kubernetes driver renders the host objects of SPEC.md section 4 from the config."""

from __future__ import annotations

import base64
import copy
import tomllib
from pathlib import Path

import pytest
import yaml

from vnest import chart, naming
from vnest.binaries import build
from vnest.config.load import load_config, to_values
from vnest.errors import VnestError
from vnest.syncer.resources.fromhost import from_host_enabled

NAME = "my-vcluster"
NS = "vcluster1"

# The defaults the templates rely on: the base config of these tests, which the shipped
# chart/values.yaml (generated from the config models) must carry.
DEFAULTS = {
    "controlPlane": {
        "statefulSet": {
            "image": {"registry": "", "repository": "vnest", "tag": ""},
            "imagePullPolicy": "",
            "persistence": {
                "volumeClaim": {
                    "enabled": True,
                    "size": "5Gi",
                    "storageClass": "",
                    "accessModes": ["ReadWriteOnce"],
                }
            },
            "resources": {"limits": {}, "requests": {}},
            "labels": {},
            "annotations": {},
            "pods": {"labels": {}, "annotations": {}},
            "scheduling": {"nodeSelector": {}, "tolerations": [], "affinity": {}, "priorityClassName": ""},
            "env": [],
        },
        "distro": {
            "k8s": {
                "version": None,
                "apiServer": {
                    "image": {"registry": "registry.k8s.io", "repository": "kube-apiserver", "tag": ""}
                },
                "controllerManager": {
                    "image": {
                        "registry": "registry.k8s.io",
                        "repository": "kube-controller-manager",
                        "tag": "",
                    }
                },
                "scheduler": {
                    "enabled": False,
                    "image": {"registry": "registry.k8s.io", "repository": "kube-scheduler", "tag": ""},
                },
            }
        },
        "advanced": {"virtualScheduler": {"enabled": False}},
        "service": {"enabled": True, "labels": {}, "annotations": {}, "spec": {"type": "ClusterIP"}},
        "proxy": {"port": 8443, "extraSANs": []},
    },
    "networking": {"advanced": {"clusterDomain": "cluster.local"}},
}

ROLE_MANAGE = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _merge(base: dict, override: dict) -> dict:
    """Deep-merges `override` into a copy of `base`, as helm merges a values file over the chart's."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _base() -> dict:
    values_file = chart.CHART_DIR / "values.yaml"
    if values_file.exists():
        return yaml.safe_load(values_file.read_text()) or {}
    return copy.deepcopy(DEFAULTS)


@pytest.fixture(scope="module")
def helm() -> Path:
    return build.Binaries(build.bin_dir()).helm


def _render(helm: Path, override: dict | None = None) -> tuple[dict, list[dict]]:
    values = _merge(_base(), override or {})
    return values, chart.render(NAME, NS, values, helm=helm)


def _kinds_and_names(manifests: list[dict]) -> set[tuple[str, str]]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}


def _pod_spec(manifests: list[dict]) -> dict:
    return chart.get(manifests, "StatefulSet", NAME)["spec"]["template"]["spec"]


def test_chart_pins_the_kubernetes_version_of_build_versions():
    meta = yaml.safe_load((chart.CHART_DIR / "Chart.yaml").read_text())
    with build.VERSIONS_FILE.open("rb") as f:
        kubernetes = tomllib.load(f)["kubernetes"]["version"]
    assert meta["annotations"][naming.ANNOTATION_KUBERNETES_VERSION] == kubernetes
    assert meta["appVersion"] == "0.1.0"


def test_objects_and_their_labels(helm):
    _, manifests = _render(helm)
    assert _kinds_and_names(manifests) == {
        ("ServiceAccount", naming.service_account(NAME)),
        ("Role", f"vc-{NAME}"),
        ("RoleBinding", f"vc-{NAME}"),
        ("Service", naming.service_name(NAME)),
        ("Service", naming.headless_service_name(NAME)),
        ("Secret", naming.config_secret(NAME)),
        ("StatefulSet", naming.statefulset(NAME)),
    }
    assert not chart.by_kind(manifests, "ClusterRole", "ClusterRoleBinding")
    components = {
        "ServiceAccount": "rbac",
        "Role": "rbac",
        "RoleBinding": "rbac",
        "Service": "service",
        "Secret": "config",
        "StatefulSet": "control-plane",
    }
    for m in manifests:
        assert m["metadata"]["namespace"] == NS
        labels = m["metadata"]["labels"]
        assert labels["app"] == "vnest"
        assert labels["release"] == NAME
        assert labels[naming.LABEL_CLUSTER] == NAME
        assert labels[naming.LABEL_COMPONENT] == components[m["kind"]]
        assert labels["helm.sh/chart"] == "vnest-0.1.0"
        assert labels["app.kubernetes.io/instance"] == NAME
        assert all(isinstance(v, str) for v in labels.values())


def _role_rules(manifests: list[dict]) -> dict[tuple[str, str], list[str]]:
    role = chart.get(manifests, "Role", f"vc-{NAME}")
    assert all(len(rule["apiGroups"]) == 1 for rule in role["rules"])
    return {
        (rule["apiGroups"][0], resource): rule["verbs"]
        for rule in role["rules"]
        for resource in rule["resources"]
    }


def test_role_is_limited_to_what_the_syncer_needs(helm):
    _, manifests = _render(helm)
    rules = _role_rules(manifests)
    expected = {
        ("", r): ROLE_MANAGE for r in ("pods", "services", "secrets", "configmaps", "persistentvolumeclaims")
    }
    expected[("", "pods/log")] = ["get"]
    for r in ("pods/exec", "pods/attach", "pods/portforward"):
        expected[("", r)] = ["create", "get"]  # SPDY and WebSocket
    expected[("", "events")] = ["create", "get", "list", "watch"]
    expected[("", "pods/ephemeralcontainers")] = ["patch"]  # kubectl debug, checked by Pod Security
    expected[("", "pods/resize")] = ["patch"]  # in-place resize
    expected[("discovery.k8s.io", "endpointslices")] = ROLE_MANAGE
    assert rules == expected
    # Never: minting tokens for the namespace's ServiceAccounts, or more than the syncers use.
    for never in ("serviceaccounts/token", "pods/status", "endpoints"):
        assert ("", never) not in rules
    assert not any("deletecollection" in verbs for verbs in rules.values())

    binding = chart.get(manifests, "RoleBinding", f"vc-{NAME}")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"vc-{NAME}",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": naming.service_account(NAME), "namespace": NS}
    ]


@pytest.mark.parametrize(
    ("sets", "gains", "loses"),
    [
        (["sync.toHost.serviceAccounts.enabled=true"], [("", "serviceaccounts")], []),
        (["sync.toHost.ingresses.enabled=true"], [("networking.k8s.io", "ingresses")], []),
        (["sync.toHost.networkPolicies.enabled=true"], [("networking.k8s.io", "networkpolicies")], []),
        (["sync.toHost.configMaps.enabled=false"], [], [("", "configmaps")]),
        (["sync.toHost.persistentVolumeClaims.enabled=false"], [], [("", "persistentvolumeclaims")]),
        (
            [
                "sync.toHost.persistentVolumeClaims.enabled=false",
                "sync.toHost.persistentVolumes.enabled=true",
            ],
            [],
            [],  # the PV syncer reads the host claims
        ),
    ],
)
def test_each_optional_syncer_adds_its_own_rule(helm, sets, gains, loses):
    base = _role_rules(chart.render(NAME, NS, to_values(load_config([], [])), helm=helm))
    rules = _role_rules(chart.render(NAME, NS, to_values(load_config([], sets)), helm=helm))
    assert set(rules) - set(base) == set(gains)
    assert set(base) - set(rules) == set(loses)


def test_host_events_are_read_only_when_they_are_copied_in(helm):
    values = to_values(load_config([], ["sync.fromHost.events.enabled=false"]))
    assert _role_rules(chart.render(NAME, NS, values, helm=helm))[("", "events")] == ["create"]


CUSTOM_RESOURCES = {
    "sync": {
        "toHost": {
            "customResources": {
                "widgets.example.com": {"enabled": True},
                "gadgets.other.io/v2": {"enabled": True},
                "gizmos.off.io": {"enabled": False},
            }
        }
    }
}


def test_role_manages_the_enabled_custom_resources_in_the_namespace(helm):
    _, manifests = _render(helm, CUSTOM_RESOURCES)
    role = chart.get(manifests, "Role", f"vc-{NAME}")
    custom = [r for r in role["rules"] if r["apiGroups"][0] in ("example.com", "other.io", "off.io")]
    assert sorted((r["apiGroups"], r["resources"], r["verbs"]) for r in custom) == [
        (["example.com"], ["widgets"], ROLE_MANAGE),
        (["other.io"], ["gadgets"], ROLE_MANAGE),
    ]
    # Without any (or with only disabled ones), the Role is the default one.
    _, default = _render(helm)
    _, disabled = _render(
        helm, {"sync": {"toHost": {"customResources": {"gizmos.off.io": {"enabled": False}}}}}
    )
    assert chart.get(disabled, "Role", f"vc-{NAME}") == chart.get(default, "Role", f"vc-{NAME}")


def test_services(helm):
    _, manifests = _render(helm)
    # vnest.io keys a tenant's pod can never carry on the host: no tenant pod becomes an endpoint.
    selector = {
        "app": "vnest",
        "release": NAME,
        naming.LABEL_CLUSTER: NAME,
        naming.LABEL_COMPONENT: "control-plane",
    }
    assert selector == naming.control_plane_pod_selector(NAME)
    service = chart.get(manifests, "Service", NAME)["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == selector
    assert service["ports"] == [
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
        {"name": "kubelet", "port": 10250, "targetPort": 8443, "protocol": "TCP"},
    ]
    headless = chart.get(manifests, "Service", f"{NAME}-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == selector
    assert headless["ports"] == [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]


def test_service_spec_labels_and_annotations_from_the_config(helm):
    _, manifests = _render(
        helm,
        {
            "controlPlane": {
                "service": {
                    "labels": {"team": "a", "app": "not-vnest"},
                    "annotations": {"example.com/lb": "internal"},
                    "spec": {"type": "NodePort", "selector": {"app": "other"}},
                }
            }
        },
    )
    service = chart.get(manifests, "Service", NAME)
    assert service["spec"]["type"] == "NodePort"
    # The selector and the chart's own labels cannot be overridden: the pod must stay selected.
    assert service["spec"]["selector"] == naming.control_plane_pod_selector(NAME)
    assert service["metadata"]["labels"]["app"] == "vnest"
    assert service["metadata"]["labels"]["team"] == "a"
    assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert [p["name"] for p in service["spec"]["ports"]] == ["https", "kubelet"]


def test_service_can_be_disabled(helm):
    _, manifests = _render(helm, {"controlPlane": {"service": {"enabled": False}}})
    names = _kinds_and_names(manifests)
    assert ("Service", NAME) not in names
    assert ("Service", f"{NAME}-headless") in names


def test_statefulset(helm):
    _, manifests = _render(helm)
    sts = chart.get(manifests, "StatefulSet", NAME)
    spec = sts["spec"]
    assert spec["serviceName"] == f"{NAME}-headless"
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    assert spec["selector"]["matchLabels"] == {"app": "vnest", "release": NAME}
    pod_labels = spec["template"]["metadata"]["labels"]
    assert {k: pod_labels[k] for k in naming.control_plane_pod_selector(NAME)} == (
        naming.control_plane_pod_selector(NAME)
    )

    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == naming.service_account(NAME)
    init = pod["initContainers"]
    assert [c["name"] for c in init] == ["vnest-copy", "kube-apiserver", "kube-controller-manager"]
    assert [c["image"] for c in init] == [
        "vnest:0.1.0",
        "registry.k8s.io/kube-apiserver:v1.36.3",
        "registry.k8s.io/kube-controller-manager:v1.36.3",
    ]
    assert init[0]["command"] == [
        "cp",
        "/usr/local/bin/busybox",
        "/usr/local/bin/kine",
        "/usr/local/bin/etcd",
        "/usr/local/bin/pod-security-check",
        "/binaries/",
    ]
    assert init[1]["command"] == [
        "/binaries/busybox",
        "cp",
        "/usr/local/bin/kube-apiserver",
        "/binaries/kube-apiserver",
    ]
    for c in init:
        assert c["volumeMounts"] == [{"name": "binaries", "mountPath": "/binaries"}]

    [syncer] = pod["containers"]
    assert syncer["name"] == "syncer"
    assert syncer["image"] == "vnest:0.1.0"
    assert "imagePullPolicy" not in syncer
    assert syncer["command"] == [
        "vnest",
        "controlplane",
        "run",
        "--name",
        NAME,
        "--namespace",
        NS,
        "--config",
        "/etc/vnest/config.yaml",
        "--data-dir",
        "/data",
        "--bin-dir",
        "/binaries",
        "--listen-address",
        "0.0.0.0",
        "--api-port",
        "8443",
    ]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in syncer["env"]}
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }
    assert syncer["ports"] == [
        {"name": "https", "containerPort": 8443, "protocol": "TCP"},
        {"name": "dns", "containerPort": naming.DNS_POD_PORT, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": naming.DNS_POD_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": naming.METRICS_POD_PORT, "protocol": "TCP"},
    ]
    assert syncer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8443, "scheme": "HTTPS"}
    assert syncer["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8443, "scheme": "HTTPS"}
    assert syncer["securityContext"]["allowPrivilegeEscalation"] is False
    assert syncer["volumeMounts"] == [
        {"name": "binaries", "mountPath": "/binaries"},
        {"name": "config", "mountPath": "/etc/vnest", "readOnly": True},
        {"name": "data", "mountPath": "/data"},
    ]
    assert pod["volumes"] == [
        {"name": "binaries", "emptyDir": {}},
        {"name": "config", "secret": {"secretName": naming.config_secret(NAME)}},
    ]
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in claim["spec"]


def test_statefulset_follows_the_config(helm):
    _, manifests = _render(
        helm,
        {
            "controlPlane": {
                "statefulSet": {
                    "image": {"registry": "ghcr.io/acme", "repository": "vnest", "tag": "dev"},
                    "imagePullPolicy": "Always",
                    "persistence": {"volumeClaim": {"size": "20Gi", "storageClass": "fast"}},
                    "resources": {
                        "requests": {"cpu": "300m", "memory": "512Mi"},
                        "limits": {"memory": "1Gi"},
                    },
                    "labels": {"tier": "gold"},
                    "annotations": {"example.com/owner": "team-a"},
                    "pods": {"labels": {"team": "a", "release": "forged"}, "annotations": {"a": "b"}},
                    "scheduling": {
                        "nodeSelector": {"disk": "ssd"},
                        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                        "priorityClassName": "high",
                    },
                    "env": [{"name": "EXTRA", "value": "1"}],
                },
                "distro": {
                    "k8s": {"version": "v1.35.0", "apiServer": {"image": {"registry": "mirror.example.com"}}}
                },
                "proxy": {"port": 9443, "bindAddress": "::"},
            }
        },
    )
    sts = chart.get(manifests, "StatefulSet", NAME)
    assert sts["metadata"]["labels"]["tier"] == "gold"
    assert sts["metadata"]["annotations"] == {"example.com/owner": "team-a"}
    template = sts["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["release"] == NAME
    assert template["metadata"]["annotations"]["a"] == "b"
    pod = template["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["priorityClassName"] == "high"
    images = {c["name"]: c["image"] for c in pod["initContainers"]}
    assert images == {
        "vnest-copy": "ghcr.io/acme/vnest:dev",
        "kube-apiserver": "mirror.example.com/kube-apiserver:v1.35.0",
        "kube-controller-manager": "registry.k8s.io/kube-controller-manager:v1.35.0",
    }
    [syncer] = pod["containers"]
    assert syncer["image"] == "ghcr.io/acme/vnest:dev"
    assert {c["imagePullPolicy"] for c in [*pod["initContainers"], syncer]} == {"Always"}
    assert syncer["resources"] == {
        "requests": {"cpu": "300m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert syncer["env"][-1] == {"name": "EXTRA", "value": "1"}
    assert syncer["command"][-4:] == ["--listen-address", "::", "--api-port", "9443"]
    assert syncer["ports"][0]["containerPort"] == 9443
    assert syncer["readinessProbe"]["httpGet"]["port"] == 9443
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert {p["targetPort"] for p in chart.get(manifests, "Service", NAME)["spec"]["ports"]} == {9443}
    secret = chart.get(manifests, "Secret", naming.config_secret(NAME))
    assert secret["metadata"]["annotations"][naming.ANNOTATION_KUBERNETES_VERSION] == "v1.35.0"


def test_without_persistence_data_is_an_empty_dir(helm):
    _, manifests = _render(
        helm, {"controlPlane": {"statefulSet": {"persistence": {"volumeClaim": {"enabled": False}}}}}
    )
    spec = chart.get(manifests, "StatefulSet", NAME)["spec"]
    assert "volumeClaimTemplates" not in spec
    assert {"name": "data", "emptyDir": {}} in spec["template"]["spec"]["volumes"]


@pytest.mark.parametrize(
    "override",
    [
        {"controlPlane": {"distro": {"k8s": {"scheduler": {"enabled": True}}}}},
        {"controlPlane": {"advanced": {"virtualScheduler": {"enabled": True}}}},
    ],
    ids=["distro.k8s.scheduler", "advanced.virtualScheduler"],
)
def test_scheduler_init_container_when_enabled(helm, override):
    _, manifests = _render(helm, override)
    init = _pod_spec(manifests)["initContainers"]
    assert [c["name"] for c in init] == [
        "vnest-copy",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    assert init[-1]["image"] == "registry.k8s.io/kube-scheduler:v1.36.3"
    assert init[-1]["command"] == [
        "/binaries/busybox",
        "cp",
        "/usr/local/bin/kube-scheduler",
        "/binaries/kube-scheduler",
    ]


def test_config_secret_holds_the_config_in_effect(helm):
    values, manifests = _render(helm, {"networking": {"advanced": {"clusterDomain": "example.local"}}})
    secret = chart.get(manifests, "Secret", naming.config_secret(NAME))
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["annotations"] == {
        naming.ANNOTATION_DRIVER: "kubernetes",
        naming.ANNOTATION_KUBERNETES_VERSION: "v1.36.3",
        naming.ANNOTATION_VNEST_VERSION: "0.1.0",
    }
    assert set(secret["data"]) == {"config.yaml"}
    config = yaml.safe_load(base64.b64decode(secret["data"]["config.yaml"]))
    assert config == values
    assert config["networking"]["advanced"]["clusterDomain"] == "example.local"
    # A config change rolls the pod.
    _, other = _render(helm, {"networking": {"advanced": {"clusterDomain": "other.local"}}})
    checksum = "vnest.io/config-checksum"
    sts = chart.get(manifests, "StatefulSet", NAME)
    assert (
        sts["spec"]["template"]["metadata"]["annotations"][checksum]
        != chart.get(other, "StatefulSet", NAME)["spec"]["template"]["metadata"]["annotations"][checksum]
    )


def test_helm_failure_is_a_vnest_error(helm):
    with pytest.raises(VnestError, match="invalid release name"):
        chart.render("Not_A_Name", NS, _base(), helm=helm)


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path))
        else:
            out[path] = value
    return out


def test_values_file_has_the_defaults_the_templates_rely_on():
    shipped = _leaves(yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text()))
    expected = {k: v for k, v in _leaves(DEFAULTS).items() if ".resources." not in k}
    assert {k: shipped.get(k, "<missing>") for k in expected} == expected


# --- ClusterRoles: only what the config needs beyond the namespace ---------------------------

READ = ["get", "list", "watch"]
MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
MAPPING = [{"from": "ns1/web", "to": "ns2/web"}]
NODES = {"sync": {"fromHost": {"nodes": {"enabled": True}}}}
FROM_HOST = {"networking": {"replicateServices": {"fromHost": MAPPING}}}
TO_HOST = {"networking": {"replicateServices": {"toHost": MAPPING}}}
BASE_ROLE = naming.cluster_role(NAME, NS)
TO_HOST_ROLE = naming.to_host_cluster_role(NAME, NS)
TO_HOST_RULES = {
    ("", "services"): MANAGE,
    ("discovery.k8s.io", "endpointslices"): MANAGE,
    ("rbac.authorization.k8s.io", "clusterroles"): ["get"],
}
CLASSES_FROM_HOST = {
    "sync": {
        "fromHost": {
            "storageClasses": {"enabled": True},
            "ingressClasses": {"enabled": True},
            "runtimeClasses": {"enabled": True},
            "priorityClasses": {"enabled": True},
        }
    }
}
COPIES_TO_HOST = {
    "sync": {
        "toHost": {
            "priorityClasses": {"enabled": True},
            "storageClasses": {"enabled": True},
            "persistentVolumes": {"enabled": True},
        }
    }
}
OWN_ROLE = ("rbac.authorization.k8s.io", "clusterroles")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def _cluster_rules(manifests: list[dict]) -> dict[str, dict[tuple[str, str], list[str]]]:
    return {
        role["metadata"]["name"]: {
            (rule["apiGroups"][0], resource): rule["verbs"]
            for rule in role["rules"]
            for resource in rule["resources"]
        }
        for role in chart.by_kind(manifests, "ClusterRole")
    }


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({}, {}),
        (NODES, {BASE_ROLE: {("", "nodes"): READ}}),
        (FROM_HOST, {BASE_ROLE: {("", "services"): READ, ("discovery.k8s.io", "endpointslices"): READ}}),
        (TO_HOST, {TO_HOST_ROLE: TO_HOST_RULES}),
        (
            _merge(_merge(NODES, FROM_HOST), {"networking": {"replicateServices": {"toHost": MAPPING}}}),
            {
                BASE_ROLE: {
                    ("", "nodes"): READ,
                    ("", "services"): READ,
                    ("discovery.k8s.io", "endpointslices"): READ,
                },
                TO_HOST_ROLE: TO_HOST_RULES,
            },
        ),
        (
            CLASSES_FROM_HOST,
            {
                BASE_ROLE: {
                    ("storage.k8s.io", "storageclasses"): READ,
                    ("networking.k8s.io", "ingressclasses"): READ,
                    ("node.k8s.io", "runtimeclasses"): READ,
                    ("scheduling.k8s.io", "priorityclasses"): READ,
                }
            },
        ),
        (
            {"sync": {"fromHost": {"runtimeClasses": {"enabled": True}}}},
            {BASE_ROLE: {("node.k8s.io", "runtimeclasses"): READ}},
        ),
        (
            # storageClasses' default "auto": on with the virtual scheduler (and PVC sync).
            {"controlPlane": {"advanced": {"virtualScheduler": {"enabled": True}}}},
            {BASE_ROLE: {("storage.k8s.io", "storageclasses"): READ}},
        ),
        (
            COPIES_TO_HOST,
            {
                BASE_ROLE: {
                    ("scheduling.k8s.io", "priorityclasses"): MANAGE,
                    ("storage.k8s.io", "storageclasses"): MANAGE,
                    ("", "persistentvolumes"): MANAGE,
                    OWN_ROLE: ["get"],
                }
            },
        ),
        (
            # With storage classes synced to the host, "auto" does not copy the host's in.
            _merge(
                {"controlPlane": {"advanced": {"virtualScheduler": {"enabled": True}}}},
                {"sync": {"toHost": {"storageClasses": {"enabled": True}}}},
            ),
            {BASE_ROLE: {("storage.k8s.io", "storageclasses"): MANAGE, OWN_ROLE: ["get"]}},
        ),
        (
            _merge(NODES, {"sync": {"toHost": {"persistentVolumes": {"enabled": True}}}}),
            {BASE_ROLE: {("", "nodes"): READ, ("", "persistentvolumes"): MANAGE, OWN_ROLE: ["get"]}},
        ),
        (CUSTOM_RESOURCES, {BASE_ROLE: {CRDS: ["get"]}}),
        ({"sync": {"toHost": {"customResources": {"gizmos.off.io": {"enabled": False}}}}}, {}),
    ],
    ids=[
        "none",
        "nodes",
        "fromHost",
        "toHost",
        "all",
        "classesFromHost",
        "runtimeClassesOnly",
        "storageClassesAuto",
        "copiesToHost",
        "storageClassesToHostBeatsAuto",
        "nodesAndVolumes",
        "customResources",
        "customResourcesDisabled",
    ],
)
def test_cluster_roles_grant_only_what_the_config_needs(helm, override, expected):
    _, manifests = _render(helm, override)
    assert _cluster_rules(manifests) == expected
    bindings = {b["metadata"]["name"]: b for b in chart.by_kind(manifests, "ClusterRoleBinding")}
    assert set(bindings) == set(expected)
    for name, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": naming.service_account(NAME), "namespace": NS}
        ]
    for role in chart.by_kind(manifests, "ClusterRole"):
        assert role["metadata"]["labels"][naming.LABEL_CLUSTER] == NAME
        for rule in role["rules"]:
            # The one ClusterRole a role may read is itself, the owner of its host copies and replicas.
            if rule["resources"] == ["clusterroles"]:
                assert rule["resourceNames"] == [role["metadata"]["name"]]
            elif rule["resources"] == ["customresourcedefinitions"]:
                # The syncer reads the configured CRDs once, by name: the enabled ones only.
                assert rule["resourceNames"] == ["gadgets.other.io", "widgets.example.com"]
            else:
                assert "resourceNames" not in rule


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["controlPlane.advanced.virtualScheduler.enabled=true"],
        ["controlPlane.distro.k8s.scheduler.enabled=true"],
        [
            "controlPlane.advanced.virtualScheduler.enabled=true",
            "sync.toHost.persistentVolumeClaims.enabled=false",
        ],
        ["controlPlane.advanced.virtualScheduler.enabled=true", "sync.toHost.storageClasses.enabled=true"],
        ["sync.fromHost.storageClasses.enabled=true"],
        ["controlPlane.advanced.virtualScheduler.enabled=true", "sync.fromHost.storageClasses.enabled=false"],
    ],
)
def test_storage_classes_from_host_is_granted_exactly_when_the_syncer_copies_them(helm, sets):
    if any("cheduler" in s for s in sets):
        sets = [*sets, "sync.fromHost.nodes.enabled=true"]  # what a virtual scheduler needs
    config = load_config([], sets)
    granted = _cluster_rules(chart.render(NAME, NS, to_values(config), helm=helm)).get(BASE_ROLE, {})
    reads = granted.get(("storage.k8s.io", "storageclasses")) == READ
    assert reads is from_host_enabled(config, "storage_classes")


def test_cluster_role_names_are_the_ones_the_syncer_and_driver_use(helm):
    name, namespace = "n" * 53, "s" * 63
    values = _merge(_merge(_base(), NODES), TO_HOST)
    manifests = chart.render(name, namespace, values, helm=helm)
    names = {role["metadata"]["name"] for role in chart.by_kind(manifests, "ClusterRole")}
    assert names == {naming.cluster_role(name, namespace), naming.to_host_cluster_role(name, namespace)}
    assert all(len(n) <= 63 for n in names)


def test_the_control_plane_pod_meets_the_restricted_pod_security_standard(helm):
    # The host namespace carries the cluster's enforce label; at `restricted` the control plane
    # must still start there. Judged by upstream's own checks, as the host's admission would.
    import asyncio

    from vnest.syncer.podsecurity import PodSecurityChecker

    _, manifests = _render(helm, {"controlPlane": {"distro": {"k8s": {"scheduler": {"enabled": True}}}}})
    template = chart.get(manifests, "StatefulSet", NAME)["spec"]["template"]

    async def check() -> str | None:
        checker = PodSecurityChecker(build.Binaries(build.bin_dir()).pod_security_check, "restricted")
        try:
            return await checker.violation(template)
        finally:
            await checker.close()

    assert asyncio.run(check()) is None


@pytest.mark.parametrize(
    ("sets", "kinds"),
    [
        ([], set()),
        (["policies.resourceQuota.enabled=true"], {"ResourceQuota", "LimitRange"}),
        (["policies.limitRange.enabled=true"], {"ResourceQuota", "LimitRange"}),
        (["policies.resourceQuota.enabled=true", "policies.limitRange.enabled=false"], {"ResourceQuota"}),
        (["policies.limitRange.enabled=true", "policies.resourceQuota.enabled=false"], {"LimitRange"}),
    ],
)
def test_quota_and_limit_range_are_auto_each_on_with_the_other(helm, sets, kinds):
    # A quota that counts limits.cpu refuses the control plane's pod, which sets none: a quota
    # alone must bring the LimitRange whose defaults it takes (vCluster's `auto`).
    manifests = chart.render(NAME, NS, to_values(load_config([], sets)), helm=helm)
    assert {m["kind"] for m in manifests} & {"ResourceQuota", "LimitRange"} == kinds


def test_policies_render_vclusters_objects_only_when_enabled(helm):
    _, off = _render(helm)
    assert not [m for m in off if m["kind"] in ("ResourceQuota", "LimitRange", "NetworkPolicy")]
    values = to_values(
        load_config(
            [],
            [
                "policies.resourceQuota.enabled=true",
                "policies.resourceQuota.scopes=[NotBestEffort]",
                "policies.limitRange.enabled=true",
                "policies.limitRange.max.memory=2Gi",
                "policies.networkPolicy.enabled=true",
                "policies.networkPolicy.fallbackDns=1.1.1.1",
            ],
        )
    )
    manifests = chart.render(NAME, NS, values, helm=helm)
    quota = chart.get(manifests, "ResourceQuota", f"vc-{NAME}")
    assert quota["metadata"]["labels"][naming.LABEL_COMPONENT] == "policy"
    assert quota["spec"]["hard"]["count/pods"] == "20" and quota["spec"]["hard"]["services.nodeports"] == "0"
    assert quota["spec"]["scopes"] == ["NotBestEffort"]
    (limit,) = chart.get(manifests, "LimitRange", f"vc-{NAME}")["spec"]["limits"]
    assert limit == {
        "type": "Container",
        "default": {"cpu": "1", "ephemeral-storage": "8Gi", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "ephemeral-storage": "3Gi", "memory": "128Mi"},
        "max": {"memory": "2Gi"},
    }
    work = chart.get(manifests, "NetworkPolicy", f"vc-work-{NAME}")["spec"]
    workloads = {naming.LABEL_MANAGED_BY: NAME}
    assert work["podSelector"]["matchLabels"] == workloads
    egress_to = [peer for rule in work["egress"] for peer in rule.get("to", [])]
    assert {"ipBlock": {"cidr": "1.1.1.1/32"}} in egress_to
    assert {
        "ipBlock": {
            "cidr": "0.0.0.0/0",
            "except": ["100.64.0.0/10", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        }
    } in egress_to
    cp = chart.get(manifests, "NetworkPolicy", f"vc-cp-{NAME}")["spec"]
    assert cp["podSelector"]["matchLabels"] == naming.control_plane_pod_selector(NAME)
