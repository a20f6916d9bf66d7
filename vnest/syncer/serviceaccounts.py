"""ServiceAccounts (`sync.toHost.serviceAccounts.enabled`, off by default as in vCluster).

Each virtual ServiceAccount gets a host copy under the usual translated name
(`<name>-x-<namespace>-x-<vcluster>`), with the usual labels and annotations,
and synced pods run as the host copy of their virtual ServiceAccount instead of
the host namespace's `default` (vnest.syncer.pods): whatever the host grants a
ServiceAccount (an IAM role bound through an annotation, a PodSecurity or
admission policy keyed on it, host RBAC an admin adds) can then be granted per
virtual ServiceAccount. The host copy has `automountServiceAccountToken: false`
and the pod keeps its own token handling: it mounts the token the *virtual* API
server issued and never a host token.

The copy carries neither `secrets` nor `imagePullSecrets`, as in vCluster:
- `secrets` lists legacy token Secrets of the *virtual* ServiceAccount, the
  virtual API server's credentials, which the host neither needs nor could use,
  and the host would mint or track its own for its copy anyway;
- `imagePullSecrets` act only through the ServiceAccount admission plugin when a
  pod is created: the virtual API server has already merged them into the
  virtual pod, whose references pods.py translates to the host copies (which
  configs.py syncs because the pod names them). On the host copy they would add
  nothing, or name host Secrets that exist only while some pod uses them.
"""

from __future__ import annotations

import copy

from vnest.kube.client import Obj
from vnest.syncer.engine import CopySyncer, ResourceSyncer, SyncContext, split_key
from vnest.syncer.informer import key_of


def pod_service_account(pod: Obj) -> str:
    """The virtual ServiceAccount a pod runs as (the API server defaults it to `default`)."""
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def host_service_account(ctx: SyncContext, pod: Obj) -> str:
    """The host ServiceAccount a synced pod runs as: the host copy of its virtual one."""
    return ctx.host_name(pod_service_account(pod), pod["metadata"]["namespace"])


def translate_service_account(ctx: SyncContext, vsa: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": ctx.host_metadata(vsa),
        "automountServiceAccountToken": False,
    }


class ServiceAccountSyncer(CopySyncer):
    kind = "ServiceAccount"

    def __init__(self, ctx: SyncContext, pods: ResourceSyncer | None = None) -> None:
        super().__init__(ctx)
        # The pod syncer, if any: a pod created before its ServiceAccount's host copy is refused
        # by the host (the ServiceAccount must exist); it is retried as soon as the copy appears
        # rather than after its backoff.
        self.pods = pods

    def setup(self) -> None:
        super().setup()
        if self.pods is not None:
            self.host.add_handler(self._wake_pods)

    def _wake_pods(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None or new is None:
            return
        vkey = self.ctx.virtual_key_of(new)
        if not vkey:
            return
        ns, name = split_key(vkey)
        pods = self.pods
        assert pods is not None
        for pod in list(pods.virtual.store.values()):
            if pod["metadata"]["namespace"] == ns and pod_service_account(pod) == name:
                key = key_of(pod)
                if pods.host.get(self.ctx.host_key(key)) is None:
                    pods.queue.add(key)

    def translate(self, vobj: Obj) -> Obj:
        return translate_service_account(self.ctx, vobj)

    async def update_host(self, vobj: Obj, hobj: Obj, desired: Obj) -> None:
        meta, hmeta = desired["metadata"], hobj["metadata"]
        if (
            meta["labels"] == hmeta.get("labels")
            and meta["annotations"] == hmeta.get("annotations")
            and hobj.get("automountServiceAccountToken") is False
            and not hobj.get("imagePullSecrets")
        ):
            return
        updated = copy.deepcopy(hobj)
        updated["metadata"]["labels"] = meta["labels"]
        updated["metadata"]["annotations"] = meta["annotations"]
        updated["automountServiceAccountToken"] = False
        updated.pop("imagePullSecrets", None)
        await self.ctx.host.request(
            "PUT", self.resource.path(self.ctx.host_namespace, hmeta["name"]), body=updated
        )
