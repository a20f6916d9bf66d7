"""Kubernetes conformance, the CI smoke subset: about twenty fast, API-level [Conformance] specs
across the SIGs (bench/conformance.py's SMOKE_SPECS), run by upstream's e2e.test against a virtual
cluster on the session's local host. The full set, against the virtual cluster and its host side
by side, is `bench/conformance.py`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from vnest import binaries

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))
conformance = importlib.import_module("conformance")

NAME = "conf-smoke"
SPEC_TIMEOUT = 120  # seconds; each of these specs takes a few on a KWOK host


# The first run builds e2e.test (minutes on 2 cores); the suite's own timeout is for tests.
@pytest.mark.timeout(2400)
def test_a_virtual_cluster_passes_the_conformance_smoke_subset(host_env):
    bins, tools = binaries.ensure(), binaries.ensure_conformance()
    host_env.vnest("create", NAME, "-n", NAME, "--no-connect")
    try:
        folder = host_env.root / "conformance"
        folder.mkdir()
        host = conformance.host_kubeconfig(
            bins.kubectl, Path(host_env.vars["KUBECONFIG"]), "vnest-host", folder / "host.kubeconfig"
        )
        virtual = folder / "virtual.kubeconfig"
        host_env.vnest("connect", NAME, "-n", NAME, "--kube-config", str(virtual))
        conformance.give_nodes(bins.kubectl, host, virtual)

        side = conformance.Side("virtual", virtual, folder / "virtual")
        focus = conformance.exact_focus(conformance.SMOKE_SPECS)
        run = conformance.Ginkgo(
            side,
            conformance.ginkgo_argv(
                tools.ginkgo,
                tools.e2e_test,
                side,
                kubectl=bins.kubectl,
                procs=2,
                focus=focus,
                skip="",
                spec_timeout=SPEC_TIMEOUT,
                slow_spec_timeout=SPEC_TIMEOUT,
                timeout=600,
            ),
        )
        conformance.run_sides([run], deadline_seconds=660, report=lambda line: print(line, flush=True))
        log_tail = "\n".join(side.log.read_text(errors="replace").splitlines()[-40:])
        assert side.junit.is_file(), f"e2e.test wrote no report; the end of its log:\n{log_tail}"
        report = conformance.parse_junit(side.junit)
        assert not report.suite_failures, "\n".join(
            f"{s.name}: {' / '.join(conformance.failure_lines(s.message))}" for s in report.suite_failures
        )
        ran = {s.name: s for s in report.specs if conformance.selected(s.name, focus, "")}
        missing = sorted(set(conformance.SMOKE_SPECS) - set(ran))
        assert not missing, f"specs not in this e2e.test (renamed upstream?): {missing}"
        failed = {
            name: f"{s.state} after {s.seconds:.0f}s: " + " / ".join(conformance.failure_lines(s.message))
            for name, s in ran.items()
            if s.outcome != conformance.PASSED
        }
        assert not failed, "\n".join(f"{name}\n    {why}" for name, why in sorted(failed.items()))
    finally:
        host_env.vnest("delete", NAME, "-n", NAME, check=False)
