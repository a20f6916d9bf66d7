"""The syncer's Pod Security check: upstream's checks (the pinned pod-security-check binary) behind an async API."""

from __future__ import annotations

import asyncio

import pytest

from vnest.binaries import build
from vnest.syncer.podsecurity import PodSecurityChecker, PodSecurityError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def binary():
    return build.Binaries(build.bin_dir()).pod_security_check


def _pod(**container: object) -> dict:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx", **container}]}}


RESTRICTED_OK = {
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}


def _check(binary, level: str, *pods: dict) -> list[str | None]:
    async def run() -> list[str | None]:
        checker = PodSecurityChecker(binary, level)
        try:
            # All at once: answers are matched to their requests, whatever order the workers ask in.
            return list(await asyncio.gather(*(checker.violation(p) for p in pods)))
        finally:
            await checker.close()

    return asyncio.run(run())


def test_upstream_messages_for_each_level(binary):
    privileged = _pod(securityContext={"privileged": True})
    plain = _pod()
    restricted = _pod(**RESTRICTED_OK)
    assert _check(binary, "baseline", privileged, plain, restricted) == [
        'violates PodSecurity "baseline:latest": privileged '
        '(container "c" must not set securityContext.privileged=true)',
        None,
        None,
    ]
    strict = _check(binary, "restricted", privileged, plain, restricted)
    assert strict[0] is not None and strict[0].startswith(
        'violates PodSecurity "restricted:latest": privileged'
    )
    assert strict[1] is not None and "runAsNonRoot != true" in strict[1]
    assert strict[2] is None
    assert _check(binary, "privileged", privileged) == [None]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"hostNetwork": True}, "host namespaces"),
        ({"hostPID": True}, "host namespaces"),
        ({"hostIPC": True}, "host namespaces"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "hostPath volumes"),
        (
            {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]},
            "hostPort",
        ),
        (
            {
                "containers": [
                    {"name": "c", "image": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
                ]
            },
            "non-default capabilities",
        ),
        (
            {
                "containers": [{"name": "c", "image": "x"}],
                "ephemeralContainers": [
                    {"name": "debug", "image": "x", "securityContext": {"privileged": True}}
                ],
            },
            'container "debug" must not set securityContext.privileged=true',
        ),
    ],
)
def test_baseline_refuses_what_reaches_the_host_node(binary, spec, reason):
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}
    (message,) = _check(binary, "baseline", pod)
    assert message is not None and reason in message


def test_a_dead_checker_is_started_again_and_a_failed_check_refuses(binary, tmp_path):
    async def run() -> None:
        checker = PodSecurityChecker(binary, "baseline")
        assert await checker.violation(_pod()) is None
        assert checker._proc is not None
        checker._proc.kill()
        await checker._proc.wait()
        assert await checker.violation(_pod(securityContext={"privileged": True})) is not None
        await checker.close()

        broken = PodSecurityChecker(tmp_path / "missing", "baseline")
        with pytest.raises(PodSecurityError, match="cannot run"):
            await broken.violation(_pod())

    asyncio.run(run())


def test_unknown_levels_are_refused(binary):
    with pytest.raises(ValueError, match="must be one of privileged, baseline, restricted"):
        PodSecurityChecker(binary, "lenient")


def test_pods_of_one_spec_are_checked_once(binary, monkeypatch):
    async def run() -> None:
        checker = PodSecurityChecker(binary, "baseline")
        asked: list[str] = []
        ask = checker._ask

        async def counting(payload: str) -> str | None:
            asked.append(payload)
            return await ask(payload)

        monkeypatch.setattr(checker, "_ask", counting)

        def replica(i: int) -> dict:
            # As admission makes them: each its own token volume name, which no check reads.
            volume = f"kube-api-access-{'abcde'[i]}x{i}q7"
            mount = {"name": volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
            pod = _pod(volumeMounts=[mount])
            pod["spec"]["volumes"] = [
                {"name": volume, "projected": {"sources": [{"serviceAccountToken": {}}]}}
            ]
            return {**pod, "metadata": {"name": f"web-{i}", "uid": str(i)}}

        replicas = [replica(i) for i in range(5)]
        assert await asyncio.gather(*(checker.violation(p) for p in replicas[:1])) == [None]
        assert [await checker.violation(p) for p in replicas[1:]] == [None] * 4
        assert len(asked) == 1 and checker.checked == 5
        assert await checker.violation(_pod(securityContext={"privileged": True})) is not None
        assert len(asked) == 2
        await checker.close()

    asyncio.run(run())
