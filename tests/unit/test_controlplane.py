"""The control plane's memory settings (Go servers' flags and environment) and its in-process syncer."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from pathlib import Path

import pytest

from vnest import log
from vnest.controlplane import commands, pki, run, supervisor
from vnest.controlplane.supervisor import Supervisor, TaskChild, Unrecoverable


def test_go_env_sets_gogc_and_the_soft_limit_unless_the_environment_does():
    assert commands.go_env(50, None, {}) == {"GOGC": "50"}
    assert commands.go_env(50, 160, {}) == {"GOGC": "50", "GOMEMLIMIT": "160MiB"}
    assert commands.go_env(50, 160, {"GOGC": "100"}) == {"GOMEMLIMIT": "160MiB"}
    assert commands.go_env(50, 160, {"GOGC": "off", "GOMEMLIMIT": "1GiB"}) == {}


def _plane(tmp_path: Path, values: str = "") -> run.ControlPlane:
    bins = tmp_path / "bin"
    bins.mkdir(parents=True)
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kine", "pod-security-check"):
        (bins / name).write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(values or "{}\n")
    opts = run.Options(
        name="vc",
        namespace="ns",
        config=config,
        data_dir=tmp_path / "data",
        bin_dir=bins,
        listen_address="127.0.0.1",
        api_port=6443,
        host_kubeconfig=tmp_path / "host.kubeconfig",
        advertise_address="127.0.0.1",
        public_server="",
    )
    opts.data_dir.mkdir(parents=True)
    return run.ControlPlane(opts)


def test_the_api_server_serves_upstreams_default_groups_and_a_users_flag_counts(tmp_path):
    assert not [
        a
        for a in _plane(tmp_path / "default")._apiserver_argv("unix:///kine.sock", "10.96.0.0/12")
        if a.startswith("--runtime-config")
    ]
    values = "controlPlane:\n  distro:\n    k8s:\n      apiServer:\n        extraArgs: [--runtime-config=resource.k8s.io/v1=false]\n"
    argv = _plane(tmp_path / "users", values)._apiserver_argv("unix:///kine.sock", "10.96.0.0/12")
    assert [a for a in argv if a.startswith("--runtime-config")] == [
        "--runtime-config=resource.k8s.io/v1=false"
    ]


def test_service_account_keys_are_published_at_a_name_the_serving_certificate_has(tmp_path):
    plane = _plane(tmp_path)
    plane.opts.advertise_address = "10.244.2.2"  # a pod IP: not in the certificate
    argv = plane._apiserver_argv("unix:///kine.sock", "10.96.0.0/12")
    (jwks,) = [a for a in argv if a.startswith("--service-account-jwks-uri=")]
    assert jwks == "--service-account-jwks-uri=https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
    names = pki.serving_names("vc", "ns", "cluster.local", "10.96.5.5", "10.96.0.1", [])
    assert "kubernetes.default.svc.cluster.local" in names.dns


def test_the_controller_manager_runs_what_workloads_need_and_not_the_hosts_controllers(tmp_path):
    argv = _plane(tmp_path)._controller_manager_argv("10.96.0.0/12")
    (controllers,) = [a for a in argv if a.startswith("--controllers=")]
    disabled = {c[1:] for c in controllers.removeprefix("--controllers=").split(",") if c.startswith("-")}
    assert {"node-lifecycle-controller", "persistentvolume-binder-controller"} <= disabled
    for needed in (
        "resourceclaim-controller",  # Dynamic Resource Allocation's API is served
        "deployment-controller",
        "garbage-collector-controller",
        "serviceaccount-token-controller",
    ):
        assert needed not in disabled


def test_every_go_server_gets_its_gogc(tmp_path, monkeypatch):
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    plane = _plane(tmp_path)
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kine", "etcd"):
        child = plane._go_child(name, ["x"])
        assert child.env["GOGC"] == str(run.GO_MEMORY[name][0])
        assert child.log_file == plane.logs / f"{name}.log"
    monkeypatch.setenv("GOGC", "200")
    assert "GOGC" not in plane._go_child("kine", ["x"]).env


def test_syncer_options_in_a_process_and_in_a_pod(tmp_path, monkeypatch):
    monkeypatch.setenv("VNEST_HOST_QPS", "7")
    plane = _plane(tmp_path)
    local = plane._syncer_options(tmp_path / "ready.json")
    assert local["dns_port"] > 0 and local["metrics"][1] > 0  # free ports, kept across restarts
    assert local["host_qps"] == 7.0
    assert local["pod_security_check"] == plane.bins.pod_security_check  # baseline by default
    plane.opts.advertise_address = "10.0.0.5"
    in_pod = plane._syncer_options(tmp_path / "ready.json")
    assert (in_pod["dns_address"], in_pod["metrics"][0]) == ("10.0.0.5", "10.0.0.5")
    privileged = _plane(tmp_path / "p", "policies:\n  podSecurityStandard: privileged\n")
    assert privileged._syncer_options(tmp_path / "ready.json")["pod_security_check"] is None


@pytest.fixture
def vnest_logging():
    log.setup()
    yield
    logging.getLogger(log.LOGGER_NAME).handlers.clear()


def test_a_task_child_logs_to_its_file_and_is_restarted_until_it_keeps_failing(
    tmp_path, monkeypatch, capsys, vnest_logging
):
    monkeypatch.setattr(supervisor, "BACKOFF_START", 0.0)
    monkeypatch.setattr(supervisor, "MAX_RESTARTS_IN_WINDOW", 2)
    runs = []
    child_log = log.get("syncer")

    async def fail() -> None:
        runs.append(1)
        child_log.info("syncing", run=len(runs))
        raise RuntimeError(f"boom {len(runs)}")

    async def main() -> None:
        sup = Supervisor()
        await sup.start(TaskChild("syncer", fail, tmp_path / "syncer.log"))
        with pytest.raises(Unrecoverable, match="syncer died 3 times"):
            await asyncio.wait_for(sup.watch(), 10)
        await sup.stop_all()

    asyncio.run(main())
    assert len(runs) == 3
    text = (tmp_path / "syncer.log").read_text()
    assert text.count("starting syncer") == 3
    assert "info syncing run=3" in text and "RuntimeError: boom 3" in text
    err = capsys.readouterr().err
    assert "syncing" not in err  # the child's own lines stay in its file
    assert "syncer exited; restarting" in err  # the supervisor's stay on its output


def test_stopping_a_task_child_cancels_it(tmp_path):
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def main() -> None:
        sup = Supervisor()
        child = await sup.start(TaskChild("syncer", forever, tmp_path / "syncer.log"))
        await asyncio.sleep(0)
        sup.check_alive()
        assert child.alive
        await sup.stop_all()
        assert cancelled.is_set() and not child.alive

    asyncio.run(main())


def test_a_closed_syncer_leaves_no_task_and_frees_its_ports(tmp_path, virtual_api, host_api):
    """What lets the supervisor restart the syncer in the same process on the same ports."""
    import socket

    from vnest.config.load import load_config
    from vnest.syncer.run import Syncer

    config_file = tmp_path / "config.yaml"
    config_file.write_text("{}\n")
    config = load_config([config_file], [])

    async def main() -> tuple[int, int]:
        before = asyncio.all_tasks()
        syncer = Syncer(
            "vc", "team-host", virtual_api.client(), host_api.client(), config,
            dns_address="127.0.0.1", metrics=("127.0.0.1", 0),
        )  # fmt: skip
        running = asyncio.create_task(syncer.run())
        await asyncio.wait_for(syncer.ready.wait(), 10)
        assert syncer.dns is not None and syncer.metrics is not None
        ports = syncer.dns.port, syncer.metrics.port
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await syncer.close()
        assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
        return ports

    dns_port, metrics_port = asyncio.run(main())
    for kind, port in (
        (socket.SOCK_DGRAM, dns_port),
        (socket.SOCK_STREAM, dns_port),
        (socket.SOCK_STREAM, metrics_port),
    ):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_memory_report_tells_where_python_memory_grew(tmp_path):
    tracemalloc.start(4)
    try:
        report = run._memory_report(tmp_path / "tracemalloc.log")
        report()  # the baseline
        kept = [bytearray(4096) for _ in range(64)]  # 256 KiB that stay
        report()
    finally:
        tracemalloc.stop()
    text = (tmp_path / "tracemalloc.log").read_text()
    assert text.count("--- ") == 2
    assert "test_controlplane.py" in text.split("--- ")[2]  # the growth, at the line that made it
    assert kept
