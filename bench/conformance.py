"""Kubernetes conformance: upstream's [Conformance] specs against a virtual cluster, its host as the baseline.

The judge is Kubernetes' own end-to-end suite, e2e.test from the pinned `k8s.io/kubernetes`
(built once into its own cache by `vnest.binaries.ensure_conformance()`, with ginkgo at the
version that module requires). The script:
  1. brings up a local host of its own (`vnest host up --nodes N --runtime R`, ports from --port);
  2. creates one virtual cluster on it (`vnest create conformance -n conformance`, process driver,
     default values unless --set says otherwise) and gives it its nodes: a virtual cluster shows a
     (fake) node only where its pods run, and the suite refuses to start without ready,
     schedulable nodes, so one pause pod per host node is pinned there (`spec.nodeName`) in the
     virtual kube-system, where the suite's start-up check sees them Running;
  3. runs the selected specs (default: --focus '\\[Conformance\\]' --skip '\\[Serial\\]|\\[Disruptive\\]')
     with ginkgo against the virtual cluster and, at the same time, against the host, each side
     in --procs parallel processes, every spec cut at --spec-timeout (--slow-spec-timeout for the
     few labelled [Slow], which wait out schedules by design) and each side at --timeout;
     progress (specs done of the total, per side) is printed as they finish;
  4. writes each side's JUnit report (bench/results/conformance/{virtual,host}.xml, the selected
     specs only; beside --out, in a folder named after it) and bench/results/conformance.json
     (--out): pass/fail/skip per SIG and side, the totals,
     the run times, and the specs that pass on the host and fail in the virtual cluster, with the
     first lines of their failure;
  5. deletes the virtual cluster, stops the host and every process it started (by pid), and
     removes its temp folder.

The flags e2e.test gets (`e2e_flags`), and why:
  --provider=skeleton          no cloud: the provider that assumes nothing about the machines
  --kubeconfig=FILE            the side's admin kubeconfig (one file each, current context set)
  --kubectl-path=KUBECTL       the sig-cli specs run kubectl: the pinned one, the API's version
  --report-dir=DIR             where the suite writes its JUnit report (junit_01.xml)
  --e2e-output-dir=DIR         the suite's scratch files, inside the run's temp folder
  --disable-log-dump           the skeleton provider has no log dump; without it the suite tries
                               `cluster/log-dump/log-dump.sh` of a Kubernetes checkout at the end
  --dump-logs-on-failure=false a failed spec's namespace dump (events, pods) goes into the report;
                               --dump-on-failure keeps it, for debugging one failure
  --vnest-spec-timeout, --vnest-slow-spec-timeout, --vnest-progress-file
                               vnest's additions (build/go/conformance/e2e): the per-spec timeouts
                               (a longer one for the specs labelled [Slow], which take minutes by
                               design), and one line per finished spec for the progress shown
Left at their defaults, after reading how e2e.test decides that a cluster is ready: every host
node (KWOK's, or a real kubelet) and every fake node in the virtual cluster reports Ready
without the not-ready taint, so --allowed-not-ready-nodes stays 0 (none may be unready); no node
carries a taint (the local host's control plane runs as processes, not on a node), so
--non-blocking-taints keeps its default (the control-plane role taint, absent here); the number
of nodes is counted by the suite (--num-nodes); --node-os-distro stays `debian` (what real nodes
run; among the conformance specs only AppArmor's skip reads it).

The runtime: --runtime kwok (the default) or containerd (real nodes, where `vnest host up` can
run them; auto picks them where possible). On real nodes the specs' images
(registry.k8s.io/e2e-test-images/agnhost and the others) come from the local host's registry,
built from the pinned modules and Debian packages before the host starts
(vnest.host.e2e_images; `VNEST_E2E_IMAGES=1` makes the host serve them).

Run: .venv/bin/python bench/conformance.py [--runtime kwok] [--nodes 3] [--procs N] [--focus RE]
     [--skip RE] [--smoke] [--spec-timeout 180] [--slow-spec-timeout 1200] [--timeout 14400] [--set KEY=VALUE]... [--sides virtual,host]
     [--dump-on-failure] [--keep-logs DIR] [--port 52443] [--out bench/results/conformance.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    isolated_env,
    kubectl_host,
    local_host,
    machine_facts,
    run_vnest,
    virtual_clusters,
    write_json,
)

from vnest import binaries, log

DEFAULT_FOCUS = r"\[Conformance\]"
DEFAULT_SKIP = r"\[Serial\]|\[Disruptive\]"
DEFAULT_OUT = Path(__file__).parent / "results" / "conformance.json"
SIDES = ("virtual", "host")
NAME = "conformance"  # the virtual cluster, and its host namespace
# Ginkgo matches --focus and --skip against "<suite description> <spec text>".
SUITE = "Kubernetes e2e suite"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
# The RuntimeClass specs make a class for handler `test-handler`, which upstream's test clusters
# configure on every node. The host offers it to the tenant as a platform team would: a host
# class for that handler, selected by the virtual cluster's sync.fromHost.runtimeClasses
# (vnest/syncer/resources/runtimeclasses.py); the host side needs nothing (KWOK runs any handler).
RUNTIME_HANDLER = "test-handler"
OFFER_LABEL = "conformance.vnest.io/offered"
OFFERED_RUNTIME_CLASS: dict[str, Any] = {
    "apiVersion": "node.k8s.io/v1",
    "kind": "RuntimeClass",
    "metadata": {"name": "conformance-test-handler", "labels": {OFFER_LABEL: "true"}},
    "handler": RUNTIME_HANDLER,
}
VALUES: dict[str, Any] = {
    "sync": {
        "fromHost": {"runtimeClasses": {"enabled": True, "selector": {"matchLabels": {OFFER_LABEL: "true"}}}}
    },
    # The suite labels its namespaces `pod-security.kubernetes.io/enforce: privileged`, and some
    # specs run hostPort, hostNetwork and privileged pods. The host side honours the label; in a
    # virtual cluster a tenant's namespace labels decide nothing on the host, vnest's policy does,
    # and its default (baseline) keeps those pods off the host by design. The platform team's
    # setting that lets a trusted tenant run them (vCluster has no such policy at all):
    "policies": {"podSecurityStandard": "privileged"},
}
NODE_PLACEHOLDER = "vnest-conformance-node"

# The CI smoke subset (tests/e2e/test_conformance.py, `--smoke` here): fast, API-level
# [Conformance] specs across the SIGs, each passing on a KWOK host and in a virtual cluster on it.
SMOKE_SPECS = (
    "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition creating/deleting custom resource definition objects works [Conformance]",
    "[sig-api-machinery] FieldValidation should detect unknown and duplicate fields of a typed object [Conformance]",
    "[sig-api-machinery] ResourceQuota should create a ResourceQuota and ensure its status is promptly calculated. [Conformance]",
    "[sig-api-machinery] Watchers should observe add, update, and delete watch notifications on configmaps [Conformance]",
    "[sig-apps] Deployment RollingUpdateDeployment should delete old pods and create new ones [Conformance]",
    "[sig-apps] DisruptionController should create a PodDisruptionBudget [Conformance]",
    "[sig-architecture] Conformance Tests should have at least two untainted nodes [Conformance]",
    "[sig-auth] Certificates API [Privileged:ClusterAdmin] should support CSR API operations [Conformance]",
    "[sig-auth] ServiceAccounts should guarantee kube-root-ca.crt exist in any namespace [Conformance]",
    "[sig-auth] SubjectReview should support SubjectReview API operations [Conformance]",
    "[sig-cli] Kubectl client Kubectl api-versions should check if v1 is in available api versions [Conformance]",
    "[sig-cli] Kubectl client Kubectl label should update the label on a resource [Conformance]",
    "[sig-instrumentation] Events API should ensure that an event can be fetched, patched, deleted, and listed [Conformance]",
    "[sig-network] EndpointSlice should create Endpoints and EndpointSlices for Pods matching a Service [Conformance]",
    "[sig-network] Services should find a service from listing all namespaces [Conformance]",
    "[sig-node] ConfigMap should run through a ConfigMap lifecycle [Conformance]",
    "[sig-node] Pods should run through the lifecycle of Pods and PodStatus [Conformance]",
    "[sig-node] RuntimeClass should support RuntimeClasses API operations [Conformance]",
    "[sig-scheduling] LimitRange should create a LimitRange with defaults and ensure pod has those defaults applied. [Conformance]",
    "[sig-storage] CSIInlineVolumes should support CSIVolumeSource in Pod API [Conformance]",
    "[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC [Conformance]",
)


# ---- results: the pure parts ---------------------------------------------------------------

# Ginkgo's spec states, by what a summary counts them as.
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
_FAILURE_STATES = {"failed", "timedout", "panicked", "interrupted", "aborted"}


@dataclass(frozen=True)
class SpecResult:
    name: str  # the spec's full text, as --focus sees it after the suite's name
    state: str  # ginkgo's: passed, failed, skipped, pending, timedout, panicked, interrupted, aborted
    seconds: float
    message: str = ""  # the failure as ginkgo reports it, or why the spec was skipped
    steps: tuple[str, ...] = ()  # for a failure: the last steps (By) the spec took before it

    @property
    def outcome(self) -> str:
        if self.state == "passed":
            return PASSED
        return FAILED if self.state in _FAILURE_STATES else SKIPPED


@dataclass(frozen=True)
class Report:
    specs: list[SpecResult]
    # Suite-level nodes that failed (the suite's start-up checks, say): every spec then fails or is skipped.
    suite_failures: list[SpecResult] = field(default_factory=list)


def parse_junit(path: Path) -> Report:
    """The specs (the `[It]` test cases) of a JUnit report that Ginkgo or e2e.test wrote."""
    specs, suite = [], []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        kind, _, text = name.partition("] ")
        state = case.get("status") or _state_from_children(case)
        message = ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                message = (child.text or child.get("message") or "").strip()
                break
        seconds = float(case.get("time") or 0)
        if kind == "[It":
            steps = steps_before_failure(case.findtext("system-err") or "")
            specs.append(SpecResult(text, state, seconds, message, steps))
        elif (node := SpecResult(name, state, seconds, message)).outcome == FAILED:
            suite.append(node)
    return Report(specs, suite)


_STEP = re.compile(r"^STEP: (.*?)(?: - \S+:\d+ @ .*)?$")


def steps_before_failure(timeline: str, limit: int = 2) -> tuple[str, ...]:
    """The last `limit` steps (`STEP: <text> - <location> @ <time>` lines) of a failed spec's
    timeline before its first failure: where it was when it failed or ran out of time."""
    steps: list[str] = []
    for line in timeline.splitlines():
        if re.match(r"\[(FAILED|TIMEDOUT|PANICKED|INTERRUPTED|ABORTED)\]", line):
            break
        if match := _STEP.match(line):
            steps.append(match.group(1))
    return tuple(steps[-limit:])


def _state_from_children(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def _re2_escape(text: str) -> str:
    """Escapes regex metacharacters the way Go's regexp (RE2) reads them (Python's re.escape
    also escapes characters, such as spaces, that RE2 may not take escaped)."""
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\1", text)


def exact_focus(names: Iterable[str]) -> str:
    """A --focus regex that selects exactly these specs."""
    return f"^{_re2_escape(SUITE)} (?:{'|'.join(_re2_escape(n) for n in names)})$"


def selected(name: str, focus: str, skip: str) -> bool:
    """Whether ginkgo runs a spec of this name under --focus/--skip (which see the suite's name first)."""
    text = f"{SUITE} {name}"
    return bool(re.search(focus, text)) and not (skip and re.search(skip, text))


def sig_of(name: str) -> str:
    match = re.search(r"\[(sig-[a-z-]+)\]", name)
    return match.group(1) if match else "other"


def tally(specs: Iterable[SpecResult]) -> dict[str, int]:
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for spec in specs:
        counts[spec.outcome] += 1
    return counts


def by_sig(sides: dict[str, list[SpecResult]]) -> dict[str, dict[str, dict[str, int]]]:
    """{sig: {side: {passed, failed, skipped}}}, SIGs in name order, every side in every SIG."""
    sigs = sorted({sig_of(s.name) for specs in sides.values() for s in specs})
    return {
        sig: {side: tally(s for s in specs if sig_of(s.name) == sig) for side, specs in sides.items()}
        for sig in sigs
    }


def outcomes(sides: dict[str, list[SpecResult]]) -> dict[str, dict[str, str]]:
    """{spec: {side: its outcome}}, specs in name order: the run's record in a few tens of KB (the
    JUnit reports, with every spec's timeline, are megabytes and stay beside the results)."""
    table: dict[str, dict[str, str]] = {}
    for side, specs in sides.items():
        for spec in specs:
            table.setdefault(spec.name, {})[side] = spec.outcome
    return dict(sorted(table.items()))


def differences_by_sig(sigs: Iterable[str], diff: Iterable[dict[str, Any]]) -> dict[str, int]:
    """{sig: how many of its specs pass on the host and fail in the virtual cluster}: 0 is parity."""
    counts = dict.fromkeys(sigs, 0)
    for d in diff:
        counts[sig_of(d["name"])] = counts.get(sig_of(d["name"]), 0) + 1
    return counts


def failure_lines(message: str, limit: int = 3) -> list[str]:
    """The first lines of a failure as ginkgo words it (`[FAILED] <message>`), without its location
    line (`In [It] at: file:line @ time`) and what follows it."""
    lines = []
    for raw in message.splitlines():
        line = raw.strip()
        if re.match(r"In \[[A-Za-z]+\] at: ", line):
            break
        if line:
            lines.append(line)
        if len(lines) == limit:
            break
    return lines


def ran_out_of_time(spec: SpecResult, spec_timeout: float | None, slow_spec_timeout: float | None) -> bool:
    """Whether a failed spec ran for its whole time (the longer one if it is labelled [Slow])."""
    limit = slow_spec_timeout if "[Slow]" in spec.name else spec_timeout
    return spec.outcome == FAILED and bool(limit) and spec.seconds >= (limit or 0) - 1


def differences(
    virtual: list[SpecResult],
    host: list[SpecResult],
    spec_timeout: float | None = None,
    slow_spec_timeout: float | None = None,
) -> list[dict[str, Any]]:
    """The specs that pass on the host and fail in the virtual cluster, with the virtual failure:
    its first lines, the steps before it, and whether the spec ran out of its time (then the
    failure is what the cancelled context made of the step it was in)."""
    host_passed = {s.name for s in host if s.outcome == PASSED}
    return [
        {
            "name": s.name,
            "sig": sig_of(s.name),
            "state": s.state,
            "seconds": round(s.seconds, 1),
            "timed_out": ran_out_of_time(s, spec_timeout, slow_spec_timeout),
            "failure": failure_lines(s.message),
            "steps": list(s.steps),
        }
        for s in sorted(virtual, key=lambda s: s.name)
        if s.outcome == FAILED and s.name in host_passed
    ]


def only_in_virtual(virtual: list[SpecResult], host: list[SpecResult]) -> list[str]:
    """The specs that fail on the host and pass in the virtual cluster (the other way round)."""
    virtual_passed = {s.name for s in virtual if s.outcome == PASSED}
    return sorted(s.name for s in host if s.outcome == FAILED and s.name in virtual_passed)


@dataclass
class Progress:
    """What one side's progress file says: the total to run and each finished spec."""

    total: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {PASSED: 0, FAILED: 0, SKIPPED: 0})
    failed: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        c = self.counts
        return f"{self.done}/{total} ({c[PASSED]} passed, {c[FAILED]} failed, {c[SKIPPED]} skipped)"


def read_progress(path: Path) -> Progress:
    """Parses the JSON lines e2e.test's processes append (--vnest-progress-file); a line still
    being written is left for the next read."""
    progress = Progress()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return progress
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "total" in record:
            progress.total = int(record["total"])
        elif "state" in record:
            spec = SpecResult(record.get("name", ""), record["state"], float(record.get("seconds", 0)))
            progress.counts[spec.outcome] += 1
            if spec.outcome == FAILED:
                progress.failed.append(spec.name)
    return progress


def write_selected_junit(source: Path, dest: Path, focus: str, skip: str) -> None:
    """Copies a JUnit report keeping only the selected specs (and the suite's own nodes): the
    thousands of specs --focus leaves out are listed as skipped otherwise."""
    tree = ET.parse(source)
    for suite in tree.getroot().iter("testsuite"):
        for case in list(suite.findall("testcase")):
            kind, _, text = case.get("name", "").partition("] ")
            if kind == "[It" and not selected(text, focus, skip):
                suite.remove(case)
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
        suite.set("disabled", "0")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tree.write(dest, encoding="utf-8", xml_declaration=True)


# ---- running e2e.test ----------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One cluster the suite runs against, and the folder of that run (report, progress, log)."""

    name: str
    kubeconfig: Path
    folder: Path

    @property
    def junit(self) -> Path:
        return self.folder / "report" / "junit_01.xml"

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.jsonl"

    @property
    def log(self) -> Path:
        return self.folder / "ginkgo.log"


def e2e_flags(
    side: Side, kubectl: Path, spec_timeout: float, slow_spec_timeout: float, dump_on_failure: bool = False
) -> list[str]:
    """What e2e.test gets (the module's docstring says why each)."""
    return [
        "--provider=skeleton",
        f"--kubeconfig={side.kubeconfig}",
        f"--kubectl-path={kubectl}",
        f"--report-dir={side.folder / 'report'}",
        f"--e2e-output-dir={side.folder / 'output'}",
        "--disable-log-dump",
        f"--dump-logs-on-failure={'true' if dump_on_failure else 'false'}",
        f"--vnest-spec-timeout={int(spec_timeout)}s",
        f"--vnest-slow-spec-timeout={int(slow_spec_timeout)}s",
        f"--vnest-progress-file={side.progress_file}",
    ]


def ginkgo_argv(
    ginkgo: Path,
    e2e_test: Path,
    side: Side,
    *,
    kubectl: Path,
    procs: int,
    focus: str,
    skip: str,
    spec_timeout: float,
    slow_spec_timeout: float,
    timeout: float,
    dump_on_failure: bool = False,
) -> list[str]:
    """ginkgo running the precompiled e2e.test in `procs` processes. Its --timeout ends the
    suite gracefully (the running specs interrupted and cleaned up, the rest reported as not
    run, the reports written); the runner's own deadline comes a little later."""
    argv = [
        str(ginkgo),
        f"--procs={procs}",
        f"--timeout={int(timeout)}s",
        f"--focus={focus}",
        "--no-color",
        "--silence-skips",
    ]
    if skip:
        argv.append(f"--skip={skip}")
    flags = e2e_flags(side, kubectl, spec_timeout, slow_spec_timeout, dump_on_failure)
    return [*argv, str(e2e_test), "--", *flags]


class Ginkgo:
    """One side's ginkgo process (and the e2e.test processes it starts), stopped by pid."""

    def __init__(self, side: Side, argv: list[str]) -> None:
        self.side, self.argv = side, argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = self.ended = 0.0

    def start(self) -> None:
        for sub in ("report", "output"):
            (self.side.folder / sub).mkdir(parents=True, exist_ok=True)
        with self.side.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.side.folder,
                # A session of its own: what ginkgo signals on an interrupt stays among its processes.
                start_new_session=True,
                # A script started in the background has SIGINT ignored, and a child keeps that:
                # ginkgo must take it, to interrupt its processes (which then clean up).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        self.started = time.monotonic()

    def poll(self) -> int | None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None and not self.ended:
            self.ended = time.monotonic()
        return code

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def interrupt(self) -> list[psutil.Process]:
        """SIGINT to ginkgo, which interrupts its processes (they clean up and report); returns
        ginkgo and its processes, to be waited for."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)
        return family


def stop(runs: Sequence[Ginkgo], grace: float = 30) -> None:
    """Interrupts every side still running, then kills (SIGKILL, by pid) whatever of ginkgo and
    its processes still runs `grace` seconds later."""
    family = [proc for run in runs for proc in run.interrupt()]
    _, alive = psutil.wait_procs(family, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    for run in runs:
        if run.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=1)
            run.poll()


def run_sides(
    runs: Sequence[Ginkgo],
    deadline_seconds: float,
    report: Callable[[str], None] = print,
    every: float = 30.0,
) -> None:
    """Runs every side at once to its end, reporting progress every `every` seconds and when a
    side finishes; stops whatever still runs `deadline_seconds` after the start."""
    start = time.monotonic()
    for run in runs:
        run.start()
    last = 0.0
    try:
        while True:
            finished = [run for run in runs if run.poll() is not None]
            now = time.monotonic()
            if len(finished) == len(runs) or now - last >= every:
                last = now
                parts = []
                for run in runs:
                    state = "" if run.poll() is None else f" [ended, exit {run.poll()}]"
                    parts.append(f"{run.side.name} {read_progress(run.side.progress_file).line()}{state}")
                report(f"{time.strftime('%H:%M:%S')} {' | '.join(parts)}")
            if len(finished) == len(runs):
                return
            if now - start > deadline_seconds:
                report(f"the overall timeout passed ({deadline_seconds:.0f} s): stopping what still runs")
                return
            time.sleep(2)
    finally:
        stop(runs)


# ---- the clusters --------------------------------------------------------------------------


def kubectl_json(kubectl: Path, kubeconfig: Path, *args: str) -> Any:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def give_nodes(kubectl: Path, host: Path, virtual: Path, timeout: float = 180) -> list[str]:
    """Makes every host node a Ready node of the virtual cluster: a pause pod pinned to each one
    (`spec.nodeName`), in the virtual kube-system, where the suite expects system pods Running.
    A virtual cluster shows a fake node only where its pods run, and the suite refuses to start
    without ready, schedulable nodes. Returns the nodes' names."""
    nodes = [n["metadata"]["name"] for n in kubectl_json(kubectl, host, "get", "nodes")["items"]]
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{NODE_PLACEHOLDER}-{node}",
                "namespace": "kube-system",
                "labels": {"app.kubernetes.io/name": NODE_PLACEHOLDER},
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
                "terminationGracePeriodSeconds": 0,
            },
        }
        for node in nodes
    ]
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={virtual}", "apply", "-f", "-"],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"placing the node pods failed: {proc.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while True:
        ready = {
            n["metadata"]["name"]
            for n in kubectl_json(kubectl, virtual, "get", "nodes")["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        }
        running = {
            p["spec"].get("nodeName")
            for p in kubectl_json(
                kubectl,
                virtual,
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                f"app.kubernetes.io/name={NODE_PLACEHOLDER}",
            )["items"]
            if p.get("status", {}).get("phase") == "Running"
        }
        if set(nodes) <= ready & running:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the virtual cluster's nodes: {sorted(ready)} ready, pods on {sorted(running)}; wanted {nodes}"
            )
        time.sleep(1)


def host_kubeconfig(kubectl: Path, kubeconfig: Path, context: str, dest: Path) -> Path:
    """The local host's admin kubeconfig alone, as its own file with its context current."""
    proc = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            f"--context={context}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl config view failed: {proc.stderr.strip()}")
    dest.write_text(proc.stdout)
    return dest


# ---- the benchmark -------------------------------------------------------------------------


def default_procs() -> int:
    """Parallel e2e.test processes per side: two per core. On a KWOK host most of a spec's time
    is waiting (2-second polls for pods that simulated nodes never run to completion): eight
    processes on 2 cores kept the load average under 1 while all of them waited."""
    return 2 * max(1, len(os.sched_getaffinity(0)))


def _interrupted(signum: int, frame: object) -> None:
    # Once: a second signal must not cut the clean-up short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # Stopped by SIGINT or SIGTERM, even when started in the background (SIGINT ignored), the run
    # still cleans up: its e2e processes, the virtual cluster, the host, the temp folder.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file as they come
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runtime", choices=("kwok", "containerd", "auto"), default="kwok", help="the host's nodes"
    )
    parser.add_argument("--nodes", type=int, default=3, help="host nodes (KWOK's hold 110 pods each)")
    parser.add_argument(
        "--procs", type=int, default=default_procs(), help="parallel e2e.test processes per side"
    )
    parser.add_argument("--focus", default=DEFAULT_FOCUS, help="ginkgo --focus regex")
    parser.add_argument("--skip", default=DEFAULT_SKIP, help="ginkgo --skip regex ('' for none)")
    parser.add_argument("--smoke", action="store_true", help="only the CI smoke subset (overrides --focus)")
    parser.add_argument("--spec-timeout", type=float, default=180, help="seconds one spec may run")
    parser.add_argument(
        "--slow-spec-timeout", type=float, default=1200, help="seconds one spec labelled [Slow] may run"
    )
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds a side may run in all")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="vnest create --set")
    parser.add_argument("--sides", default=",".join(SIDES), help="virtual,host (the default), or one of them")
    parser.add_argument("--dump-on-failure", action="store_true", help="keep failed specs' namespace dumps")
    parser.add_argument("--keep-logs", type=Path, help="copy each side's ginkgo log and progress file here")
    parser.add_argument(
        "--port", type=int, default=52443, help="first of the eight ports of the benchmark's host"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--sides takes {', '.join(SIDES)}")
    focus = exact_focus(SMOKE_SPECS) if args.smoke else args.focus
    runtime = args.runtime
    if runtime == "auto":
        from vnest.host.nodes import runtime_unavailable

        why = runtime_unavailable()
        runtime = "kwok" if why else "containerd"
        print(f"runtime: {runtime}" + (f" ({why})" if why else ""))
    log.setup()

    facts = machine_facts()
    load_before = os.getloadavg()
    bins = binaries.ensure()
    if runtime == "containerd":
        from vnest.host import e2e_images, images

        e2e_images.ensure_e2e_images()  # built before the host's timer starts
        os.environ[images.E2E_IMAGES_ENV] = "1"  # `vnest host up` then pushes them with its own
    cached = binaries.conformance_dir().joinpath("manifest.json").is_file()
    started = time.monotonic()
    tools = binaries.ensure_conformance()
    build = {
        "seconds": round(time.monotonic() - started, 1),
        "cached": cached,
        "dir": str(tools.dir),
        "versions": tools.versions,
    }
    results_dir = args.out.parent / args.out.stem  # conformance.json: bench/results/conformance/

    with (
        isolated_env(prefix="vnest-conf-") as env,
        local_host(args.port, nodes=args.nodes, runtime=runtime) as up_seconds,
        virtual_clusters() as clusters,
    ):
        kubectl_host("apply", "-f", "-", stdin=json.dumps(OFFERED_RUNTIME_CLASS))
        values_file = env.root / "values.yaml"
        values_file.write_text(json.dumps(VALUES))  # JSON is YAML
        extra = ["-f", str(values_file), *(f"--set={s}" for s in args.set)]
        create_seconds = clusters.create(NAME, NAME, *extra)
        kubeconfigs = {
            "host": host_kubeconfig(bins.kubectl, env.kubeconfig, "vnest-host", env.root / "host.kubeconfig"),
            "virtual": env.root / "virtual.kubeconfig",
        }
        run_vnest("connect", NAME, "-n", NAME, "--kube-config", str(kubeconfigs["virtual"]))
        t = time.monotonic()
        nodes = give_nodes(bins.kubectl, kubeconfigs["host"], kubeconfigs["virtual"])
        nodes_seconds = time.monotonic() - t
        print(
            f"host up in {up_seconds:.1f} s; virtual cluster created in {create_seconds:.1f} s, its nodes {nodes} ready in {nodes_seconds:.1f} s"
        )
        runs = [
            Ginkgo(
                side,
                ginkgo_argv(
                    tools.ginkgo,
                    tools.e2e_test,
                    side,
                    kubectl=bins.kubectl,
                    procs=args.procs,
                    focus=focus,
                    skip=args.skip,
                    spec_timeout=args.spec_timeout,
                    slow_spec_timeout=args.slow_spec_timeout,
                    timeout=args.timeout,
                    dump_on_failure=args.dump_on_failure,
                ),
            )
            for side in (Side(name, kubeconfigs[name], env.root / name) for name in sides)
        ]
        print(
            f"running e2e.test on {', '.join(sides)}: {args.procs} processes each, logs in {env.root}/<side>/ginkgo.log"
        )
        try:
            run_sides(runs, args.timeout + 300)
        finally:
            if args.keep_logs:
                for run in runs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for path in (run.side.log, run.side.progress_file):
                        if path.is_file():
                            shutil.copyfile(path, args.keep_logs / f"{run.side.name}-{path.name}")
        reports: dict[str, Report] = {}
        for run in runs:
            if not run.side.junit.is_file():
                tail = run.side.log.read_text(errors="replace").splitlines()[-30:]
                raise RuntimeError(
                    f"{run.side.name}: no JUnit report; the end of its log:\n" + "\n".join(tail)
                )
            reports[run.side.name] = parse_junit(run.side.junit)
            write_selected_junit(run.side.junit, results_dir / f"{run.side.name}.xml", focus, args.skip)
        host_pods = len(kubectl_host("get", "pods", "-A", "-o", "name").split())
    load_after = os.getloadavg()

    specs = {name: [s for s in r.specs if selected(s.name, focus, args.skip)] for name, r in reports.items()}
    result: dict[str, Any] = {
        "benchmark": "conformance",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "params": {
            "runtime": runtime,
            "nodes": args.nodes,
            "procs_per_side": args.procs,
            "focus": focus,
            "skip": args.skip,
            "spec_timeout_seconds": args.spec_timeout,
            "slow_spec_timeout_seconds": args.slow_spec_timeout,
            "timeout_seconds": args.timeout,
            "set": args.set,
            "port": args.port,
        },
        "machine": facts,
        "load_average_1_5_15m": {"before": load_before, "after": load_after},
        "build": build,
        "host": {
            "command": f"vnest host up --nodes {args.nodes} --runtime {runtime}",
            "up_seconds": round(up_seconds, 1),
        },
        "virtual_cluster": {
            "command": " ".join(["vnest create", NAME, "-n", NAME, *extra]),
            "values": VALUES,
            "host_offers": OFFERED_RUNTIME_CLASS,
            "create_seconds": round(create_seconds, 1),
            "nodes": nodes,
            "nodes_ready_seconds": round(nodes_seconds, 1),
        },
        "host_pods_at_end": host_pods,
        "run_seconds": {run.side.name: round(run.seconds, 1) for run in runs},
        "totals": {name: {**tally(s), "selected": len(s)} for name, s in specs.items()},
        "timed_out": {
            name: sum(1 for s in ss if ran_out_of_time(s, args.spec_timeout, args.slow_spec_timeout))
            for name, ss in specs.items()
        },
        "suite_failures": {
            name: [{"name": s.name, "failure": failure_lines(s.message)} for s in r.suite_failures]
            for name, r in reports.items()
        },
        "by_sig": by_sig(specs),
        "junit": {name: str(results_dir / f"{name}.xml") for name in reports},
        "specs": outcomes(specs),
    }
    if "virtual" in specs and "host" in specs:
        result["pass_on_host_fail_in_virtual"] = differences(
            specs["virtual"], specs["host"], args.spec_timeout, args.slow_spec_timeout
        )
        result["fail_on_host_pass_in_virtual"] = only_in_virtual(specs["virtual"], specs["host"])
        result["pass_on_host_fail_in_virtual_by_sig"] = differences_by_sig(
            result["by_sig"], result["pass_on_host_fail_in_virtual"]
        )
    print_summary(result)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def print_summary(r: dict[str, Any]) -> None:
    sides = list(r["totals"])
    print(
        f"\nKubernetes {r['machine']['pins']['kubernetes']} conformance, {r['params']['runtime']} host, focus {r['params']['focus']!r}"
    )
    gaps: dict[str, int] | None = r.get("pass_on_host_fail_in_virtual_by_sig")
    header = "".join(f" | {side:^23}" for side in sides) + (" | host-only passes" if gaps is not None else "")
    print(f"{'SIG':<22}{header}")
    print(f"{'':<22}" + "".join(f" | {'pass':>7}{'fail':>8}{'skip':>8}" for _ in sides))
    rows = [*r["by_sig"].items(), ("total", r["totals"])]
    for sig, per_side in rows:
        cells = "".join(
            f" | {per_side[s]['passed']:>7}{per_side[s]['failed']:>8}{per_side[s]['skipped']:>8}"
            for s in sides
        )
        if gaps is not None:
            cells += f" | {sum(gaps.values()) if sig == 'total' else gaps.get(sig, 0):>17}"
        print(f"{sig:<22}{cells}")
    print("run time: " + ", ".join(f"{s} {r['run_seconds'][s] / 60:.1f} min" for s in sides))
    for side, failures in r["suite_failures"].items():
        for f in failures:
            print(f"{side}: suite node failed: {f['name']}: {' / '.join(f['failure'])}")
    if "pass_on_host_fail_in_virtual" in r:
        diff = r["pass_on_host_fail_in_virtual"]
        print(f"\npass on the host, fail in the virtual cluster: {len(diff)}")
        for d in diff:
            print(f"  {d['name']}" + (" (ran out of time)" if d["timed_out"] else ""))
            for line in d["failure"]:
                print(f"      {line[:200]}")
            if d["steps"]:
                print(f"      steps before: {' > '.join(d['steps'])}")
        other = r["fail_on_host_pass_in_virtual"]
        print(f"fail on the host, pass in the virtual cluster: {len(other)}")
        for name in other:
            print(f"  {name}")


if __name__ == "__main__":
    sys.exit(main())
