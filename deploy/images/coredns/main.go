// Command coredns is CoreDNS with the plugins the local cluster needs and nothing that reaches
// beyond it: cluster DNS (kubernetes), the `whoami` zone the Gateway API conformance manifests
// serve, and a stand-in for `forward` that answers SERVFAIL itself, so a Corefile that forwards
// to public resolvers loads and never sends a query off this machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, registered by their init functions.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is the order the plugins handle a query in: upstream CoreDNS's plugin.cfg order,
// keeping only these.
var directives = []string{
	"reload",
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"forward",
	"whoami",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
