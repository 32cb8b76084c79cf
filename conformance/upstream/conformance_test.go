// Package upstream runs the unmodified Gateway API conformance suite against the cluster of
// the current kubeconfig. scripts/conformance.sh builds this test and passes the suite's own
// flags (-gateway-class, -conformance-profiles, -report-output, the implementation details);
// nothing here changes what the suite checks.
package upstream

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) {
	conformance.RunConformance(t)
}
