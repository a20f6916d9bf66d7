"""Service-account tokens of synced pods: one host Secret per pod, holding tokens bound to the pod.

A virtual pod's projected `serviceAccountToken` must hold a token of the *virtual* API server
(in-pod clients talk to it), and the host kubelet cannot ask that server for one. So the syncer
asks, as a kubelet does: a TokenRequest per projection, bound to the virtual pod (its name and
uid, and, since the pod is bound by then, its node's), with the projection's `audience` and
`expirationSeconds`. The tokens sit in one host Secret per pod, which the host pod mounts in
place of the projections (vnest.syncer.resources.pods), each projection its own key.

The token is requested once the virtual pod is bound to its node, as a kubelet requests it
after admission: the API server writes the node's name and uid into the token only then (the
`authentication.kubernetes.io/node-name` of a TokenReview, which conformance checks). A pod the
host schedules is created on the host before its Secret exists; its kubelet retries the mount
until the Secret appears (the host scheduling, the virtual binding, the TokenRequest and the
Secret's create between them: tens of milliseconds).

A token bound to a pod dies with the pod (the API server checks the pod's uid on every
request), so nothing outlives what it was issued for. Tokens are refreshed as a kubelet
refreshes them: at 80% of their life, or after 24 hours; the kubelet then copies the new Secret
into the running pod within a minute or so, and clients that re-read their token file (client-go
and every official client) never notice. The Secret goes with its pod; its key in the work queue
is the virtual pod's ("namespace/name").

Earlier vnest versions shared one token Secret per ServiceAccount
(`vnest-sa-token-<account>-x-<namespace>-x-<vcluster>`); such Secrets are removed at start-up.
A pod started before the upgrade keeps the token it has until it expires (24 hours at most).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import NamedTuple

from vnest import log
from vnest.kube.client import Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Controller, Handlers, Patcher, SyncContext
from vnest.syncer.mappings import ANNOTATION_KIND, KIND_POD_TOKEN, key_of, split_key
from vnest.syncer.resources.serviceaccounts import pod_service_account

_log = log.get("syncer.tokens")

DEFAULT_EXPIRATION = 3600  # the API's default of a projection's expirationSeconds
REFRESH_AT = 0.8  # of a token's life, as kubelet's token manager
REFRESH_AT_MOST = datetime.timedelta(hours=24)


class Projection(NamedTuple):
    """What a token is requested with; projections asking the same share one token."""

    audience: str  # "": the API server's own audiences
    seconds: int


def projection_of(source: Obj) -> Projection:
    """The token a projected `serviceAccountToken` source asks for."""
    return Projection(
        source.get("audience") or "", int(source.get("expirationSeconds") or DEFAULT_EXPIRATION)
    )


def token_key(projection: Projection) -> str:
    """The Secret key holding the token of `projection`: the same on every pod, a valid Secret key."""
    digest = hashlib.sha256(f"{projection.audience}\n{projection.seconds}".encode()).hexdigest()
    return f"token-{digest[:12]}"


def projections(vpod: Obj) -> list[Projection]:
    """The distinct tokens a pod mounts, in the order its volumes name them."""
    found = [
        projection_of(src["serviceAccountToken"])
        for vol in vpod["spec"].get("volumes") or []
        for src in (vol.get("projected") or {}).get("sources") or []
        if "serviceAccountToken" in src
    ]
    return list(dict.fromkeys(found))


def needs_token(vpod: Obj) -> bool:
    """Whether a pod mounts a service-account token (admission adds one unless automount is off)."""
    return bool(projections(vpod))


def token_secret_name(ctx: SyncContext, pod_key: str) -> str:
    """The host Secret holding the tokens of virtual pod `pod_key` ("namespace/name")."""
    ns, name = split_key(pod_key)
    return ctx.host_name(f"vnest-token-{name}", ns)


def _timestamp(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def refresh_after(issued: datetime.datetime, expires: datetime.datetime) -> datetime.datetime:
    """When a token issued at `issued` that expires at `expires` is issued again (kubelet's rule)."""
    return issued + min((expires - issued) * REFRESH_AT, REFRESH_AT_MOST)


class PodTokens(Controller):
    kind = "PodToken"
    workers = 8

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.pods = ctx.informer("virtual", "Pod")
        self.secrets = ctx.informer("host", "Secret")
        self.patcher = Patcher(ctx, "Secret", ctx.host, self.ours, ctx.host_namespace)
        # Secrets written but not yet seen by the informer (client-go's MutationCache): a status
        # update of the pod right after the write must not issue its tokens again.
        self._written: dict[str, Obj] = {}
        self._refresh_at: dict[str, datetime.datetime] = {}  # the refresh each pod has a timer for

    def ours(self, secret: Obj | None) -> bool:
        return self.ctx.namespaced.owns(secret) and mappings.is_token_secret(secret)

    # ---- events -> keys --------------------------------------------------------------------

    def setup(self) -> None:
        self.pods.add_handlers(
            Handlers(on_add=self._pod_seen, on_update=self._pod_changed, on_delete=self._pod_seen)
        )
        self.secrets.add_handlers(Handlers.each(self._secret_changed))

    def _pod_seen(self, vpod: Obj) -> None:
        if needs_token(vpod):
            self.queue.add(key_of(vpod))

    def _pod_changed(self, old: Obj, new: Obj) -> None:
        # Only its binding matters (volumes cannot change): not every status update of every pod.
        if (
            old["spec"].get("nodeName") != new["spec"].get("nodeName")
            or old["metadata"]["uid"] != new["metadata"]["uid"]
        ):
            self._pod_seen(new)

    def _secret_changed(self, secret: Obj) -> None:
        kind = mappings.annotations_of(secret).get(ANNOTATION_KIND)
        if kind == KIND_POD_TOKEN and (pod := mappings.virtual_key_of(secret)):
            self._written.pop(pod, None)  # the informer knows it now, deletions included
            self.queue.add(pod)
        elif kind == mappings.KIND_SERVICE_ACCOUNT_TOKEN and self.ours(secret):
            self.queue.add(f"{_SHARED}{secret['metadata']['name']}")

    def resync(self) -> None:
        for key, vpod in list(self.pods.store.items()):
            if needs_token(vpod):
                self.queue.add(key)
        for secret in list(self.secrets.store.values()):
            self._secret_changed(secret)

    # ---- the Secret ------------------------------------------------------------------------

    def _secret(self, key: str) -> Obj | None:
        if (written := self._written.get(key)) is not None:
            return written
        secret = self.secrets.get(f"{self.ctx.host_namespace}/{token_secret_name(self.ctx, key)}")
        return secret if self.ours(secret) else None

    @staticmethod
    def _current(secret: Obj | None, vpod: Obj) -> bool:
        """Whether a Secret holds tokens of this very pod, for every projection, not yet due for refresh."""
        if secret is None or not mappings.uid_matches(vpod, secret):
            return False
        if not all(token_key(p) in (secret.get("data") or {}) for p in projections(vpod)):
            return False
        due = _parse(mappings.annotations_of(secret).get(mappings.ANNOTATION_REFRESH_AFTER))
        return due is not None and due > datetime.datetime.now(datetime.UTC)

    async def _issue(self, key: str, vpod: Obj, secret: Obj | None) -> None:
        ns, name = split_key(key)
        data: dict[str, str] = {}
        issued = datetime.datetime.now(datetime.UTC)
        refresh = issued + REFRESH_AT_MOST
        for projection in projections(vpod):
            spec: Obj = {
                "expirationSeconds": projection.seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "uid": vpod["metadata"]["uid"],
                },
            }
            if projection.audience:
                spec["audiences"] = [projection.audience]
            resp = await self.ctx.virtual.request(
                "POST",
                f"/api/v1/namespaces/{ns}/serviceaccounts/{pod_service_account(vpod)}/token",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
            data[token_key(projection)] = base64.b64encode(resp["status"]["token"].encode()).decode()
            expires = _parse(resp["status"].get("expirationTimestamp"))
            if expires is None:
                expires = issued + datetime.timedelta(seconds=projection.seconds)
            refresh = min(refresh, refresh_after(issued, expires))
        annotations = mappings.origin_annotations(vpod, ns)
        annotations[ANNOTATION_KIND] = KIND_POD_TOKEN
        annotations[mappings.ANNOTATION_REFRESH_AFTER] = _timestamp(refresh)
        meta: Obj = {
            "name": token_secret_name(self.ctx, key),
            "namespace": self.ctx.host_namespace,
            "labels": self.ctx.namespaced.host_labels({}, ns),
            "annotations": annotations,
        }
        wanted: Obj = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}
        if secret is None:
            self._written[key] = await self.ctx.host.create(wanted, namespace=self.ctx.host_namespace)
        else:
            meta["resourceVersion"] = secret["metadata"]["resourceVersion"]
            self._written[key] = await self.ctx.host.replace(wanted)
        _log.debug("pod tokens issued", pod=key, tokens=len(data), refresh_after=_timestamp(refresh))

    async def reconcile(self, key: str) -> None:
        if key.startswith(_SHARED):
            await self._remove_shared(key.removeprefix(_SHARED))
            return
        # The work queue gives a key to one worker at a time: no two issues for one pod race.
        vpod = self.pods.get(key)
        secret = self._secret(key)
        if vpod is None or not needs_token(vpod):
            if secret is not None:
                await self.patcher.delete(secret)
            self._written.pop(key, None)
            self._refresh_at.pop(key, None)
            return
        if not vpod["spec"].get("nodeName"):
            return  # issued once bound: its update brings the key back
        if not self._current(secret, vpod):
            await self._issue(key, vpod, secret)
            secret = self._secret(key)
        due = _parse(mappings.annotations_of(secret).get(mappings.ANNOTATION_REFRESH_AFTER))
        if due is not None and self._refresh_at.get(key) != due:  # then, even if nothing else happens
            self._refresh_at[key] = due
            wait = (due - datetime.datetime.now(datetime.UTC)).total_seconds()
            self.queue.add_after(key, max(1.0, wait + 1))

    async def _remove_shared(self, name: str) -> None:
        """A token Secret shared by a ServiceAccount's pods, as earlier vnest versions made them."""
        secret = self.secrets.get(f"{self.ctx.host_namespace}/{name}")
        if secret is not None and self.ours(secret):
            await self.patcher.delete(secret)


_SHARED = "shared:"  # work-queue keys of earlier versions' shared Secrets (no pod key has a colon)
