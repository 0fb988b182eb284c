package reporter

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// TestReasonPolicies: the per-reason settings decide before the node's
// rate limit, and count what they keep back.
func TestReasonPolicies(t *testing.T) {
	off := false
	type event struct {
		d     time.Duration
		count int
	}
	tests := []struct {
		name   string
		policy finding.EventPolicy
		events []event
		want   []bool // sent
		// held and suppressed are what the metrics count in the end.
		held, suppressed float64
		heldWhy          string
	}{
		{name: "no settings", events: []event{{0, 1}, {1, 1}}, want: []bool{true, true}},
		{name: "disabled", policy: finding.EventPolicy{Enabled: &off}, events: []event{{0, 1}, {1, 3}},
			want: []bool{false, false}, held: 4, heldWhy: "disabled"},
		{name: "the third within the window is sent, and the count starts over",
			policy: finding.EventPolicy{MinOccurrences: 3, Window: finding.Duration{Duration: 10 * time.Minute}},
			events: []event{{0, 1}, {time.Minute, 1}, {2 * time.Minute, 1}, {3 * time.Minute, 1}},
			want:   []bool{false, false, true, false}, held: 3, heldWhy: "minOccurrences"},
		{name: "occurrences older than the window do not count",
			policy: finding.EventPolicy{MinOccurrences: 2, Window: finding.Duration{Duration: 10 * time.Minute}},
			events: []event{{0, 1}, {10 * time.Minute, 1}, {11 * time.Minute, 1}},
			want:   []bool{false, false, true}, held: 2, heldWhy: "minOccurrences"},
		{name: "a storm's summary counts its lines",
			policy: finding.EventPolicy{MinOccurrences: 5, Window: finding.Duration{Duration: time.Minute}},
			events: []event{{0, 1}, {time.Second, 40}},
			want:   []bool{false, true}, held: 1, heldWhy: "minOccurrences"},
		{name: "an hour's budget, then refilled evenly", policy: finding.EventPolicy{EventsPerHour: 2},
			events: []event{{0, 1}, {1, 1}, {2, 1}, {30 * time.Minute, 1}, {30*time.Minute + 1, 1}},
			want:   []bool{true, true, false, true, false}, suppressed: 2},
	}
	t0 := time.Unix(10_000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A node limit far above these events, so that only the
			// reason's settings refuse.
			l := newEventLimiter(1000, 1000, map[string]finding.EventPolicy{"IOError": tt.policy}, prometheus.NewRegistry())
			for i, ev := range tt.events {
				if got := l.allow("Warning", "IOError", ev.count, t0.Add(ev.d)); got != tt.want[i] {
					t.Errorf("event %d (at %v, count %d): sent %v, want %v", i, ev.d, ev.count, got, tt.want[i])
				}
			}
			if tt.heldWhy != "" {
				if got := testutil.ToFloat64(l.held.WithLabelValues("IOError", tt.heldWhy)); got != tt.held {
					t.Errorf("held (%s) = %v, want %v", tt.heldWhy, got, tt.held)
				}
			}
			if got := testutil.ToFloat64(l.metric.WithLabelValues("IOError")); got != tt.suppressed {
				t.Errorf("suppressed = %v, want %v", got, tt.suppressed)
			}
			if tt.suppressed > 0 && l.summary(t0.Add(time.Hour)) == "" {
				t.Error("what the budget held back is in no summary")
			}
			// Another reason has none of these settings.
			if !l.allow("Warning", "NICLinkDown", 1, t0) {
				t.Error("a reason without settings was refused")
			}
		})
	}
}
