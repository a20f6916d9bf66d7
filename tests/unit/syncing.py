"""Table-driven reconcile tests: seed two in-memory API servers, run real syncers until quiet, look.

`converge("Pod", virtual=[...], host=[...])` seeds a virtual and a host `FakeApiServer`
(tests/unit/kubeapi.py), builds the named kinds as the syncer does (`registry.KINDS` entry,
`.make(registry.Deps(...))`), wires them (`setup()`), runs every informer the context made
until synced, queues every key (`resync()`), runs the controllers until nothing moves any
more, then resyncs once more (as a periodic resync would) and runs again until quiet, to
tell whether the converged state stays put. It returns a `Result`: both servers, the
Warning events told to the tenant, the writes each side got, what the node source was
asked for.

`Row` is one table row: seeds plus expectations, checked by `check(row, result)`.
`engine_rows(kind, virtual, ...)` makes the rows every to-host kind shares (the engine's rules),
so that each kind's table writes by hand only what is its own.
Only public entry points of the syncer are used; `until_quiet` alone reads the work
queue's in-flight keys, which no public API tells.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kubeapi import FakeApiServer, Request, namespace_object
from vnest import naming
from vnest.config.load import load_config
from vnest.kube.client import RESOURCES, Obj, resource_of
from vnest.syncer import mappings, registry
from vnest.syncer.engine import Controller, SyncContext
from vnest.syncer.podsecurity import PodSecurityChecker

NAME, NS = "vc", "team-host"  # the virtual cluster, and its host namespace
ROLE = naming.cluster_role(NAME, NS)  # owner of cluster-scoped copies (seeded on the host)
QUIET = 0.025  # seconds without a request, a queued key, a key in flight or a retry due: converged
RETRY_HORIZON = 0.2  # a retry due later than this (a key failing for good, backing off) is not waited for
TIMEOUT = 10.0
# The SyncError of a host object at a copy's name that this cluster does not own:
NOT_OURS = "exists and is not managed by this virtual cluster; vnest leaves it alone"
OWNER = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": ROLE, "uid": "role-uid"}


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # in an expected object: this field must be missing (or null)


# ---- objects -------------------------------------------------------------------------------


def hn(name: str, namespace: str = "default") -> str:
    """The host name of a namespaced virtual object."""
    return naming.host_name(name, namespace, NAME)


def cn(name: str) -> str:
    """The host name of a cluster-scoped virtual object."""
    return naming.host_cluster_scoped_name(name, NS, NAME)


def obj(
    kind: str,
    name: str,
    namespace: str = "default",
    *,
    uid: str = "",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **fields: Any,
) -> Obj:
    """An object to seed: uid `<name>-uid` unless given; in `namespace` when its kind is namespaced."""
    resource = resource_of(kind)
    meta: Obj = {"name": name, "uid": uid or f"{name}-uid"}
    if resource.namespaced:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": resource.group_version, "kind": kind, "metadata": meta, **copy.deepcopy(fields)}


def with_meta(o: Obj, **meta: Any) -> Obj:
    """`o` with these metadata fields set (labels, annotations, uid, deletionTimestamp, ...)."""
    return {**o, "metadata": {**o["metadata"], **meta}}


def pod(
    name: str = "web",
    namespace: str = "default",
    *,
    image: str = "nginx",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A Pod of one container `c` running `image`; `spec`: more of its spec (or other containers)."""
    return obj(
        "Pod", name, namespace, labels=labels, spec={"containers": [{"name": "c", "image": image}], **spec}
    )


def host_copy(
    vobj: Obj,
    *,
    kind: str = "",
    name: str = "",
    labels: Mapping[str, str] | None = None,
    **fields: Any,
) -> Obj:
    """A host object as this cluster's copy of `vobj` is named, labelled and annotated (ours), of uid
    `host-<name>`, holding `fields` (but those given as None); `kind` and `name`: another object the
    syncer makes for `vobj` (a pod's token Secret); `labels` added to ours. A copy of a
    cluster-scoped object is owned by the cluster's ClusterRole, as the syncer makes it. (The copy of
    an earlier virtual object of the name: `host_copy(with_meta(vobj, uid="old-uid"))`.)"""
    if resource_of(vobj["kind"]).namespaced:
        hmeta = mappings.NamespacedMapping(NAME, NS).host_metadata(vobj)
    else:
        hmeta = mappings.ClusterMapping(NAME, NS).host_metadata(vobj)
        hmeta["ownerReferences"] = [dict(OWNER)]
    hmeta["labels"].update(labels or {})
    hmeta["name"] = name or hmeta["name"]
    hmeta["uid"] = f"host-{hmeta['name']}"
    kind = kind or vobj["kind"]
    return {
        "apiVersion": resource_of(kind).group_version,
        "kind": kind,
        "metadata": hmeta,
        **copy.deepcopy({k: v for k, v in fields.items() if v is not None}),
    }


def token_secret(vpod: Obj) -> Obj:
    """The Secret of `vpod`'s service-account tokens (a PodToken, named after the pod)."""
    meta = vpod["metadata"]
    name = hn(f"vnest-token-{meta['name']}", meta["namespace"])
    out = host_copy(vpod, kind="Secret", name=name, type="Opaque", data={"token": b64("old")})
    out["metadata"]["annotations"][mappings.ANNOTATION_KIND] = "PodToken"
    return out


def content(o: Obj) -> Obj:
    """What an object holds but its identity, metadata and status: what a copy carries over."""
    return {k: v for k, v in o.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def plain_copy(vobj: Obj) -> Obj:
    """The in-line host copy of `vobj` for a kind whose fields cross as they are (ConfigMaps, classes, ...)."""
    return host_copy(vobj, **content(vobj))


def foreign(kind: str, name: str, labels: Mapping[str, str] | None = None, **fields: Any) -> Obj:
    """A host object this cluster does not own (by default: someone else's, unlabelled for vnest)."""
    return obj(kind, name, NS, uid=f"foreign-{name}", labels=labels or {"owner": "someone-else"}, **fields)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---- running -------------------------------------------------------------------------------


class RecordingNodes:
    """The pod syncer's node source: records which nodes it was asked to make exist."""

    def __init__(self) -> None:
        self.ensured: list[str] = []

    async def ensure(self, name: str, host_ip: str = "") -> None:
        if name not in self.ensured:
            self.ensured.append(name)


class RefusePrivileged(PodSecurityChecker):
    """A Pod Security check without the external binary: privileged containers violate it."""

    MESSAGE = (
        'violates PodSecurity "baseline:latest": privileged (container "{}" must not set privileged=true)'
    )

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), "baseline")

    async def violation(self, pod: Obj) -> str | None:
        for c in pod["spec"].get("containers") or []:
            if (c.get("securityContext") or {}).get("privileged"):
                return self.MESSAGE.format(c["name"])
        return None


@dataclass(frozen=True)
class Fail:
    """A host request to fail once (`FakeApiServer.fail_next`)."""

    method: str
    plural: str
    status: int
    message: str
    name: str | None = None


@dataclass
class Result:
    virtual_api: FakeApiServer
    host_api: FakeApiServer
    nodes: list[str]  # what the pod syncer asked the node source for
    requests: dict[str, list[Request]]  # "virtual"/"host": what each got while converging
    resync_requests: dict[str, list[Request]]  # and after the second resync
    settled: bool  # the second resync changed nothing on either side
    failures: int  # reconciles that raised (and were retried)

    def host(self, kind: str, name: str) -> Obj | None:
        return self.host_api.get(kind, name, NS if resource_of(kind).namespaced else "")

    def virtual(self, kind: str, key: str) -> Obj | None:
        namespace, _, name = key.rpartition("/")
        return self.virtual_api.get(kind, name, namespace)

    def host_objects(self, kind: str) -> list[Obj]:
        return self.host_api.objects(kind, NS if resource_of(kind).namespaced else "")

    @property
    def events(self) -> list[Obj]:
        """The Warning events told to the tenant."""
        return [e for e in self.virtual_api.objects("Event") if e.get("type") == "Warning"]

    def virtual_bodies(self, subresource: str) -> list[Any]:
        """The bodies of the writes to a subresource of the virtual cluster (`token`), in order."""
        return [
            r.body
            for r in self.requests["virtual"]
            if r.method == "POST" and r.path.endswith("/" + subresource)
        ]

    @property
    def host_writes(self) -> list[str]:
        return writes(self.requests["host"])

    @property
    def virtual_writes(self) -> list[str]:
        """Writes to the virtual cluster but the events."""
        return [w for w in writes(self.requests["virtual"]) if w != "POST events"]

    def snapshot(self) -> tuple[list[Obj], list[Obj]]:
        """Every object of both servers (events aside): the seeds of a restart."""
        return _everything(self.virtual_api), _everything(self.host_api)


def short(request: Request) -> str:
    """A request as tables spell it: `POST pods`, `PUT services/web-x-default-x-vc`, `POST pods/web/binding`."""
    parts = [p for p in request.path.split("/") if p]
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    if len(parts) >= 3 and parts[0] == "namespaces":
        parts = parts[2:]
    return f"{request.method} {'/'.join(parts)}"


def writes(requests: Iterable[Request]) -> list[str]:
    return [short(r) for r in requests if r.method != "GET"]


def _everything(server: FakeApiServer) -> list[Obj]:
    out = []
    for kind in RESOURCES:
        if kind == "Event":
            continue
        try:
            out += server.objects(kind)
        except ValueError:  # a kind of a CRD another test registered, not served here
            continue
    return out


def _seed(server: FakeApiServer, objects: Iterable[Obj], namespaces: Iterable[str]) -> None:
    objects = list(objects)
    have = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    for ns in dict.fromkeys(
        [*namespaces, *(o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace"))]
    ):
        if ns and ns not in have and server.get("Namespace", ns) is None:
            server.seed(namespace_object(ns))
    for o in sorted(objects, key=lambda o: o["kind"] != "Namespace"):
        server.seed(o)


def _busy(controller: Controller, now: float) -> bool:
    """Whether a key is queued, held by a worker, or due again soon after a failure. The one place
    that reads the work queue's private state: WorkQueue has no public view of keys in flight or
    of pending retries."""
    queue = controller.queue
    timers: Iterable[asyncio.TimerHandle] = getattr(queue, "_timers", ())
    return bool(
        len(queue) or getattr(queue, "_processing", ()) or any(t.when() - now < RETRY_HORIZON for t in timers)
    )


async def until_quiet(controllers: Sequence[Controller], servers: Sequence[FakeApiServer]) -> None:
    """Until no key is queued, in flight or due soon, and neither server got a request for QUIET seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    seen, since = -1, loop.time()
    while True:
        await asyncio.sleep(0.002)
        now = loop.time()
        busy = any(_busy(c, now) for c in controllers)
        count = sum(len(s.requests) for s in servers)
        if busy or count != seen:
            seen, since = count, now
        elif now - since >= QUIET:
            return
        if now > deadline:
            raise AssertionError(
                f"no quiet after {TIMEOUT}s: queued {[len(c.queue) for c in controllers]}, "
                f"last requests {[short(r) for s in servers for r in s.requests[-5:]]}"
            )


def context(
    *sets: str,
    virtual: FakeApiServer | None = None,
    host: FakeApiServer | None = None,
    host_service_ip: str = "",
) -> SyncContext:
    """The one place a SyncContext of virtual cluster NAME in host namespace NS is made: clients of
    the given API servers (fresh ones otherwise), the config of `sets` (`key=value`)."""
    virtual = virtual or FakeApiServer("virtual")
    host = host or FakeApiServer("host")
    if host.get("Namespace", NS) is None:
        host.seed(namespace_object(NS))
    config = load_config([], list(sets))
    return SyncContext(NAME, NS, virtual.client(), host.client(), config, host_service_ip=host_service_ip)


async def converge(
    kinds: str | Sequence[str],
    *,
    sets: Sequence[str] = (),
    virtual: Iterable[Obj] = (),
    host: Iterable[Obj] = (),
    fail: Iterable[Fail] = (),
    pod_security: PodSecurityChecker | None = None,
    host_service_ip: str = "",
) -> Result:
    """Seeds both servers, runs the kinds (registry names) until quiet, resyncs, runs until quiet again."""
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    virtual_api, host_api = FakeApiServer("virtual"), FakeApiServer("host")
    host_api.allocate_cluster_ips()
    _seed(virtual_api, virtual, ())
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": ROLE, "uid": "role-uid"},
    }
    _seed(host_api, [role, *host], [NS])
    for f in fail:
        host_api.fail_next(f.method, f.plural, name=f.name, status=f.status, message=f.message)
    nodes = RecordingNodes()
    ctx = context(*sets, virtual=virtual_api, host=host_api, host_service_ip=host_service_ip)
    deps = registry.Deps(ctx, pod_security, nodes, None, {})
    if "Pod" in names and "PodToken" not in names:
        names.append("PodToken")  # the pods' token Secrets run beside them, as in the syncer
    by_name = {k.name: k for k in registry.KINDS}
    controllers = [by_name[n].make(deps) for n in names]
    tasks: list[asyncio.Task[None]] = []
    servers = (virtual_api, host_api)
    try:
        for c in controllers:
            c.setup()
        informers = list(ctx.informers.values())
        tasks += [asyncio.create_task(i.run()) for i in informers]
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers)), TIMEOUT)
        failures_before = [c.failures for c in controllers]
        for c in controllers:
            c.resync()
        tasks += [asyncio.create_task(c.run()) for c in controllers]
        await until_quiet(controllers, servers)
        counts = [len(s.requests) for s in servers]
        versions = [s.resource_version for s in servers]
        for c in controllers:
            c.resync()
        await until_quiet(controllers, servers)
        failures = sum(c.failures - before for c, before in zip(controllers, failures_before, strict=True))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctx.virtual.close()
        await ctx.host.close()
        virtual_api.close()
        host_api.close()
    return Result(
        virtual_api,
        host_api,
        nodes.ensured,
        {"virtual": virtual_api.requests[: counts[0]], "host": host_api.requests[: counts[1]]},
        {"virtual": virtual_api.requests[counts[0] :], "host": host_api.requests[counts[1] :]},
        settled=[s.resource_version for s in servers] == versions,
        failures=failures,
    )


# ---- tables --------------------------------------------------------------------------------

Key = tuple[str, str]  # (kind, name): a host name, or a virtual "ns/name" / cluster-scoped name


@dataclass(frozen=True)
class Row:
    """One case: seeds, and what must hold once converged.

    `host_has` / `virtual_has`: objects that must exist, each holding the given fields (nested
    dicts by subset, lists element by element, ABSENT for a field that must be missing);
    `host_lacks` / `virtual_lacks`: objects that must not exist; `untouched`: host objects
    exactly as seeded; `events`: exactly these Warning events, one each, as (reason, substring of
    the message) or (reason, substring, name of the virtual object it is about); `host_writes` / `virtual_writes`: exactly these
    writes, in order (see `short`), when given; `settles`: a second resync changes nothing.
    """

    virtual: Sequence[Obj] = ()
    host: Sequence[Obj] = ()
    sets: Sequence[str] = ()
    fail: Sequence[Fail] = ()
    pod_security: bool = False
    host_service_ip: str = ""
    host_has: Mapping[Key, Obj] = field(default_factory=dict)
    host_lacks: Sequence[Key] = ()
    virtual_has: Mapping[Key, Obj] = field(default_factory=dict)
    virtual_lacks: Sequence[Key] = ()
    untouched: Sequence[Key] = ()
    events: Sequence[tuple[str, str] | tuple[str, str, str]] = ()
    host_writes: Sequence[str] | None = None
    virtual_writes: Sequence[str] | None = None
    nodes: Sequence[str] | None = None
    settles: bool = True
    also: Callable[[Result], None] | None = None  # a check beyond the above


def table(kinds: str | Sequence[str], *rows: Sequence[Any]) -> Callable[[Row], None]:
    """A test of the given rows (pytest.param of a Row each) over `kinds`: `test_pods = table("Pod", ROWS)`."""

    @pytest.mark.parametrize("row", [r for some in rows for r in some])
    def test(row: Row) -> None:
        check(row, run_row(kinds, row))

    return test


def run_row(kinds: str | Sequence[str], row: Row) -> Result:
    return asyncio.run(
        converge(
            kinds,
            sets=row.sets,
            virtual=row.virtual,
            host=row.host,
            fail=row.fail,
            pod_security=RefusePrivileged() if row.pod_security else None,
            host_service_ip=row.host_service_ip,
        )
    )


def mismatch(want: Any, have: Any, path: str = "") -> str | None:
    """Where `have` does not hold `want` (see Row), or None."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return f"{path or '.'}: want an object, have {have!r}"
        for k, v in want.items():
            if v is ABSENT:
                if have.get(k) is not None:
                    return f"{path}.{k}: want absent, have {have[k]!r}"
                continue
            if (problem := mismatch(v, have.get(k), f"{path}.{k}")) is not None:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return f"{path}: want {want!r}, have {have!r}"
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            if (problem := mismatch(w, h, f"{path}[{i}]")) is not None:
                return problem
        return None
    return None if want == have else f"{path}: want {want!r}, have {have!r}"


def check(row: Row, result: Result) -> None:
    problems: list[str] = []
    sides = (
        ("host", row.host_has, row.host_lacks, result.host),
        ("virtual", row.virtual_has, row.virtual_lacks, result.virtual),
    )
    for side, has, lacks, get in sides:
        for (kind, name), want in has.items():
            have = get(kind, name)
            if have is None:
                problems.append(f"{side} {kind} {name}: missing")
            elif (problem := mismatch(want, have)) is not None:
                problems.append(f"{side} {kind} {name}{problem}")
        problems += [f"{side} {k} {n}: present" for k, n in lacks if get(k, n) is not None]
    seeded = {(o["kind"], o["metadata"]["name"]): o for o in row.host}
    for kind, name in row.untouched:
        have = result.host(kind, name)
        if have is None:
            problems.append(f"host {kind} {name}: gone, want untouched")
            continue
        want = seeded[(kind, name)]
        drop = ("resourceVersion", "creationTimestamp", "generation")
        if {k: v for k, v in have["metadata"].items() if k not in drop} != want["metadata"] or any(
            have.get(k) != v for k, v in want.items() if k not in ("metadata", "apiVersion")
        ):
            problems.append(f"host {kind} {name}: changed: {have}")
    events = [(e["reason"], e["message"], e["involvedObject"]["name"]) for e in result.events]
    for reason, text, *about in row.events:
        found = [m for r, m, name in events if r == reason and text in m and name in (about or [name])]
        if len(found) != 1:
            problems.append(f"want one {reason} event on {about or 'it'} with {text!r}, have {events}")
    if len(events) != len(row.events):
        problems.append(f"want {len(row.events)} Warning events, have {events}")
    if row.host_writes is not None and result.host_writes != list(row.host_writes):
        problems.append(f"host writes: want {list(row.host_writes)}, have {result.host_writes}")
    if row.virtual_writes is not None and result.virtual_writes != list(row.virtual_writes):
        problems.append(f"virtual writes: want {list(row.virtual_writes)}, have {result.virtual_writes}")
    if row.nodes is not None and result.nodes != list(row.nodes):
        problems.append(f"nodes: want {list(row.nodes)}, have {result.nodes}")
    if row.settles and not result.settled:
        later = {side: writes(rs) for side, rs in result.resync_requests.items()}
        problems.append(f"a resync after converging changed something: {later}")
    assert not problems, "\n".join(problems)
    if row.also is not None:
        row.also(result)


def restart(kinds: str | Sequence[str], result: Result, sets: Sequence[str] = ()) -> Result:
    """A fresh syncer over the state `result` converged to: what a restart would do."""
    virtual, host = result.snapshot()
    return asyncio.run(converge(kinds, sets=sets, virtual=virtual, host=host))


def restarted_writes_nothing(kinds: str | Sequence[str], row: Row) -> None:
    """`row` holds once converged, and a fresh syncer over that state (a restart) writes nothing."""
    first = run_row(kinds, row)
    check(row, first)
    again = restart(kinds, first, sets=row.sets)
    assert again.host_writes == [] and again.virtual_writes == []


# ---- the engine's rules, the same for every to-host kind -------------------------------------


@dataclass(frozen=True)
class Change:
    """The virtual object changed where its kind follows it in place: row `id`, the object as
    changed (`virtual`), what the copy then holds (`host_has`)."""

    id: str
    virtual: Obj
    host_has: Obj


def merged(base: Obj, over: Obj) -> Obj:
    """`base` with `over` laid over it, nested objects merged."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def engine_rows(
    kind: str,
    virtual: Obj,
    *,
    refusal: tuple[int, str],
    not_ours: Mapping[str, Any],
    copy_of: Callable[[Obj], Obj] = plain_copy,
    earlier: Obj | None = None,
    relabel: Mapping[str, str] | None = None,
    changes: Sequence[Change] = (),
    update: str = "PUT",
    squatters: Mapping[str, Mapping[str, str]] | None = None,
    never_deleted: Mapping[str, Mapping[str, str]] | None = None,
    sets: Sequence[str] = (),
    uses: Sequence[Obj] = (),
    beside: Sequence[Obj] = (),
    host_beside: Sequence[Obj] = (),
    omit: Collection[str] = (),
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    xfail: Mapping[str, str] | None = None,
) -> list[pytest.ParameterSet]:
    """The rows of the rules the engine applies to every to-host kind, for `virtual` (of `kind`)
    and its copy `copy_of(virtual)`, by row id:

    - `label-change-put` (`-patched`), with `relabel`, and each of `changes`: the copy updated in
      place by one `update` (PUT, or PATCH);
    - `in-line-no-write`: no write on either side;
    - `virtual-gone-copy-deleted`: one DELETE;
    - `uid-mismatch-replaced`: the copy of `earlier` (by default `virtual` of uid `old-uid`)
      deleted and made again, holding what `copy_of(virtual)` holds;
    - `not-ours-left-alone-and-reported`, and each of `squatters` (id: its labels, else those of
      `not_ours`): a host object of the copy's name this cluster does not own
      (`foreign(kind, name, **not_ours)`) left as it is, one SyncError on `virtual`, no write to
      the virtual cluster;
    - each of `never_deleted` (id: labels): such an object, and nothing else on either side: left
      as it is, no write at all;
    - `host-refusal-one-event-in-virtual-names-then-retried`: the first POST refused with
      `refusal` (status, message; `{}` the name), told once in the virtual names, then made.

    `uses`: virtual objects that make `virtual` wanted (a pod using a ConfigMap), gone with it;
    `beside` / `host_beside`: objects each side holds beside it (a slice's Services);
    `omit`: cases the kind does its own way; `extra`: Row fields a case adds, by id; `xfail`: cases
    the kind does not pass yet, by id: the reason (a strict xfail).
    """
    resource = resource_of(kind)
    plural, vname = resource.plural, virtual["metadata"]["name"]
    copied = copy_of(virtual)
    hname = copied["metadata"]["name"]
    key = (kind, hname)
    where = f"{NS}/{hname}" if resource.namespaced else hname
    wanted = merged(
        content(copied), {"metadata": {"annotations": {mappings.ANNOTATION_UID: virtual["metadata"]["uid"]}}}
    )
    seeded = [*beside, *uses, virtual]
    status, message = refusal
    if relabel is not None:
        relabelled = with_meta(virtual, labels={**(virtual["metadata"].get("labels") or {}), **relabel})
        labels = copy_of(relabelled)["metadata"]["labels"]
        label_id = "label-change-put" if update == "PUT" else "label-change-patched"
        changes = [Change(label_id, relabelled, {"metadata": {"labels": labels}}), *changes]

    def squatted(labels: Mapping[str, str] | None, *, alone: bool = False) -> Row:
        """A host object of the copy's name, not ours (with `labels`); `alone`: nothing else on either side."""
        squatter = foreign(kind, hname, **{**not_ours, "labels": labels or not_ours.get("labels")})
        return Row(
            virtual=[] if alone else seeded,
            host=[squatter] if alone else [*host_beside, squatter],
            sets=sets,
            untouched=[key],
            events=[] if alone else [("SyncError", f"host {kind} {where} {NOT_OURS}", vname)],
            host_writes=[] if alone else None,
            virtual_writes=[],
        )

    rows = {
        **{
            c.id: Row(
                virtual=[*beside, *uses, c.virtual],
                host=[*host_beside, copied],
                sets=sets,
                host_has={key: merged(c.host_has, {"metadata": {"uid": copied["metadata"]["uid"]}})},
                host_writes=[f"{update} {plural}/{hname}"],
            )
            for c in changes
        },
        "in-line-no-write": Row(
            virtual=seeded,
            host=[*host_beside, copied],
            sets=sets,
            untouched=[key],
            host_writes=[],
            virtual_writes=[],
        ),
        "virtual-gone-copy-deleted": Row(
            virtual=beside,
            host=[*host_beside, copied],
            sets=sets,
            host_lacks=[key],
            host_writes=[f"DELETE {plural}/{hname}"],
        ),
        "uid-mismatch-replaced": Row(
            virtual=seeded,
            host=[*host_beside, copy_of(earlier or with_meta(virtual, uid="old-uid"))],
            sets=sets,
            host_has={key: wanted},
            host_writes=[f"DELETE {plural}/{hname}", f"POST {plural}"],
        ),
        "not-ours-left-alone-and-reported": squatted(None),
        **{id_: squatted(labels) for id_, labels in (squatters or {}).items()},
        **{id_: squatted(labels, alone=True) for id_, labels in (never_deleted or {}).items()},
        "host-refusal-one-event-in-virtual-names-then-retried": Row(
            virtual=seeded,
            host=host_beside,
            sets=sets,
            fail=[Fail("POST", plural, status, message.format(hname))],
            host_has={key: wanted},
            events=[("SyncError", f"the host refused the {kind}: {message.format(vname)}", vname)],
            host_writes=[f"POST {plural}", f"POST {plural}"],
        ),
    }
    extra, xfail = extra or {}, xfail or {}
    unknown = (set(omit) | set(extra) | set(xfail)) - set(rows)
    assert not unknown, f"no such shared rows: {sorted(unknown)}"
    return [
        pytest.param(
            replace(row, **extra.get(id_, {})),
            id=id_,
            marks=[pytest.mark.xfail(strict=True, reason=xfail[id_])] if id_ in xfail else [],
        )
        for id_, row in rows.items()
        if id_ not in omit
    ]
