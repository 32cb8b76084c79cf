// Command summary prints a conformance report (the YAML the suite writes with -report-output)
// as one line per profile and level, with the names of failed and skipped tests, and exits 1
// when any test failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	skipped := flag.Bool("skipped", true, "list the skipped tests' names")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: summary [-skipped=false] REPORT.yaml")
		os.Exit(2)
	}
	path := flag.Arg(0)
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reading the report: %v\n", err)
		os.Exit(2)
	}
	var report confv1.ConformanceReport
	if err := yaml.UnmarshalStrict(raw, &report); err != nil {
		fmt.Fprintf(os.Stderr, "%s is not a conformance report: %v\n", path, err)
		os.Exit(2)
	}
	fmt.Printf("%s %s (Gateway API %s, %s channel, mode %s)\n", report.Implementation.Project,
		report.Implementation.Version, report.GatewayAPIVersion, report.GatewayAPIChannel, report.Mode)
	fmt.Printf("%-14s %-9s %-8s %6s %6s %7s\n", "profile", "level", "result", "passed", "failed", "skipped")
	failed := false
	for _, p := range report.ProfileReports {
		levels := []struct {
			name   string
			status confv1.Status
		}{{"core", p.Core}}
		if p.Extended != nil {
			levels = append(levels, struct {
				name   string
				status confv1.Status
			}{"extended", p.Extended.Status})
		}
		for _, l := range levels {
			s := l.status
			fmt.Printf("%-14s %-9s %-8s %6d %6d %7d\n", p.Name, l.name, s.Result,
				s.Statistics.Passed, s.Statistics.Failed, s.Statistics.Skipped)
			if len(s.FailedTests) > 0 {
				failed = true
				fmt.Printf("  failed: %s\n", strings.Join(s.FailedTests, ", "))
			}
			if *skipped && len(s.SkippedTests) > 0 {
				fmt.Printf("  skipped: %s\n", strings.Join(s.SkippedTests, ", "))
			}
		}
		if p.Extended != nil && len(p.Extended.UnsupportedFeatures) > 0 {
			fmt.Printf("  %s features not claimed: %s\n", p.Name, strings.Join(p.Extended.UnsupportedFeatures, ", "))
		}
	}
	if failed {
		os.Exit(1)
	}
}
