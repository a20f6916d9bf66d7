//go:build tools

// Keeps the other binaries built from this module's dependency graph in
// go.mod/go.sum, so they share compiled packages with the multi-call binary.
package main

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
