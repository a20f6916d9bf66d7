//go:build tools

// Keeps ginkgo's CLI, which runs e2e.test in parallel processes, in this module's
// go.mod and go.sum at the version k8s.io/kubernetes requires.
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
)
