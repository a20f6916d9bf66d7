"""KubeVirt's and CDI's API as CRDs, generated from the npm package of their OpenAPI models.

KubeVirt's Go modules and images cannot be fetched where vnest builds, but the npm package
``@kubevirt-ui-ext/kubevirt-api`` (pinned in build/versions.toml) carries KubeVirt's and CDI's
OpenAPI models as TypeScript declarations: ``dist/kubevirt/index.d.ts`` and
``dist/containerized-data-importer/index.d.ts``, the ``.d.ts`` of openapi-generator's
typescript-fetch output, one ``interface`` per model::

    /**
     * <the model's doc>
     * @export
     * @interface V1VirtualMachineSpec
     */
    interface V1VirtualMachineSpec {
        /**
         * <the field's doc>
         * @type {Array<V1DataVolumeTemplateSpec>}
         * @memberof V1VirtualMachineSpec
         */
        dataVolumeTemplates?: Array<V1DataVolumeTemplateSpec>;

This module's parser is hand-written for that generated format (not a TypeScript parser): it
reads each interface's properties, their ``?`` (optional) or not (required), their type
(``string``, ``number``, ``boolean``, ``Array<T>``, ``{ [key: string]: T; }``, a reference to
another interface, ``object``, ``any``) and their doc comment. The OpenAPI formats the generator
flattened to ``string`` are recovered from the docs it copied from the referenced type: Kubernetes
quantities and IntOrString become ``x-kubernetes-int-or-string``, ``Time`` becomes a nullable
``date-time`` string. :func:`render_crds` turns the models into structural CRDs (no ``$ref``:
every reference is inlined; a reference back to a model being inlined, a cycle, is cut to an
object that keeps unknown fields) with KubeVirt's real names, scopes, versions, subresources and
printer columns, which are not in the models and are kept in :data:`KINDS`.

What the TypeScript side changed or lost is put back from the same package: JSON names that are
not TypeScript names (``default``, ``VSOCKCID``) from the generated sources in ``index.js.map``;
the required IntOrString ``port`` of HTTPGetAction and TCPSocketAction from the package's
Kubernetes models; the nullable ``lastProbeTime``/``lastTransitionTime`` of KubeVirt's
conditions (see :func:`restore_condition_times`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vnest.errors import VnestError

# The package's model files: KubeVirt's (kubevirt.io and its sub-groups) and CDI's.
KUBEVIRT_MODELS = "dist/kubevirt/index.d.ts"
CDI_MODELS = "dist/containerized-data-importer/index.d.ts"
# The same package's Kubernetes models, for what the generator dropped from KubeVirt's copies.
KUBERNETES_MODELS = "dist/kubernetes/index.d.ts"

Schema = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Fetching the package


def fetch_package(name: str, version: str, integrity: str, dest: Path) -> Path:
    """``npm pack NAME@VERSION`` (npm's configured registry), checked against the pinned
    ``sha512-<base64>`` integrity and unpacked under `dest`; returns the package's root."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise VnestError(f"unsupported integrity {integrity!r} for {name}@{version} (want sha512-...)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vnest-npm-") as tmp:
        try:
            packed = subprocess.run(
                ["npm", "pack", "--silent", f"{name}@{version}"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except FileNotFoundError:
            raise VnestError(
                f"npm is needed to fetch {name}@{version}, and `npm` is not on PATH",
                hint="install Node.js and npm (Debian: apt-get install nodejs npm)",
            ) from None
        if packed.returncode != 0:
            raise VnestError(f"npm pack {name}@{version} failed: {packed.stderr.strip()}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise VnestError(f"npm pack {name}@{version} left {len(tarballs)} tarballs, not one")
        data = tarballs[0].read_bytes()
        got = base64.b64encode(hashlib.sha512(data).digest()).decode()
        if got != expected:
            raise VnestError(
                f"{name}@{version} does not match its pinned integrity",
                hint=f"pinned sha512-{expected}, got sha512-{got}",
            )
        _extract(tarballs[0], dest)
    root = dest / "package"  # npm tarballs hold one top folder, "package" by convention
    if not (root / "package.json").is_file():
        raise VnestError(f"{name}@{version} has no package/package.json")
    return root


def _extract(tarball: Path, dest: Path) -> None:
    """Unpacks regular files and folders only, refusing any path that would leave `dest`."""
    base = dest.resolve()
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            target = (base / member.name).resolve()
            if not target.is_relative_to(base) or member.name.startswith("/"):
                raise VnestError(f"{tarball.name} holds a path outside its folder: {member.name}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, open(target, "wb") as out:
                    out.write(source.read())
            # links, devices and the like are skipped: a package of declarations needs none


# ---------------------------------------------------------------------------------------------
# Parsing the declarations


@dataclass(frozen=True)
class Prop:
    name: str
    type: str  # the TypeScript type, whitespace removed: "Array<V1Disk>", "{[key:string]:string;}"
    required: bool
    doc: str


@dataclass
class Model:
    name: str
    doc: str
    props: dict[str, Prop] = field(default_factory=dict)


_INTERFACE = re.compile(r"^(?:/\*\*\n(?P<doc>(?:(?!\*/).*\n)*?) \*/\n)?interface (?P<name>\w+) \{\n", re.M)
_PROP_DECL = re.compile(
    r"^\s*(?:readonly\s+)?(?P<name>'[^']*'|\"[^\"]*\"|[\w$]+)(?P<opt>\?)?\s*:\s*(?P<type>.*)$"
)


def _doc(comment_lines: list[str]) -> tuple[str, str | None]:
    """The text of a /** */ comment (without its @tags) and its @type, if any."""
    text: list[str] = []
    ts_type = None
    for raw in comment_lines:
        line = re.sub(r"^\s*\*? ?", "", raw.rstrip(), count=1)
        if line.startswith("@type "):
            ts_type = line[len("@type ") :].strip()
            if ts_type.startswith("{") and ts_type.endswith("}"):
                ts_type = ts_type[1:-1]
        elif line.startswith("@"):
            continue
        else:
            text.append(line)
    return "\n".join(text).strip(), ts_type


def parse_models(source: str) -> dict[str, Model]:
    """Every ``interface`` of a typescript-fetch ``.d.ts``, by name."""
    models: dict[str, Model] = {}
    lines = source.split("\n")
    line_no = pos = 0
    for match in _INTERFACE.finditer(source):
        line_no += source.count("\n", pos, match.end())  # the body's first line
        pos = match.end()
        model_doc, _ = _doc((match.group("doc") or "").splitlines())
        model = Model(match.group("name"), model_doc)
        i = line_no
        comment: list[str] = []
        while i < len(lines) and lines[i] != "}":
            line = lines[i]
            stripped = line.strip()
            if stripped.startswith("/**"):
                comment = []
                rest = stripped[3:]
                while not rest.rstrip().endswith("*/"):
                    if rest.strip():
                        comment.append(rest)
                    i += 1
                    rest = lines[i]
                last = rest.rstrip()[:-2]
                if last.strip() and last.strip() != "*":
                    comment.append(last)
                i += 1
                continue
            decl = line
            # A declaration ends with ";" once its braces and angle brackets balance.
            while not (_balanced(decl) and decl.rstrip().endswith(";")) and i + 1 < len(lines):
                i += 1
                decl += "\n" + lines[i]
            i += 1
            m = _PROP_DECL.match(decl.replace("\n", " "))
            if not m:
                comment = []
                continue
            doc, doc_type = _doc(comment)
            comment = []
            decl_type = re.sub(r"\s+", "", m.group("type").rstrip().removesuffix(";"))
            ts_type = _pick_type(decl_type, doc_type)
            name = m.group("name").strip("'\"")
            model.props[name] = Prop(name, ts_type, required=not m.group("opt"), doc=doc)
        models[model.name] = model
    return models


def restore_dropped(models: dict[str, Model], kubernetes: dict[str, Model]) -> list[str]:
    """Adds back the required fields the generator dropped from KubeVirt's copies of Kubernetes'
    types (the required IntOrString ``port`` of HTTPGetAction and TCPSocketAction), taken from the
    package's own Kubernetes models (``IoK8sApiCoreV1X`` for KubeVirt's ``K8sIoApiCoreV1X``).
    Returns what it added, as ``Model.field``."""
    added = []
    for name, model in models.items():
        if not name.startswith("K8sIo"):
            continue
        upstream = kubernetes.get("IoK8s" + name.removeprefix("K8sIo"))
        if upstream is None:
            continue
        for prop in upstream.props.values():
            if prop.name in model.props or not prop.required:
                continue
            ts_type = re.sub(r"\bIoK8s(\w+)", r"K8sIo\1", prop.type)
            if any(ref not in models for ref in re.findall(r"\bK8sIo\w+", ts_type)):
                continue
            model.props[prop.name] = Prop(prop.name, ts_type, prop.required, prop.doc)
            added.append(f"{name}.{prop.name}")
    return sorted(added)


# A line of a generated FromJSON function:
#     'vSOCKCID': !exists(json, 'VSOCKCID') ? undefined : json['VSOCKCID'],
_FROM_JSON_FIELD = re.compile(r"^\s*'?([\w$]+)'?\s*:[^\n]*?\bjson\['([^']+)'\]", re.M)


def wire_names(source_map: str) -> dict[str, dict[str, str]]:
    """The JSON names of the properties whose TypeScript names differ (``_default`` for
    ``default``, ``vSOCKCID`` for ``VSOCKCID``), by model: read from the ``FromJSON`` functions
    of the generated model sources that the package's source map (``index.js.map``) carries."""
    data = json.loads(source_map)
    names: dict[str, dict[str, str]] = {}
    for path, content in zip(data.get("sources", []), data.get("sourcesContent") or [], strict=False):
        model = re.fullmatch(r".*/models/(\w+)\.ts", path)
        if not model or not content:
            continue
        differing = {ts: wire for ts, wire in _FROM_JSON_FIELD.findall(content) if ts != wire}
        if differing:
            names[model.group(1)] = differing
    return names


def rename_to_wire_names(models: dict[str, Model], names: dict[str, dict[str, str]]) -> None:
    for model_name, renames in names.items():
        model = models.get(model_name)
        if model is None:
            continue
        model.props = {
            renames.get(key, key): Prop(renames.get(key, key), p.type, p.required, p.doc)
            for key, p in model.props.items()
        }


# The generator also drops the `+nullable` non-pointer Time fields of KubeVirt's conditions: every
# KubeVirt condition type has `LastProbeTime` and `LastTransitionTime` (types.go of core/v1,
# snapshot/v1beta1, pool/v1beta1), and the package's copies have only type, status, reason, message.
CONDITION_TIMES = ("lastProbeTime", "lastTransitionTime")
_CONDITION_SHAPE = {"type", "status", "reason", "message"}


def restore_condition_times(models: dict[str, Model]) -> list[str]:
    """Adds ``lastProbeTime`` and ``lastTransitionTime`` back to KubeVirt's condition models that
    lost them; returns what it added, as ``Model.field``."""
    added = []
    for name, model in models.items():
        if name.endswith("Condition") and set(model.props) == _CONDITION_SHAPE:
            for field_name in CONDITION_TIMES:
                model.props[field_name] = Prop(field_name, "string", False, _TIME_DOCS[0] + ".")
                added.append(f"{name}.{field_name}")
    return sorted(added)


def _balanced(text: str) -> bool:
    return text.count("{") == text.count("}") and text.count("<") == text.count(">")


def _pick_type(declared: str, documented: str | None) -> str:
    """The declared type, except for enums: the generator declares those as their own type
    alias, and documents the OpenAPI type (string) in @type."""
    if documented is None:
        return declared
    documented = re.sub(r"\s+", "", documented)
    if declared.endswith("Enum") and documented in ("string", "number", "boolean"):
        return documented
    if re.sub(r"Enum\b", "", declared) != declared and documented.startswith("Array<"):
        return documented
    return declared


# ---------------------------------------------------------------------------------------------
# Models -> OpenAPI v3 (structural)


_QUANTITY_DOC = "Quantity is a fixed-point representation of a number."
_INT_OR_STRING_DOC = "IntOrString is a type that can hold an int32 or a string."
_TIME_DOCS = ("Time is a wrapper around time.Time", "MicroTime is version of Time")
# Maps of resource name to quantity: the generator flattens their values to string.
QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "allocatable", "allocatedResources"})
# What apimachinery's resource.Quantity accepts (controller-gen writes the same pattern).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
    r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


# Fields KubeVirt's Go types mark `+nullable` beyond the two rules above (every Time is nullable,
# and so is ObjectMeta inside a template): kubevirt/kubevirt staging/src/kubevirt.io/api/core/v1/types.go.
NULLABLE = frozenset(
    {
        ("V1DataVolumeTemplateSpec", "status"),
        ("V1VirtualMachineInstanceReplicaSet", "status"),
        ("V1VirtualMachineInstanceStatus", "changedBlockTracking"),
        ("V1VirtualMachineStatus", "startFailure"),
        ("V1VirtualMachineStatus", "memoryDumpRequest"),
        ("V1VirtualMachineStatus", "changedBlockTracking"),
        ("V1VirtualMachineStatus", "instancetypeRef"),
        ("V1VirtualMachineStatus", "preferenceRef"),
        ("V1ChangedBlockTrackingStatus", "backupStatus"),
    }
)
# The generator writes `number` for integers and floats alike; these few are floats in Go
# (float64), every other number is an integer.
FLOATS = frozenset({("V1VirtualMachineInstanceGuestOSUser", "loginTime")})


def _quantity() -> Schema:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }


def _int_or_string() -> Schema:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


def _is_object_meta(model: Model) -> bool:
    return model.name.endswith("ObjectMeta") and {"labels", "annotations", "ownerReferences"} <= set(
        model.props
    )


def _split_generic(ts_type: str, prefix: str) -> str | None:
    if ts_type.startswith(prefix + "<") and ts_type.endswith(">"):
        return ts_type[len(prefix) + 1 : -1]
    return None


class SchemaBuilder:
    """Inlines models into OpenAPI v3 schemas the way a structural CRD needs them."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models
        self.cut: set[tuple[str, str]] = set()  # (model, property) where a cycle was cut

    def kind(self, model_name: str) -> Schema:
        """The schema of a top-level kind: its metadata is the API server's (type: object)."""
        model = self.models[model_name]
        schema = self._object(model, stack=(model_name,))
        props = schema["properties"]
        if "metadata" in props:
            props["metadata"] = {"type": "object"}
        for generic in ("apiVersion", "kind", "metadata"):
            if generic in schema.get("required", []):
                schema["required"].remove(generic)
        if not schema.get("required"):
            schema.pop("required", None)
        return schema

    def _object(self, model: Model, stack: tuple[str, ...]) -> Schema:
        if _is_object_meta(model):
            # Metadata inside a template: kept as given, the way KubeVirt's CRDs keep it.
            return {"type": "object", "nullable": True, "x-kubernetes-preserve-unknown-fields": True}
        schema: Schema = {"type": "object"}
        if model.doc:
            schema["description"] = model.doc
        if not model.props:
            return schema
        props: Schema = {}
        for name in sorted(model.props):
            props[name] = self.prop(model, model.props[name], stack)
        schema["properties"] = props
        required = sorted(p.name for p in model.props.values() if p.required)
        if required:
            schema["required"] = required
        return schema

    def prop(self, model: Model, prop: Prop, stack: tuple[str, ...]) -> Schema:
        doc = prop.doc
        if prop.type == "string" and doc.startswith(_QUANTITY_DOC):
            return _quantity()  # the doc is Quantity's, not the field's
        if prop.type == "string" and doc.startswith(_INT_OR_STRING_DOC):
            return _int_or_string()
        if prop.type == "string" and doc.startswith(_TIME_DOCS):
            return {"type": "string", "format": "date-time", "nullable": True}
        if prop.name in QUANTITY_MAPS and re.fullmatch(r"\{\[key:string\]:string;?\}", prop.type):
            schema: Schema = {"type": "object", "additionalProperties": _quantity()}
        elif (model.name, prop.name) in FLOATS and prop.type == "number":
            schema = {"type": "number"}
        else:
            schema = self.type(prop.type, stack, where=(model.name, prop.name))
        if (model.name, prop.name) in NULLABLE:
            schema["nullable"] = True
        if doc and "description" not in schema:
            schema = {"description": doc, **schema}
        elif doc:
            schema["description"] = doc  # the field's own doc says more than its type's
        return schema

    def type(self, ts_type: str, stack: tuple[str, ...], where: tuple[str, str] = ("", "")) -> Schema:
        ts_type = ts_type.strip()
        if ts_type.endswith("|null"):
            return {**self.type(ts_type[: -len("|null")], stack, where), "nullable": True}
        if ts_type in ("string", "Date"):
            return {"type": "string", "format": "date-time"} if ts_type == "Date" else {"type": "string"}
        if ts_type == "number":
            return {"type": "integer"}
        if ts_type == "boolean":
            return {"type": "boolean"}
        if ts_type == "object":
            return {"type": "object"}
        if ts_type == "any":
            return {"x-kubernetes-preserve-unknown-fields": True}
        if (item := _split_generic(ts_type, "Array")) is not None:
            return {"type": "array", "items": self.type(item, stack, where)}
        if ts_type.endswith("[]"):
            return {"type": "array", "items": self.type(ts_type[:-2], stack, where)}
        if m := re.fullmatch(r"\{\[\w+:string\]:(.+?);?\}", ts_type):
            return {"type": "object", "additionalProperties": self.type(m.group(1), stack, where)}
        if ts_type in self.models:
            if ts_type in stack:
                self.cut.add(where)
                return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            return self._object(self.models[ts_type], (*stack, ts_type))
        raise VnestError(f"cannot map the TypeScript type {ts_type!r} of {where[0]}.{where[1]} to OpenAPI")


# ---------------------------------------------------------------------------------------------
# The kinds: what the models do not say, from KubeVirt's own CRD definitions
# (kubevirt/kubevirt pkg/virt-operator/resource/generate/components/crds.go, with
# ApiSupportedVersions from staging/src/kubevirt.io/api/core/v1/register.go), and for CDI
# containerized-data-importer's pkg/operator/resources/crds_generated.go (controller-gen output of
# the kubebuilder markers in its api/pkg/apis/core/v1beta1/types.go).


@dataclass(frozen=True)
class Version:
    name: str
    model: str  # the interface of this version's object
    storage: bool = False
    deprecation: str | None = None  # a deprecated version's warning


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    group: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    versions: tuple[Version, ...]
    scope: str = "Namespaced"
    categories: tuple[str, ...] = ("all",)
    status: bool = True
    scale: bool = False  # .spec.replicas, .status.replicas, .status.labelSelector
    columns: tuple[Column, ...] = ()
    source: str = "kubevirt"  # which model file: "kubevirt" or "cdi"


PRESET_DEPRECATED = "{} VirtualMachineInstancePresets is now deprecated and will be removed in v2."
AGE = Column("Age", "date", ".metadata.creationTimestamp")
PHASE = Column("Phase", "string", ".status.phase")


def _core(model: str) -> tuple[Version, ...]:
    # virtv1.ApiSupportedVersions: v1 (storage) and the deprecated v1alpha3, one schema.
    return (
        Version("v1", model, storage=True),
        Version(
            "v1alpha3",
            model,
            deprecation="kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release.",
        ),
    )


KINDS: tuple[Kind, ...] = (
    Kind(
        "kubevirt.io",
        "VirtualMachine",
        "virtualmachines",
        "virtualmachine",
        ("vm", "vms"),
        _core("V1VirtualMachine"),
        columns=(
            AGE,
            Column("Status", "string", ".status.printableStatus", "Human Readable Status"),
            Column("Ready", "string", ".status.conditions[?(@.type=='Ready')].status"),
        ),
    ),
    Kind(
        "kubevirt.io",
        "VirtualMachineInstance",
        "virtualmachineinstances",
        "virtualmachineinstance",
        ("vmi", "vmis"),
        _core("V1VirtualMachineInstance"),
        # crds.go gives VirtualMachineInstance no status subresource: virt-handler writes it with the spec.
        status=False,
        columns=(
            AGE,
            PHASE,
            Column("IP", "string", ".status.interfaces[0].ipAddress"),
            Column("NodeName", "string", ".status.nodeName"),
            Column("Ready", "string", ".status.conditions[?(@.type=='Ready')].status"),
            Column(
                "Live-Migratable",
                "string",
                ".status.conditions[?(@.type=='LiveMigratable')].status",
                priority=1,
            ),
            Column("Paused", "string", ".status.conditions[?(@.type=='Paused')].status", priority=1),
        ),
    ),
    Kind(
        "kubevirt.io",
        "VirtualMachineInstanceMigration",
        "virtualmachineinstancemigrations",
        "virtualmachineinstancemigration",
        ("vmim", "vmims"),
        _core("V1VirtualMachineInstanceMigration"),
        columns=(
            Column("Phase", "string", ".status.phase", "The current phase of VM instance migration"),
            Column("VMI", "string", ".spec.vmiName", "The name of the VMI to perform the migration on"),
        ),
    ),
    Kind(
        "kubevirt.io",
        "VirtualMachineInstanceReplicaSet",
        "virtualmachineinstancereplicasets",
        "virtualmachineinstancereplicaset",
        ("vmirs", "vmirss"),
        _core("V1VirtualMachineInstanceReplicaSet"),
        scale=True,
        columns=(
            Column("Desired", "integer", ".spec.replicas", "Number of desired VirtualMachineInstances"),
            Column(
                "Current",
                "integer",
                ".status.replicas",
                "Number of managed and not final or deleted VirtualMachineInstances",
            ),
            Column(
                "Ready",
                "integer",
                ".status.readyReplicas",
                "Number of managed VirtualMachineInstances which are ready to receive traffic",
            ),
            AGE,
        ),
    ),
    Kind(
        "kubevirt.io",
        "VirtualMachineInstancePreset",
        "virtualmachineinstancepresets",
        "virtualmachineinstancepreset",
        ("vmipreset", "vmipresets"),
        (
            Version(
                "v1",
                "V1VirtualMachineInstancePreset",
                deprecation=PRESET_DEPRECATED.format("kubevirt.io/v1"),
            ),
            Version(
                "v1alpha3",
                "V1VirtualMachineInstancePreset",
                storage=True,
                deprecation=PRESET_DEPRECATED.format("kubevirt.io/v1alpha3"),
            ),
        ),
        status=False,
    ),
    Kind(
        "pool.kubevirt.io",
        "VirtualMachinePool",
        "virtualmachinepools",
        "virtualmachinepool",
        ("vmpool", "vmpools"),
        (
            Version("v1alpha1", "V1alpha1VirtualMachinePool"),
            Version("v1beta1", "V1beta1VirtualMachinePool", storage=True),
        ),
        scale=True,
        columns=(
            Column("Desired", "integer", ".spec.replicas", "Number of desired VirtualMachines"),
            Column(
                "Current",
                "integer",
                ".status.replicas",
                "Number of managed and not final or deleted VirtualMachines",
            ),
            Column(
                "Ready",
                "integer",
                ".status.readyReplicas",
                "Number of managed VirtualMachines which are ready to receive traffic",
            ),
            AGE,
        ),
    ),
    Kind(
        "clone.kubevirt.io",
        "VirtualMachineClone",
        "virtualmachineclones",
        "virtualmachineclone",
        ("vmclone", "vmclones"),
        # The package has only v1beta1's models; v1alpha1's schema is the same.
        (
            Version("v1alpha1", "V1beta1VirtualMachineClone"),
            Version("v1beta1", "V1beta1VirtualMachineClone", storage=True),
        ),
        columns=(
            PHASE,
            Column("SourceVirtualMachine", "string", ".spec.source.name"),
            Column("TargetVirtualMachine", "string", ".spec.target.name"),
        ),
    ),
    Kind(
        "instancetype.kubevirt.io",
        "VirtualMachineInstancetype",
        "virtualmachineinstancetypes",
        "virtualmachineinstancetype",
        ("vminstancetype", "vminstancetypes", "vmf", "vmfs"),
        (Version("v1beta1", "V1beta1VirtualMachineInstancetype", storage=True),),
        status=False,
    ),
    Kind(
        "instancetype.kubevirt.io",
        "VirtualMachineClusterInstancetype",
        "virtualmachineclusterinstancetypes",
        "virtualmachineclusterinstancetype",
        ("vmclusterinstancetype", "vmclusterinstancetypes", "vmcf", "vmcfs"),
        (Version("v1beta1", "V1beta1VirtualMachineClusterInstancetype", storage=True),),
        scope="Cluster",
        categories=(),
        status=False,
    ),
    Kind(
        "instancetype.kubevirt.io",
        "VirtualMachinePreference",
        "virtualmachinepreferences",
        "virtualmachinepreference",
        ("vmpref", "vmprefs", "vmp", "vmps"),
        (Version("v1beta1", "V1beta1VirtualMachinePreference", storage=True),),
        status=False,
    ),
    Kind(
        "instancetype.kubevirt.io",
        "VirtualMachineClusterPreference",
        "virtualmachineclusterpreferences",
        "virtualmachineclusterpreference",
        ("vmcp", "vmcps"),
        (Version("v1beta1", "V1beta1VirtualMachineClusterPreference", storage=True),),
        scope="Cluster",
        categories=(),
        status=False,
    ),
    Kind(
        "snapshot.kubevirt.io",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
        "virtualmachinesnapshot",
        ("vmsnapshot", "vmsnapshots"),
        (
            Version("v1alpha1", "V1beta1VirtualMachineSnapshot"),
            Version("v1beta1", "V1beta1VirtualMachineSnapshot", storage=True),
        ),
        columns=(
            Column("SourceKind", "string", ".spec.source.kind"),
            Column("SourceName", "string", ".spec.source.name"),
            PHASE,
            Column("ReadyToUse", "boolean", ".status.readyToUse"),
            Column("CreationTime", "date", ".status.creationTime"),
            Column("Error", "string", ".status.error.message"),
        ),
    ),
    Kind(
        "snapshot.kubevirt.io",
        "VirtualMachineSnapshotContent",
        "virtualmachinesnapshotcontents",
        "virtualmachinesnapshotcontent",
        ("vmsnapshotcontent", "vmsnapshotcontents"),
        (
            Version("v1alpha1", "V1beta1VirtualMachineSnapshotContent"),
            Version("v1beta1", "V1beta1VirtualMachineSnapshotContent", storage=True),
        ),
        columns=(
            Column("ReadyToUse", "boolean", ".status.readyToUse"),
            Column("CreationTime", "date", ".status.creationTime"),
            Column("Error", "string", ".status.error.message"),
        ),
    ),
    Kind(
        "snapshot.kubevirt.io",
        "VirtualMachineRestore",
        "virtualmachinerestores",
        "virtualmachinerestore",
        ("vmrestore", "vmrestores"),
        (
            Version("v1alpha1", "V1beta1VirtualMachineRestore"),
            Version("v1beta1", "V1beta1VirtualMachineRestore", storage=True),
        ),
        columns=(
            Column("TargetKind", "string", ".spec.target.kind"),
            Column("TargetName", "string", ".spec.target.name"),
            Column("Complete", "boolean", ".status.complete"),
            Column("RestoreTime", "date", ".status.restoreTime"),
        ),
    ),
    Kind(
        "cdi.kubevirt.io",
        "DataVolume",
        "datavolumes",
        "datavolume",
        ("dv", "dvs"),
        (Version("v1beta1", "V1beta1DataVolume", storage=True),),
        columns=(
            Column("Phase", "string", ".status.phase", "The phase the data volume is in"),
            Column(
                "Progress",
                "string",
                ".status.progress",
                "Transfer progress in percentage if known, N/A otherwise",
            ),
            Column(
                "Restarts",
                "integer",
                ".status.restartCount",
                "The number of times the transfer has been restarted.",
            ),
            AGE,
        ),
        source="cdi",
    ),
    Kind(
        "cdi.kubevirt.io",
        "DataSource",
        "datasources",
        "datasource",
        ("das",),
        (Version("v1beta1", "V1beta1DataSource", storage=True),),
        status=False,  # CDI's DataSource CRD has no subresources
        source="cdi",
    ),
)


def _version(kind: Kind, version: Version, builder: SchemaBuilder) -> Schema:
    out: Schema = {"name": version.name, "served": True, "storage": version.storage}
    if version.deprecation:
        out["deprecated"] = True
        out["deprecationWarning"] = version.deprecation
    out["schema"] = {"openAPIV3Schema": builder.kind(version.model)}
    subresources: Schema = {}
    if kind.status:
        subresources["status"] = {}
    if kind.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.labelSelector",
        }
    if subresources:
        out["subresources"] = subresources
    if kind.columns:
        columns = []
        for c in kind.columns:
            column: Schema = {"name": c.name, "type": c.type, "jsonPath": c.path}
            if c.description:
                column["description"] = c.description
            if c.priority:
                column["priority"] = c.priority
            columns.append(column)
        out["additionalPrinterColumns"] = columns
    return out


def _models(package_root: Path, declarations: str) -> dict[str, Model]:
    """The models of one of the package's ``index.d.ts``, under their JSON property names."""
    path = package_root / declarations
    models = parse_models(path.read_text())
    source_map = path.with_name("index.js.map")
    if source_map.is_file():
        rename_to_wire_names(models, wire_names(source_map.read_text()))
    return models


def crds(package_root: Path) -> list[Schema]:
    """The CRDs of :data:`KINDS`, their schemas generated from the package's models."""
    kubevirt = _models(package_root, KUBEVIRT_MODELS)
    restore_dropped(kubevirt, _models(package_root, KUBERNETES_MODELS))
    restore_condition_times(kubevirt)
    builders = {
        "kubevirt": SchemaBuilder(kubevirt),
        "cdi": SchemaBuilder(_models(package_root, CDI_MODELS)),
    }
    out = []
    for kind in KINDS:
        builder = builders[kind.source]
        names: Schema = {"plural": kind.plural, "singular": kind.singular, "kind": kind.kind}
        if kind.short_names:
            names["shortNames"] = list(kind.short_names)
        if kind.categories:
            names["categories"] = list(kind.categories)
        label = "kubevirt.io" if kind.source == "kubevirt" else "cdi.kubevirt.io"
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{kind.plural}.{kind.group}", "labels": {label: ""}},
                "spec": {
                    "group": kind.group,
                    "names": names,
                    "scope": kind.scope,
                    "versions": [_version(kind, v, builder) for v in kind.versions],
                },
            }
        )
    return out


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Block style for multi-line descriptions, as KubeVirt's own CRDs have them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_crds(package_root: Path) -> str:
    """One multi-document YAML of the CRDs (see :func:`crds`)."""
    return yaml.dump_all(crds(package_root), Dumper=_Dumper, sort_keys=False, width=1 << 16)


def main(argv: list[str] | None = None) -> int:
    from vnest.binaries.build import pins

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vnest.binaries.kubevirt_api OUT.yaml", file=sys.stderr)
        return 2
    pin = pins()["kubevirt-api"]
    with tempfile.TemporaryDirectory(prefix="vnest-kubevirt-api-") as tmp:
        root = fetch_package(pin["package"], pin["version"], pin["integrity"], Path(tmp))
        Path(args[0]).write_text(render_crds(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
