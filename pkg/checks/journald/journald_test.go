//go:build journald

package journald

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/internal/journaltest"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// Kubelet's own line shapes, old and new klog formats, from the lease bug
// (kubernetes/kubernetes#87615) and PLEG stalls.
var kubeletLines = []struct {
	line, reason string
}{
	{`E0114 03:42:23.711411    1095 controller.go:114] failed to update node lease, error: Put https://10.0.0.1:443/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1?timeout=10s: context deadline exceeded`, "KubeletLeaseUpdateFailed"},
	{`E1123 10:00:00.123456    1234 controller.go:145] "Failed to update lease" err="Put \"https://10.0.0.1:443/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1?timeout=10s\": context deadline exceeded"`, "KubeletLeaseUpdateFailed"},
	{`E0114 03:42:33.711411    1095 kubelet_node_status.go:402] Error updating node status, will retry: error getting node "n1": Get https://10.0.0.1:443/api/v1/nodes/n1?timeout=10s: write tcp 10.0.0.5:43210->10.0.0.1:443: use of closed network connection`, "KubeletNodeStatusUpdateFailed"},
	{`E0114 03:42:33.800000    1095 reflector.go:138] k8s.io/client-go/informers/factory.go:134: Failed to watch *v1.Node: Get "https://10.0.0.1:443/api/v1/nodes": http2: client connection lost`, "KubeletConnectionLost"},
	{`I1123 10:05:00.000000    1234 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5.2s ago; threshold is 3m0s"`, "PLEGUnhealthy"},
	{`I1123 10:05:01.000000    1234 kubelet_node_status.go:76] "Successfully registered node" node="n1"`, ""},
	{`E1123 10:06:00.000000    1234 pod_workers.go:1298] "Error syncing pod, skipping" err="failed to ensure that the pod: 5f1c cgroups exist and are correctly applied: failed to create container for [kubepods burstable pod5f1c]: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod5f1c: cannot allocate memory"`, "MemoryCgroupLeak"},
}

func TestKubeletLinesFromARealJournal(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var entries []journaltest.Entry
	want := 0
	for i, l := range kubeletLines {
		entries = append(entries, journaltest.Unit(base.Add(time.Duration(i)*time.Second), "kubelet.service", l.line))
		if l.reason != "" {
			want++
		}
	}
	// The same words from another unit are not the kubelet's.
	entries = append(entries, journaltest.Unit(base.Add(time.Minute), "other.service", "failed to update node lease"))
	journaltest.Write(t, dir, "system.journal", entries...)

	c, err := New(&Config{Dir: dir, FromStart: true}, checks.Env{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan finding.Finding, 20)
	done := make(chan error)
	go func() { done <- c.Run(ctx, func(f finding.Finding) { got <- f }) }()
	var findings []finding.Finding
	timeout := time.After(10 * time.Second)
	for len(findings) < want+1 { // +1: the closed-connection line is two problems
		select {
		case f := <-got:
			findings = append(findings, f)
		case <-timeout:
			t.Fatalf("got %d findings, want %d: %+v", len(findings), want+1, findings)
		}
	}
	select {
	case f := <-got:
		t.Errorf("unexpected finding %+v", f)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range findings {
		reasons = append(reasons, f.Reason)
		if f.Source != "journal kubelet.service" || f.Time.Before(base) {
			t.Errorf("finding %+v: want source journal kubelet.service and the entry's time", f)
		}
	}
	if got, want := strings.Join(reasons, ","), "KubeletLeaseUpdateFailed,KubeletLeaseUpdateFailed,KubeletNodeStatusUpdateFailed,KubeletConnectionLost,KubeletConnectionLost,PLEGUnhealthy,CgroupMkdirFailed"; got != want {
		t.Errorf("reasons %s, want %s", got, want)
	}
}

func TestRuleSourcesMustNameAUnit(t *testing.T) {
	cfg := &Config{Rules: []logrules.Rule{{Name: "x", Source: "kmsg", Kind: finding.KindEvent, Reason: "X", Pattern: "x"}}}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "rules[0].source") {
		t.Errorf("Validate = %v, want an error naming rules[0].source", err)
	}
}

// The kubelet logs the same lease failures when the API server is down or
// the node is cut off: they are events, and KubeletLeaseStale is the lease
// check's alone.
func TestRepeatedLeaseFailuresAreEventsNotKubeletLeaseStale(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var entries []journaltest.Entry
	for i := range 5 {
		entries = append(entries, journaltest.Unit(base.Add(time.Duration(i)*10*time.Second), "kubelet.service",
			`E1123 10:00:00.000000    1234 controller.go:145] "Failed to update lease" err="write tcp 10.0.0.5:43210->10.0.0.1:443: use of closed network connection"`))
	}
	journaltest.Write(t, dir, "system.journal", entries...)
	c, err := New(&Config{Dir: dir, FromStart: true}, checks.Env{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range c.Conditions() {
		if cond.Type == finding.KubeletLeaseStale.Type {
			t.Errorf("the check owns %s; only the lease check may", cond.Type)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan finding.Finding, 40)
	go c.Run(ctx, func(f finding.Finding) { got <- f })
	timeout := time.After(10 * time.Second)
	for events := 0; events < len(entries); {
		select {
		case f := <-got:
			switch {
			case f.Type == finding.KubeletLeaseStale.Type:
				t.Fatalf("lease failures in the kubelet's log set %s: %+v", f.Type, f)
			case f.Kind == finding.KindEvent && f.Reason == "KubeletLeaseUpdateFailed":
				events++
			}
		case <-timeout:
			t.Fatalf("%d KubeletLeaseUpdateFailed events from %d lease failures in 10 s", events, len(entries))
		}
	}
}
