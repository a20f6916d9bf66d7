"""Service-account tokens of synced pods: one host Secret per virtual ServiceAccount in use.

A virtual pod's projected `serviceAccountToken` must hold a token of the *virtual* API
server (in-pod clients talk to it), and the host kubelet cannot ask that server for one.
So the syncer asks (a TokenRequest for the ServiceAccount) and keeps the token in a host
Secret, which the host pod mounts in place of the projected token.

One Secret per ServiceAccount, not per pod: every pod of a Deployment shares one, so a
burst of pods costs no TokenRequest and no Secret each (bench/sync.py: these were two of
the five round trips of every pod). The price is the binding: a token bound to a pod
dies with the pod, this one lives until it expires or its ServiceAccount is deleted
(the API server checks the account's uid on every request). So the token is short-lived
(TOKEN_SECONDS) and refreshed at half its life, and kubelet refreshes the mounted file
from the Secret within a minute or so; clients that re-read their token file (client-go,
every official client since Kubernetes 1.21's bound tokens) never notice. A pod's own
`audience` and `expirationSeconds` are not honoured: every token is the API server's
default audience.

The Secret goes when no virtual pod that mounts a token uses its ServiceAccount any
more, and is issued again when the ServiceAccount is replaced (a new uid). Its key in
the work queue is the ServiceAccount's ("namespace/name").
"""

from __future__ import annotations

import asyncio
import base64
import datetime

from vnest import log
from vnest.kube.client import ApiError, Obj
from vnest.syncer import mappings
from vnest.syncer.engine import Controller, Handlers, Patcher, SyncContext
from vnest.syncer.mappings import ANNOTATION_KIND, KIND_SERVICE_ACCOUNT_TOKEN, key_of, split_key

_log = log.get("syncer.tokens")

TOKEN_SECONDS = 24 * 3600
REFRESH_AT = 0.5  # of the token's life


def needs_token(vpod: Obj) -> bool:
    """Whether a pod mounts a service-account token (admission adds one unless automount is off)."""
    return any(
        "serviceAccountToken" in src
        for vol in vpod["spec"].get("volumes") or []
        for src in (vol.get("projected") or {}).get("sources") or []
    )


def account_key(vpod: Obj) -> str:
    """The key ("namespace/name") of the ServiceAccount whose token a pod mounts."""
    return f"{vpod['metadata']['namespace']}/{vpod['spec'].get('serviceAccountName') or 'default'}"


def token_secret_name(ctx: SyncContext, account: str) -> str:
    """The host Secret holding the token of virtual ServiceAccount `account` ("ns/name")."""
    ns, name = split_key(account)
    return ctx.host_name(f"vnest-sa-token-{name}", ns)


def _timestamp(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


class ServiceAccountTokens(Controller):
    kind = "ServiceAccountToken"
    workers = 2

    def __init__(self, ctx: SyncContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.pods = ctx.informer("virtual", "Pod")
        self.accounts = ctx.informer("virtual", "ServiceAccount")
        self.secrets = ctx.informer("host", "Secret")
        self.patcher = Patcher(ctx, "Secret", ctx.host, self.ours, ctx.host_namespace)
        self.users: dict[str, set[str]] = {}  # ServiceAccount key -> keys of the pods that mount its token
        self._issuing: dict[str, asyncio.Lock] = {}
        # Secrets written but not yet seen by the informer (client-go's MutationCache): the pods
        # waiting for a token go to the host when it is written, not when its watch event comes.
        self._written: dict[str, Obj] = {}
        self._refresh_at: dict[str, datetime.datetime] = {}  # the refresh each account has a timer for

    def ours(self, secret: Obj | None) -> bool:
        return self.ctx.namespaced.owns(secret) and mappings.is_token_secret(secret)

    # ---- events -> keys --------------------------------------------------------------------

    def setup(self) -> None:
        self.pods.add_handlers(
            Handlers(on_add=self._pod_seen, on_update=self._pod_changed, on_delete=self._pod_gone)
        )
        self.accounts.add_handlers(Handlers.each(self.enqueue))
        self.secrets.add_handlers(Handlers.each(self._secret_changed))

    def _pod_seen(self, vpod: Obj) -> None:
        if needs_token(vpod):
            self.users.setdefault(account_key(vpod), set()).add(key_of(vpod))

    def _pod_changed(self, old: Obj, new: Obj) -> None:
        pass  # a pod's volumes and service account cannot change

    def _pod_gone(self, vpod: Obj) -> None:
        account = account_key(vpod)
        users = self.users.get(account)
        if users is not None:
            users.discard(key_of(vpod))
            if not users:
                del self.users[account]
                self.queue.add(account)  # its Secret may go

    def _secret_changed(self, secret: Obj) -> None:
        kind = mappings.annotations_of(secret).get(ANNOTATION_KIND)
        if kind == KIND_SERVICE_ACCOUNT_TOKEN and (account := mappings.virtual_key_of(secret)):
            self._written.pop(account, None)  # the informer knows it now, deletions included
            self.queue.add(account)

    def resync(self) -> None:
        for account in list(self.users):
            self.queue.add(account)
        for secret in list(self.secrets.store.values()):
            self._secret_changed(secret)

    # ---- the Secret ------------------------------------------------------------------------

    def _secret(self, account: str) -> Obj | None:
        if (written := self._written.get(account)) is not None:
            return written
        secret = self.secrets.get(f"{self.ctx.host_namespace}/{token_secret_name(self.ctx, account)}")
        return secret if self.ours(secret) else None

    @staticmethod
    def _current(secret: Obj | None, vsa: Obj) -> bool:
        """Whether a token Secret holds a token of this very ServiceAccount, not yet due for refresh."""
        if secret is None or not mappings.uid_matches(vsa, secret):
            return False
        due = _parse(mappings.annotations_of(secret).get(mappings.ANNOTATION_REFRESH_AFTER))
        return due is not None and due > datetime.datetime.now(datetime.UTC)

    async def ensure(self, vpod: Obj) -> None:
        """Before a pod goes to the host: its token Secret exists and holds a current token."""
        if needs_token(vpod):
            await self._ensure(account_key(vpod))

    async def _ensure(self, account: str) -> None:
        lock = self._issuing.setdefault(account, asyncio.Lock())
        async with lock:  # a burst of one Deployment's pods makes one TokenRequest, not one each
            vsa = self.accounts.get(account)
            if vsa is None:  # the pod was admitted, so it exists: the cache is behind (a quiet retry)
                raise ApiError(404, "NotFound", f"ServiceAccount {account} is not in the cache yet")
            secret = self._secret(account)
            if not self._current(secret, vsa):
                await self._issue(account, vsa, secret)

    async def _issue(self, account: str, vsa: Obj, secret: Obj | None) -> None:
        ns, name = split_key(account)
        resp = await self.ctx.virtual.request(
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS},
            },
        )
        issued = datetime.datetime.now(datetime.UTC)
        refresh = issued + datetime.timedelta(seconds=TOKEN_SECONDS * REFRESH_AT)
        meta = self.ctx.host_metadata(vsa)
        meta["name"] = token_secret_name(self.ctx, account)
        meta["annotations"][ANNOTATION_KIND] = KIND_SERVICE_ACCOUNT_TOKEN
        meta["annotations"][mappings.ANNOTATION_REFRESH_AFTER] = _timestamp(refresh)
        wanted: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "data": {"token": base64.b64encode(resp["status"]["token"].encode()).decode()},
        }
        if secret is None:
            self._written[account] = await self.ctx.host.create(wanted, namespace=self.ctx.host_namespace)
        else:
            meta["resourceVersion"] = secret["metadata"]["resourceVersion"]
            self._written[account] = await self.ctx.host.replace(wanted)
        _log.debug("service-account token issued", account=account, refresh_after=_timestamp(refresh))

    async def reconcile(self, key: str) -> None:
        if key not in self.users:
            async with self._issuing.setdefault(key, asyncio.Lock()):
                if key not in self.users and (secret := self._secret(key)) is not None:
                    await self.patcher.delete(secret)
            self._issuing.pop(key, None)
            self._refresh_at.pop(key, None)
            return
        await self._ensure(key)
        secret = self._secret(key)
        due = _parse(mappings.annotations_of(secret).get(mappings.ANNOTATION_REFRESH_AFTER))
        if due is not None and self._refresh_at.get(key) != due:  # then, even if nothing else happens
            self._refresh_at[key] = due
            wait = (due - datetime.datetime.now(datetime.UTC)).total_seconds()
            self.queue.add_after(key, max(1.0, wait + 1))
