package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

type fakeView struct {
	lease        *coordinationv1.Lease
	exists       bool
	currentSince time.Time
}

func (f fakeView) NodeLease() (*coordinationv1.Lease, bool, time.Time) {
	return f.lease, f.exists, f.currentSince
}

// Reread finds what the view already holds.
func (f fakeView) Reread(context.Context) error { return nil }

// rereadView is a view whose direct read finds a Lease other than the
// watch's, or fails.
type rereadView struct {
	fakeView
	read  *coordinationv1.Lease
	err   error
	reads int
}

func (v *rereadView) NodeLease() (*coordinationv1.Lease, bool, time.Time) {
	return v.fakeView.NodeLease()
}

func (v *rereadView) Reread(context.Context) error {
	v.reads++
	if v.err != nil {
		return v.err
	}
	v.lease = v.read
	return nil
}

func leaseRenewed(ago time.Duration, durationSeconds int32, now time.Time) *coordinationv1.Lease {
	t := metav1.NewMicroTime(now.Add(-ago))
	return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{RenewTime: &t, LeaseDurationSeconds: &durationSeconds}}
}

func TestKubeletLeaseStale(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	// long ago: the view has been current for an hour.
	long := now.Add(-time.Hour)
	tests := []struct {
		name      string
		view      fakeView
		threshold time.Duration
		want      string // status:reason, or "" for no finding
	}{
		{"fresh", fakeView{leaseRenewed(5*time.Second, 40, now), true, long}, 0, "False:KubeletLeaseFresh"},
		{"stale past half the lease", fakeView{leaseRenewed(21*time.Second, 40, now), true, long}, 0, "True:KubeletLeaseStale"},
		{"a short lease has a short threshold", fakeView{leaseRenewed(5*time.Second, 8, now), true, long}, 0, "True:KubeletLeaseStale"},
		{"configured threshold", fakeView{leaseRenewed(21*time.Second, 40, now), true, long}, time.Minute, "False:KubeletLeaseFresh"},
		{"missing lease", fakeView{nil, false, long}, 0, "True:KubeletLeaseMissing"},
		// The agent cannot reach the API server: say nothing about the kubelet.
		{"agent cut off too", fakeView{leaseRenewed(time.Hour, 40, now), true, time.Time{}}, 0, ""},
		// The server is back after a minute's outage: no kubelet could
		// renew during it, and this one has had 5 s since.
		{"just after an outage", fakeView{leaseRenewed(time.Minute, 40, now), true, now.Add(-5 * time.Second)}, 0, "False:KubeletLeaseFresh"},
		// ... and one that has not renewed in the threshold since is stale.
		{"a threshold after an outage", fakeView{leaseRenewed(time.Minute, 40, now), true, now.Add(-21 * time.Second)}, 0, "True:KubeletLeaseStale"},
		{"missing just after start", fakeView{nil, false, now.Add(-time.Second)}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Threshold = finding.Duration{Duration: tt.threshold}
			c := New(cfg, checks.Env{Lease: tt.view, Now: func() time.Time { return now }})
			got, err := c.probe(context.Background())
			if tt.want == "" {
				if err != checks.ErrNoData {
					t.Errorf("probe = %v, %v; want ErrNoData", got, err)
				}
				return
			}
			if err != nil || len(got) != 1 {
				t.Fatalf("probe = %v, %v", got, err)
			}
			if s := string(got[0].Status) + ":" + got[0].Reason; s != tt.want {
				t.Errorf("got %s (%s), want %s", s, got[0].Message, tt.want)
			}
			if got[0].Status == finding.StatusTrue && got[0].Reason == "KubeletLeaseStale" &&
				(got[0].Facts["renewTime"] == "" || got[0].Facts["age"] == "" || got[0].Facts["threshold"] == "") {
				t.Errorf("a stale Lease's facts %v lack its renewTime, age or threshold", got[0].Facts)
			}
			if got[0].Status == finding.StatusTrue && got[0].Reason == "KubeletLeaseStale" && !strings.Contains(got[0].Message, "2026-11-23T09:59") {
				t.Errorf("message %q does not say when the lease was last renewed", got[0].Message)
			}
		})
	}
}

// A stale Lease in a quiet watch is reported only once a direct read agrees:
// a draining API server refuses the kubelet's renewals while the agent's
// open watch stays up, and refuses the read too.
func TestStaleLeaseIsConfirmedByARead(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	now := start
	long := start.Add(-time.Hour)
	stale := leaseRenewed(30*time.Second, 40, start)
	view := &rereadView{fakeView: fakeView{stale, true, long}, err: errors.New("connection refused")}
	c := New(DefaultConfig(), checks.Env{Lease: view, Now: func() time.Time { return now }})
	probe := func() string {
		t.Helper()
		fs, err := c.probe(context.Background())
		if errors.Is(err, checks.ErrNoData) {
			return ""
		}
		if err != nil || len(fs) != 1 {
			t.Fatalf("probe = %v, %v", fs, err)
		}
		return string(fs[0].Status) + ":" + fs[0].Reason
	}
	// The read fails: no verdict, and the next read waits 1, 2, then 4 s.
	for i, wantReads := range []int{1, 2, 2, 3, 3, 3} {
		if got := probe(); got != "" {
			t.Fatalf("probe %d with the read refused = %s, want no verdict", i, got)
		}
		if view.reads != wantReads {
			t.Fatalf("after probe %d: %d reads, want %d", i, view.reads, wantReads)
		}
		now = now.Add(time.Second)
	}
	// The server answers, and the kubelet had renewed: healthy.
	view.err, view.read = nil, leaseRenewed(time.Second, 40, now)
	now = now.Add(4 * time.Second)
	if got := probe(); got != "False:KubeletLeaseFresh" {
		t.Fatalf("after a read finding a renewal: %s, want False:KubeletLeaseFresh", got)
	}
	// Renewals stop; the read agrees the Lease is old: stale, and the
	// verdict holds without reading again each period.
	view.lease, view.read = stale, stale
	reads := view.reads
	for i := 0; i < 3; i++ {
		if got := probe(); got != "True:KubeletLeaseStale" {
			t.Fatalf("with the read agreeing: %s, want True:KubeletLeaseStale", got)
		}
		now = now.Add(time.Second)
	}
	if view.reads != reads+1 {
		t.Errorf("%d reads to confirm one stale verdict, want 1", view.reads-reads)
	}
}

// While the Lease is fresh the next look is when it would turn stale, so a
// renewing kubelet costs a look per renewal, not one a second; any other
// verdict keeps the period.
func TestNextLookWaitsOutAFreshLease(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	long := now.Add(-time.Hour)
	tests := []struct {
		name string
		view fakeView
		want time.Duration
	}{
		{"renewed 5s ago", fakeView{leaseRenewed(5*time.Second, 40, now), true, long}, 15*time.Second + 10*time.Millisecond},
		{"renewed just now", fakeView{leaseRenewed(0, 40, now), true, long}, 20 * time.Second},
		{"about to turn", fakeView{leaseRenewed(19990*time.Millisecond, 40, now), true, long}, time.Second},
		{"stale", fakeView{leaseRenewed(21*time.Second, 40, now), true, long}, time.Second},
		{"missing", fakeView{nil, false, long}, time.Second},
		{"out of view", fakeView{leaseRenewed(0, 40, now), true, time.Time{}}, time.Second},
		// A long lease is looked at no less often than a missing one is
		// reported, since a deletion moves no renewTime.
		{"a long lease", fakeView{leaseRenewed(0, 600, now), true, long}, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(DefaultConfig(), checks.Env{Lease: tt.view, Now: func() time.Time { return now }})
			c.judge()
			if got := c.nextLook(); got != tt.want {
				t.Errorf("nextLook = %s, want %s", got, tt.want)
			}
		})
	}
}

// A restarted API server answers the agent before it is ready, and then may
// still refuse the kubelets (its node authorizer not synced yet): with
// 5,000 simulated nodes, 28 agents called their kubelet stale 23 s after
// their view returned, 40 s before the server was ready (hack/bench's
// recovery storm). A read that finds the server not ready is no
// confirmation, and the kubelet then gets the threshold from the first
// read that finds it ready, as from a renewal.
func TestNoStaleVerdictUntilAThresholdAfterTheServerIsReady(t *testing.T) {
	start := time.Date(2026, 12, 3, 13, 34, 42, 0, time.UTC)
	now := start
	// The view turned current as the server first answered; the Lease is
	// from before the outage.
	view := &rereadView{fakeView: fakeView{leaseRenewed(3*time.Minute, 40, start), true, start}}
	view.read = view.lease
	c := New(DefaultConfig(), checks.Env{Lease: view, Now: func() time.Time { return now }})
	notReady := fmt.Errorf("%w: the server could not find the requested resource", kube.ErrServerNotReady)
	steps := []struct {
		at   time.Duration // from start
		err  error         // the confirming read's
		want string        // status:reason, or "" for no finding
	}{
		{10 * time.Second, nil, "False:KubeletLeaseFresh"},
		// Past the threshold from the view's return, the server not ready.
		{23 * time.Second, notReady, ""},
		{40 * time.Second, notReady, ""},
		// Ready: the threshold starts now.
		{60 * time.Second, nil, "False:KubeletLeaseFresh"},
		{79 * time.Second, nil, "False:KubeletLeaseFresh"},
		// A kubelet that has not renewed a threshold after that is stale.
		{81 * time.Second, nil, "True:KubeletLeaseStale"},
	}
	for _, s := range steps {
		now = start.Add(s.at)
		view.err = s.err
		fs, err := c.probe(context.Background())
		got := ""
		if err == nil && len(fs) == 1 {
			got = string(fs[0].Status) + ":" + fs[0].Reason
		} else if err != nil && !errors.Is(err, checks.ErrNoData) {
			t.Fatalf("at %s: probe = %v", s.at, err)
		}
		if got != s.want {
			t.Errorf("at %s (read error %v): got %q, want %q", s.at, s.err, got, s.want)
		}
	}
}
