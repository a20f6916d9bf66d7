"""KubeVirt's and CDI's CRDs from the npm package of their OpenAPI models (vnest.binaries.kubevirt_api):
the .d.ts parser on small snippets, and the CRDs rendered from the real, pinned package."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from vnest.binaries import build, kubevirt_api
from vnest.binaries.kubevirt_api import Prop, SchemaBuilder, parse_models
from vnest.errors import VnestError

pytestmark = pytest.mark.unit

SNIPPET = """
/**
 * A thing with parts.
 * @export
 * @interface V1Thing
 */
interface V1Thing {
    /**
     * Name of the thing.
     * @type {string}
     * @memberof V1Thing
     */
    name: string;
    /**
     * How many.
     * @type {number}
     * @memberof V1Thing
     */
    count?: number;
    /**
     * The parts.
     * @type {Array<V1Part>}
     * @memberof V1Thing
     */
    parts?: Array<V1Part>;
    /**
     * Labels.
     * @type {{ [key: string]: string; }}
     * @memberof V1Thing
     */
    labels?: {
        [key: string]: string;
    };
    /**
     * Limits describes the maximum amount of compute resources allowed.
     * @type {{ [key: string]: string; }}
     * @memberof V1Thing
     */
    limits?: {
        [key: string]: string;
    };
    /**
     * Parts by name.
     * @type {{ [key: string]: V1Part; }}
     * @memberof V1Thing
     */
    byName?: {
        [key: string]: V1Part;
    };
    /**
     * Quantity is a fixed-point representation of a number. It provides convenient marshaling.
     * @type {string}
     * @memberof V1Thing
     */
    size?: string;
    /**
     * IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling.
     * @type {string}
     * @memberof V1Thing
     */
    port?: string;
    /**
     * Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.
     * @type {string}
     * @memberof V1Thing
     */
    since?: string;
    /**
     * An empty struct.
     * @type {object}
     * @memberof V1Thing
     */
    masquerade?: object;
    /**
     * Anything at all.
     * @type {any}
     * @memberof V1Thing
     */
    extra?: any;
    /**
     * The mode.
     *
     * Possible enum values:
     *  - `"A"`
     * @type {string}
     * @memberof V1Thing
     */
    mode?: V1ThingModeEnum;
}
declare const V1ThingModeEnum: {
    readonly A: "A";
};
declare function instanceOfV1Thing(value: object): boolean;

/**
 * A part, which may hold further parts.
 * @export
 * @interface V1Part
 */
interface V1Part {
    /**
     *
     * @type {string}
     * @memberof V1Part
     */
    id: string;
    /**
     * Sub-parts: the same model again.
     * @type {Array<V1Part>}
     * @memberof V1Part
     */
    children?: Array<V1Part>;
    /**
     *
     * @type {V1Thing}
     * @memberof V1Part
     */
    owner?: V1Thing;
}
"""


def _schema(name: str = "V1Thing") -> dict[str, Any]:
    return SchemaBuilder(parse_models(SNIPPET))._object(parse_models(SNIPPET)[name], (name,))


def test_parser_reads_properties_their_types_and_docs():
    models = parse_models(SNIPPET)
    assert set(models) == {"V1Thing", "V1Part"}
    thing = models["V1Thing"]
    assert thing.doc == "A thing with parts."
    assert thing.props["name"] == Prop("name", "string", required=True, doc="Name of the thing.")
    assert thing.props["count"].required is False
    assert thing.props["parts"].type == "Array<V1Part>"
    assert thing.props["labels"].type == "{[key:string]:string;}"
    # An enum is declared as its own alias; its @type says what it is on the wire.
    assert thing.props["mode"].type == "string"
    assert "Possible enum values" in thing.props["mode"].doc


def test_required_optional_arrays_maps_and_refs():
    schema = _schema()
    assert schema["type"] == "object"
    assert schema["description"] == "A thing with parts."
    assert schema["required"] == ["name"]
    props = schema["properties"]
    assert props["name"] == {"description": "Name of the thing.", "type": "string"}
    assert props["count"]["type"] == "integer"
    assert props["parts"]["type"] == "array"
    part = props["parts"]["items"]
    assert part["type"] == "object" and part["required"] == ["id"]
    assert props["labels"] == {
        "description": "Labels.",
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert props["byName"]["additionalProperties"]["properties"]["id"] == {"type": "string"}
    assert props["masquerade"] == {"description": "An empty struct.", "type": "object"}
    # `any` keeps whatever it is given: no type, unknown fields preserved.
    assert props["extra"] == {"description": "Anything at all.", "x-kubernetes-preserve-unknown-fields": True}
    assert props["mode"]["type"] == "string" and "enum" not in props["mode"]


def test_quantities_int_or_string_and_times():
    props = _schema()["properties"]
    # A quantity: 1 and "128Mi" are both valid, as Kubernetes' own quantities are.
    assert props["size"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert props["size"]["x-kubernetes-int-or-string"] is True
    assert "pattern" in props["size"] and "type" not in props["size"]
    assert props["port"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    # A resource list: the generator flattened its values to string; they are quantities.
    assert props["limits"]["additionalProperties"]["x-kubernetes-int-or-string"] is True
    assert props["since"] == {"type": "string", "format": "date-time", "nullable": True}


def test_a_cycle_is_cut_where_it_closes():
    builder = SchemaBuilder(parse_models(SNIPPET))
    part = builder._object(builder.models["V1Thing"], ("V1Thing",))["properties"]["parts"]["items"]
    cut = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    # V1Part -> children: V1Part again; V1Part -> owner: V1Thing, which is being inlined.
    assert part["properties"]["children"]["items"] == cut
    assert {k: v for k, v in part["properties"]["owner"].items() if k != "description"} == cut
    assert builder.cut == {("V1Part", "children"), ("V1Part", "owner")}


def test_kind_schemas_leave_metadata_to_the_api_server_and_keep_template_metadata():
    snippet = """
interface K8sIoApimachineryPkgApisMetaV1ObjectMeta {
    /**
     * @type {{ [key: string]: string; }}
     */
    labels?: {
        [key: string]: string;
    };
    /**
     * @type {{ [key: string]: string; }}
     */
    annotations?: {
        [key: string]: string;
    };
    /**
     * @type {Array<string>}
     */
    ownerReferences?: Array<string>;
}
interface V1Template {
    /**
     * @type {K8sIoApimachineryPkgApisMetaV1ObjectMeta}
     */
    metadata?: K8sIoApimachineryPkgApisMetaV1ObjectMeta;
}
interface V1Kind {
    /**
     * @type {string}
     */
    apiVersion?: string;
    /**
     * @type {K8sIoApimachineryPkgApisMetaV1ObjectMeta}
     */
    metadata?: K8sIoApimachineryPkgApisMetaV1ObjectMeta;
    /**
     * @type {V1Template}
     */
    template: V1Template;
}
"""
    schema = SchemaBuilder(parse_models(snippet)).kind("V1Kind")
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["properties"]["template"]["properties"]["metadata"] == {
        "type": "object",
        "nullable": True,
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert schema["required"] == ["template"]


def test_an_unknown_type_is_an_error():
    snippet = "interface V1X {\n    /**\n     * @type {Set<string>}\n     */\n    s?: Set<string>;\n}\n"
    with pytest.raises(VnestError, match="Set<string>"):
        SchemaBuilder(parse_models(snippet)).kind("V1X")


def test_extracting_refuses_paths_outside_the_folder(tmp_path: Path):
    tarball = tmp_path / "evil.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("package/../../escaped")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(VnestError, match="outside"):
        kubevirt_api._extract(tarball, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


# The real package: fetched once (npm pack, checked against the pinned integrity) for the module.


@pytest.fixture(scope="module")
def crds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    pin = build.pins()["kubevirt-api"]
    root = kubevirt_api.fetch_package(
        pin["package"], pin["version"], pin["integrity"], tmp_path_factory.mktemp("kubevirt-api")
    )
    docs = list(yaml.safe_load_all(kubevirt_api.render_crds(root)))
    return {d["spec"]["names"]["kind"]: d for d in docs}


def _version(crd: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in crd["spec"]["versions"] if v["name"] == name)


def test_the_pinned_package_is_checked_against_its_integrity(tmp_path: Path):
    pin = build.pins()["kubevirt-api"]
    wrong = "sha512-" + "A" * 86 + "=="
    with pytest.raises(VnestError, match="integrity"):
        kubevirt_api.fetch_package(pin["package"], pin["version"], wrong, tmp_path)


def test_real_kinds_groups_names_and_scopes(crds: dict[str, dict[str, Any]]):
    vm = crds["VirtualMachine"]
    assert vm["metadata"]["name"] == "virtualmachines.kubevirt.io"
    assert vm["spec"]["group"] == "kubevirt.io"
    assert vm["spec"]["names"] == {
        "plural": "virtualmachines",
        "singular": "virtualmachine",
        "kind": "VirtualMachine",
        "shortNames": ["vm", "vms"],
        "categories": ["all"],
    }
    assert vm["spec"]["scope"] == "Namespaced"
    assert [(v["name"], v["served"], v["storage"]) for v in vm["spec"]["versions"]] == [
        ("v1", True, True),
        ("v1alpha3", True, False),
    ]
    assert _version(vm, "v1")["subresources"] == {"status": {}}
    columns = [c["name"] for c in _version(vm, "v1")["additionalPrinterColumns"]]
    assert columns == ["Age", "Status", "Ready"]

    vmi = crds["VirtualMachineInstance"]
    assert vmi["spec"]["names"]["plural"] == "virtualmachineinstances"
    assert vmi["spec"]["names"]["shortNames"] == ["vmi", "vmis"]
    assert "subresources" not in _version(vmi, "v1")  # KubeVirt's VMI has no status subresource

    dv = crds["DataVolume"]
    assert dv["metadata"]["name"] == "datavolumes.cdi.kubevirt.io"
    assert dv["spec"]["names"]["shortNames"] == ["dv", "dvs"]
    assert dv["spec"]["scope"] == "Namespaced"
    assert [v["name"] for v in dv["spec"]["versions"]] == ["v1beta1"]
    assert _version(dv, "v1beta1")["subresources"] == {"status": {}}

    rs = crds["VirtualMachineInstanceReplicaSet"]
    assert _version(rs, "v1")["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    pool = crds["VirtualMachinePool"]
    assert pool["spec"]["group"] == "pool.kubevirt.io"
    assert [v["name"] for v in pool["spec"]["versions"] if v["storage"]] == ["v1beta1"]
    assert crds["VirtualMachineClusterInstancetype"]["spec"]["scope"] == "Cluster"
    assert crds["VirtualMachineClusterPreference"]["spec"]["scope"] == "Cluster"
    assert crds["VirtualMachineSnapshot"]["spec"]["group"] == "snapshot.kubevirt.io"
    assert crds["VirtualMachineClone"]["spec"]["group"] == "clone.kubevirt.io"


def test_real_schemas_come_from_the_models(crds: dict[str, dict[str, Any]]):
    schema = _version(crds["VirtualMachine"], "v1")["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    template = spec["properties"]["template"]
    disks = template["properties"]["spec"]["properties"]["domain"]["properties"]["devices"]["properties"][
        "disks"
    ]
    assert disks["type"] == "array"
    assert disks["items"]["properties"]["name"]["type"] == "string"
    assert "name" in disks["items"]["required"]
    assert template["properties"]["metadata"]["x-kubernetes-preserve-unknown-fields"] is True
    assert schema["properties"]["metadata"] == {"type": "object"}
    resources = template["properties"]["spec"]["properties"]["domain"]["properties"]["resources"]
    assert resources["properties"]["requests"]["additionalProperties"]["x-kubernetes-int-or-string"] is True
    # Put back from the package's own Kubernetes models, and to KubeVirt's conditions.
    probe = template["properties"]["spec"]["properties"]["readinessProbe"]["properties"]
    assert probe["tcpSocket"]["properties"]["port"]["x-kubernetes-int-or-string"] is True
    condition = schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
    assert condition["lastTransitionTime"] == {"type": "string", "format": "date-time", "nullable": True}
    assert "dataVolumeTemplates" in spec["properties"]
    # No $ref anywhere: structural schemas inline everything.
    assert "$ref" not in yaml.safe_dump(schema)
