"""ServiceAccounts (`sync.toHost.serviceAccounts.enabled`, off by default as in vCluster).

Each virtual ServiceAccount gets a host copy under the usual translated name
(`<name>-x-<namespace>-x-<vcluster>`), with the usual labels and annotations,
and synced pods run as the host copy of their virtual ServiceAccount instead of
the host namespace's `default` (vnest.syncer.resources.pods): whatever the host grants a
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
from vnest.syncer.engine import SyncContext, ToHostSyncer


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


class ServiceAccountSyncer(ToHostSyncer):
    kind = "ServiceAccount"

    def translate(self, vobj: Obj) -> Obj:
        return translate_service_account(self.ctx, vobj)

    async def sync(self, vobj: Obj, hobj: Obj) -> None:
        desired = self.translate(vobj)
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
        await self.patcher.update(hobj, updated)
