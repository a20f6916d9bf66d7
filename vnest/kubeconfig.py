"""Reading, building and merging kubeconfig files the way kubectl does.

The user's kubeconfig is the first file in $KUBECONFIG, else ~/.kube/config.
Writes are atomic (temp file + rename) and keep the file private, so a crash
mid-write never leaves the user without a kubeconfig.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

Config = dict[str, Any]


def user_path() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    for part in env.split(os.pathsep):
        if part:
            return Path(part).expanduser()
    return Path.home() / ".kube" / "config"


def in_cluster() -> bool:
    """In a pod with no kubeconfig file: clients use the pod's service account, as client-go's do."""
    return not user_path().exists() and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def empty() -> Config:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": "",
    }


def build(name: str, server: str, ca_pem: bytes, client_cert_pem: bytes, client_key_pem: bytes) -> Config:
    """A kubeconfig whose cluster, user and context are all called ``name``."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = empty()
    config["clusters"] = [
        {"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
    ]
    config["users"] = [
        {
            "name": name,
            "user": {
                "client-certificate-data": b64(client_cert_pem),
                "client-key-data": b64(client_key_pem),
            },
        }
    ]
    config["contexts"] = [{"name": name, "context": {"cluster": name, "user": name}}]
    config["current-context"] = name
    return config


def load(path: Path) -> Config:
    if not path.exists():
        return empty()
    data = yaml.safe_load(path.read_text()) or {}
    config = empty()
    config.update(data)
    for key in ("clusters", "users", "contexts"):
        config[key] = config.get(key) or []
    return config


def save(path: Path, config: Config) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f, default_flow_style=False, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _upsert(items: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    for i, item in enumerate(items):
        if item.get("name") == entry["name"]:
            items[i] = entry
            return
    items.append(entry)


def merge_into(target: Config, source: Config) -> None:
    for key in ("clusters", "users", "contexts"):
        for entry in source.get(key) or []:
            _upsert(target[key], entry)


def remove_context(config: Config, context: str) -> None:
    """Removes a context and the cluster and user it names, when no other context uses them."""
    entry = next((c for c in config["contexts"] if c.get("name") == context), None)
    if entry is None:
        return
    config["contexts"].remove(entry)
    ctx = entry.get("context") or {}
    still_used = {
        k: {(c.get("context") or {}).get(k) for c in config["contexts"]} for k in ("cluster", "user")
    }
    for key, plural in (("cluster", "clusters"), ("user", "users")):
        if ctx.get(key) not in still_used[key]:
            config[plural] = [i for i in config[plural] if i.get("name") != ctx.get(key)]
    if config.get("current-context") == context:
        config["current-context"] = ""
