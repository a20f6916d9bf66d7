"""The informer on its own, against real API servers: a burst, watch expiry, an API server restart."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from pathlib import Path

import httpx
import pytest
import yaml

from vnest.kube.client import KubeClient, Obj, resource_of
from vnest.syncer.engine import Handlers, Informer

HOST = "vnest-host"


def _host_client(env) -> KubeClient:
    return KubeClient.from_kubeconfig(Path(env.vars["KUBECONFIG"]), HOST)


async def _eventually(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _configmap(name: str, ns: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"k": name},
    }


def test_a_burst_of_1000_events_lands_in_the_cache(host_env):
    async def scenario() -> None:
        async with _host_client(host_env) as host:
            ns = f"informer-burst-{int(time.time())}"
            await host.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            inf = Informer(host, resource_of("ConfigMap"), "ConfigMap", namespace=ns, label_selector="")
            seen: list[str] = []

            def record(old: Obj | None, new: Obj | None) -> None:
                obj = new or old
                assert obj is not None  # an event has an object before or after
                seen.append(obj["metadata"]["name"])

            inf.add_handlers(Handlers.diff(record))
            task = asyncio.create_task(inf.run())
            await asyncio.wait_for(inf.synced.wait(), 30)
            sem = asyncio.Semaphore(32)

            async def make(i: int) -> None:
                async with sem:
                    await host.create(_configmap(f"cm{i:04d}", ns))

            await asyncio.gather(*(make(i) for i in range(1000)))
            await _eventually(
                lambda: sum(1 for k in inf.store if "/cm" in k) == 1000, 60, "1000 objects in the cache"
            )
            assert {f"cm{i:04d}" for i in range(1000)} <= set(seen)
            await host.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps")  # deletecollection
            await _eventually(
                lambda: not any("/cm" in k for k in inf.store), 60, "the deletions in the cache"
            )
            task.cancel()
            await host.delete("Namespace", ns)

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def etcd_cluster(host_env):
    """A virtual cluster on embedded etcd whose API server serves watches from etcd itself.

    Without the watch cache, a watch from a resourceVersion that etcd compacted
    away gets 410 Gone, as on a busy production cluster; with it, a young API
    server replays everything since it started and never says Gone.
    """
    name = "inf-etcd"
    host_env.vnest(
        "create",
        name,
        "-n",
        name,
        "--no-connect",
        "--set",
        "controlPlane.backingStore.etcd.embedded.enabled=true",
        "--set",
        "controlPlane.distro.k8s.apiServer.extraArgs=[--watch-cache=false]",
    )
    config = yaml.safe_load(host_env.vnest("connect", name, "-n", name, "--print").stdout)
    state = Path(host_env.vars["VNEST_HOME"]) / "clusters" / name / name
    yield config, state
    host_env.vnest("delete", name, "-n", name)


def _process(state: Path, binary: str) -> tuple[int, list[str]]:
    """The pid and argv of the running `binary` of the control plane in `state`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv[0].endswith("/" + binary) and any(str(state) in a for a in argv):
                return int(entry), argv
    raise AssertionError(f"no {binary} of the control plane in {state} is running")


def test_an_expired_watch_lists_again_and_reports_what_changed(etcd_cluster):
    config, state = etcd_cluster

    async def scenario() -> None:
        async with KubeClient.from_dict(config, timeout=10) as virtual:
            await virtual.create(_configmap("before", "default"))
            inf = Informer(virtual, resource_of("ConfigMap"), "ConfigMap", namespace="default")
            deleted: list[str] = []

            def record_deletion(old: Obj | None, new: Obj | None) -> None:
                if new is None and old is not None:
                    deleted.append(old["metadata"]["name"])

            inf.add_handlers(Handlers.diff(record_deletion))
            await asyncio.wait_for(inf._list(), 30)
            # Changes the informer does not see, then etcd compacts its history away.
            await virtual.delete("ConfigMap", "before", "default")
            await virtual.create(_configmap("after", "default"))
            latest = (await virtual.request("GET", "/api/v1/namespaces/default/configmaps"))["metadata"]
            _, argv = _process(state, "etcd")
            client_url = next(a.split("=", 1)[1] for a in argv if a.startswith("--listen-client-urls="))
            # The embedded etcd takes only clients with a certificate of its own CA.
            pki = state / "data" / "pki"
            tls = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
            async with httpx.AsyncClient(verify=tls) as anonymous:
                # TLS 1.3 refuses a client without a certificate after the handshake: the alert
                # surfaces on the first read, wrapped by httpx or, depending on timing, not.
                with pytest.raises((httpx.TransportError, ssl.SSLError)):
                    await anonymous.post(f"{client_url}/v3/kv/compaction", json={"revision": "1"})
            tls.load_cert_chain(pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key")
            async with httpx.AsyncClient(verify=tls) as http:
                resp = await http.post(
                    f"{client_url}/v3/kv/compaction", json={"revision": latest["resourceVersion"]}
                )
                assert resp.status_code == 200, resp.text
            task = asyncio.create_task(
                inf.run(list_first=False)
            )  # resumes from the compacted resourceVersion
            await _eventually(lambda: inf.relists >= 1, 30, "a relist after 410 Gone")
            await _eventually(
                lambda: "default/after" in inf.store and "default/before" not in inf.store,
                30,
                "the new state",
            )
            assert "before" in deleted  # the deletion that happened unwatched is reported
            task.cancel()

    asyncio.run(scenario())


def test_the_informer_rides_out_an_api_server_restart(etcd_cluster):
    """The virtual API server killed: the supervisor restarts it and the watch resumes."""
    config, state = etcd_cluster

    async def scenario() -> None:
        async with KubeClient.from_dict(config, timeout=5) as virtual:
            inf = Informer(virtual, resource_of("ConfigMap"), "ConfigMap", namespace="default")
            task = asyncio.create_task(inf.run())
            await asyncio.wait_for(inf.synced.wait(), 30)
            pid, _ = _process(state, "kube-apiserver")
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await virtual.create(_configmap("after-restart", "default"))
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            await _eventually(
                lambda: "default/after-restart" in inf.store, 60, "the watch to resume after the restart"
            )
            assert _process(state, "kube-apiserver")[0] != pid
            task.cancel()

    asyncio.run(scenario())
