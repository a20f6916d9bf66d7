// Command kube-previous is a multi-call binary of kube-apiserver,
// kube-controller-manager and kube-scheduler at the Kubernetes release before
// the pinned one (build/versions.toml [kubernetes-previous]): what a virtual
// cluster can run and then be upgraded from, in place, to the pinned release.
// Built as build/go/kube's binary is; the node components are not needed.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones, as upstream's kube-controller-manager main does

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, known := components[name]; !known && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	newCommand, known := components[name]
	if !known {
		fmt.Fprintf(os.Stderr, "usage: kube-previous {kube-apiserver|kube-controller-manager|kube-scheduler} [flags]\n")
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
