"""Comparing a wanted object with the one the API server has, which adds defaults and drops empties."""

from __future__ import annotations

import copy
from typing import Any


def is_subset(want: Any, have: Any) -> bool:
    """Whether every field of `want` has the same value in `have` (defaults the server added are ignored)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    return bool(want == have)


def same(a: Any, b: Any) -> bool:
    """Equal, counting absent, null, false, 0 and empty alike (the API server omits empty fields)."""
    return bool((a or None) == (b or None))


def with_fields(obj: dict[str, Any], want: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `obj` whose top-level `fields` are `want`'s (absent there: absent here too)."""
    out = copy.deepcopy(obj)
    for k in fields:
        if k in want:
            out[k] = want[k]
        else:
            out.pop(k, None)
    return out


def metadata_in_line(want: dict[str, Any], have: dict[str, Any]) -> bool:
    """Whether a copy's metadata is as wanted: exactly the wanted labels, and the wanted annotations
    and owner references among its own (others, the host's controllers', stay)."""
    w, h = want["metadata"], have["metadata"]
    return (
        w.get("labels", {}) == (h.get("labels") or {})
        and is_subset(w.get("annotations", {}), h.get("annotations") or {})
        and is_subset(w.get("ownerReferences") or [], h.get("ownerReferences") or [])
    )


def with_metadata(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """A copy of `have` with `want`'s labels, annotations (over its own) and owner references."""
    out = copy.deepcopy(have)
    meta, w = out["metadata"], want["metadata"]
    meta["labels"] = w.get("labels", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), **w.get("annotations", {})}
    if w.get("ownerReferences"):
        meta["ownerReferences"] = w["ownerReferences"]
    return out


def metadata_patch(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that brings `have`'s labels and annotations in line as `with_metadata` does."""
    labels = {
        k: None for k in (have["metadata"].get("labels") or {}) if k not in want["metadata"].get("labels", {})
    }
    return {
        "metadata": {
            "labels": {**labels, **want["metadata"].get("labels", {})},
            "annotations": dict(want["metadata"].get("annotations", {})),
        }
    }
