"""Pod Security Standards, enforced by the syncer where the tenant cannot switch them off.

The tenant is admin in its virtual cluster: it can relabel its namespaces
`pod-security.kubernetes.io/enforce=privileged`, so the virtual API server's
PodSecurity admission (configured at the same level by the control plane)
only tells honest tenants early. What holds is this check: every pod is
checked against `policies.podSecurityStandard` before its host copy is made,
and a violating pod never gets one.

The checks are upstream's own (k8s.io/pod-security-admission, the code the
API server runs), built from the pinned Kubernetes module as the
`pod-security-check` binary and run as one long-lived child answering JSON
lines, so the rules and their messages are exactly Kubernetes': a port to
Python would drift with every release. Requests are pipelined (an id each), so
the pod syncer's workers never wait on one another; verdicts are remembered by
the checked content (a Deployment's pods share one spec: one check), a dead
child is started again on the next check, and a check that cannot be made
refuses the pod (fails closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import TypedDict

from vnest import log
from vnest.kube.client import Obj

_log = log.get("syncer.podsecurity")

LEVELS = ("privileged", "baseline", "restricted")
CHECK_TIMEOUT = 10.0
VERDICTS_KEPT = 4096  # distinct pod specs whose verdict is remembered
_TOKEN_VOLUME = re.compile(rb"kube-api-access-[a-z0-9]{5}")  # as admission names it, in volumes and mounts


class _Answer(TypedDict, total=False):
    id: int
    allowed: bool
    message: str
    error: str


class PodSecurityError(Exception):
    """The check could not be made: the pod is refused until it can."""


class PodSecurityChecker:
    def __init__(self, binary: Path, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"pod security level {level!r}: must be one of {', '.join(LEVELS)}")
        self.binary = binary
        self.level = level
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[_Answer]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._verdicts: OrderedDict[bytes, str | None] = OrderedDict()
        self.checked = 0
        self.refused = 0

    async def violation(self, pod: Obj) -> str | None:
        """Upstream's message for what the pod violates (`violates PodSecurity "baseline:latest": ...`),
        or None when the level allows it."""
        if self.level == "privileged":
            return None
        # The checks read the spec and, for AppArmor and seccomp, annotations; managedFields and
        # the rest of the metadata would only cost encoding time.
        meta = pod.get("metadata") or {}
        payload = json.dumps(
            {"metadata": {"annotations": meta.get("annotations") or {}}, "spec": pod["spec"]},
            separators=(",", ":"),
            sort_keys=True,
        )
        # A controller's pods share one spec, but for the name of the service-account token volume
        # admission gives each (kube-api-access-<5 random characters>), which no check reads: the
        # verdict is remembered under the spec with that name made one, and under its digest, not
        # the spec itself (4096 specs of 1-2 KB each grew the syncer for a quarter of an hour in
        # bench/soak.py, every pod a spec of its own).
        key = hashlib.sha256(_TOKEN_VOLUME.sub(b"kube-api-access", payload.encode())).digest()
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            verdict = self._verdicts[key]
        else:
            verdict = await self._ask(payload)
            self._verdicts[key] = verdict
            if len(self._verdicts) > VERDICTS_KEPT:
                self._verdicts.popitem(last=False)
        self.checked += 1
        if verdict is not None:
            self.refused += 1
        return verdict

    async def _ask(self, payload: str) -> str | None:
        proc = await self._started()
        ident = next(self._ids)
        answer: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        line = f'{{"id":{ident},"level":"{self.level}","pod":{payload}}}\n'
        try:
            assert proc.stdin is not None
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
            result = await asyncio.wait_for(answer, CHECK_TIMEOUT)
        except (ConnectionError, TimeoutError) as e:
            raise PodSecurityError(f"the pod security check did not answer: {e!r}") from e
        finally:
            self._waiting.pop(ident, None)
        if "error" in result:
            raise PodSecurityError(f"the pod security check failed: {result['error']}")
        if result.get("allowed"):
            return None
        return result.get("message") or f'violates PodSecurity "{self.level}:latest"'

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            if self._proc is not None:
                _log.warning("the pod security check exited; starting it again", code=self._proc.returncode)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    str(self.binary),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=16 * 2**20,
                )
            except OSError as e:
                raise PodSecurityError(f"cannot run {self.binary}: {e}") from e
            self._reader = asyncio.create_task(self._read(self._proc))
            return self._proc

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            answer: _Answer = json.loads(line)
            waiter = self._waiting.get(answer.get("id", 0))
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)
        # The child is gone: whoever still waits learns it now rather than at the timeout.
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the pod security check exited"))

    async def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
