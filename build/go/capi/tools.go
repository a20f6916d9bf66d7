//go:build tools

// Pins the Cluster API module: clusterctl and the managers `clusterctl init`
// installs (core, kubeadm bootstrap, kubeadm control plane) are built straight
// from its main packages.
package tools

import (
	_ "sigs.k8s.io/cluster-api/bootstrap/kubeadm"
	_ "sigs.k8s.io/cluster-api/cmd/clusterctl"
	_ "sigs.k8s.io/cluster-api/controlplane/kubeadm"
	_ "sigs.k8s.io/cluster-api/core"
)
