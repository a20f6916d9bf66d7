"""NetworkPolicies (optional, `sync.toHost.networkPolicies.enabled`), enforced by the host's network plugin.

Every synced pod lives in the one host namespace, so a virtual policy's
selectors are rewritten into pod-label selectors there: the policy's own pods
are this cluster's pods of the policy's virtual namespace; a peer's
podSelector likewise; a peer's namespaceSelector becomes a selector on the
hashed copies of the virtual namespace's labels that every synced pod carries
(vnest.syncer.resources.pods), so "namespaces labelled team=a" still means exactly that.
Peers never reach beyond this virtual cluster's pods, except ipBlocks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from vnest.kube.client import Obj
from vnest.syncer.engine import ToHostSyncer, is_subset
from vnest.syncer.engine.diff import metadata_in_line, with_metadata
from vnest.syncer.mappings import LABEL_MANAGED_BY, LABEL_NAMESPACE, namespace_label_key, translate_label_key


def _translated(selector: Obj | None, key_of: Callable[[str], str] = translate_label_key) -> Obj:
    selector = selector or {}
    return {
        "matchLabels": {key_of(k): v for k, v in (selector.get("matchLabels") or {}).items()},
        "matchExpressions": [{**e, "key": key_of(e["key"])} for e in selector.get("matchExpressions") or []],
    }


class NetworkPolicySyncer(ToHostSyncer):
    kind = "NetworkPolicy"

    def _pods(
        self, selector: Obj | None, namespace: str | None, namespace_selector: Obj | None = None
    ) -> Obj:
        out = _translated(selector)
        out["matchLabels"][LABEL_MANAGED_BY] = self.ctx.name
        if namespace is not None:
            out["matchLabels"][LABEL_NAMESPACE] = namespace
        if namespace_selector is not None:
            ns = _translated(namespace_selector, namespace_label_key)
            out["matchLabels"].update(ns["matchLabels"])
            out["matchExpressions"] += ns["matchExpressions"]
        if not out["matchExpressions"]:
            del out["matchExpressions"]
        return out

    def _peer(self, peer: Obj, namespace: str) -> Obj:
        if "ipBlock" in peer:
            return copy.deepcopy(peer)
        if "namespaceSelector" in peer:
            return {"podSelector": self._pods(peer.get("podSelector"), None, peer["namespaceSelector"])}
        return {"podSelector": self._pods(peer.get("podSelector"), namespace)}

    def translate(self, vpol: Obj) -> Obj:
        ns = vpol["metadata"]["namespace"]
        vspec = vpol["spec"]
        spec: Obj = {"podSelector": self._pods(vspec.get("podSelector"), ns)}
        if "policyTypes" in vspec:
            spec["policyTypes"] = vspec["policyTypes"]
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            if direction in vspec:
                spec[direction] = [
                    {
                        **({"ports": copy.deepcopy(rule["ports"])} if "ports" in rule else {}),
                        **({peers: [self._peer(p, ns) for p in rule[peers]]} if peers in rule else {}),
                    }
                    for rule in vspec[direction] or []
                ]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.ctx.host_metadata(vpol),
            "spec": spec,
        }

    async def sync(self, vpol: Obj, hpol: Obj) -> None:
        desired = self.translate(vpol)
        if is_subset(desired["spec"], hpol["spec"]) and metadata_in_line(desired, hpol):
            return
        updated = with_metadata(hpol, desired)
        updated["spec"] = desired["spec"]
        await self.patcher.update(hpol, updated)
