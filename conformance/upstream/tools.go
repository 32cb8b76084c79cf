//go:build tools

// The upstream echo server is built from this module (scripts/conformance.sh) as the image the
// suite's manifests name; this import keeps it in go.mod.
package upstream

import _ "sigs.k8s.io/gateway-api/conformance/echo-basic"
