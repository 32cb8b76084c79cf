package main

import (
	"context"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

func init() { plugin.Register("forward", setupForward) }

// setupForward accepts any `forward FROM TO... { ... }` block and ignores its upstreams.
func setupForward(c *caddy.Controller) error {
	for c.Next() {
		if len(c.RemainingArgs()) < 2 {
			return plugin.Error("forward", c.ArgErr())
		}
		for c.NextBlock() {
			c.RemainingArgs()
		}
	}
	dnsserver.GetConfig(c).AddPlugin(func(plugin.Handler) plugin.Handler { return noForward{} })
	return nil
}

// noForward answers every query that reaches it with SERVFAIL, as `forward` does when no
// upstream answers; the server writes that reply.
type noForward struct{}

func (noForward) ServeDNS(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	return dns.RcodeServerFailure, nil
}

func (noForward) Name() string { return "forward" }
