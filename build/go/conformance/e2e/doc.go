// Package e2e is built with `go test -c` into vnest's e2e.test: Kubernetes' end-to-end suite
// (k8s.io/kubernetes/test/e2e, the [Conformance] specs among its specs) from the pinned module,
// with upstream's test main (e2e_test.go) and two additions for vnest's conformance runs
// (bench/conformance.py):
//
//   - --vnest-spec-timeout: a per-spec timeout. Ginkgo has one only as a decorator on each spec,
//     and upstream's specs have none, so a spec waiting for something that never happens (a
//     container's output on simulated nodes, say) waits out the framework's own timeouts, 5 to 15
//     minutes each. Here every spec's setup and subject nodes get a context that ends at the
//     spec's start plus the timeout (an AroundNode given to RunSpecs, as Ginkgo documents for
//     suite-wide settings); cleanup nodes keep theirs, so a timed-out spec still deletes its
//     namespace. The specs labelled Slow, which take minutes by design, get
//     --vnest-slow-spec-timeout instead.
//   - --vnest-progress-file: one JSON line per finished spec (and the total at the start),
//     appended by every parallel process, which the runner reads to show progress.
package e2e
