// Command coredns is upstream's CoreDNS with a small plugin set, built the way
// CoreDNS documents for custom builds: set dnsserver.Directives, blank-import
// just those plugins, call coremain.Run. Upstream's own main imports
// github.com/coredns/coredns/core/plugin, which pulls in every plugin and with
// them the AWS, Azure and Google Cloud SDKs, etcd's client, the gRPC and QUIC
// servers, and more: minutes of build time and a far bigger binary for
// plugins that vnest never configures.
//
// The plugins are what a Kubernetes cluster's DNS Corefile uses (kubeadm's
// default, plus bind and debug), in the order of upstream's plugin.cfg, which
// is the order they run in whatever order a Corefile lists them.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// Upstream's plugin.cfg order, restricted to the plugins imported above
// ("prometheus" is the directive of plugin/metrics).
var directives = []string{
	"reload",
	"bind",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"hosts",
	"kubernetes",
	"loop",
	"forward",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
