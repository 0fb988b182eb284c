package integration

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// metricNames returns the metric names a PromQL expression selects.
func metricNames(t *testing.T, p parser.Parser, expr string) []string {
	t.Helper()
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Errorf("PromQL %q: %v", expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// TestMonitoringKitUsesOnlyMetricsTheAgentExports parses the PrometheusRule
// with Prometheus's own rule and PromQL parsers, takes every metric name
// from it and from the Grafana dashboard, and finds each in a scrape of an
// agent running against the real API server after it has seen problems.
func TestMonitoringKitUsesOnlyMetricsTheAgentExports(t *testing.T) {
	needCluster(t)
	p := parser.NewParser(parser.Options{})
	used := map[string]string{} // metric -> where

	raw, err := os.ReadFile("../../deploy/monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil || rule.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml: %v (kind %q)", err, rule.Kind)
	}
	spec, err := yaml.JSONToYAML(rule.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, p, slog.Default())
	for _, e := range errs {
		t.Errorf("prometheusrule.yaml: %v", e)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			for _, n := range metricNames(t, p, r.Expr) {
				used[n] = "alert " + r.Alert
			}
		}
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err = os.ReadFile("../../deploy/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, panel := range dash.Panels {
		for _, target := range panel.Targets {
			for _, n := range metricNames(t, p, target.Expr) {
				used[n] = "panel " + panel.Title
			}
		}
	}

	// An agent that has seen OOM kills (more at once than its event spool,
	// of one, holds), a disk error, and a CRI endpoint that does not
	// answer.
	const name = "monitoring-node"
	createNode(t, name)
	dir := t.TempDir()
	kernLog, notASocket := filepath.Join(dir, "kern.log"), filepath.Join(dir, "not-a-socket")
	os.WriteFile(kernLog, nil, 0o644)
	os.WriteFile(notASocket, nil, 0o644)
	addr := freeAddr(t)
	config := fmt.Sprintf("reporter:\n  eventSpoolSize: 1\nchecks:\n  kmsg:\n    startAtEnd: true\n    files: [{path: %s}]\n  cri:\n    endpoint: unix://%s\n    period: 500ms\n    timeout: 200ms\n", kernLog, notASocket)
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, kernLog)
	var lines strings.Builder
	for i := range 40 {
		fmt.Fprintf(&lines, "Out of memory: Killed process %d (hog) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n", 5000+i)
	}
	lines.WriteString("blk_update_request: I/O error, dev sdz, sector 2048\n")
	f, _ := os.OpenFile(kernLog, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(lines.String())
	f.Close()

	deadline := time.Now().Add(20 * time.Second)
	for {
		tp := expfmt.NewTextParser(model.UTF8Validation)
		families, err := tp.TextToMetricFamilies(strings.NewReader(httpGet(t, "http://"+addr+"/metrics")))
		if err != nil {
			t.Fatalf("parsing /metrics: %v", err)
		}
		exported := map[string]bool{}
		for n, fam := range families {
			exported[n] = true
			if fam.GetType().String() == "HISTOGRAM" {
				exported[n+"_bucket"], exported[n+"_sum"], exported[n+"_count"] = true, true, true
			}
		}
		var missing []string
		for n, where := range used {
			if !exported[n] {
				missing = append(missing, n+" ("+where+")")
			}
		}
		sort.Strings(missing)
		if len(missing) == 0 {
			t.Logf("all %d metric names in the rules and dashboard are exported", len(used))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the monitoring kit uses metrics the agent does not export: %s", strings.Join(missing, ", "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
