"""The clusterctl local repository: every provider `clusterctl init --infrastructure vnest` installs.

clusterctl reads providers from the URLs its config file names; a local repository is a
folder laid out as `{provider-label}/{version}/{components file}` beside a `metadata.yaml`.
vnest writes one with everything `clusterctl init` asks for, so nothing comes from the network:

    cert-manager/v1.21.2/cert-manager.yaml         cert-manager's CRDs + vnest's issuer (certissuer.py)
    cluster-api/v1.14.2/core-components.yaml       Cluster API's core, as its release renders it
    bootstrap-kubeadm/v1.14.2/...                  the kubeadm providers clusterctl adds by default
    control-plane-kubeadm/v1.14.2/...
    infrastructure-vnest/v0.1.0/infrastructure-components.yaml   the VNestCluster CRD, RBAC, provider
    infrastructure-vnest/v0.1.0/cluster-template.yaml            what `clusterctl generate cluster` fills in

and a clusterctl.yaml naming them. Cluster API's components come from the pinned module,
rendered at build time (vnest.binaries.build.CAPI_COMPONENTS); images are the names the local
host's registry serves them under.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from vnest import __version__, binaries
from vnest.integrations.capi import api
from vnest.kube.client import Obj

CAPI_NAMESPACE = "capi-system"
PROVIDER_NAMESPACE = "vnest-system"
CERT_MANAGER_NAMESPACE = "cert-manager"
PROVIDER_NAME = "vnest"
# Canonical, as clusterctl requires: what the chart's `vnest:<version>` is short for.
VNEST_IMAGE = f"docker.io/library/vnest:{__version__}"
CAPI_IMAGE_REGISTRY = "registry.k8s.io/cluster-api"
# clusterctl's names for what it installs: (name, type, folder label, components file, image).
CAPI_PROVIDERS = (
    ("cluster-api", "CoreProvider", "cluster-api", "core-components.yaml", "cluster-api-controller"),
    ("kubeadm", "BootstrapProvider", "bootstrap-kubeadm", "bootstrap-components.yaml", "kubeadm-bootstrap-controller"),
    ("kubeadm", "ControlPlaneProvider", "control-plane-kubeadm", "control-plane-components.yaml", "kubeadm-control-plane-controller"),
)  # fmt: skip
# The template's variables. clusterctl asks for every one without a default, and an empty
# default counts as none: `""` (an empty YAML string) and `{}` (no values) stand for "unset".
TEMPLATE = """\
# A vnest virtual cluster: one VNestCluster is the Cluster's infrastructure and control plane.
#   VNEST_VALUES         the virtual cluster's config (vcluster.yaml keys) as one line, newlines
#                        as \\n: export VNEST_VALUES=$(sed -z 's/\\n/\\\\n/g' vnest.yaml)
#   KUBERNETES_VERSION   --kubernetes-version; empty for vnest's pinned one
#   VNEST_HOST, VNEST_PORT  where the virtual API is reached; empty for the provider's choice
apiVersion: {cluster_api}
kind: Cluster
metadata:
  name: ${{CLUSTER_NAME}}
spec:
  infrastructureRef:
    apiGroup: {group}
    kind: {kind}
    name: ${{CLUSTER_NAME}}
  controlPlaneRef:
    apiGroup: {group}
    kind: {kind}
    name: ${{CLUSTER_NAME}}
---
apiVersion: {api_version}
kind: {kind}
metadata:
  name: ${{CLUSTER_NAME}}
spec:
  version: ${{KUBERNETES_VERSION:=""}}
  values: "${{VNEST_VALUES:={{}}}}"
  controlPlaneEndpoint:
    host: ${{VNEST_HOST:=""}}
    port: ${{VNEST_PORT:=0}}
"""


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def _dump(objs: list[Obj]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objs)


def _set_images(objs: list[Obj], image: str) -> list[Obj]:
    for obj in objs:
        if obj.get("kind") == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "manager":
                    container["image"] = image
    return objs


def _metadata(major: int, minor: int) -> Obj:
    return {
        "apiVersion": "clusterctl.cluster.x-k8s.io/v1alpha3",
        "kind": "Metadata",
        "releaseSeries": [{"major": major, "minor": minor, "contract": "v1beta2"}],
    }


def _labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "vnest"}


def _controller_deployment(name: str, namespace: str, account: str, args: list[str]) -> Obj:
    """A Deployment of vnest's image running `vnest capi ...`; restricted, as Cluster API's are."""
    labels = _labels(name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "manager",
                            "image": VNEST_IMAGE,
                            "command": ["vnest", *args],
                            # User 65532 has no home in the image: helm's caches and vnest's state go here.
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                            },
                        }
                    ],
                },
            },
        },
    }


def _rbac(name: str, namespace: str, rules: list[Obj], aggregate: bool = False) -> list[Obj]:
    role: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels(name)},
        "rules": rules,
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def cert_manager_components(crds: str) -> list[Obj]:
    """cert-manager's CRDs and vnest's issuer in its namespace."""
    name = "vnest-cert-issuer"
    rules: list[Obj] = [
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates", "issuers", "clusterissuers"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates/status", "issuers/status", "clusterissuers/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "update"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": ["apiregistration.k8s.io"], "resources": ["apiservices"], "verbs": ["get", "list", "watch", "update"]},
    ]  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CERT_MANAGER_NAMESPACE}},
        *_docs(crds),
        *_rbac(name, CERT_MANAGER_NAMESPACE, rules),
        _controller_deployment(name, CERT_MANAGER_NAMESPACE, name, ["capi", "cert-issuer"]),
    ]


def infrastructure_components() -> list[Obj]:
    """The VNestCluster CRD and the provider, with what it may do on the host: make virtual
    clusters (everything `vnest create` makes), and let Cluster API's core read its kind."""
    name = "vnest-capi-provider"
    rules: list[Obj] = [
        {"apiGroups": [api.GROUP], "resources": [api.PLURAL, f"{api.PLURAL}/status"], "verbs": ["*"]},
        {"apiGroups": ["cluster.x-k8s.io"], "resources": ["clusters"], "verbs": ["get", "list", "watch"]},
        # A virtual cluster's control plane: the chart's objects, its own RBAC included (a role
        # may only be granted by who holds it, hence escalate/bind), and what its syncer makes.
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    ]
    aggregated: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": f"{name}-for-capi",
            "labels": {"cluster.x-k8s.io/aggregate-to-manager": "true"},
        },
        "rules": [
            {"apiGroups": [api.GROUP], "resources": [api.PLURAL, f"{api.PLURAL}/status"], "verbs": ["*"]}
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROVIDER_NAMESPACE}},
        api.crd(),
        *_rbac(name, PROVIDER_NAMESPACE, rules),
        aggregated,
        _controller_deployment(name, PROVIDER_NAMESPACE, name, ["capi", "provider"]),
    ]


def cluster_template() -> str:
    return TEMPLATE.format(
        cluster_api=api.CLUSTER_API_VERSION, group=api.GROUP, kind=api.KIND, api_version=api.API_VERSION
    )


def write(root: Path) -> Path:
    """Writes the repository under `root` (replacing an earlier one) and returns its clusterctl.yaml."""
    bins = binaries.ensure()
    pins = binaries.pins()
    built = bins.dir / binaries.build.CAPI_DIR
    capi_version = pins["cluster-api"]["version"]
    cm_version = pins["cert-manager"]["version"]
    shutil.rmtree(root, ignore_errors=True)
    providers: list[dict[str, Any]] = []

    def put(label: str, version: str, filename: str, text: str, metadata: Obj | None) -> Path:
        folder = root / label / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_text(text)
        if metadata is not None:
            (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
        return folder / filename

    cm = put(
        "cert-manager",
        cm_version,
        "cert-manager.yaml",
        _dump(cert_manager_components((built / "cert-manager-crds.yaml").read_text())),
        None,
    )
    capi_metadata = yaml.safe_load((built / "metadata.yaml").read_text())
    for name, type_, label, filename, image in CAPI_PROVIDERS:
        objs = _set_images(
            _docs((built / filename).read_text()), f"{CAPI_IMAGE_REGISTRY}/{image}:{capi_version}"
        )
        path = put(label, capi_version, filename, _dump(objs), capi_metadata)
        providers.append({"name": name, "url": str(path), "type": type_})
    major, minor = (int(n) for n in __version__.split(".")[:2])
    version = f"v{__version__}"
    infra = put(
        f"infrastructure-{PROVIDER_NAME}",
        version,
        "infrastructure-components.yaml",
        _dump(infrastructure_components()),
        _metadata(major, minor),
    )
    (infra.parent / "cluster-template.yaml").write_text(cluster_template())
    providers.append({"name": PROVIDER_NAME, "url": str(infra), "type": "InfrastructureProvider"})
    config = {
        "providers": providers,
        "cert-manager": {"url": str(cm), "version": cm_version},
        # clusterctl would ask the internet for newer releases of itself.
        "CLUSTERCTL_DISABLE_VERSIONCHECK": "true",
    }
    path = root / "clusterctl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
