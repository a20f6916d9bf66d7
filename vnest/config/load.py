"""Loading values files and `--set` overrides into a validated VClusterConfig.

Sources apply in order, later ones winning: each `-f` file, then each `--set`. Mappings merge
recursively; lists and scalars replace; a null removes the key, so its default applies (as
in Helm). Every problem becomes a one-line UsageError that names the dotted path of the
offending key.

Keys are checked per source, before merging, so an unknown key's message can say which file
(or which `--set`) it came from; types and cross-field rules are checked after merging by
pydantic, whose errors are translated into the same one-line style.
"""

from __future__ import annotations

import copy
import difflib
import pathlib
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vnest.config.models import FieldProblem, VClusterConfig, show
from vnest.errors import UsageError

__all__ = ["UNSUPPORTED", "defaults", "load_config", "to_values"]

_K8S_ONLY = "vnest runs upstream Kubernetes (k8s) only"
_PLATFORM = "vnest has no vCluster Platform; platform settings do not apply"
_POD_REWRITE = "vnest syncs pods without this rewrite"

# vcluster.yaml keys (dotted path prefixes) that vnest knows but does not implement. Naming
# them turns "unknown key" into an honest "not supported", which is what a vCluster user
# carrying an existing file needs to hear.
UNSUPPORTED: dict[str, str] = {
    "controlPlane.distro.k3s": _K8S_ONLY,
    "controlPlane.distro.k0s": _K8S_ONLY,
    "controlPlane.distro.eks": _K8S_ONLY,
    "controlPlane.backingStore.etcd.deploy": "vnest does not deploy a separate etcd; use etcd.embedded or etcd.external",
    "controlPlane.coredns": "vnest's DNS is set with networking.dns.mode (embedded or coredns)",
    "controlPlane.ingress": "vnest creates no Ingress for the API; expose it with controlPlane.service.spec",
    "controlPlane.hostPathMapper": "vnest does not map host log paths into the virtual cluster",
    "controlPlane.statefulSet.highAvailability": "vnest runs a single control-plane replica",
    "experimental": "vnest has no experimental features",
    "plugins": "vnest has no plugin system",
    "plugin": "vnest has no plugin system",
    "sleepMode": "use `vnest pause` and `vnest resume` instead",
    "rbac": "vnest manages the host RBAC it needs by itself",
    "telemetry": "vnest collects no telemetry",
    "external": _PLATFORM,
    "platform": _PLATFORM,
    "policies.centralAdmission": "vnest has no central admission webhooks",
    "networking.resolveDNS": "vnest does not rewrite DNS names between host and virtual cluster",
    "integrations.externalSecrets": "vnest has no External Secrets Operator integration",
    "integrations.certManager": "vnest has no cert-manager integration",
    "integrations.istio": "vnest has no Istio integration",
    "sync.fromHost.csiDrivers": "vnest does not sync CSI objects from the host",
    "sync.fromHost.csiNodes": "vnest does not sync CSI objects from the host",
    "sync.fromHost.csiStorageCapacities": "vnest does not sync CSI objects from the host",
    "sync.fromHost.configMaps": "vnest does not sync ConfigMaps from the host",
    "sync.fromHost.secrets": "vnest does not sync Secrets from the host",
    "sync.fromHost.customResources": "vnest syncs custom resources to the host only",
    "sync.toHost.namespaces": "vnest keeps every virtual namespace inside the one host namespace",
    "sync.toHost.volumeSnapshots": "vnest does not sync volume snapshots",
    "sync.toHost.podDisruptionBudgets": "vnest does not sync PodDisruptionBudgets",
    "sync.toHost.pods.translateImage": _POD_REWRITE,
    "sync.toHost.pods.enforceTolerations": _POD_REWRITE,
    "sync.toHost.pods.useSecretsForSATokens": _POD_REWRITE,
}

_SET_EXAMPLE = "expected KEY=VALUE, e.g. --set sync.toHost.ingresses.enabled=true"

_EXPECTED = {
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

Path = tuple[str | int, ...]


# --- public API ---------------------------------------------------------------------------


def load_config(files: list[pathlib.Path], sets: list[str]) -> VClusterConfig:
    """Read, merge and validate values files and `--set KEY=VALUE` overrides."""
    return _load([(str(path), _read_file(path)) for path in files], sets)


def load_config_text(text: str, source: str, sets: list[str]) -> VClusterConfig:
    """As `load_config`, from YAML text held elsewhere (a field of an object: `source` names it)."""
    return _load([(source, _parse(text, source))], sets)


def _load(documents: list[tuple[str, dict[str, Any]]], sets: list[str]) -> VClusterConfig:
    merged: dict[str, Any] = {}
    origins: dict[Path, str] = {}
    for source, document in documents:
        data = _check_keys(document, VClusterConfig, (), f"in {source}")
        _merge(merged, data)
        _record(origins, data, (), source)
    for text in sets:
        keys, nested = _parse_set(text)
        for key in reversed(keys):
            nested = {key: nested}
        origin = f"--set {text!r}"
        nested = _check_keys(nested, VClusterConfig, (), f"in {origin}")
        _merge(merged, nested)
        _record(origins, nested, (), origin)
    try:
        return VClusterConfig.model_validate(_drop_nulls(merged))
    except ValidationError as exc:
        raise _usage_error(exc, origins) from None


def to_values(cfg: VClusterConfig) -> dict[str, Any]:
    """The full config in effect as plain data with vcluster.yaml (camelCase) keys."""
    return cfg.model_dump(mode="json", by_alias=True)


def defaults() -> dict[str, Any]:
    """Every setting at its default, as vcluster.yaml-shaped plain data."""
    return to_values(VClusterConfig())


# --- sources ------------------------------------------------------------------------------


def _read_file(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read values file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read values file {path}: it is not UTF-8 text") from None
    return _parse(text, f"values file {path}")


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        raise UsageError(f"{source} is not valid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping at the top level, got {show(data)}")
    return data


def _parse_set(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    keys = _split_key(key)
    if not sep or not keys or not all(keys):
        raise UsageError(f"--set {text!r}: {_SET_EXAMPLE}")
    if raw == "":
        return keys, ""
    try:
        return keys, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"--set {text!r}: the value is not valid YAML: {problem}") from None


def _split_key(key: str) -> list[str]:
    # `\.` keeps a dot inside one key, as Helm does, for keys such as
    # sync.toHost.customResources.certificates\.cert-manager\.io.enabled.
    if not key:
        return []
    parts, current, chars = [], [], iter(key)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _drop_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _drop_nulls(value) for key, value in data.items() if value is not None}
    if isinstance(data, list):
        return [_drop_nulls(item) for item in data]
    return data


def _record(origins: dict[Path, str], data: Any, path: Path, origin: str) -> None:
    if path:
        origins[path] = origin
    if isinstance(data, dict):
        for key, value in data.items():
            _record(origins, value, (*path, key), origin)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _record(origins, value, (*path, index), origin)


# --- key checks ---------------------------------------------------------------------------


def _check_keys(data: Any, model: type[BaseModel], path: Path, where: str) -> Any:
    """`data` without unsupported-but-disabled keys; raises on unknown or unsupported ones."""
    if not isinstance(data, dict):
        return data  # pydantic reports the type
    fields = {(info.alias or name): info.annotation for name, info in model.model_fields.items()}
    checked: dict[Any, Any] = {}
    for key, value in data.items():
        sub = (*path, str(key))
        dotted = _dotted(sub)
        if dotted in UNSUPPORTED:
            if _asks_nothing(value):
                continue
            raise UsageError(
                f"'{dotted}' is a vCluster setting that vnest does not support: {UNSUPPORTED[dotted]}",
                hint=f"set {where}",
            )
        if key not in fields:
            raise UsageError(_unknown(sub, list(fields), where))
        checked[key] = _check_value(value, fields[key], sub, where)
    return checked


def _check_value(value: Any, annotation: Any, path: Path, where: str) -> Any:
    model = _model_of(annotation)
    if model is not None:
        return _check_keys(value, model, path, where)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and isinstance(value, dict) and len(args) == 2 and (item := _model_of(args[1])):
        return {k: _check_keys(v, item, (*path, str(k)), where) for k, v in value.items()}
    if origin is list and isinstance(value, list) and args and (item := _model_of(args[0])):
        return [_check_keys(v, item, (*path, i), where) for i, v in enumerate(value)]
    return value


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _asks_nothing(value: Any) -> bool:
    # `telemetry: {enabled: false}` and the like are common in vCluster files; they ask for
    # nothing vnest lacks, so they are accepted (and dropped) rather than rejected.
    return value is None or value == {} or value == {"enabled": False}


def _unknown(path: Path, valid: list[str], where: str) -> str:
    key = str(path[-1])
    parent = path[:-1]
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not match:
        # Case slips (tohost, TOHOST) are below difflib's cutoff yet obvious.
        match = [name for name in valid if name.lower() == key.lower()][:1]
    message = f"unknown key '{_dotted(path)}' {where}"
    if match:
        return f"{message}; did you mean '{_dotted((*parent, match[0]))}'?"
    here = f"under '{_dotted(parent)}'" if parent else "at the top level"
    return f"{message}; valid keys {here}: {', '.join(valid)}"


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- pydantic errors ----------------------------------------------------------------------


def _usage_error(exc: ValidationError, origins: dict[Path, str]) -> UsageError:
    error = exc.errors(include_url=False)[0]
    loc: Path = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        kind = "key_" + kind
    if kind == "value_error" and isinstance(ctx.get("error"), FieldProblem):
        problem: FieldProblem = ctx["error"]
        if problem.key is not None:
            loc = (*loc, problem.key)
        text = problem.message
    elif kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
    elif kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {show(value)}"
    elif kind.startswith("key_") and kind[4:] in _EXPECTED:
        text = f"expected {_EXPECTED[kind[4:]]} as key, got {show(value)}"
    elif kind == "missing":
        text = "required"
    elif kind == "extra_forbidden":
        text = "unknown key"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        text = f"expected a number {error['msg'].removeprefix('Input should be ')}, got {show(value)}"
    else:
        text = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {show(value)}"
    # Only a leaf has one clear source; a mapping's problem may combine several files.
    origin = None if isinstance(value, dict) else origins.get(tuple(error["loc"]))
    return UsageError(f"{_dotted(loc)}: {text}", hint=f"set in {origin}" if origin else None)
