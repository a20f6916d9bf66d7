"""The pure parts of the conformance runner (bench/conformance.py): JUnit reports, the per-SIG
summary, the host-vs-virtual differences, progress, and the command lines it builds."""

from __future__ import annotations

import importlib
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))
conformance = importlib.import_module("conformance")

JOB = "[sig-apps] Job should run a job to completion when tasks succeed [Conformance]"
CRD = "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition creating/deleting custom resource definition objects works [Conformance]"
RUNTIME = "[sig-node] RuntimeClass should schedule a Pod requesting a RuntimeClass without PodOverhead [NodeConformance] [Conformance]"
SERIAL = "[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts [Conformance]"
FEATURE = (
    "[sig-network] Networking should provide Internet connection for containers [Feature:Networking-IPv4]"
)


def junit(cases: list[tuple[str, str, float, str]]) -> str:
    """A report as e2e.test's --report-dir writes it (Ginkgo's JUnit, failure text as element text)."""
    body = []
    for name, status, seconds, child in cases:
        body.append(
            f'<testcase name="{name}" classname="Kubernetes e2e suite" status="{status}" time="{seconds}">{child}</testcase>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites tests="9">'
        '<testsuite name="Kubernetes e2e suite" tests="9" skipped="0" failures="0">'
        + "".join(body)
        + "</testsuite></testsuites>"
    )


FAILURE = (
    '<failure type="failed">[FAILED] failed to ensure job completion in namespace: job-1234: '
    "context deadline exceeded (cause: vnest: the spec ran longer than its timeout of 5m0s)&#xA;"
    "In [It] at: k8s.io/kubernetes/test/e2e/apps/job.go:123 @ 11/30/26 16:00:00.123&#xA;&#xA;"
    "Full Stack Trace&#xA;  k8s.io/kubernetes/test/e2e/apps.init...</failure><system-err>"
    "&gt; Enter [BeforeEach] [sig-apps] Job - set up framework | framework.go:302 @ 11/30/26 17:04:07.429&#xA;"
    "STEP: Creating a kubernetes client - k8s.io/kubernetes@v1.36.3/test/e2e/framework/framework.go:324 @ 11/30/26 17:04:07.43&#xA;"
    "STEP: Creating a job - k8s.io/kubernetes@v1.36.3/test/e2e/apps/job.go:100 @ 11/30/26 17:04:07.5&#xA;"
    "STEP: Ensuring job reaches completions - k8s.io/kubernetes@v1.36.3/test/e2e/apps/job.go:110 @ 11/30/26 17:04:08&#xA;"
    "[FAILED] failed to ensure job completion&#xA;"
    "STEP: Destroying namespace - k8s.io/kubernetes@v1.36.3/test/e2e/framework/framework.go:400 @ 11/30/26 17:09:08&#xA;"
    "</system-err>"
)


def virtual_report(tmp_path: Path) -> Path:
    path = tmp_path / "virtual.xml"
    path.write_text(
        junit(
            [
                ("[SynchronizedBeforeSuite]", "passed", 1.5, ""),
                (f"[It] {JOB}", "failed", 300.2, FAILURE),
                (f"[It] {CRD}", "passed", 3.1, ""),
                (
                    f"[It] {RUNTIME}",
                    "timedout",
                    12.0,
                    '<failure type="timedout">[TIMEDOUT] A suite timeout occurred&#xA;In [It] at: x.go:1 @ t</failure>',
                ),
                (f"[It] {SERIAL}", "skipped", 0, '<skipped message="skipped"></skipped>'),
                (f"[It] {FEATURE}", "skipped", 0, '<skipped message="skipped"></skipped>'),
                ("[ReportAfterSuite] Kubernetes e2e suite report", "passed", 0, ""),
            ]
        )
    )
    return path


def test_parse_junit_reads_specs_states_and_failures(tmp_path):
    report = conformance.parse_junit(virtual_report(tmp_path))
    by_name = {s.name: s for s in report.specs}
    assert set(by_name) == {JOB, CRD, RUNTIME, SERIAL, FEATURE}  # suite nodes are not specs
    assert report.suite_failures == []
    job = by_name[JOB]
    assert (job.state, job.outcome, job.seconds) == ("failed", "failed", 300.2)
    assert job.message.startswith("[FAILED] failed to ensure job completion")
    assert job.steps == ("Creating a job", "Ensuring job reaches completions")  # before the failure
    assert by_name[RUNTIME].outcome == "failed"  # timed out counts as failed
    assert by_name[CRD].outcome == "passed"
    assert by_name[SERIAL].outcome == "skipped" and by_name[SERIAL].message == "skipped"


def test_a_failed_suite_node_is_reported(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text(
        junit(
            [
                (
                    "[SynchronizedBeforeSuite]",
                    "failed",
                    600,
                    '<failure type="failed">[FAILED] there are currently no ready, schedulable nodes in the cluster&#xA;In [SynchronizedBeforeSuite] at: e2e.go:1 @ t</failure>',
                ),
                (f"[It] {CRD}", "skipped", 0, '<skipped message="skipped"></skipped>'),
            ]
        )
    )
    report = conformance.parse_junit(path)
    assert [s.name for s in report.suite_failures] == ["[SynchronizedBeforeSuite]"]
    assert conformance.failure_lines(report.suite_failures[0].message) == [
        "[FAILED] there are currently no ready, schedulable nodes in the cluster"
    ]


def test_failure_lines_stop_at_the_location():
    message = "[FAILED] first\nsecond\n\nthird\nfourth\nIn [It] at: a.go:1 @ t\nmore"
    assert conformance.failure_lines(message) == ["[FAILED] first", "second", "third"]
    assert conformance.failure_lines(message, limit=10) == ["[FAILED] first", "second", "third", "fourth"]
    assert conformance.failure_lines("") == []


def test_selection_follows_ginkgo_focus_and_skip():
    focus, skip = conformance.DEFAULT_FOCUS, conformance.DEFAULT_SKIP
    assert conformance.selected(JOB, focus, skip)
    assert not conformance.selected(SERIAL, focus, skip)
    assert not conformance.selected(FEATURE, focus, skip)
    assert conformance.selected(SERIAL, focus, "")


def test_exact_focus_selects_exactly_the_named_specs():
    names = [CRD, JOB, "[sig-node] Pods should be updated (x) [Conformance]"]
    focus = conformance.exact_focus(names)
    for name in names:
        assert conformance.selected(name, focus, "")
    assert not conformance.selected(RUNTIME, focus, "")
    assert not conformance.selected(JOB.replace(" [Conformance]", ""), focus, "")  # a prefix is not enough
    # Only what Go's regexp needs escaped: no "\ " (Python's re.escape of old) nor "\-".
    assert "\\ " not in focus and "\\-" not in focus


def test_summary_per_sig_and_the_differences():
    r = conformance.SpecResult
    virtual = [
        r(JOB, "failed", 299.5, "[FAILED] job never completed\nIn [It] at: job.go:1 @ t"),
        r(CRD, "passed", 3),
        r(RUNTIME, "failed", 60, "[FAILED] pod never scheduled"),
        r("[sig-apps] X [Conformance]", "skipped", 0, "skipped - needs 3 nodes"),
    ]
    host = [
        r(JOB, "passed", 20),
        r(CRD, "failed", 5, "[FAILED] webhook"),
        r(RUNTIME, "passed", 10),
        r("[sig-apps] X [Conformance]", "passed", 4),
    ]
    table = conformance.by_sig({"virtual": virtual, "host": host})
    assert list(table) == ["sig-api-machinery", "sig-apps", "sig-node"]
    assert table["sig-apps"] == {
        "virtual": {"passed": 0, "failed": 1, "skipped": 1},
        "host": {"passed": 2, "failed": 0, "skipped": 0},
    }
    assert table["sig-api-machinery"]["virtual"] == {"passed": 1, "failed": 0, "skipped": 0}
    assert conformance.tally(virtual) == {"passed": 1, "failed": 2, "skipped": 1}
    diff = conformance.differences(virtual, host, spec_timeout=300)
    assert [d["name"] for d in diff] == [JOB, RUNTIME]  # by name; a skip is not a failure
    assert diff[0] == {
        "name": JOB,
        "sig": "sig-apps",
        "state": "failed",
        "seconds": 299.5,
        "timed_out": True,
        "failure": ["[FAILED] job never completed"],
        "steps": [],
    }
    assert diff[1]["timed_out"] is False
    slow = r("[sig-apps] CronJob x [Slow] [Conformance]", "failed", 400)
    assert not conformance.ran_out_of_time(slow, 300, 1200)
    assert conformance.ran_out_of_time(slow, 300, 400)
    assert not conformance.ran_out_of_time(r(JOB, "passed", 300), 300, 1200)
    assert not conformance.ran_out_of_time(r(JOB, "failed", 300), None, None)
    assert conformance.only_in_virtual(virtual, host) == [CRD]
    assert conformance.sig_of("no sig here") == "other"


def test_progress_counts_finished_specs_and_skips_a_partial_line(tmp_path):
    path = tmp_path / "progress.jsonl"
    assert conformance.read_progress(path).line() == "0/? (0 passed, 0 failed, 0 skipped)"
    lines = [
        {"total": 4},
        {"name": CRD, "state": "passed", "seconds": 3.1, "process": 1},
        {"name": JOB, "state": "failed", "seconds": 300, "process": 2},
        {"name": RUNTIME, "state": "skipped", "seconds": 0.1, "process": 1},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"name": "half')
    progress = conformance.read_progress(path)
    assert (progress.total, progress.done, progress.failed) == (4, 3, [JOB])
    assert progress.line() == "3/4 (1 passed, 1 failed, 1 skipped)"


def test_the_written_junit_keeps_only_the_selected_specs(tmp_path):
    dest = tmp_path / "out" / "virtual.xml"
    conformance.write_selected_junit(
        virtual_report(tmp_path), dest, conformance.DEFAULT_FOCUS, conformance.DEFAULT_SKIP
    )
    suite = ET.parse(dest).getroot().find("testsuite")
    assert suite is not None
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == [
        "[SynchronizedBeforeSuite]",
        f"[It] {JOB}",
        f"[It] {CRD}",
        f"[It] {RUNTIME}",
        "[ReportAfterSuite] Kubernetes e2e suite report",
    ]
    assert suite.get("tests") == "5"
    assert conformance.parse_junit(dest).specs[0].message.startswith("[FAILED]")


def test_ginkgo_command_line(tmp_path):
    side = conformance.Side("virtual", tmp_path / "v.kubeconfig", tmp_path / "virtual")
    argv = conformance.ginkgo_argv(
        Path("/bin/ginkgo"),
        Path("/bin/e2e.test"),
        side,
        kubectl=Path("/bin/kubectl"),
        procs=3,
        focus=conformance.DEFAULT_FOCUS,
        skip=conformance.DEFAULT_SKIP,
        spec_timeout=300,
        slow_spec_timeout=1200,
        timeout=3600,
    )
    split = argv.index("--")
    ginkgo, e2e = argv[:split], argv[split + 1 :]
    assert ginkgo[0] == "/bin/ginkgo" and ginkgo[-1] == "/bin/e2e.test"
    assert {
        "--procs=3",
        "--timeout=3600s",
        r"--focus=\[Conformance\]",
        r"--skip=\[Serial\]|\[Disruptive\]",
    } <= set(ginkgo)
    assert {
        "--provider=skeleton",
        f"--kubeconfig={tmp_path / 'v.kubeconfig'}",
        "--kubectl-path=/bin/kubectl",
        f"--report-dir={tmp_path / 'virtual' / 'report'}",
        "--vnest-spec-timeout=300s",
        "--vnest-slow-spec-timeout=1200s",
        f"--vnest-progress-file={tmp_path / 'virtual' / 'progress.jsonl'}",
        "--dump-logs-on-failure=false",
    } <= set(e2e)
    assert side.junit == tmp_path / "virtual" / "report" / "junit_01.xml"
    no_skip = conformance.ginkgo_argv(
        Path("g"),
        Path("e"),
        side,
        kubectl=Path("k"),
        procs=1,
        focus="x",
        skip="",
        spec_timeout=1,
        slow_spec_timeout=1,
        timeout=1,
    )
    assert not any(a.startswith("--skip") for a in no_skip)


def test_the_smoke_subset_is_about_twenty_conformance_specs_across_the_sigs():
    specs = conformance.SMOKE_SPECS
    assert 18 <= len(specs) <= 24 and len(set(specs)) == len(specs)
    assert all(s.endswith("[Conformance]") for s in specs)
    assert not any(re.search(conformance.DEFAULT_SKIP, s) for s in specs)
    sigs = {conformance.sig_of(s) for s in specs}
    assert sigs == {
        "sig-api-machinery",
        "sig-apps",
        "sig-architecture",
        "sig-auth",
        "sig-cli",
        "sig-instrumentation",
        "sig-network",
        "sig-node",
        "sig-scheduling",
        "sig-storage",
    }


def test_differences_by_sig_counts_every_sig_and_zero_is_parity():
    diff = [
        {"name": "[sig-apps] Job should do a thing [Conformance]"},
        {"name": "[sig-apps] CronJob should do another [Conformance]"},
        {"name": "[sig-node] Pods should run [Conformance]"},
    ]
    counts = conformance.differences_by_sig(["sig-apps", "sig-auth", "sig-node"], diff)
    assert counts == {"sig-apps": 2, "sig-auth": 0, "sig-node": 1}


def test_outcomes_list_every_spec_once_with_each_sides_outcome():
    spec = conformance.SpecResult
    sides = {
        "virtual": [spec("[sig-b] y", "passed", 1.0, ""), spec("[sig-a] x", "failed", 2.0, "boom")],
        "host": [spec("[sig-a] x", "passed", 1.0, "")],
    }
    table = conformance.outcomes(sides)
    assert list(table) == ["[sig-a] x", "[sig-b] y"]
    assert table["[sig-a] x"] == {"virtual": conformance.FAILED, "host": conformance.PASSED}
    assert table["[sig-b] y"] == {"virtual": conformance.PASSED}
