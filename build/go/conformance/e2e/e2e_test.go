/*
Copyright 2015 The Kubernetes Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Upstream's test/e2e/e2e_test.go (k8s.io/kubernetes v1.36.3), with vnest's per-spec timeout and
// progress file (see doc.go); RunE2ETests is inlined to pass the timeout to RunSpecs.

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"

	"k8s.io/component-base/logs"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	conformancetestdata "k8s.io/kubernetes/test/conformance/testdata"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	// the suite itself: its BeforeSuite (nodes schedulable, system pods ready) and AfterSuite
	_ "k8s.io/kubernetes/test/e2e"

	// define and freeze constants
	_ "k8s.io/kubernetes/test/e2e/feature"

	// test sources
	_ "k8s.io/kubernetes/test/e2e/apimachinery"
	_ "k8s.io/kubernetes/test/e2e/apps"
	_ "k8s.io/kubernetes/test/e2e/architecture"
	_ "k8s.io/kubernetes/test/e2e/auth"
	_ "k8s.io/kubernetes/test/e2e/autoscaling"
	_ "k8s.io/kubernetes/test/e2e/cloud"
	_ "k8s.io/kubernetes/test/e2e/common"
	_ "k8s.io/kubernetes/test/e2e/dra"
	_ "k8s.io/kubernetes/test/e2e/instrumentation"
	_ "k8s.io/kubernetes/test/e2e/invariants"
	"k8s.io/kubernetes/test/e2e/invariants/logcheck"
	_ "k8s.io/kubernetes/test/e2e/kubectl"
	_ "k8s.io/kubernetes/test/e2e/lifecycle"
	_ "k8s.io/kubernetes/test/e2e/lifecycle/bootstrap"
	_ "k8s.io/kubernetes/test/e2e/network"
	_ "k8s.io/kubernetes/test/e2e/node"
	_ "k8s.io/kubernetes/test/e2e/scheduling"
	_ "k8s.io/kubernetes/test/e2e/storage"
	_ "k8s.io/kubernetes/test/e2e/storage/csimock"
	_ "k8s.io/kubernetes/test/e2e/storage/external"
	_ "k8s.io/kubernetes/test/e2e/windows"

	// reconfigure framework
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/format"
)

var (
	specTimeout     = flag.Duration("vnest-spec-timeout", 0, "vnest: end each spec's setup and subject nodes this long after the spec started (0: no limit)")
	slowSpecTimeout = flag.Duration("vnest-slow-spec-timeout", 0, "vnest: --vnest-spec-timeout for the specs labelled Slow (0: no limit)")
	progressFile    = flag.String("vnest-progress-file", "", "vnest: append one JSON line per finished spec to this file")
)

// handleFlags sets up all flags and parses the command line.
func handleFlags() {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	logcheck.RegisterFlags(flag.CommandLine)
	flag.Parse()
}

func TestMain(m *testing.M) {
	var versionFlag bool
	flag.CommandLine.BoolVar(&versionFlag, "version", false, "Displays version information.")

	// Register test flags, then parse flags.
	handleFlags()

	if versionFlag {
		fmt.Printf("%s\n", version.Get())
		os.Exit(0)
	}

	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unknown additional command line arguments: %s", flag.CommandLine.Args())
		os.Exit(1)
	}

	// Enable embedded FS file lookup as fallback
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	testfiles.AddFileSource(conformancetestdata.GetConformanceTestdataFS())

	framework.AfterReadingAllFlags(&framework.TestContext)

	if framework.TestContext.RepoRoot != "" {
		testfiles.AddFileSource(testfiles.RootFileSource{Root: framework.TestContext.RepoRoot})
	}

	os.Exit(m.Run())
}

// TestE2E is upstream's RunE2ETests with the per-spec timeout given to RunSpecs.
func TestE2E(t *testing.T) {
	logs.InitLogs()
	defer logs.FlushLogs()
	klog.EnableContextualLogging(true)

	gomega.RegisterFailHandler(framework.Fail)
	registerProgress()
	suiteConfig, reporterConfig := framework.CreateGinkgoConfig()
	klog.Infof("Starting e2e run %q on Ginkgo node %d", framework.RunID, suiteConfig.ParallelProcess)
	ginkgo.RunSpecs(t, "Kubernetes e2e suite", suiteConfig, reporterConfig, ginkgo.AroundNode(withSpecTimeout))
}

// withSpecTimeout runs a node with a context that ends --vnest-spec-timeout after its spec
// started (--vnest-slow-spec-timeout for a spec labelled Slow: upstream's mark for the specs
// that take minutes by design, such as a CronJob's that waits out its schedule), when the node
// is one of the spec's setup nodes or its subject (It).
func withSpecTimeout(ctx context.Context, body func(context.Context)) {
	report := ginkgo.CurrentSpecReport()
	timeout := *specTimeout
	if slices.Contains(report.Labels(), "Slow") {
		timeout = *slowSpecTimeout
	}
	if timeout <= 0 || report.LeafNodeType != types.NodeTypeIt || report.StartTime.IsZero() || !runningSetupOrSubject(report) {
		body(ctx)
		return
	}
	cause := fmt.Errorf("vnest: the spec ran longer than its timeout of %s", timeout)
	ctx, cancel := context.WithDeadlineCause(ctx, report.StartTime.Add(timeout), cause)
	defer cancel()
	body(ctx)
}

// runningSetupOrSubject tells whether the node about to run (the last one started) sets the spec
// up or is its subject, rather than cleaning it up.
func runningSetupOrSubject(report types.SpecReport) bool {
	for i := len(report.SpecEvents) - 1; i >= 0; i-- {
		if event := report.SpecEvents[i]; event.SpecEventType == types.SpecEventNodeStart {
			return event.NodeType.Is(types.NodeTypeBeforeAll | types.NodeTypeBeforeEach | types.NodeTypeJustBeforeEach | types.NodeTypeIt)
		}
	}
	return false
}

var progressMu sync.Mutex

// writeProgress appends one JSON line in a single write: with O_APPEND, the lines of parallel
// processes do not interleave.
func writeProgress(record map[string]any) {
	if *progressFile == "" {
		return
	}
	line, err := json.Marshal(record)
	if err != nil {
		return
	}
	progressMu.Lock()
	defer progressMu.Unlock()
	f, err := os.OpenFile(*progressFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		klog.Errorf("vnest progress file: %v", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}

// registerProgress adds the progress file's report nodes. They are registered here, not at
// package initialisation as upstream's are: the framework's flag handling previews the specs
// (ginkgo.PreviewSpecs), which runs report nodes in a dry run and afterwards restores a copy of
// the suite that keeps top-level containers and suite nodes but not top-level ReportAfterEach nodes.
func registerProgress() {
	ginkgo.ReportBeforeSuite(func(report ginkgo.Report) {
		writeProgress(map[string]any{"total": report.PreRunStats.SpecsThatWillRun})
	})
	ginkgo.ReportAfterEach(func(report ginkgo.SpecReport) {
		// Specs left out by --focus/--skip are reported too, as skipped without a message.
		if report.State == types.SpecStateSkipped && report.Failure.Message == "" {
			return
		}
		writeProgress(map[string]any{
			"name":    report.FullText(),
			"state":   report.State.String(),
			"seconds": report.RunTime.Round(time.Millisecond).Seconds(),
			"process": report.ParallelProcess,
		})
	})
}
