"""Unit tests of the values file: merging, --set, error messages, helpers, generated files."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from vnest.config import UNSUPPORTED, VClusterConfig, defaults, load_config, to_values
from vnest.config import schema as config_schema
from vnest.errors import UsageError

pytestmark = pytest.mark.unit

FULL_VCLUSTER_FILE = """\
sync:
  toHost:
    pods:
      enabled: true
    services:
      enabled: true
    endpoints:
      enabled: true
    persistentVolumeClaims:
      enabled: true
    configMaps:
      enabled: true
      all: true
    secrets:
      enabled: true
      all: false
    ingresses:
      enabled: true
    networkPolicies:
      enabled: true
    priorityClasses:
      enabled: false
    serviceAccounts:
      enabled: true
    storageClasses:
      enabled: false
    persistentVolumes:
      enabled: false
    customResources:
      certificates.cert-manager.io:
        enabled: true
  fromHost:
    events:
      enabled: true
    nodes:
      enabled: true
      selector:
        all: false
        labels:
          node-role: worker
      syncBackChanges: false
      clearImageStatus: true
    storageClasses:
      enabled: auto
    ingressClasses:
      enabled: true
    runtimeClasses:
      enabled: false
    priorityClasses:
      enabled: false
controlPlane:
  distro:
    k8s:
      enabled: true
      version: v1.30.2
      apiServer:
        extraArgs: ["--v=2"]
        image:
          registry: registry.k8s.io
          repository: kube-apiserver
          tag: v1.30.2
      controllerManager:
        extraArgs: []
      scheduler:
        enabled: false
  backingStore:
    etcd:
      embedded:
        enabled: true
  proxy:
    bindAddress: 0.0.0.0
    port: 8443
    extraSANs: [my-vcluster.example.com]
  statefulSet:
    imagePullPolicy: IfNotPresent
    persistence:
      volumeClaim:
        enabled: true
        size: 10Gi
        storageClass: fast
        accessModes: [ReadWriteOnce]
    resources:
      limits:
        memory: 4Gi
        cpu: 2
      requests:
        cpu: 500m
    labels:
      team: platform
    pods:
      annotations:
        example.com/owner: platform
    scheduling:
      nodeSelector:
        kubernetes.io/os: linux
      tolerations:
        - key: dedicated
          operator: Exists
      priorityClassName: system-cluster-critical
    env:
      - name: FOO
        value: bar
  service:
    enabled: true
    spec:
      type: NodePort
  advanced:
    virtualScheduler:
      enabled: false
  coredns:
    enabled: false
networking:
  replicateServices:
    toHost:
      - from: default/web
        to: web-copy
    fromHost:
      - from: kube-system/metrics
        to: default/metrics
  advanced:
    clusterDomain: cluster.local
    fallbackHostCluster: true
    proxyKubelets:
      byHostname: true
      byIP: true
policies:
  resourceQuota:
    enabled: true
    quota:
      requests.cpu: 10
      count/pods: 20
  limitRange:
    enabled: true
    default:
      memory: 512Mi
    defaultRequest:
      cpu: 100m
  networkPolicy:
    enabled: true
    fallbackDns: 1.1.1.1
    outgoingConnections:
      ipBlock:
        cidr: 0.0.0.0/0
        except: [169.254.169.254/32]
  podSecurityStandard: baseline
integrations:
  metricsServer:
    enabled: false
  kubeVirt:
    enabled: false
exportKubeConfig:
  insecure: false
telemetry:
  enabled: false
"""


def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(files: list[pathlib.Path], sets: list[str]) -> UsageError:
    with pytest.raises(UsageError) as info:
        load_config(files, sets)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    return info.value


# --- loading and merging ------------------------------------------------------------------


def test_no_sources_gives_defaults():
    cfg = load_config([], [])
    assert to_values(cfg) == defaults()
    assert cfg.sync.to_host.pods.enabled is True
    assert cfg.sync.to_host.ingresses.enabled is False
    assert cfg.sync.from_host.storage_classes.enabled == "auto"
    assert cfg.control_plane.proxy.port == 8443
    assert cfg.control_plane.stateful_set.resources.requests == {"cpu": "200m", "memory": "256Mi"}


def test_files_merge_in_order_then_sets_apply(tmp_path):
    first = _write(
        tmp_path,
        "a.yaml",
        "sync:\n  toHost:\n    ingresses: {enabled: true}\n    configMaps: {all: true}\n"
        "controlPlane:\n  proxy:\n    extraSANs: [a, b]\n    port: 9443\n",
    )
    second = _write(
        tmp_path,
        "b.yaml",
        "sync:\n  toHost:\n    configMaps: {enabled: false}\ncontrolPlane:\n  proxy:\n    extraSANs: [c]\n",
    )
    cfg = load_config(
        [first, second],
        [
            "controlPlane.proxy.port=10443",
            "sync.fromHost.nodes.enabled=true",
            "controlPlane.statefulSet.persistence.volumeClaim.accessModes=[ReadWriteOnce, ReadOnlyMany]",
            "exportKubeConfig.context=",
            "controlPlane.distro.k8s.version=v1.30.2",
        ],
    )
    to_host = cfg.sync.to_host
    assert to_host.ingresses.enabled is True  # only in the first file
    assert (to_host.config_maps.enabled, to_host.config_maps.all) == (False, True)  # dicts merge
    assert cfg.control_plane.proxy.extra_sans == ["c"]  # lists replace
    assert cfg.control_plane.proxy.port == 10443  # --set wins, typed as an integer
    assert cfg.sync.from_host.nodes.enabled is True
    assert cfg.control_plane.stateful_set.persistence.volume_claim.access_modes == [
        "ReadWriteOnce",
        "ReadOnlyMany",
    ]
    assert cfg.export_kube_config.context == ""
    assert cfg.kubernetes_version == "v1.30.2"


def test_later_null_restores_the_default(tmp_path):
    first = _write(tmp_path, "a.yaml", "controlPlane:\n  proxy:\n    port: 9443\n")
    second = _write(tmp_path, "b.yaml", "controlPlane:\n  proxy:\n    port: null\n")
    assert load_config([first, second], []).control_plane.proxy.port == 8443
    assert load_config([first], ["controlPlane.proxy.port=null"]).control_plane.proxy.port == 8443


def test_set_escaped_dots_reach_custom_resource_keys():
    cfg = load_config([], [r"sync.toHost.customResources.certificates\.cert-manager\.io.enabled=true"])
    assert list(cfg.sync.to_host.custom_resources) == ["certificates.cert-manager.io"]


def test_empty_file_is_no_settings(tmp_path):
    assert to_values(load_config([_write(tmp_path, "empty.yaml", "")], [])) == defaults()


def test_full_vcluster_style_file_loads(tmp_path):
    cfg = load_config([_write(tmp_path, "vcluster.yaml", FULL_VCLUSTER_FILE)], [])
    assert cfg.datastore == "embedded-etcd"
    assert cfg.sync.to_host.custom_resources["certificates.cert-manager.io"].enabled is True
    assert cfg.sync.from_host.nodes.selector.labels == {"node-role": "worker"}
    assert cfg.control_plane.stateful_set.resources.limits == {"memory": "4Gi", "cpu": "2"}
    assert cfg.networking.replicate_services.to_host[0].from_ == "default/web"
    assert cfg.policies.network_policy.outgoing_connections.ip_block.except_ == ["169.254.169.254/32"]
    values = to_values(cfg)
    assert values["controlPlane"]["proxy"]["extraSANs"] == ["my-vcluster.example.com"]
    assert values["networking"]["replicateServices"]["fromHost"][0] == {
        "from": "kube-system/metrics",
        "to": "default/metrics",
    }
    assert "telemetry" not in values and "coredns" not in values["controlPlane"]


def test_to_values_round_trips_through_load_config(tmp_path):
    cfg = load_config([_write(tmp_path, "vcluster.yaml", FULL_VCLUSTER_FILE)], [])
    dumped = _write(tmp_path, "dumped.yaml", yaml.safe_dump(to_values(cfg), sort_keys=False))
    assert load_config([dumped], []) == cfg
    again = _write(tmp_path, "defaults.yaml", yaml.safe_dump(defaults(), sort_keys=False))
    assert to_values(load_config([again], [])) == defaults()


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([], "embedded-database"),
        (["controlPlane.backingStore.database.embedded.enabled=true"], "embedded-database"),
        (
            [
                "controlPlane.backingStore.database.external.enabled=true",
                "controlPlane.backingStore.database.external.dataSource=mysql://u:p@tcp(db:3306)/vc",
            ],
            "external-database",
        ),
        (["controlPlane.backingStore.etcd.embedded.enabled=true"], "embedded-etcd"),
        (
            [
                "controlPlane.backingStore.etcd.external.enabled=true",
                "controlPlane.backingStore.etcd.external.endpoint=https://etcd:2379",
            ],
            "external-etcd",
        ),
    ],
)
def test_datastore(sets, expected):
    assert load_config([], sets).datastore == expected


def test_scheduler_enabled_and_kubernetes_version():
    assert VClusterConfig().scheduler_enabled is False
    assert VClusterConfig().kubernetes_version is None
    nodes = "sync.fromHost.nodes.enabled=true"
    assert (
        load_config([], ["controlPlane.distro.k8s.scheduler.enabled=true", nodes]).scheduler_enabled is True
    )
    assert (
        load_config([], ["controlPlane.advanced.virtualScheduler.enabled=true", nodes]).scheduler_enabled
        is True
    )


@pytest.mark.parametrize(
    "scheduler",
    ["controlPlane.distro.k8s.scheduler.enabled", "controlPlane.advanced.virtualScheduler.enabled"],
)
def test_a_virtual_scheduler_needs_the_host_nodes(scheduler):
    # As in vCluster: fake nodes appear only once a pod runs on them, so it could place nothing.
    with pytest.raises(UsageError) as err:
        load_config([], [f"{scheduler}=true"])
    assert str(err.value).startswith("sync.fromHost.nodes.enabled: must be true when the virtual cluster")
    assert load_config([], ["controlPlane.distro.k8s.version=v1.31.0"]).kubernetes_version == "v1.31.0"


# --- errors -------------------------------------------------------------------------------


def test_unknown_key_in_file_names_file_and_nearest_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "values.yaml", "sync:\n  toHost:\n    podz:\n      enabled: true\n")
    err = _error([pathlib.Path("values.yaml")], [])
    assert str(err) == "unknown key 'sync.toHost.podz' in values.yaml; did you mean 'sync.toHost.pods'?"


def test_unknown_key_in_set_says_set():
    err = _error([], ["sync.toHost.podz.enabled=true"])
    assert "unknown key 'sync.toHost.podz' in --set" in str(err)
    assert "did you mean 'sync.toHost.pods'?" in str(err)


def test_unknown_key_without_near_match_lists_valid_keys():
    err = _error([], ["sync.zzz=1"])
    assert (
        str(err) == "unknown key 'sync.zzz' in --set 'sync.zzz=1'; valid keys under 'sync': toHost, fromHost"
    )
    top = str(_error([], ["qqqqq=1"]))
    assert "valid keys at the top level: sync, controlPlane, networking" in top


def test_unknown_key_inside_a_list_entry():
    err = _error([], ["networking.replicateServices.toHost=[{fromm: a, to: b}]"])
    assert "unknown key 'networking.replicateServices.toHost[0].fromm'" in str(err)
    assert "did you mean 'networking.replicateServices.toHost[0].from'?" in str(err)


def test_unsupported_vcluster_key(tmp_path):
    path = _write(tmp_path, "values.yaml", "controlPlane:\n  distro:\n    k3s:\n      enabled: true\n")
    err = _error([path], [])
    assert str(err) == (
        "'controlPlane.distro.k3s' is a vCluster setting that vnest does not support: "
        "vnest runs upstream Kubernetes (k8s) only"
    )
    assert str(path) in (err.hint or "")


def test_unsupported_is_checked_before_unknown():
    err = _error([], ["controlPlane.coredns.deployment.replicas=2"])
    assert str(err).startswith("'controlPlane.coredns' is a vCluster setting that vnest does not support")
    assert "networking.dns.mode" in str(err)


@pytest.mark.parametrize("prefix", sorted(UNSUPPORTED))
def test_every_unsupported_key_is_rejected(prefix):
    err = _error([], [f"{prefix}.something=1"])
    assert str(err) == f"'{prefix}' is a vCluster setting that vnest does not support: {UNSUPPORTED[prefix]}"


def test_required_unsupported_entries_are_present():
    required = {
        "controlPlane.distro.k3s",
        "controlPlane.distro.k0s",
        "controlPlane.distro.eks",
        "controlPlane.backingStore.etcd.deploy",
        "controlPlane.coredns",
        "controlPlane.ingress",
        "controlPlane.hostPathMapper",
        "experimental",
        "plugins",
        "plugin",
        "sleepMode",
        "rbac",
        "telemetry",
        "external",
        "platform",
        "policies.centralAdmission",
        "networking.resolveDNS",
        "integrations.externalSecrets",
        "integrations.certManager",
        "integrations.istio",
        "sync.fromHost.csiDrivers",
        "sync.fromHost.csiNodes",
        "sync.fromHost.csiStorageCapacities",
        "sync.toHost.volumeSnapshots",
        "sync.toHost.podDisruptionBudgets",
    }
    assert required <= set(UNSUPPORTED)
    assert "networking.dns.mode" in UNSUPPORTED["controlPlane.coredns"]


def test_disabled_unsupported_feature_is_accepted():
    cfg = load_config([], ["telemetry.enabled=false", "sleepMode={}", "plugins=null"])
    assert to_values(cfg) == defaults()


def test_wrong_type_names_path_and_type():
    err = _error([], ["sync.toHost.pods.enabled=maybe"])
    assert str(err) == "sync.toHost.pods.enabled: expected a boolean, got 'maybe'"
    assert "--set" in (err.hint or "")
    assert (
        str(_error([], ["sync.toHost.pods.enabled=1"]))
        == "sync.toHost.pods.enabled: expected a boolean, got 1"
    )
    assert str(_error([], ["controlPlane.proxy.port=abc"])) == (
        "controlPlane.proxy.port: expected an integer, got 'abc'"
    )
    assert str(_error([], ["controlPlane.distro.k8s.version=[a]"])) == (
        "controlPlane.distro.k8s.version: expected a string, got a list"
    )
    assert str(_error([], ["controlPlane.proxy.extraSANs=x"])) == (
        "controlPlane.proxy.extraSANs: expected a list, got 'x'"
    )
    assert str(_error([], ["sync.toHost=3"])) == "sync.toHost: expected a mapping, got 3"
    assert str(_error([], ["sync.fromHost.storageClasses.enabled=maybe"])) == (
        "sync.fromHost.storageClasses.enabled: expected true, false or 'auto', got 'maybe'"
    )


def test_wrong_type_in_file(tmp_path):
    path = _write(tmp_path, "values.yaml", "sync:\n  toHost:\n    pods:\n      enabled: maybe\n")
    err = _error([path], [])
    assert str(err) == "sync.toHost.pods.enabled: expected a boolean, got 'maybe'"
    assert err.hint == f"set in {path}"


@pytest.mark.parametrize("bad", ["abc", "=true", "", "a..b=1", "sync.=1"])
def test_bad_set(bad):
    err = _error([], [bad])
    assert str(err) == f"--set {bad!r}: expected KEY=VALUE, e.g. --set sync.toHost.ingresses.enabled=true"


def test_bad_set_value_yaml():
    assert str(_error([], ["sync={"])).startswith("--set 'sync={': the value is not valid YAML")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    err = _error([missing], [])
    assert str(missing) in str(err)
    assert "No such file" in str(err)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.yaml", "sync:\n  toHost: [1\n")
    err = _error([path], [])
    assert str(path) in str(err)
    assert "not valid YAML at line" in str(err)


def test_top_level_not_a_mapping(tmp_path):
    path = _write(tmp_path, "list.yaml", "- a\n- b\n")
    assert str(_error([path], [])) == f"values file {path}: expected a mapping at the top level, got a list"


def test_more_than_one_backing_store():
    err = _error(
        [],
        [
            "controlPlane.backingStore.etcd.embedded.enabled=true",
            "controlPlane.backingStore.database.embedded.enabled=true",
        ],
    )
    assert str(err) == (
        "controlPlane.backingStore: enable only one of database.embedded, database.external, "
        "etcd.embedded, etcd.external"
    )


def test_external_etcd_needs_endpoint():
    err = _error([], ["controlPlane.backingStore.etcd.external.enabled=true"])
    assert str(err).startswith("controlPlane.backingStore.etcd.external.endpoint: required")


def test_external_database_needs_data_source():
    err = _error([], ["controlPlane.backingStore.database.external.enabled=true"])
    assert str(err).startswith("controlPlane.backingStore.database.external.dataSource: required")


def test_k8s_cannot_be_disabled():
    err = _error([], ["controlPlane.distro.k8s.enabled=false"])
    assert str(err).startswith("controlPlane.distro.k8s.enabled: vnest runs upstream Kubernetes (k8s) only")


def test_custom_resource_keys_must_be_plural_group():
    err = _error([], ["sync.toHost.customResources.certificates.enabled=true"])
    assert str(err) == (
        "sync.toHost.customResources.certificates: expected a key of the form plural.group, got 'certificates'"
    )


SERVICE_REF_RULE = (
    "expected namespace/name or name, a namespace being a DNS-1123 label and a name a DNS-1035 label "
    "(at most 63 lowercase letters, digits or '-'; a name starts with a letter)"
)


@pytest.mark.parametrize(
    "ref", ["a/b/c", "Web", "ns/", "/name", "a b", "ns/1web", "ns/web-", "ns/" + "w" * 64, "n" * 64 + "/web"]
)
def test_replicated_service_refs_are_checked(ref):
    err = _error([], [f"networking.replicateServices.fromHost=[{{from: '{ref}', to: ns/ok}}]"])
    shown = repr(ref) if len(repr(ref)) <= 60 else repr(ref)[:57] + "..."
    assert str(err) == f"networking.replicateServices.fromHost[0].from: {SERVICE_REF_RULE}, got {shown}"


@pytest.mark.parametrize("ref", ["web", "ns/web", "1ns/w-1", "ns/" + "w" * 63, "n" * 63 + "/web"])
def test_replicated_service_refs_that_are_valid(ref):
    cfg = load_config([], [f"networking.replicateServices.fromHost=[{{from: '{ref}', to: ns/ok}}]"])
    assert cfg.networking.replicate_services.from_host[0].from_ == ref


@pytest.mark.parametrize(
    ("mappings", "message"),
    [
        (
            "fromHost=[{from: db, to: db}]",
            "fromHost[0].to: expected namespace/name: the virtual cluster's side always names its "
            "namespace, got 'db'",
        ),
        (
            "toHost=[{from: web, to: web}]",
            "toHost[0].from: expected namespace/name: the virtual cluster's side always names its "
            "namespace, got 'web'",
        ),
        (
            "fromHost=[{from: a, to: ns/db}, {from: other/b, to: ns/db}]",
            "fromHost[1].to: 'ns/db' is already the target of fromHost[0]; "
            "a service can be the target of one mapping only",
        ),
        (
            "toHost=[{from: ns/a, to: web}, {from: ns/b, to: web}]",
            "toHost[1].to: 'web' is already the target of toHost[0]; a service can be the target of one "
            "mapping only",
        ),
    ],
)
def test_replicated_service_directions_and_duplicates(mappings, message):
    err = _error([], [f"networking.replicateServices.{mappings}"])
    assert str(err) == f"networking.replicateServices.{message}"


def test_replicated_services_as_vcluster_reads_them():
    # vCluster's shapes: a bare host-side name, the virtual side always namespaced; one source may
    # feed several targets.
    cfg = load_config(
        [],
        [
            "networking.replicateServices.fromHost=[{from: db, to: ns/db}, {from: db, to: other/db}]",
            "networking.replicateServices.toHost=[{from: ns/web, to: web}, {from: ns/web, to: team/web}]",
        ],
    )
    assert [m.to for m in cfg.networking.replicate_services.from_host] == ["ns/db", "other/db"]
    assert [m.to for m in cfg.networking.replicate_services.to_host] == ["web", "team/web"]


# --- generated files ----------------------------------------------------------------------


def test_generated_files_are_current():
    for path, text in config_schema.generated().items():
        assert path.exists(), f"{path} is missing: run python -m vnest.config.schema"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python -m vnest.config.schema"


def test_schema_shape():
    schema = json.loads(config_schema.schema_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "sync",
        "controlPlane",
        "networking",
        "policies",
        "integrations",
        "exportKubeConfig",
    }
    proxy = schema["$defs"]["Proxy"]["properties"]
    assert "extraSANs" in proxy and proxy["port"]["description"]
    assert yaml.safe_load(config_schema.values_text()) == defaults()


# --- no key accepted and ignored ------------------------------------------------------------

# Leaf names too common to tell whether their setting is read: the nearest specific key above
# them is looked for instead (`sync.toHost.ingresses.enabled` -> "ingresses").
_GENERIC = {
    "enabled", "labels", "annotations", "image", "registry", "repository", "tag", "all", "selector",
    "spec", "resources", "extraArgs", "name", "namespace", "port", "cidr", "except", "version",
    "mode", "size", "storageClass", "accessModes", "limits", "requests",
}  # fmt: skip
# Maps whose keys are the user's (quota names, label keys): the map is the setting.
_MAPS = {"quota", "default", "defaultRequest", "max", "min", "labels", "annotations", "matchLabels"}


def _leaves(obj: object, path: tuple[str, ...] = ()):
    if isinstance(obj, dict) and obj and (not path or path[-1] not in _MAPS):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path


def _attribute_names() -> dict[str, str]:
    """vcluster.yaml key -> the models' attribute, for code that reads the typed config."""
    from pydantic import BaseModel

    from vnest.config import models

    names = {}
    for model in vars(models).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update({info.alias or name: name for name, info in model.model_fields.items()})
    return names


def test_every_accepted_key_is_read_somewhere_or_refused():
    from vnest.config.models import NOT_YET

    root = pathlib.Path(__file__).resolve().parents[2]
    code = "".join(
        p.read_text()
        for p in (root / "vnest").rglob("*.py")
        if "config" not in p.relative_to(root / "vnest").parts
    )
    code += "".join(p.read_text() for p in (root / "chart" / "templates").iterdir())
    unread = []
    attributes = _attribute_names()
    for path in _leaves(defaults()):
        dotted = ".".join(path)
        if any(dotted == k or dotted.startswith(k + ".") for k in NOT_YET):
            continue
        probe = next((k for k in reversed(path) if k not in _GENERIC), path[-1])
        as_key = rf"[\"'\s.]{re.escape(probe)}[\"'\s\]}}]"
        as_attribute = rf"\.{re.escape(attributes.get(probe, probe))}\b"
        if not re.search(as_key, code) and not re.search(as_attribute, code):
            unread.append(dotted)
    assert unread == [], "accepted but read nowhere: add the feature, or list the key in models.NOT_YET"


@pytest.mark.parametrize(
    "setting",
    [
        "integrations.kubeVirt.webhook.enabled=false",
        "integrations.kubeVirt.apiService.service.port=8443",
        "integrations.metricsServer.enabled=true",
        "exportKubeConfig.context=mine",
        "networking.advanced.proxyKubelets.byHostname=false",
        "sync.fromHost.nodes.syncBackChanges=true",
    ],
)
def test_keys_not_built_yet_are_refused_unless_left_at_their_default(setting):
    key = setting.split("=")[0].rsplit(".", 1)[0]
    with pytest.raises(UsageError, match="not supported by vnest yet"):
        load_config([], [setting])
    default = {"true": "false", "false": "true"}.get(setting.split("=")[1])
    if default is not None:  # the default itself is fine: a vCluster user's full file still loads
        load_config([], [f"{setting.split('=')[0]}={default}"])
    assert key


def test_rewrite_hosts_image_must_be_one_reference():
    err = _error([], ["sync.toHost.pods.rewriteHosts.initContainer.image=busybox; reboot"])
    assert "sync.toHost.pods.rewriteHosts.initContainer.image" in str(err)
    assert "expected an image reference such as docker.io/library/busybox:1.37" in str(err)
    err = _error([], ["sync.toHost.pods.rewriteHosts.initContainer.resources.requests.cpu=lots"])
    assert "sync.toHost.pods.rewriteHosts.initContainer.resources.requests.cpu" in str(err)
