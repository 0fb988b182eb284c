package lease

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

type fakeView struct {
	lease        *coordinationv1.Lease
	exists       bool
	currentSince time.Time
}

func (f fakeView) NodeLease() (*coordinationv1.Lease, bool, time.Time) {
	return f.lease, f.exists, f.currentSince
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
			got, err := c.probe()
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
			if got[0].Status == finding.StatusTrue && got[0].Reason == "KubeletLeaseStale" && !strings.Contains(got[0].Message, "2026-11-23T09:59") {
				t.Errorf("message %q does not say when the lease was last renewed", got[0].Message)
			}
		})
	}
}
